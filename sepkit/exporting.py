"""Exporting sepkit's models to ONNX, ``torch.export`` programs and TorchScript.

:func:`export` (also ``sepkit.export``) writes one model as a file another runtime loads: ``"onnx"`` (onnxruntime and
the other ONNX runtimes), ``"export"`` (a ``torch.export`` program, ``.pt2``, loaded with
``torch.export.load``) or ``"torchscript"`` (``torch.jit.load``). Batch and time are dynamic
axes: one file takes any batch size and any length. What is exported (:func:`exportable`):

| model | inputs | outputs |
|---|---|---|
| a separator (ConvTasNet, DPRNN, Sepformer, Bi-LSTM) or Codecformer (with its codec) | ``mixture`` (B, T) | ``sources`` (B, S, T) |
| a TSE extractor (ConvTasNetTSE, DualPathTSE) | ``mixture`` (B, T), ``embedding`` (B, D) | ``target`` (B, T) |
| a trained TSE model (extractor and frozen conditioner) | ``mixture`` (B, T), ``enrollment`` (B, T_e) | ``target`` (B, T) |
| GCRN | ``noisy`` (B, T) | ``enhanced`` (B, T) |
| GCRN, ``part="step"`` | ``frame`` (B, win), ``h``, ``c`` (L*G, B, U) | ``output`` (B, win), ``h``, ``c`` |
| SGMSE+ / Ex-Diff, ``part="score"`` (or an NCSN++) | ``x``, ``y`` (B, 2, F, N) real and imaginary planes, ``t`` (B,) | ``score_output`` (B, 2, F, N) |

Waveforms are float32 at the model's rate; the GCRN step is one STFT frame with its LSTM state
as inputs and outputs (:class:`~sepkit.models.streaming.StreamingEnhancer` does the framing and
overlap-add around it). The score network's frame count N must be a multiple of its
``frame_multiple``; the sampler (a loop of score evaluations with random draws) runs outside.

How: the model is traced by ``torch.export`` (non-strict, with time and batch symbolic, so the
frame and chunk padding stay formulas of the length instead of the traced example's numbers;
LSTMs as a loop over time), the kernel custom ops, where the graph holds them, are replaced by
their references (:mod:`sepkit.kernels.decompositions`), and the program is written (``"export"``)
or translated by ``torch.onnx`` (``"onnx"``). TorchScript is ``torch.jit.trace`` of the model.
Every export is checked before the file is kept (``check=True``): the written file is loaded back
and run at two batch sizes and two lengths other than the traced ones, one of them prime (a
multiple of no stride or hop), and its outputs must equal the model's within 1e-4 relative to the
output's largest magnitude; a failure removes the file and raises :class:`ExportCheckError` with
the inputs and the error. This is what catches a length the tracer specialised (TorchScript
records the padding of its example as constants: a model whose framing depends on the length is
refused in that format, the message says so).

Needs the ``export`` extra (``pip install 'sepkit[export]'``: onnx, onnxscript, onnxruntime) for
ONNX and for checking ONNX files.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from sepkit.errors import BackendError, InputError

FORMATS = ("onnx", "export", "torchscript")
SUFFIXES = {"onnx": ".onnx", "export": ".pt2", "torchscript": ".pt"}
#: relative tolerance of the export check: max |exported - eager| / max |eager|, per output
RTOL = 1e-4
#: ONNX operator set of the exported graphs (DFT, LSTM and Loop as onnxruntime runs them)
OPSET = 18


class ExportCheckError(RuntimeError):
    """An exported file computes something else than the model (a bug, not a user error)."""


@dataclasses.dataclass
class Exportable:
    """What :func:`export` traces for one model.

    Attributes:
        module: a module whose ``forward`` takes and returns tensors only.
        kind: a short name of what it is ("separator", "step", ...).
        inputs: names of ``module``'s inputs, in order; ``outputs``: names of its outputs.
        make_inputs: ``(batch, length, generator) -> tuple of tensors`` for one call; ``length``
            in the module's time unit (samples, or frames for the score network).
        dynamic: per input, ``{axis: "batch" | "time"}``.
        output_axes: per output, ``{axis: "batch" | "time"}`` (names for the ONNX graph).
        trace_shape: (batch, length) of the traced example.
        check_shapes: (batch, length) pairs of the export check (lengths other than the traced one,
            one of them prime).
        time_multiple: the length must be a multiple of this (1: any length).
    """

    module: nn.Module
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    make_inputs: Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]]
    dynamic: tuple[dict, ...]
    output_axes: tuple[dict, ...]
    trace_shape: tuple[int, int]
    check_shapes: tuple[tuple[int, int], ...]
    time_multiple: int = 1


# ------------------------------------------------------------------------------------------
# what each model exports as
# ------------------------------------------------------------------------------------------

class _Waveform(nn.Module):
    """``forward(mixture (B, T)) -> model(mixture)``: a one-waveform model as a tensor function."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.model(mixture)


