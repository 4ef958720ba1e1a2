"""Maximum mean discrepancy as a loss module, on the fused multi-kernel MMD op."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sepkit.errors import InputError
from sepkit.kernels.mmd import mmd
from sepkit.kernels.reference.mmd import DEFAULT_MULTIPLIERS, ESTIMATORS


class MMDLoss(nn.Module):
    """Squared multi-kernel MMD between two sets of vectors (``sepkit.kernels.mmd``).

    ``k(a, b) = sum_k exp(-||a - b||^2 / (2 s_k^2))``, with fixed ``bandwidths`` s_k or, by
    default, the multi-kernel heuristic ``s_k^2 = multipliers[k] * mean pairwise squared
    distance`` of the pooled inputs, recomputed on every call and treated as a constant (no
    gradient flows through the bandwidths).

    Args:
        bandwidths: fixed kernel widths (units of the inputs), or None for the heuristic.
        multipliers: heuristic multipliers of the base squared width (default 0.25 .. 4, 2^k).
        estimator: "unbiased" (U-statistic, each set needs >= 2 rows) or "biased" (V-statistic).
        backend: kernel backend ("triton", "torch" or None for automatic).

    Shapes: x (N, D) and y (M, D), or (..., D) which is flattened to rows; output a scalar
    (float32, float64 for float64 inputs).
    """

    def __init__(
        self,
        bandwidths: Sequence[float] | None = None,
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        estimator: str = "unbiased",
        backend: str | None = None,
    ):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise InputError(f"MMDLoss: estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.bandwidths = None if bandwidths is None else tuple(float(b) for b in bandwidths)
        self.multipliers = tuple(float(m) for m in multipliers)
        self.estimator = estimator
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or y.dim() < 2:
            raise InputError(f"MMDLoss: inputs need shape (..., D), got {tuple(x.shape)} and {tuple(y.shape)}")
        x = x.reshape(-1, x.shape[-1])
        y = y.reshape(-1, y.shape[-1])
        return mmd(x, y, self.bandwidths, self.multipliers, self.estimator, backend=self.backend)

    def extra_repr(self) -> str:
        bw = f"bandwidths={self.bandwidths}" if self.bandwidths is not None else f"multipliers={self.multipliers}"
        return f"{bw}, estimator={self.estimator!r}"


__all__ = ["MMDLoss"]
