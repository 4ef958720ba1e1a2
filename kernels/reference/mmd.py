"""Reference multi-kernel MMD: the readable, float64-correct spec and the CPU path.

Squared maximum mean discrepancy between the sets x (N, D) and y (M, D) under the kernel

    k(a, b) = sum_k exp(-||a - b||^2 / (2 s_k^2))          (a sum of Gaussian RBF kernels)

- ``estimator="biased"`` (V-statistic, always >= 0 in exact arithmetic, N, M >= 1):

      MMD^2 = 1/N^2 sum_{i,j} k(x_i, x_j) + 1/M^2 sum_{i,j} k(y_i, y_j) - 2/(N M) sum_{i,j} k(x_i, y_j)

- ``estimator="unbiased"`` (U-statistic of Gretton et al. 2012, eq. 3; needs N, M >= 2; may be
  negative; it is < 0 for x == y):

      MMD^2 = 1/(N(N-1)) sum_{i!=j} k(x_i, x_j) + 1/(M(M-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(N M) sum_{i,j} k(x_i, y_j)

Self pairs (i == i) use distance exactly 0 (k = number of kernels), whatever rounding the
distance formula would give.

Bandwidths s_k (the standard deviations of the Gaussians, in the units of x) are either given
explicitly or set by the multi-kernel heuristic

    s_k^2 = multipliers[k] * base,   base = mean of ||z_i - z_j||^2 over the distinct pairs
                                            (i != j) of the pooled set z = [x; y] (L = N + M rows)
                                          = 2 / (L - 1) * sum_i ||z_i - mean(z)||^2,

the closed form being O((N + M) D). With the default multipliers (0.25, 0.5, 1, 2, 4) the middle
kernel is exp(-d^2 / (2 base)). ``base`` is clamped below at ``BASE_FLOOR`` (all points
identical would otherwise give 0 / 0). The heuristic is computed on detached inputs: it is a
constant of the loss, with no gradient through it; explicit bandwidths get no gradient either.

Centring. Distances do not change when both sets move together, but ``||a||^2 + ||b||^2 - 2 a.b``
cancels when the data sit far from the origin compared with their spread (fp32 loses the
distances entirely for a spread of 1e-4 around 0.7). Both sets are therefore shifted by their
pooled mean c (:func:`pooled_centre`: a float64 sum, rounded to the inputs' dtype, detached)
before any distance is formed, here and in the Triton kernels alike. c is a constant of the
computation: d(x - c)/dx = I, so the gradient returned is that of the centred problem. The
mean's own contribution to an exact gradient, -(1/(N+M)) sum of every row's gradient, is zero
because MMD is translation invariant; leaving it out is exact, adding it would only add rounding.
Rows that are all identical centre to exactly 0 (a float64 sum of L equal fp32 values divided by
L returns the value), so collapsed sets give distances and gradients of exactly 0 whatever the
bandwidth floor makes of the gammas.

What remains. (1) A bandwidth far above every distance makes each kernel value 1 - O(d^2/s^2),
and MMD a difference of means of numbers near 1 (biased: three terms of about K each, K the
number of bandwidths): in fp32 its value is resolved to about 4 K 2^-24 (~1.2e-6 for the five
default kernels) in absolute terms; values below that are rounding noise (the gradients keep
their relative accuracy: their terms are W (x_i - z_j), not differences of kernel values).
(2) Distances are resolved to about 2^-24 of the squared norms of the *centred* rows, i.e. to
the data's own spread, not to its offset.
"""
from __future__ import annotations

from typing import Sequence

import torch

from sepkit.errors import InputError

#: The multi-kernel heuristic's multipliers of the base squared bandwidth (2^k, k = -2..2).
DEFAULT_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Lower clamp of the heuristic's base (squared distance units).
BASE_FLOOR = 1e-12
ESTIMATORS = ("unbiased", "biased")


