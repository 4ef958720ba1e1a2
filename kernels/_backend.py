"""Backend choice shared by every kernel op.

Each public op takes ``backend=``: ``"triton"``, ``"torch"`` (the plain-PyTorch reference) or
``None`` (automatic). Automatic picks Triton for CUDA tensors the Triton path supports and,
otherwise, the fastest exact eager path (torch's SDPA for attention; for Snake the reference's
maths in an autograd function that saves only its inputs; the reference where no faster one
exists), unless the environment variable ``SEPKIT_BACKEND`` names a backend. The reference is the
specification, the float64 oracle of the tests and a benchmark baseline; it is the production
path only where nothing faster computes the same thing.
Triton on CPU tensors runs only under Triton's interpreter, which must be switched on with
``TRITON_INTERPRET=1`` *before* sepkit is imported (Triton decides at kernel definition time).

An explicit ``backend="triton"`` that cannot run raises :class:`BackendError` listing every
reason; automatic choice falls back to the reference silently. While ``torch.export`` traces (an
ONNX or ``.pt2`` export) every op takes the torch path: the exported graph must run where Triton
does not (see ``kernels.decompositions``).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch

from sepkit.errors import InputError

try:  # Triton ships only on Linux; the reference path works without it.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on platforms without Triton
    HAS_TRITON = False

#: Whether Triton kernels defined by this process run in the interpreter (read once, at import,
#: because that is when ``triton.jit`` decides).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

BACKENDS = ("triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


from sepkit.errors import BackendError  # noqa: E402  (re-exported)


def _env_backend() -> str | None:
    value = os.environ.get("SEPKIT_BACKEND", "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in BACKENDS:
        raise BackendError(
            f"SEPKIT_BACKEND={value!r} is not a backend; use one of {BACKENDS} or 'auto'"
        )
    return value


def check_environment(device: torch.device | str) -> None:
    """Check ``SEPKIT_BACKEND`` for a run on ``device`` before any work: BackendError for a value
    that is not a backend, or for ``triton`` where it cannot run (no Triton, CPU tensors without
    the interpreter, CUDA tensors with it)."""
    if _env_backend() != "triton":
        return
    device = torch.device(device)
    if not HAS_TRITON:
        reason = "triton is not installed"
    elif device.type == "cpu" and not INTERPRET:
        reason = "Triton runs on the CPU only in its interpreter (TRITON_INTERPRET=1 set before importing sepkit)"
    elif device.type == "cuda" and INTERPRET:
        reason = "TRITON_INTERPRET=1 is set, so kernels run in the interpreter, which needs CPU tensors"
    elif device.type not in ("cpu", "cuda"):
        reason = f"Triton kernels do not run on device type {device.type!r}"
    else:
        return
    raise BackendError(f"SEPKIT_BACKEND=triton cannot run on {device}: {reason}; unset it or set SEPKIT_BACKEND=auto")


def device_reasons(tensors: Iterable[torch.Tensor]) -> list[str]:
    """Reasons the Triton path cannot run on the devices of ``tensors`` (empty if it can)."""
    reasons = []
    if not HAS_TRITON:
        reasons.append("triton is not installed")
        return reasons
    for t in tensors:
        if t.device.type == "cuda":
            if INTERPRET:
                reasons.append(
                    "TRITON_INTERPRET=1 is set, so kernels run in the interpreter, which needs CPU tensors"
                )
                break
        elif t.device.type == "cpu":
            if not INTERPRET:
                reasons.append(
                    "the tensors are on the CPU: Triton runs there only in its interpreter "
                    "(set TRITON_INTERPRET=1 before importing sepkit) - use backend='torch' instead"
                )
                break
        else:
            reasons.append(f"Triton kernels do not run on device type {t.device.type!r}")
            break
    return reasons


def dtype_reasons(tensors: Iterable[torch.Tensor], dtypes: Sequence[torch.dtype] = TRITON_DTYPES) -> list[str]:
    """Reasons the Triton path cannot take these storage dtypes (empty if it can)."""
    bad = sorted({str(t.dtype) for t in tensors if t.dtype not in dtypes})
    if bad:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        return [f"the Triton path stores {names}, not {', '.join(bad)} (use backend='torch' for float64)"]
    return []


def is_automatic(backend: str | None) -> bool:
    """Whether ``backend`` leaves the choice to sepkit (None and no ``SEPKIT_BACKEND``): then an op
    may take its fastest exact eager path on the CPU instead of the reference."""
    return backend is None and _env_backend() is None


def resolve_backend(op: str, backend: str | None, tensors: Sequence[torch.Tensor], reasons: Sequence[str] = ()) -> str:
    """Return ``"triton"`` or ``"torch"`` for one call of ``op``.

    ``reasons`` are op-specific reasons the Triton path cannot run (shape limits and the like);
    device and dtype reasons are added here.
    """
    if backend is None:
        backend = _env_backend()
        explicit = False
    else:
        explicit = True
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"{op}: backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "torch":
        return "torch"
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        # a graph for other runtimes, which cannot run Triton kernels: the op records its eager
        # path (the reference, or the exact faster one), as kernels.decompositions does for a
        # graph that holds the custom op; exports check the numbers against the kernels'
        return "torch"
    why = device_reasons(tensors) + dtype_reasons(tensors) + list(reasons)
    if backend is None:
        # Automatic: Triton only for CUDA tensors it supports.
        on_cuda = all(t.device.type == "cuda" for t in tensors)
        return "triton" if on_cuda and not why else "torch"
    if why:
        source = "backend='triton'" if explicit else "SEPKIT_BACKEND=triton"
        raise BackendError(f"{op}: {source} cannot run these inputs: " + "; ".join(why))
    return "triton"
