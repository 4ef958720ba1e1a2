"""Multi-head scaled dot-product attention: public op and backend choice.

``attention(q, k, v, kv_lengths=None, causal=False, scale=None, backend=None)`` computes
softmax(q k^T * scale + mask) v for q (B, H, Lq, Dh) and k, v (B, H, Lk, Dh); see
``sepkit.kernels.reference.attention`` for the masking rules (padded keys, bottom-right causal,
rows without a valid key give zero output and zero gradient).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._backend import resolve_backend
from ._checks import check_same_device, check_same_dtype, check_tensor
from .reference.attention import attention_reference

OP = "attention"


def _triton_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    return ["the Triton attention kernels are not written yet"]


def _check_lengths(kv_lengths, batch: int, lk: int, device) -> torch.Tensor | None:
    if kv_lengths is None:
        return None
    if isinstance(kv_lengths, (list, tuple)):
        kv_lengths = torch.tensor(kv_lengths, dtype=torch.int32, device=device)
    if not isinstance(kv_lengths, torch.Tensor):
        raise TypeError(f"{OP}: kv_lengths must be a tensor or a list of ints, got {type(kv_lengths).__name__}")
    if kv_lengths.is_floating_point() or kv_lengths.is_complex() or kv_lengths.dtype == torch.bool:
        raise TypeError(f"{OP}: kv_lengths must have an integer dtype, got {kv_lengths.dtype}")
    if kv_lengths.shape != (batch,):
        raise ValueError(f"{OP}: kv_lengths must have shape ({batch},) (one length per batch element), "
                         f"got {tuple(kv_lengths.shape)}")
    kv_lengths = kv_lengths.to(device=device, dtype=torch.int32)
    if not torch.compiler.is_compiling():  # a value check is a graph break under torch.compile
        lo, hi = int(kv_lengths.min()) if batch else 0, int(kv_lengths.max()) if batch else 0
        if lo < 0 or hi > lk:
            raise ValueError(f"{OP}: kv_lengths must lie in [0, Lk={lk}], got values in [{lo}, {hi}]")
    return kv_lengths


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lengths: torch.Tensor | Sequence[int] | None = None,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v, flash-style on the Triton backend.

    Args:
        q: queries (B, H, Lq, Dh), float32/float16/bfloat16 (float64 on the torch backend).
        k: keys (B, H, Lk, Dh), same dtype and device as ``q``; Lk may differ from Lq either way.
        v: values (B, H, Lk, Dh).
        kv_lengths: number of valid keys per batch element, integer (B,) in [0, Lk] (a tensor or a
            list of ints), or None when every key is valid. Keys past the length are ignored
            entirely (even NaN there does not reach the output).
        causal: query i sees keys j <= i + Lk - Lq (bottom-right aligned causal mask).
        scale: score scale, ``1 / sqrt(Dh)`` when None.
        backend: "triton", "torch" (the reference) or None (automatic).

    Returns:
        (B, H, Lq, Dh) in the dtype of ``q``. Rows with no valid key are zero (and pass zero
        gradient back).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP, name, t, ndim=4)
    check_same_dtype(OP, q=q, k=k, v=v)
    check_same_device(OP, q=q, k=k, v=v)
    b, h, lq, dh = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != dh:
        raise ValueError(f"{OP}: k must have shape (B={b}, H={h}, Lk, Dh={dh}) to match q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{OP}: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if not isinstance(causal, bool):
        raise TypeError(f"{OP}: causal must be a bool, got {type(causal).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(dh)
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{OP}: scale must be a finite number or None, got {scale!r}")
    lk = k.shape[2]
    kv_lengths = _check_lengths(kv_lengths, b, lk, q.device)
    which = resolve_backend(OP, backend, (q, k, v), _triton_reasons(q, k, v))
    if which == "torch":
        return attention_reference(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=float(scale))
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["attention"]
