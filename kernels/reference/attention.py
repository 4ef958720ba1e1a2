"""Reference attention: the explicit softmax(q k^T * scale + mask) v, correct in float64.

This is the readable specification of :func:`sepkit.kernels.attention`, the CPU path of the
public op and a benchmark baseline. It materialises the (Lq, Lk) score matrix, so it is meant for
checking and for small problems, not for long sequences on a GPU.

Masking rules (shared with the Triton kernels):

* ``kv_lengths[b]`` keys are valid in batch element ``b`` (keys ``j >= kv_lengths[b]`` are padding).
* ``causal=True`` lets query ``i`` see key ``j`` only when ``j <= i + (Lk - Lq)``: the causal
  diagonal is aligned to the **bottom-right** corner of the (Lq, Lk) score matrix. The last
  query sees every key; with ``Lq == Lk`` it is the usual
  lower-triangular mask; with ``Lq < Lk`` the queries are the *last* ``Lq`` positions of the key
  sequence (streaming: a new chunk of queries over a cache of past keys); with ``Lq > Lk`` the
  first ``Lq - Lk`` queries see no key at all. The alignment uses the padded lengths ``Lq`` and
  ``Lk`` of the tensors, not ``kv_lengths``, so padded self-attention (``Lq == Lk``) stays plain
  lower-triangular. Note that ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``
  aligns top-left instead; both agree when ``Lq == Lk``.
* A query row with no valid key (``kv_lengths[b] == 0``, or causal rows before the diagonal starts)
  has a **zero output** and contributes **zero gradient** to q, k and v - never NaN.
"""
from __future__ import annotations

import math

import torch


def attention_mask(
    lq: int, lk: int, kv_lengths: torch.Tensor | None, causal: bool, batch: int, device
) -> torch.Tensor | None:
    """Boolean (B, 1, Lq, Lk) mask of allowed (query, key) pairs, or None when all are allowed."""
    mask = None
    if kv_lengths is not None:
        cols = torch.arange(lk, device=device)
        mask = (cols[None, :] < kv_lengths.to(device=device, dtype=torch.int64)[:, None])  # (B, Lk)
        mask = mask[:, None, None, :].expand(batch, 1, lq, lk)
    if causal:
        rows = torch.arange(lq, device=device)[:, None]
        cols = torch.arange(lk, device=device)[None, :]
        tri = (cols <= rows + (lk - lq))[None, None]  # bottom-right aligned
        mask = tri.expand(batch, 1, lq, lk) if mask is None else (mask & tri)
    return mask


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lengths: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v with the masking rules of the module docstring.

    Args:
        q: queries (B, H, Lq, Dh).
        k: keys (B, H, Lk, Dh).
        v: values (B, H, Lk, Dv).
        kv_lengths: valid keys per batch element, integer (B,) in [0, Lk], or None (all valid).
        causal: bottom-right aligned causal mask.
        scale: score scale; ``1 / sqrt(Dh)`` when None.

    Returns:
        (B, H, Lq, Dv) in the dtype of ``q``. Float64 inputs are computed in float64; lower
        precisions in float32, rounded on return.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    out_dtype = q.dtype
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    qw, kw, vw = q.to(work), k.to(work), v.to(work)
    if kv_lengths is not None:
        # Padded keys and values are ignored entirely: zero them so that even NaN there cannot
        # reach the output (0 * NaN) or the gradient of q.
        valid = torch.arange(k.shape[-2], device=k.device)[None, :] < kv_lengths.to(k.device)[:, None]
        valid = valid[:, None, :, None]
        kw = kw.masked_fill(~valid, 0.0)
        vw = vw.masked_fill(~valid, 0.0)
    scores = torch.matmul(qw, kw.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    b, _, lq, _ = q.shape
    lk = k.shape[-2]
    mask = attention_mask(lq, lk, kv_lengths, causal, b, q.device)
    if mask is None:
        probs = torch.softmax(scores, dim=-1)
    else:
        scores = torch.where(mask, scores, torch.full((), float("-inf"), dtype=work, device=q.device))
        # Rows without a valid key would be softmax(-inf, ..., -inf) = NaN: give them finite
        # scores, then zero their probabilities, so the output and every gradient are 0 there.
        empty = ~mask.any(dim=-1, keepdim=True)
        scores = torch.where(empty, torch.zeros((), dtype=work, device=q.device), scores)
        probs = torch.softmax(scores, dim=-1) * mask
    return torch.matmul(probs, vw).to(out_dtype)


def attention_lse_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    kv_lengths: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Row log-sum-exp (natural log) of the masked scores, (B, H, Lq); ``+inf`` for empty rows.

    The Triton forward stores this statistic (in base 2) for its backward; tests compare it here.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    b, _, lq, _ = q.shape
    mask = attention_mask(lq, k.shape[-2], kv_lengths, causal, b, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    return torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse)