def _pooled_mean64(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(D,) float64 mean of the rows of x and y (detached; a float64 sum of the stored values)."""
    total = x.detach().sum(0, dtype=torch.float64) + y.detach().sum(0, dtype=torch.float64)
    return total / (x.shape[0] + y.shape[0])


def pooled_centre(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The pooled mean of the rows of x and y, (D,), detached, in the dtype of x.

    Summed in float64 (exact for identical rows: their centred values are exactly 0), then
    rounded to x's dtype so that ``x - centre`` is formed exactly wherever a row lies within a
    factor 2 of the centre (Sterbenz).
    """
    return _pooled_mean64(x, y).to(x.dtype)


def heuristic_base(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared distance over distinct pairs of the pooled rows of x and y, detached.

    ``2 / (L - 1) * sum_i ||z_i - mu||^2`` with the exact (float64) mean mu, evaluated as
    ``sum_i ||z_i - c||^2 - L ||mu - c||^2`` around its rounding c = :func:`pooled_centre` (the
    terms squared in the working dtype, summed in float64): a spread of 1e-4 at an offset of 100
    keeps its base to ~1e-7 where centring on c alone would be 1e-3 off.

    Args:
        x: (N, D); y: (M, D), N + M >= 2.
    Returns:
        0-d tensor in the promoted dtype (at least float32), clamped at ``BASE_FLOOR``.
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x = x.detach().to(dtype)
    y = y.detach().to(dtype)
    n_total = x.shape[0] + y.shape[0]
    mu = _pooled_mean64(x, y)
    centre = mu.to(dtype)
    spread = (x - centre).square().sum(dtype=torch.float64) + (y - centre).square().sum(dtype=torch.float64)
    spread = (spread - n_total * (mu - centre.to(torch.float64)).square().sum()).clamp_min(0.0)
    return (2.0 * spread / (n_total - 1)).to(dtype).clamp_min(BASE_FLOOR)


def heuristic_bandwidths(x: torch.Tensor, y: torch.Tensor, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS) -> torch.Tensor:
    """Bandwidths s_k = sqrt(multipliers[k] * base) of the multi-kernel heuristic, detached, (K,)."""
    base = heuristic_base(x, y)
    mult = torch.as_tensor(list(multipliers), dtype=base.dtype, device=base.device)
    return (mult * base).sqrt()


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) squared Euclidean distances ||a_i - b_j||^2 (clamped at 0)."""
    d2 = a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min(0.0)


def _kernel_sum(d2: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """sum_k exp(-gamma_k d2) elementwise, gammas = 1 / (2 s_k^2)."""
    return torch.exp(-d2[..., None] * gammas).sum(-1)


def mmd_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: torch.Tensor | None = None,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    estimator: str = "unbiased",
) -> torch.Tensor:
    """Squared multi-kernel MMD by autograd-able PyTorch ops (materializes N x M: small inputs).

    Args:
        x: (N, D) samples of the first distribution.
        y: (M, D) samples of the second (same D, any M).
        bandwidths: (K,) kernel widths s_k > 0, or None for the heuristic with ``multipliers``.
        multipliers: heuristic multipliers of the base squared bandwidth (ignored with bandwidths).
        estimator: "unbiased" (U-statistic, N, M >= 2) or "biased" (V-statistic).
    Returns:
        0-d tensor in the promoted dtype of x and y (gradients to x and y only).
    """
    n, m = x.shape[0], y.shape[0]
    if bandwidths is None:
        bw = heuristic_bandwidths(x, y, multipliers).to(x.dtype)
    else:
        bw = bandwidths.detach().to(x.dtype)
    centre = pooled_centre(x, y)  # a constant: see "Centring" in the module docstring
    x, y = x - centre, y - centre
    gammas = 1.0 / (2.0 * bw.square())
    kxx = _kernel_sum(_sq_dists(x, x), gammas)
    kyy = _kernel_sum(_sq_dists(y, y), gammas)
    kxy = _kernel_sum(_sq_dists(x, y), gammas)
    nk = float(gammas.numel())
    eye_x = torch.eye(n, dtype=torch.bool, device=x.device)
    eye_y = torch.eye(m, dtype=torch.bool, device=y.device)
    if estimator == "biased":
        # self pairs at distance exactly 0: k = number of kernels
        kxx = torch.where(eye_x, torch.full_like(kxx, nk), kxx)
        kyy = torch.where(eye_y, torch.full_like(kyy, nk), kyy)
        return kxx.sum() / (n * n) + kyy.sum() / (m * m) - 2.0 * kxy.sum() / (n * m)
    if estimator == "unbiased":
        kxx = torch.where(eye_x, torch.zeros_like(kxx), kxx)
        kyy = torch.where(eye_y, torch.zeros_like(kyy), kyy)
        return kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2.0 * kxy.sum() / (n * m)
    raise InputError(f"mmd: estimator must be one of {ESTIMATORS}, got {estimator!r}")


__all__ = ["mmd_reference", "heuristic_base", "pooled_centre", "heuristic_bandwidths", "DEFAULT_MULTIPLIERS", "BASE_FLOOR", "ESTIMATORS"]
