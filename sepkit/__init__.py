"""sepkit: speech separation and enhancement models on fused Triton kernels.

Layers (imports go one way): ``sepkit.kernels`` (Triton ops and their references) <- ``sepkit``
(nn layers, losses, metrics, models, data, training, command line) <- ``recipes/``.

For a user's own code, loaded only when first used (``import sepkit`` stays light):
:class:`sepkit.Separator` and :class:`sepkit.Enhancer` (a checkpoint that separates or enhances
tensors and files, :mod:`sepkit.api`) and :func:`sepkit.export` (a model as an ONNX,
``torch.export`` or TorchScript file, :mod:`sepkit.exporting`).
"""
__version__ = "0.1.0"

_LAZY = {"Separator": "sepkit.api", "Enhancer": "sepkit.api", "export": "sepkit.exporting"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sepkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
