"""Permutation-invariant training (PIT) for any pairwise loss and any number of sources.

The wrapper evaluates the loss of every (estimate i, target j) pair once, an ``S x S`` matrix per
example, then picks the assignment of estimates to targets with the smallest mean loss:

- exhaustively over the ``S!`` permutations when ``S <= max_exhaustive`` (4 by default: 24
  permutations, vectorised over the batch);
- by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``, ``O(S^3)``, on the CPU)
  beyond. Both minimise the same sum, so they return the same loss (and, without ties, the same
  permutation) wherever both apply.

Non-finite values: both searches refuse a pairwise loss matrix holding NaN or Inf with the same
ValueError, naming the matrix and the batch items (a NaN has no order, so an enumeration would
otherwise return an arbitrary permutation and a NaN loss); :class:`PITLoss` first checks its
``estimate`` and ``target`` and names the one that is not finite.

The search itself carries no gradient; the returned loss is the mean of the chosen matrix entries,
so gradients flow through the pairwise loss as usual.

Permutation convention: ``perm[b, j]`` is the index of the estimate assigned to target ``j``;
``reorder_sources(estimate, perm)[b, j]`` is then aligned with ``target[b, j]``.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
from torch import nn

from sepkit.errors import InputError, InputTypeError

PairLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_sources(op: str, estimate, target) -> None:
    for name, t in (("estimate", estimate), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise InputError(f"{op}: {name} must have shape (B, S, ...), got {tuple(t.shape)}")
    if estimate.shape != target.shape:
        raise InputError(
            f"{op}: estimate shape {tuple(estimate.shape)} differs from target shape {tuple(target.shape)} "
            "(expected (B, S, ...) with the same number of sources S)"
        )
    if estimate.shape[1] < 1:
        raise InputError(f"{op}: need at least one source, got shape {tuple(estimate.shape)}")


def pairwise_losses(loss_fn: PairLoss, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Matrix of pair losses ``M[b, i, j] = loss_fn(estimate[b, i], target[b, j])``.

    Args:
        loss_fn: per-pair loss taking ``(N, *)`` estimates and targets and returning ``(N,)``
            (e.g. ``SISDRLoss(reduction="none")``). Called once on all ``B * S * S`` pairs.
        estimate: (B, S, *) estimates.
        target: (B, S, *) targets.

    Returns:
        (B, S, S) losses, rows indexed by estimate, columns by target.
    """
    _check_sources("pairwise_losses", estimate, target)
    B, S = estimate.shape[:2]
    feat = estimate.shape[2:]
    est = estimate.unsqueeze(2).expand(B, S, S, *feat).reshape(B * S * S, *feat)
    tgt = target.unsqueeze(1).expand(B, S, S, *feat).reshape(B * S * S, *feat)
    values = loss_fn(est, tgt)
    if not isinstance(values, torch.Tensor) or values.shape != (B * S * S,):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise InputError(
            f"pairwise_losses: loss_fn must return one loss per pair, shape ({B * S * S},), got {got}; "
            "use reduction='none'"
        )
    return values.view(B, S, S)


def _check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError naming ``name`` and its first bad batch items if ``t`` (B, ...) has NaN/Inf."""
    bad = ~torch.isfinite(t.detach()).reshape(t.shape[0], -1).all(dim=1)
    if bool(bad.any()):
        items = torch.nonzero(bad).flatten()[:8].tolist()
        raise InputError(f"PIT: {name} contains NaN or Inf (batch items {items}); cannot assign sources")


_PERMS: dict[int, torch.Tensor] = {}


def _all_permutations(n: int) -> torch.Tensor:
    if n not in _PERMS:
        _PERMS[n] = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long).view(-1, n)
    return _PERMS[n]


def best_permutation_exhaustive(matrix: torch.Tensor) -> torch.Tensor:
    """Minimising permutation by enumeration. ``matrix`` (B, S, S) [estimate, target] -> perm (B, S)."""
    _check_finite("the pairwise loss matrix", matrix)
    B, S, _ = matrix.shape
    perms = _all_permutations(S).to(matrix.device)  # (P, S): perms[p, j] = estimate for target j
    cost = matrix.detach()[:, perms, torch.arange(S, device=matrix.device)].sum(dim=-1)  # (B, P)
    return perms[cost.argmin(dim=1)]


def best_permutation_hungarian(matrix: torch.Tensor) -> torch.Tensor:
    """Minimising permutation by the Hungarian algorithm. ``matrix`` (B, S, S) -> perm (B, S)."""
    from scipy.optimize import linear_sum_assignment

    _check_finite("the pairwise loss matrix", matrix)
    cost = matrix.detach().to("cpu", torch.float64).numpy()
    B, S, _ = cost.shape
    perm = np.empty((B, S), dtype=np.int64)
    for b in range(B):
        rows, cols = linear_sum_assignment(cost[b])
        perm[b, cols] = rows
    return torch.from_numpy(perm).to(matrix.device)


def reorder_sources(sources: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder ``sources`` (B, S, *) by ``perm`` (B, S): ``out[b, j] = sources[b, perm[b, j]]``."""
    if perm.shape != sources.shape[:2]:
        raise InputError(
            f"reorder_sources: perm shape {tuple(perm.shape)} does not match sources {tuple(sources.shape[:2])}"
        )
    index = perm.view(*perm.shape, *([1] * (sources.dim() - 2))).expand_as(sources)
    return torch.gather(sources, 1, index)


