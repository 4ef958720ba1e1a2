"""Input validation shared by the kernel ops: every message names the op and the argument.

Types. Every tensor argument of every public op is checked to be a ``torch.Tensor`` before
anything reads its attributes: a list, tuple, NumPy array or Python number raises ``TypeError``
naming the argument. Arguments documented as "a tensor or a sequence" (``mmd``'s
``bandwidths``, ``attention``'s ``kv_lengths``) accept sequences of numbers and refuse anything
else with ``TypeError`` naming them.

Non-finite inputs, op by op (the rule: finite input never gives NaN; a NaN or Inf that would
poison a reduction over many elements is refused; one that can only reach its own output
elements passes through):

- ``mmd`` (x, y) and ``nce`` (context, targets): every value feeds a sum over all pairs (and the
  bandwidth heuristic), so NaN / Inf raise ``ValueError`` naming the argument (skipped under
  ``torch.compile``, where a value check is a graph break).
- ``attention``: not checked by default (a full pass over q, k, v per call would cost as much
  as a memory-bound op). NaN / Inf in a valid query row gives a NaN output row for that query
  alone (and NaN gradients for the keys and values it attends to); NaN in a valid key or value
  reaches every query that attends to it; keys and values past ``kv_lengths`` are never read
  into an output, NaN there is harmless. Set the environment variable
  ``SEPKIT_CHECK_FINITE=1`` (read at import) to check q and the valid keys and values on every
  call and raise ``ValueError`` naming the argument.
- ``snake``, ``stft_mask``, ``compress_spec``, ``decompress_spec``: elementwise; NaN / Inf in an
  element of x (or of spec / mask) gives NaN / Inf in that output element only, never elsewhere.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from sepkit.errors import InputError, InputTypeError

#: ``SEPKIT_CHECK_FINITE=1``: ops whose inputs are not checked for NaN / Inf by default check them.
CHECK_FINITE = os.environ.get("SEPKIT_CHECK_FINITE", "0") not in ("", "0")

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_tensor(
    op: str,
    name: str,
    t,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
) -> None:
    """Raise TypeError/ValueError if ``t`` is not a tensor of the given rank and dtype."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise InputError(f"{op}: {name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise InputError(f"{op}: {name} must have at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise InputTypeError(f"{op}: {name} must have dtype {names}; got {str(t.dtype).replace('torch.', '')}")


def _require_tensors(op: str, items) -> None:
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """Raise ValueError unless every tensor given lives on one device."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    _require_tensors(op, items)
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise InputError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")


def check_same_dtype(op: str, **tensors: torch.Tensor) -> None:
    """Raise TypeError unless every tensor given has one dtype."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    _require_tensors(op, items)
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise InputTypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {first.dtype}")


def check_finite(op: str, name: str, t: torch.Tensor) -> None:
    """Raise ValueError if ``t`` holds NaN or Inf (for inputs that feed a reduction)."""
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{op}: {name} contains NaN or Inf")


def check_row_sets(op: str, a_name: str, a, b_name: str, b) -> int:
    """Two float (rows, D) matrices on one device, of one dtype, with the same D >= 1; returns D."""
    check_tensor(op, a_name, a, ndim=2, dtypes=FLOAT_DTYPES)
    check_tensor(op, b_name, b, ndim=2, dtypes=FLOAT_DTYPES)
    check_same_device(op, **{a_name: a, b_name: b})
    check_same_dtype(op, **{a_name: a, b_name: b})
    d = a.shape[1]
    if b.shape[1] != d:
        raise InputError(f"{op}: {a_name} has {d} features but {b_name} has {b.shape[1]} "
                         f"(shapes {tuple(a.shape)}, {tuple(b.shape)})")
    if d == 0:
        raise InputError(f"{op}: {a_name} and {b_name} have no features (D = 0)")
    return d
