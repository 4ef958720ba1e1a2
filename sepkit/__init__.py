"""sepkit: speech separation and enhancement models on fused Triton kernels.

Layers (imports go one way): ``sepkit.kernels`` (Triton ops and their references) <- ``sepkit``
(nn layers, losses, metrics, models, data, training, command line) <- ``recipes/``.
"""
__version__ = "0.1.0"