class PITLoss(nn.Module):
    """Permutation-invariant wrapper around a pairwise loss.

    Args:
        loss_fn: per-pair loss ``(N, *), (N, *) -> (N,)``, e.g. ``SISDRLoss(reduction="none")``
            or any callable of that form.
        search: ``"auto"`` (exhaustive up to ``max_exhaustive`` sources, Hungarian beyond),
            ``"exhaustive"`` or ``"hungarian"``.
        max_exhaustive: largest S searched exhaustively under ``"auto"``.
        reduction: ``"mean"`` over the batch, ``"sum"``, or ``"none"`` for (B,) losses.

    ``forward(estimate, target)`` with (B, S, *) tensors returns ``(loss, perm)``: the loss of the
    best assignment (mean over sources, then reduced over the batch) and ``perm`` (B, S), with
    ``perm[b, j]`` the estimate assigned to target j (see :func:`reorder_sources`).
    """

    SEARCHES = ("auto", "exhaustive", "hungarian")

    def __init__(self, loss_fn: PairLoss, search: str = "auto", max_exhaustive: int = 4, reduction: str = "mean"):
        super().__init__()
        if not callable(loss_fn):
            raise InputTypeError(f"PITLoss: loss_fn must be callable, got {type(loss_fn).__name__}")
        if search not in self.SEARCHES:
            raise InputError(f"PITLoss: search must be one of {self.SEARCHES}, got {search!r}")
        if reduction not in ("mean", "sum", "none"):
            raise InputError(f"PITLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if max_exhaustive < 1:
            raise InputError(f"PITLoss: max_exhaustive must be >= 1, got {max_exhaustive}")
        self.loss_fn, self.search, self.max_exhaustive, self.reduction = loss_fn, search, max_exhaustive, reduction

    def best_permutation(self, matrix: torch.Tensor) -> torch.Tensor:
        """perm (B, S) minimising the summed entries of ``matrix`` (B, S, S) [estimate, target]."""
        S = matrix.shape[-1]
        exhaustive = self.search == "exhaustive" or (self.search == "auto" and S <= self.max_exhaustive)
        if exhaustive:
            return best_permutation_exhaustive(matrix)
        return best_permutation_hungarian(matrix)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_sources("PITLoss", estimate, target)
        _check_finite("estimate", estimate)
        _check_finite("target", target)
        matrix = pairwise_losses(self.loss_fn, estimate, target)
        perm = self.best_permutation(matrix)
        chosen = torch.gather(matrix, 1, perm.unsqueeze(1)).squeeze(1)  # (B, S): M[b, perm[b, j], j]
        loss = chosen.mean(dim=1)
        if self.reduction == "mean":
            loss = loss.mean()
        elif self.reduction == "sum":
            loss = loss.sum()
        return loss, perm

    def extra_repr(self) -> str:
        return f"search={self.search!r}, max_exhaustive={self.max_exhaustive}, reduction={self.reduction!r}"


__all__ = [
    "PITLoss", "pairwise_losses", "reorder_sources", "best_permutation_exhaustive", "best_permutation_hungarian",
]
