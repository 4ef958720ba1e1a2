"""Reference wav2vec2-style noise-contrastive loss: the readable, float64-correct spec and the CPU path.

For each selected step i (row i of ``context``), with candidates j = 0..K

    cand(i, 0) = pos_idx[i],   cand(i, j) = neg_idx[i, j - 1]
    cos(i, j)  = <c_i, t_cand(i,j)> / (max(||c_i||, EPS) * max(||t_cand(i,j)||, EPS))
    logit(i,j) = cos(i, j) / temperature,  set to -inf for a negative (j >= 1) whose target row is
                 identical to the positive's (every element equal, as wav2vec2 does; an index
                 equal to pos_idx[i] is the extreme case)
    loss_i     = logsumexp_j logit(i, j) - logit(i, 0)      (cross-entropy, the positive is class 0)

reduced by "sum" (wav2vec2's choice), "mean" or "none" (the (N,) per-step losses). The -inf
logits carry no gradient. The reference gathers the (N, K + 1, D) candidates; the kernel never does.
"""
from __future__ import annotations

import torch

from sepkit.errors import InputError

#: Floor of the norms in the cosine (a zero vector has cosine 0 with everything).
EPS = 1e-8
REDUCTIONS = ("sum", "mean", "none")


def nce_logits_reference(
    context: torch.Tensor,
    targets: torch.Tensor,
    pos_idx: torch.Tensor,
    neg_idx: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """(N, K + 1) logits, the positive in column 0, -inf for negatives identical to the positive."""
    cand = torch.cat([pos_idx[:, None], neg_idx], dim=1)                 # (N, K + 1)
    t = targets[cand]                                                    # (N, K + 1, D)
    dots = (context[:, None, :] * t).sum(-1)
    c_norm = torch.linalg.vector_norm(context, dim=-1).clamp_min(EPS)
    t_norm = torch.linalg.vector_norm(t, dim=-1).clamp_min(EPS)
    logits = dots / (c_norm[:, None] * t_norm) / temperature
    same = (t[:, 1:, :] == t[:, :1, :]).all(-1)                          # (N, K)
    same = torch.cat([same.new_zeros(same.shape[0], 1), same], dim=1)
    return logits.masked_fill(same, float("-inf"))


def nce_reference(
    context: torch.Tensor,
    targets: torch.Tensor,
    pos_idx: torch.Tensor,
    neg_idx: torch.Tensor,
    temperature: float = 0.1,
    reduction: str = "sum",
) -> torch.Tensor:
    """Contrastive loss by autograd-able PyTorch ops.

    Args:
        context: (N, D) context vectors of the selected steps.
        targets: (T_total, D) target (quantized) vectors of all steps, flattened over the batch.
        pos_idx: (N,) int64 row of ``targets`` holding each step's positive.
        neg_idx: (N, K) int64 rows of ``targets`` holding each step's negatives (K >= 0).
        temperature: softmax temperature (> 0).
        reduction: "sum", "mean" or "none".
    Returns:
        0-d tensor ("sum", "mean") or (N,) ("none") in the promoted dtype of the inputs.
    """
    logits = nce_logits_reference(context, targets, pos_idx, neg_idx, temperature)
    loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise InputError(f"nce: reduction must be one of {REDUCTIONS}, got {reduction!r}")


__all__ = ["nce_reference", "nce_logits_reference", "EPS", "REDUCTIONS"]
