"""Reference Snake: the readable, float64-correct spec and the CPU path.

    y = x + sin(a * x)^2 / (b + eps),   a = alpha, b = beta if given else alpha, eps = 1e-9,

with ``a = exp(alpha)`` and ``b = exp(beta)`` under ``logscale``; alpha and beta hold one value per
channel along ``dim``. Without beta this is the Snake of the Descript Audio Codec (DAC), written
``x + (alpha + 1e-9).reciprocal() * sin(alpha * x) ** 2``; with beta it is BigVGAN's SnakeBeta.
"""
from __future__ import annotations

import torch

EPS = 1e-9


def param_view(p: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """Reshape a per-channel vector (C,) to broadcast along ``dim`` of an ``ndim``-d tensor."""
    shape = [1] * ndim
    shape[dim] = p.numel()
    return p.reshape(shape)


def snake_reference(
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor | None = None,
    dim: int = 1,
    logscale: bool = False,
) -> torch.Tensor:
    """Snake by autograd-able PyTorch ops, computed in the promoted dtype of the inputs.

    Args:
        x: input of any shape with C channels along ``dim``.
        alpha: (C,) frequency parameters.
        beta: optional (C,) magnitude parameters (SnakeBeta); alpha when None.
        dim: the channel dimension of ``x`` (1 for (B, C, T), -1 for (B, T, C)).
        logscale: parameters are log-values (exponentiated before use).
    Returns:
        A tensor shaped like ``x`` in the promoted dtype of x, alpha and beta.
    """
    dim = dim % x.dim()
    a = param_view(alpha, x.dim(), dim)
    b = a if beta is None else param_view(beta, x.dim(), dim)
    if logscale:
        a = torch.exp(a)
        b = torch.exp(b)
    return x + (b + EPS).reciprocal() * torch.sin(a * x) ** 2