class _Conditioned(nn.Module):
    """``forward(mixture (B, T), embedding (B, D)) -> model(mixture, embedding)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mixture: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.model(mixture, embedding)


class _Enrolled(nn.Module):
    """A trained TSE model: ``forward(mixture (B, T), enrollment (B, T_e))`` = the extractor
    conditioned on the frozen conditioner's embedding of the enrolment utterance."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mixture: torch.Tensor, enrollment: torch.Tensor) -> torch.Tensor:
        return self.model(mixture, self.model.enrolled(enrollment))


class _Step(nn.Module):
    """``forward(frame (B, win), h, c) -> (output frame (B, win), h, c)``: one GCRN frame."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        return self.model.step(frame, h, c)


class _Score(nn.Module):
    """The score network on real planes: ``forward(x, y (B, 2, F, N), t (B,)) -> (B, 2, F, N)``,
    channel 0 the real and 1 the imaginary part of the complex (B, 1, F, N) spectrograms the
    network takes (its output ``D``; the score is ``-D / std(t)``)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_planes(torch.cat([x, y], dim=1), t).float()


def _rate(model: nn.Module, default: int = 8000) -> int:
    return int(getattr(model, "sample_rate", default) or default)


def _waves(*names_dims):
    """make_inputs for waveform inputs of the given trailing sizes (None: the time length)."""

    def make(batch: int, length: int, gen: torch.Generator):
        return tuple(torch.randn(batch, length if d is None else d, generator=gen) for d in names_dims)

    return make


