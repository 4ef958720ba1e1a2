"""Output allocation for the Triton paths, with optional poisoning for tests.

Every Triton wrapper allocates its outputs through :func:`empty`. Inside
:func:`poison_outputs` (or with ``SEPKIT_POISON=1``) fresh outputs are filled with NaN (floating
dtypes) or a large sentinel (integers), so any element a kernel forgets to write fails a
comparison instead of passing by luck.
"""
from __future__ import annotations

import contextlib
import os

import torch

_POISON = os.environ.get("SEPKIT_POISON", "0") not in ("", "0")


def poisoning() -> bool:
    """Whether fresh outputs are being poisoned."""
    return _POISON


@contextlib.contextmanager
def poison_outputs(enabled: bool = True):
    """Context manager: poison every output the Triton paths allocate while it is active."""
    global _POISON
    previous, _POISON = _POISON, enabled
    try:
        yield
    finally:
        _POISON = previous


def empty(*shape, dtype: torch.dtype, device) -> torch.Tensor:
    """``torch.empty`` that fills with NaN / a sentinel while poisoning is on."""
    out = torch.empty(*shape, dtype=dtype, device=device)
    if _POISON:
        if out.is_floating_point() or out.is_complex():
            out.fill_(float("nan"))
        else:
            out.fill_(torch.iinfo(dtype).max if dtype != torch.bool else True)
    return out


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`empty` with the shape, dtype and device of ``t`` (contiguous)."""
    return empty(*t.shape, dtype=dtype or t.dtype, device=t.device)
