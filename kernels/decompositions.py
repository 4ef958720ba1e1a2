"""The kernel ops written as their plain-PyTorch references, for graph export.

A graph traced where the Triton path runs (CUDA tensors, or ``SEPKIT_BACKEND=triton`` under
Triton's interpreter) holds the forward custom ops ``sepkit::snake_fwd``,
``sepkit::attention_fwd`` and ``sepkit::stft_mask_fwd``. Nothing outside PyTorch can run a Triton
kernel, so an exported graph replaces each by its reference (``sepkit.kernels.reference``):
:func:`reference_decompositions` is the table that ``ExportedProgram.run_decompositions`` takes.
Each entry computes what the op computes (float32 maths for low-precision storage, as the kernel
does), with the op's exact signature and outputs; ``tests/test_export.py`` compares each with the
op itself on random inputs. The backward ops (and the loss ops ``mmd`` and ``nce``) have no entry:
an inference graph never holds them, and an exporter that meets one must refuse
(:func:`unsupported_ops` names them).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .reference.attention import attention_lse_reference, attention_reference
from .reference.snake import snake_reference
from .reference.stft_mask import bound_mask_reference, compress_reference, decompress_reference

_LN2 = math.log(2.0)


def _math_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def snake_fwd(x: torch.Tensor, alpha: torch.Tensor, beta: Optional[torch.Tensor], dim: int,
              logscale: bool) -> torch.Tensor:
    """``sepkit::snake_fwd`` by :func:`snake_reference`: y shaped like x, in x's dtype."""
    md = _math_dtype(x, alpha, *(() if beta is None else (beta,)))
    b = None if beta is None else beta.to(md)
    return snake_reference(x.to(md), alpha.to(md), b, dim, logscale).to(x.dtype)


def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lengths: Optional[torch.Tensor],
                  causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``sepkit::attention_fwd`` by :func:`attention_reference`: (out (B, H, Lq, Dh) in q's dtype,
    the row log-sum-exp in base 2 (B, H, Lq) float32, +inf for a row without keys)."""
    out = attention_reference(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=scale)
    lse = attention_lse_reference(q, k, kv_lengths=kv_lengths, causal=causal, scale=scale) / _LN2
    return out, lse.to(torch.float32)


def stft_mask_fwd(spec: torch.Tensor, mask: torch.Tensor, kind: str, bound: str, compress: bool,
                  decompress: bool, power: float, scale: float) -> torch.Tensor:
    """``sepkit::stft_mask_fwd`` by the references: compress ``spec`` (..., 2) when ``compress``,
    apply the bounded mask unless ``kind == "none"`` (the op's power-law-only form), expand back
    when ``decompress``; in spec's dtype."""
    md = _math_dtype(spec, mask)
    x = spec.to(md)
    if compress:
        x = compress_reference(x, power, scale)
    if kind != "none":
        m = bound_mask_reference(mask.to(md), kind, bound)
        if kind == "magnitude":
            x = m[..., None] * x
        else:
            x = torch.stack((m[..., 0] * x[..., 0] - m[..., 1] * x[..., 1],
                             m[..., 0] * x[..., 1] + m[..., 1] * x[..., 0]), dim=-1)
    if decompress:
        x = decompress_reference(x, power, scale)
    return x.to(spec.dtype)


def reference_decompositions() -> dict[torch._ops.OpOverload, Callable]:
    """``{custom op overload: its reference}`` for every forward op an inference graph may hold."""
    from . import attention, snake, stft_mask  # noqa: F401  (registers the ops)

    ops = torch.ops.sepkit
    return {ops.snake_fwd.default: snake_fwd, ops.attention_fwd.default: attention_fwd,
            ops.stft_mask_fwd.default: stft_mask_fwd}


def unsupported_ops(graph: torch.fx.Graph) -> list[str]:
    """Names of the ``sepkit::`` ops left in ``graph`` (those without a reference entry)."""
    names = set()
    for node in graph.nodes:
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and \
                target.namespace == "sepkit":
            names.add(str(target.name()))
    return sorted(names)


__all__ = ["reference_decompositions", "unsupported_ops", "snake_fwd", "attention_fwd", "stft_mask_fwd"]
