"""One compile switch for training, evaluation and separation: ``train.compile`` in a recipe,
``--compile`` on ``sepkit eval``, ``sepkit separate`` and ``sepkit demo``.

Modes (:data:`MODES`): ``"none"`` runs eagerly; ``"default"`` and ``"max-autotune"`` are
``torch.compile``'s modes of those names (inductor; max-autotune tries more kernels: a longer
compile, sometimes a faster step).

:func:`compile_model` compiles a module's ``forward`` in place: the module stays the same object,
its ``state_dict`` keys do not change (no ``_orig_mod.`` prefix reaches a checkpoint) and it
trains, evaluates, moves and loads weights as before. sepkit's kernels are ``torch.library``
custom ops, so they trace; layers torch.compile cannot trace (torch's LSTMs) are placed outside
the graph by the model itself (:func:`sepkit.nn.graph.outside_graph`), which compiles around
them. Shapes are compiled static first and dynamic from the second length seen (torch's
automatic dynamic shapes), so utterances of many lengths cost two compiles, not one per file.

What cannot compile never ends a run half way: what is known before any work (no C++ compiler
for inductor on a CPU, no Triton for CUDA tensors, a Python torch.compile does not support) is
one line; with ``"default"`` a notice, and the module runs eagerly; with ``"max-autotune"``
(asked for explicitly) a :class:`~sepkit.errors.BackendError`. A compilation that fails at a
call (a graph the backend cannot build) runs that call and every later one eagerly, with one
notice naming the reason (``"max-autotune"``: a BackendError at the first call instead).
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from sepkit.errors import BackendError, ConfigError

MODES = ("none", "default", "max-autotune")
BACKEND = "inductor"
"""The torch.compile backend of :func:`compile_model` (tests use ``"aot_eager"``: the same graphs
and guards, no C++ build)."""


def check_mode(mode: str, where: str = "compile") -> str:
    """``mode`` if it is one of :data:`MODES`, else a ConfigError naming ``where``."""
    if mode not in MODES:
        raise ConfigError(f"{where}={mode!r}: must be one of {', '.join(MODES)}")
    return mode


def compile_problems(device: torch.device | str = "cpu", backend: str | None = None) -> list[str]:
    """Why torch.compile cannot run ``backend`` (default :data:`BACKEND`) for tensors on
    ``device`` here; empty when nothing is known to stand in the way."""
    backend = backend or BACKEND
    device = torch.device(device)
    problems = []
    try:
        from torch._dynamo.eval_frame import check_if_dynamo_supported

        check_if_dynamo_supported()
    except RuntimeError as exc:
        problems.append(_first_line(exc))
    if backend != "inductor":
        return problems
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001 - inductor's own error for a missing compiler
            cxx = torch._inductor.config.cpp.cxx
            names = ", ".join(c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c)
            problems.append(f"inductor needs a C++ compiler on the CPU and found none ({names or 'g++'}: "
                            f"{_first_line(exc) or 'not found'}); install g++ or set CXX")
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            problems.append("inductor needs Triton for CUDA tensors (and a GPU of compute capability >= 7.0)")
    return problems


def compile_model(module: nn.Module, mode: str, what: str = "compile", device: torch.device | str | None = None,
                  backend: str | None = None) -> nn.Module:
    """``module`` with its ``forward`` under ``torch.compile`` (``mode`` one of :data:`MODES`;
    ``"none"``: unchanged), compiled in place and returned.

    ``what`` names the switch in notices and errors (e.g. ``"train.compile"``, ``"--compile"``);
    ``device``: where it will run (default: where its first parameter lies), for
    :func:`compile_problems`. A module already compiled here is recompiled in the new mode.
    Calls made while an enclosing function is being compiled (a training step that calls the
    model) run the module's own forward, so the enclosing graph traces through it.
    """
    check_mode(mode, what)
    current = module.__dict__.get("forward")
    if isinstance(current, CompiledForward):  # compiled before: start from the module's own forward
        del module.forward
    if mode == "none":
        return module
    problems = compile_problems(_device_of(module) if device is None else device, backend)
    if problems:
        if mode != "default":
            raise BackendError(f"{what}={mode}: torch.compile cannot run here: {'; '.join(problems)}")
        _notice(f"{what}: torch.compile cannot run here ({'; '.join(problems)}); running eagerly")
        return module
    module.forward = CompiledForward(module, mode, what, backend or BACKEND)
    return module


def is_compiled(module: nn.Module) -> bool:
    """Whether :func:`compile_model` compiled ``module`` and it has not fallen back to eager."""
    forward = module.__dict__.get("forward")
    return isinstance(forward, CompiledForward) and not forward.failed


def compile_training(step: nn.Module, model: nn.Module, mode: str, what: str = "train.compile") -> None:
    """Compile the training ``step`` (a module whose forward computes the task's loss: the
    model's forward, the loss and, through AOTAutograd, their backward) and the ``model``'s own
    forward (validation and the final test), in place."""
    compile_model(model, mode, what)
    compile_model(step, mode if is_compiled(model) else "none", what)


class CompiledForward:
    """A module's ``forward`` under torch.compile; eager after a compilation failure.

    The backward graph is compiled with the forward (not at the first backward pass), so a
    backend failure shows here, where the call can still run eagerly."""

    def __init__(self, module: nn.Module, mode: str, what: str, backend: str):
        import torch._dynamo  # noqa: F401  (torch.compile's modules, loaded when first needed)
        import torch._functorch.config  # noqa: F401

        self.eager = type(module).forward.__get__(module)
        self.mode, self.what, self.backend = mode, what, backend
        options = {"mode": mode} if mode != "default" and backend == "inductor" else {}
        self.compiled = torch.compile(self.eager, backend=backend, dynamic=None, **options)
        self.failed = False
        self.reason: str | None = None  # why it fell back to eager
        self.calls = 0

    def __call__(self, *args, **kwargs):
        if self.failed or torch.compiler.is_compiling():
            return self.eager(*args, **kwargs)
        try:
            with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
                out = self.compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as exc:
            out = self.eager(*args, **kwargs)  # an error of the input itself is raised here, as without compile
            reason = _reason(exc)
            if self.mode != "default" and self.calls == 0:
                raise BackendError(f"{self.what}={self.mode}: torch.compile failed on this machine ({reason}); "
                                   "mode default runs eagerly where it cannot compile, none never compiles") from None
            self.failed, self.reason = True, reason
            _notice(f"{self.what}: torch.compile failed ({reason}); running eagerly from here on")
        self.calls += 1
        return out

    def __repr__(self) -> str:
        return f"CompiledForward(mode={self.mode!r}, backend={self.backend!r}, failed={self.failed})"


def _device_of(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:240] if lines else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """One line: the backend's own error when a backend failed, else dynamo's."""
    inner = getattr(exc, "inner_exception", None)
    if inner is not None:
        return f"{type(inner).__name__}: {_first_line(inner)}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _notice(text: str) -> None:
    print(f"sepkit: {text}", file=sys.stderr)


__all__ = ["MODES", "BACKEND", "check_mode", "compile_problems", "compile_model", "compile_training", "is_compiled",
           "CompiledForward"]