def _wave_shapes(rate: int) -> dict:
    """Traced and checked (batch, samples): 0.5 s traced; checked at a prime length near 0.7 s
    (a multiple of no stride) and at 0.3 s."""
    return dict(trace_shape=(2, rate // 2), check_shapes=((1, _prime_near(int(rate * 0.7))), (3, int(rate * 0.3))))


def _prime_near(n: int) -> int:
    """The smallest prime >= n (a length that is a multiple of no stride, hop or chunk)."""
    n = max(n, 2)
    while any(n % p == 0 for p in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


def exportable(model: nn.Module, part: str | None = None) -> Exportable:
    """The :class:`Exportable` of ``model`` (see the module docstring for what each model
    exports as); ``part``: ``"step"`` (GCRN's streaming step) or ``"score"`` (a diffusion model's
    score network). Raises InputError naming the model and why when it cannot export."""
    from sepkit.models.codecformer import Codecformer
    from sepkit.models.gcrn import GCRN
    from sepkit.models.ncsnpp import NCSNpp
    from sepkit.models.separators.base import MaskSeparator
    from sepkit.models.sgmse import SGMSE
    from sepkit.models.tse import _WaveTSE

    name = type(model).__name__
    parts = {"GCRN": ("step",), "SGMSE": ("score",), "ExDiff": ("score",)}
    if part is not None and part not in parts.get(name, ()):
        raise InputError(f"part={part!r}: {name} has no such part to export "
                         f"({', '.join(f'{k}: {v[0]!r}' for k, v in parts.items())})")
    axes_bt = {0: "batch", 1: "time"}
    if isinstance(model, (MaskSeparator, Codecformer)):
        if getattr(model, "frontend", None) is not None:
            raise InputError(f"{name} with a frontend module: the frontend runs inside the forward pass and is "
                             "not exported; export the separator alone and feed it the frontend's features "
                             "elsewhere")
        return Exportable(_Waveform(model), "separator", ("mixture",), ("sources",), _waves(None), (axes_bt,),
                          ({0: "batch", 2: "time"},), **_wave_shapes(_rate(model)))
    if isinstance(model, _WaveTSE):
        dim = int(model.emb_dim)
        return Exportable(_Conditioned(model), "tse", ("mixture", "embedding"), ("target",), _waves(None, dim),
                          (axes_bt, {0: "batch"}), (axes_bt,), **_wave_shapes(_rate(model)))
    if hasattr(model, "extractor") and hasattr(model, "enrolled"):  # a trained TSE model
        rate = _rate(model)
        enrol = rate  # enrolment utterances of one second (any length works: a dynamic axis)
        return Exportable(_Enrolled(model), "tse-enrolled", ("mixture", "enrollment"), ("target",),
                          _waves(None, enrol), (axes_bt, {0: "batch", 1: "enrollment_time"}), (axes_bt,),
                          **_wave_shapes(rate))
    if isinstance(model, GCRN):
        if part == "step":
            if not model.causal:
                raise InputError(f"GCRN variant {model.variant!r} has no streaming step: its Wav2Vec2 sees the "
                                 "whole utterance (not causal)")
            win = model.win_length

            def make_step(batch: int, length: int, gen: torch.Generator):
                h, c = model.init_state(batch)
                return (torch.randn(batch, win, generator=gen), torch.randn(h.shape, generator=gen) * 0.5,
                        torch.randn(c.shape, generator=gen) * 0.5)

            return Exportable(_Step(model), "step", ("frame", "h", "c"), ("output", "h_out", "c_out"), make_step,
                              ({0: "batch"}, {1: "batch"}, {1: "batch"}), ({0: "batch"}, {1: "batch"}, {1: "batch"}),
                              trace_shape=(2, win), check_shapes=((1, win), (3, win)))
        if model.variant == "concat":
            raise InputError("GCRN variant 'concat' runs torchaudio's Wav2Vec2 inside its forward pass, which is not "
                             "exported; export a base, distill or pretrain GCRN")
        return Exportable(_Waveform(model), "enhancer", ("noisy",), ("enhanced",), _waves(None), (axes_bt,),
                          (axes_bt,), **_wave_shapes(model.sample_rate))
    if isinstance(model, SGMSE) and part != "score":
        raise InputError(f"{name} enhances with a sampler: a loop of score-network evaluations with random draws "
                         "(predictor-corrector or ODE steps), which a static graph does not hold; export "
                         "part='score' (the score network, one evaluation) and run the sampler around it")
    if isinstance(model, SGMSE) or isinstance(model, NCSNpp):
        backbone = model.backbone if isinstance(model, SGMSE) else model
        if not isinstance(backbone, NCSNpp):
            raise InputError(f"{name}: only an NCSN++ score network exports, this one is {type(backbone).__name__}")
        if backbone.latent_dim:
            raise InputError(f"{name}: the score network is conditioned on latents (Ex-Diff's cross-attention to "
                             "a separation model's frame-wise latents); only the unconditioned SGMSE+ network "
                             "exports")
        n_freq, m = int(backbone.n_freq), int(backbone.frame_multiple)

        def make_score(batch: int, frames: int, gen: torch.Generator):
            x = torch.randn(batch, 2, n_freq, frames, generator=gen) * 0.5
            y = torch.randn(batch, 2, n_freq, frames, generator=gen) * 0.5
            t = torch.rand(batch, generator=gen) * 0.9 + 0.05
            return x, y, t

        axes = {0: "batch", 3: "time"}
        return Exportable(_Score(backbone), "score", ("x", "y", "t"), ("score_output",), make_score,
                          (axes, axes, {0: "batch"}), (axes,), trace_shape=(2, 4 * m),
                          check_shapes=((1, 3 * m), (3, 7 * m)), time_multiple=m)
    raise InputError(f"{name} cannot be exported: sepkit exports the separators (ConvTasNet, DPRNN, Sepformer, "
                     "Bi-LSTM), Codecformer, the TSE models, GCRN (and its streaming step) and the SGMSE+ score "
                     "network")


# ------------------------------------------------------------------------------------------
# tracing
# ------------------------------------------------------------------------------------------

def _dynamic_shapes(ex: Exportable):
    dyn = torch.export.Dim.DYNAMIC(min=1)  # not the tracer's default of 2: batch 1 is the usual call
    shapes = []
    for axes in ex.dynamic:
        spec = {}
        for axis, what in axes.items():
            if what == "time" and ex.time_multiple > 1:
                spec[axis] = ex.time_multiple * torch.export.Dim("frames_over_multiple", min=1)
            else:
                spec[axis] = dyn
        shapes.append(spec)
    return tuple(shapes)


@contextlib.contextmanager
def _rnn_loops():
    """LSTMs as a loop over time (``torch.export``'s while-loop decomposition) instead of one
    unrolled step per frame of the example, which would fix the length."""
    try:
        from torch.export._patches import register_lstm_while_loop_decomposition
    except ImportError:  # an older torch: the export check catches a fixed length
        yield
        return
    with register_lstm_while_loop_decomposition():
        yield


def _drop_view_guards(program: torch.export.ExportedProgram) -> None:
    """Drop the input guards ``(a % (b)) != 0`` that the tracer's reshape-as-view algorithm
    records (whether a product of sizes divides another: it holds for batch > 1, and a batch of 1
    fails it). They choose between two ways of viewing one reshape in the tracer's own
    decompositions (the LSTM's time-major loop, for one); the graph holds the reshape itself,
    which takes any size, so the program stays valid without them (the export check runs it at
    batch 1 and 3)."""
    kept = [g for g in program._guards_code if not (" % (" in g and g.rstrip().endswith("!= 0"))]
    if len(kept) != len(program._guards_code):
        program._guards_code = kept


def trace(ex: Exportable) -> torch.export.ExportedProgram:
    """``torch.export`` program of ``ex.module`` with the kernel ops replaced by their references."""
    from sepkit.kernels.decompositions import reference_decompositions, unsupported_ops

    gen = torch.Generator().manual_seed(0)
    args = ex.make_inputs(*ex.trace_shape, gen)
    with torch.no_grad(), _rnn_loops(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        try:
            program = torch.export.export(ex.module, args, dynamic_shapes=_dynamic_shapes(ex), strict=False)
        except Exception as exc:  # noqa: BLE001 - say what failed, keep the cause
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportCheckError(f"torch.export could not trace {type(ex.module.model if hasattr(ex.module, 'model') else ex.module).__name__} "
                                   f"with dynamic batch and time: {first[:500]}") from exc
    _drop_view_guards(program)
    table = reference_decompositions()
    if any(n.op == "call_function" and n.target in table for n in program.graph.nodes):
        with torch.no_grad(), _rnn_loops():  # the re-trace propagates the LSTMs' shapes again
            program = program.run_decompositions(table)
        _drop_view_guards(program)
    left = unsupported_ops(program.graph)
    if left:
        raise InputError(f"the graph holds the kernel op(s) {left}, which have no reference translation for export "
                         "(training-only ops)")
    return program


# ------------------------------------------------------------------------------------------
# writing and checking
# ------------------------------------------------------------------------------------------

def _need(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise BackendError(f"{what} needs the {module} package: pip install 'sepkit[export]'")


def _onnx_translations() -> dict:
    """Translations that replace the exporter's own for these graphs.

    ``operator.floordiv`` of two symbolic sizes: the exporter's default is ONNX ``Div``, which
    truncates toward zero and so equals Python's flooring only for operands of one sign; the
    framing formulas use ``-(-a // b)`` for ceil(a / b), and a truncated ``-a // b`` put one frame
    too few into every length that is not a multiple of the stride. Floored here for any sign:
    ``(a - mod(a, b)) / b`` with ONNX ``Mod`` (the sign of the divisor, like Python's ``%``)."""
    import operator

    from onnxscript import opset18 as op

    def floordiv(self, other):
        return op.Div(op.Sub(self, op.Mod(self, other)), other)

    return {operator.floordiv: floordiv}


def _write_onnx(program: torch.export.ExportedProgram, ex: Exportable, path: Path) -> None:
    import logging

    _need("onnx", "ONNX export")
    _need("onnxscript", "ONNX export")
    # the exporter's registry logs a warning per missing optional package (torchvision's ops)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), _rnn_loops():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, input_names=list(ex.inputs), output_names=list(ex.outputs),
                                         opset_version=OPSET, dynamo=True, verbose=False,
                                         custom_translation_table=_onnx_translations())
    _name_dynamic_axes(onnx_program.model, ex)
    onnx_program.save(str(path))


def _name_dynamic_axes(model, ex: Exportable) -> None:
    """Name the dynamic axes of the graph's inputs and outputs ("batch", "time"), replacing the
    tracer's symbols or the example's sizes where the translation left those."""
    from onnx_ir import SymbolicDim  # noqa: F401  (a dependency of onnxscript)
    import onnx_ir as ir

    for values, axes_list in ((model.graph.inputs, ex.dynamic), (model.graph.outputs, ex.output_axes)):
        for value, axes in zip(values, axes_list):
            if value.shape is None:
                continue
            dims = list(value.shape.dims)
            for axis, what in axes.items():
                if axis < len(dims):
                    dims[axis] = ir.SymbolicDim(what)
            value.shape = ir.Shape(dims)


def _run_onnx(path: Path):
    _need("onnxruntime", "Running an ONNX file")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*tensors):
        outs = session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})
        return tuple(torch.from_numpy(o) for o in outs)

    return run


def load(path: str | os.PathLike, format: str | None = None):
    """A callable ``f(*tensors) -> tuple of tensors`` running an exported file: onnxruntime (CPU
    execution provider) for ``.onnx``, ``torch.export.load(...).module()`` for ``.pt2``,
    ``torch.jit.load`` for ``.pt``."""
    path = Path(path)
    format = format or {v: k for k, v in SUFFIXES.items()}.get(path.suffix)
    if format not in FORMATS:
        raise InputError(f"{path}: format {format!r} unknown; give one of {FORMATS} (or a file ending in "
                         f"{', '.join(SUFFIXES.values())})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported file")
    if format == "onnx":
        return _run_onnx(path)
    module = torch.export.load(str(path)).module() if format == "export" else torch.jit.load(str(path))

    def run(*tensors):
        with torch.no_grad():
            out = module(*tensors)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (inf when the shapes differ)."""
    if tuple(got.shape) != tuple(want.shape):
        return float("inf")
    scale = float(want.abs().max()) if want.numel() else 0.0
    return float((got.double() - want.double()).abs().max()) / max(scale, 1e-30) if want.numel() else 0.0


def check_file(ex: Exportable, path: Path, format: str, shapes=None, rtol: float = RTOL) -> list[dict]:
    """Run the exported file at ``shapes`` ((batch, length) pairs; default ``ex.check_shapes``)
    and compare with the eager module. Returns one row per shape (``batch``, ``length``,
    ``error`` per output); raises :class:`ExportCheckError` past ``rtol``."""
    run = load(path, format)
    rows = []
    for batch, length in shapes or ex.check_shapes:
        args = ex.make_inputs(batch, length, torch.Generator().manual_seed(batch * 100003 + length))
        with torch.no_grad():
            want = ex.module(*args)
        want = tuple(want) if isinstance(want, (tuple, list)) else (want,)
        try:
            got = run(*args)
        except Exception as exc:  # noqa: BLE001 - e.g. a guard of a length the tracer fixed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportCheckError(f"the {format} export of {type(getattr(ex.module, 'model', ex.module)).__name__} "
                                   f"fails at batch {batch}, length {length} (traced at {ex.trace_shape}): "
                                   f"{first[:500]}") from exc
        errors = {name: relative_error(g, w) for name, g, w in zip(ex.outputs, got, want)}
        rows.append({"batch": batch, "length": length, **errors})
        bad = {k: v for k, v in errors.items() if not v <= rtol}
        if bad:
            shapes_got = [tuple(g.shape) for g in got]
            shapes_want = [tuple(w.shape) for w in want]
            raise ExportCheckError(
                f"the {format} export of {type(getattr(ex.module, 'model', ex.module)).__name__} differs from the "
                f"model at batch {batch}, length {length} (traced at {ex.trace_shape}): relative error "
                f"{', '.join(f'{k} {v:.3g}' for k, v in bad.items())} > {rtol:g} (shapes {shapes_got} vs "
                f"{shapes_want})")
    return rows


@dataclasses.dataclass
class Exported:
    """What :func:`export` wrote: ``path``, ``format``, the graph's ``inputs`` and ``outputs``
    (names), ``kind`` (see :class:`Exportable`) and ``checks``: per checked shape ``batch``,
    ``length`` and the relative error of each output (empty without the check)."""

    path: Path
    format: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    checks: list[dict]

    @property
    def max_error(self) -> float:
        """Largest relative error of the check (NaN without one)."""
        errors = [v for row in self.checks for k, v in row.items() if k not in ("batch", "length")]
        return max(errors) if errors else float("nan")


def export(model: nn.Module, format: str, path: str | os.PathLike, *, part: str | None = None, check: bool = True,
           overwrite: bool = False) -> Exported:
    """Write ``model`` as an ONNX / ``torch.export`` / TorchScript file at ``path`` (see the
    module docstring); returns what was written (:class:`Exported`).

    The model is copied to the CPU in float32 and eval mode (the caller's is not changed). With
    ``check`` (the default) the file is run at two batch sizes and two lengths and compared with
    the model before it is kept (:func:`check_file`). An existing ``path`` is refused unless
    ``overwrite``.
    """
    if format not in FORMATS:
        raise InputError(f"format={format!r}: must be one of {FORMATS}")
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder for the exported file")
    if format == "onnx":
        _need("onnx", "ONNX export")
        _need("onnxscript", "ONNX export")
    if check and format == "onnx":
        _need("onnxruntime", "Checking an ONNX export")
    model = copy.deepcopy(model).cpu().float().eval()
    ex = exportable(model, part)
    if importlib.util.find_spec("torchaudio") is not None:
        import torchaudio.functional  # noqa: F401  (its import runs an op: not inside a trace)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        if format == "torchscript":
            args = ex.make_inputs(*ex.trace_shape, torch.Generator().manual_seed(0))
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(ex.module, args, check_trace=False)
            scripted.save(str(tmp))
        else:
            program = trace(ex)
            if format == "export":
                torch.export.save(program, str(tmp))
            else:
                _write_onnx(program, ex, tmp)
        checks = []
        if check:
            try:
                checks = check_file(ex, tmp, format)
            except ExportCheckError as exc:
                if format == "torchscript":
                    raise InputError(
                        f"{type(model).__name__} does not export to TorchScript with a dynamic length: "
                        f"torch.jit.trace records the frame padding computed for the traced length as constants "
                        f"({exc}); use format 'onnx' or 'export'") from None
                raise
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(path, format, ex.kind, ex.inputs, ex.outputs, checks)


__all__ = ["FORMATS", "RTOL", "Exportable", "Exported", "ExportCheckError", "check_file", "export", "exportable", "load",
           "relative_error", "trace"]
