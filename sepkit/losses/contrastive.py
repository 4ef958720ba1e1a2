"""Pretext losses of the DIP frontend: negative sampling, MPC and MIC.

- :func:`sample_negatives`: K distractor indices per masked step, drawn uniformly from the other
  steps of the same utterance (wav2vec2's rule), never from padding.
- :class:`MPCLoss` (mixture predictive coding): the wav2vec2 contrastive loss over the masked
  steps (``sepkit.kernels.nce``) plus wav2vec2's codebook-diversity penalty.
- :class:`MICLoss` (mixture invariant coding): MPC on both branches of the Siamese network (real
  and synthetic mixtures, shared weights) plus ``alpha`` times the squared MMD
  (``sepkit.kernels.mmd``) between the two branches' contextual cues; alpha = 10 is the DIP
  paper's best setting.

Conventions: sequences are batch-first (B, T, D); ``mask_indices`` (B, T) bool marks the masked
(selected) steps; padding is given either as lengths (B,) or as a padding mask (B, T) bool with
True at padded steps. Flat indices b * T + t address rows of ``x.reshape(B * T, D)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.kernels.nce import nce
from sepkit.kernels.reference.mmd import DEFAULT_MULTIPLIERS

from .mmd import MMDLoss

NEGATIVE_POOLS = ("all", "masked")


def valid_mask(lengths_or_padding_mask: torch.Tensor | None, batch: int, steps: int, device=None) -> torch.Tensor:
    """(B, T) bool, True at real (unpadded) steps, from lengths (B,), a padding mask or None."""
    name = "sample_negatives"
    if lengths_or_padding_mask is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    p = lengths_or_padding_mask
    if not isinstance(p, torch.Tensor):
        raise InputTypeError(f"{name}: lengths_or_padding_mask must be a tensor or None, got {type(p).__name__}")
    if p.dim() == 2:
        if p.dtype != torch.bool:
            raise InputTypeError(f"{name}: a (B, T) padding mask must be bool (True = padded), got {p.dtype}")
        if tuple(p.shape) != (batch, steps):
            raise InputError(f"{name}: padding mask has shape {tuple(p.shape)} but mask_indices has {(batch, steps)}")
        return ~p
    if p.dim() == 1:
        if p.is_floating_point() or p.dtype == torch.bool:
            raise InputTypeError(f"{name}: lengths must be integers, got {p.dtype}")
        if p.shape[0] != batch:
            raise InputError(f"{name}: {p.shape[0]} lengths for a batch of {batch}")
        if bool(((p < 0) | (p > steps)).any()):
            raise InputError(f"{name}: lengths must lie in [0, {steps}], got {p.tolist()}")
        return torch.arange(steps, device=p.device)[None, :] < p[:, None]
    raise InputError(f"{name}: expected lengths (B,) or a padding mask (B, T), got shape {tuple(p.shape)}")


def sample_negatives(
    lengths_or_padding_mask: torch.Tensor | None,
    mask_indices: torch.Tensor,
    num_negatives: int = 100,
    generator: torch.Generator | None = None,
    negatives_from: str = "all",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative indices for :func:`sepkit.kernels.nce`, wav2vec2-style.

    For each masked step (b, t), K = ``num_negatives`` indices are drawn independently and
    uniformly from the P - 1 *other* candidate steps of utterance b: u ~ U{0, .., P - 2} over the
    utterance's candidates in time order, shifted by one at and past the positive's own rank, so
    the positive step is never drawn. Duplicates are allowed (sampling with replacement), so an
    utterance with P - 1 < K candidates simply repeats some (a short utterance still gets K
    negatives). Padded steps are never candidates.

    Args:
        lengths_or_padding_mask: lengths (B,) of the valid prefix of each utterance, or a (B, T)
            bool padding mask (True = padded), or None (no padding).
        mask_indices: (B, T) bool, True at the masked (selected) steps; must not be padded.
        num_negatives: K >= 0 (wav2vec2 and DIP: 100).
        generator: torch.Generator for reproducible draws (its device is used for the draw).
        negatives_from: "all" (default: every valid step of the utterance) or "masked" (only its
            masked steps: wav2vec2's default when negatives are not drawn "from everywhere").
    Returns:
        pos_idx (N,) int64, the flat index b * T + t of each masked step in row-major order (the
        order of ``x[mask_indices]``), and neg_idx (N, K) int64 flat indices, on the device of
        ``mask_indices``.
    Raises:
        ValueError: an utterance with a masked step has fewer than 2 candidate steps, a masked
        step is padded, or shapes disagree.
    """
    name = "sample_negatives"
    if not isinstance(mask_indices, torch.Tensor) or mask_indices.dim() != 2 or mask_indices.dtype != torch.bool:
        raise InputError(f"{name}: mask_indices must be a (B, T) bool tensor")
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 0:
        raise InputError(f"{name}: num_negatives must be an integer >= 0, got {num_negatives!r}")
    if negatives_from not in NEGATIVE_POOLS:
        raise InputError(f"{name}: negatives_from must be one of {NEGATIVE_POOLS}, got {negatives_from!r}")
    batch, steps = mask_indices.shape
    device = mask_indices.device
    valid = valid_mask(lengths_or_padding_mask, batch, steps, device).to(device)
    if bool((mask_indices & ~valid).any()):
        b, t = (mask_indices & ~valid).nonzero()[0].tolist()
        raise InputError(f"{name}: masked step {t} of utterance {b} is padding")
    pool = valid if negatives_from == "all" else mask_indices
    sel_b, sel_t = mask_indices.nonzero(as_tuple=True)
    pos_idx = sel_b * steps + sel_t
    n = pos_idx.numel()
    if n == 0:
        return pos_idx, torch.empty(0, num_negatives, dtype=torch.int64, device=device)
    pool_size = pool.sum(1)                                      # (B,)
    size = pool_size[sel_b]                                      # (N,)
    if bool((size < 2).any()):
        b = int(sel_b[size < 2][0])
        raise InputError(
            f"{name}: utterance {b} has {int(pool_size[b])} candidate step(s) ({negatives_from!r}) but a "
            "masked step needs at least one other step to draw negatives from"
        )
    rank = (pool.cumsum(1) - 1)[sel_b, sel_t]                    # the positive's rank among candidates
    candidates = pool.reshape(-1).nonzero().squeeze(1)          # flat indices, time order per utterance
    first = (torch.cumsum(pool_size, 0) - pool_size)[sel_b]      # offset of each utterance in candidates
    gen_device = generator.device if generator is not None else device
    draw = torch.rand(n, num_negatives, generator=generator, device=gen_device, dtype=torch.float64).to(device)
    u = (draw * (size - 1)[:, None]).floor().long()
    u = torch.minimum(u, (size - 2)[:, None])                    # guard the (measure-zero) draw of 1.0
    u = u + (u >= rank[:, None]).long()                          # skip the positive itself
    neg_idx = candidates[first[:, None] + u]
    return pos_idx, neg_idx


def diversity_loss(codebook_logits: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """wav2vec2's codebook-diversity penalty (G V - sum_g exp(H(mean softmax_g))) / (G V).

    Args:
        codebook_logits: (B, T, G, V) logits of the quantizer's G codebooks of V entries.
        valid: optional (B, T) bool, True at steps to average over (padding excluded).
    Returns:
        0-d float32 (float64 for float64 logits) in [0, 1 - 1/V]: 0 when every entry of every
        codebook is used equally on average.
    """
    if codebook_logits.dim() != 4:
        raise InputError(f"diversity_loss: codebook_logits must be (B, T, G, V), got {tuple(codebook_logits.shape)}")
    dtype = torch.float64 if codebook_logits.dtype == torch.float64 else torch.float32
    probs = torch.softmax(codebook_logits.to(dtype), dim=-1)
    if valid is not None:
        probs = probs[valid]                                     # (n, G, V)
    else:
        probs = probs.reshape(-1, *probs.shape[-2:])
    if probs.shape[0] == 0:
        raise InputError("diversity_loss: no valid steps to average over")
    avg = probs.mean(0)                                          # (G, V)
    perplexity = torch.exp(-torch.xlogy(avg, avg).sum(-1)).sum()
    num_vars = avg.numel()
    return (num_vars - perplexity) / num_vars


def _check_sequences(name: str, context: torch.Tensor, targets: torch.Tensor, mask_indices: torch.Tensor):
    if context.dim() != 3 or targets.dim() != 3:
        raise InputError(f"{name}: context and targets must be (B, T, D), got {tuple(context.shape)} and {tuple(targets.shape)}")
    if context.shape != targets.shape:
        raise InputError(f"{name}: context {tuple(context.shape)} and targets {tuple(targets.shape)} differ in shape")
    if tuple(mask_indices.shape) != tuple(context.shape[:2]):
        raise InputError(f"{name}: mask_indices has shape {tuple(mask_indices.shape)}, expected {tuple(context.shape[:2])}")


class MPCLoss(nn.Module):
    """Mixture predictive coding: wav2vec2's contrastive loss plus its codebook-diversity penalty.

    At every masked step the context vector must pick its own quantized target out of
    ``num_negatives`` distractors sampled from the other steps of the same utterance
    (:func:`sample_negatives`), by cosine similarity over ``temperature``
    (:func:`sepkit.kernels.nce`). The diversity penalty (:func:`diversity_loss`) is added with
    weight ``diversity_weight`` (wav2vec2: 0.1).

    Reduction: "mean" (default) averages the contrastive loss over the masked steps and adds
    ``diversity_weight * L_d``; "sum" is wav2vec2's criterion value: the sum over masked steps
    plus ``diversity_weight * L_d * N`` (N masked steps), which wav2vec2 divides by N when it
    normalises gradients, so both give the same training signal.

    Args:
        num_negatives: distractors per masked step (K = 100).
        temperature: cosine-similarity temperature (0.1).
        diversity_weight: weight of the diversity penalty (0.1); 0 disables it.
        reduction: "mean" or "sum".
        negatives_from: "all" valid steps or only the "masked" ones (see :func:`sample_negatives`).
        backend: kernel backend for :func:`sepkit.kernels.nce`.

    Shapes (forward):
        context: (B, T, D) context-network outputs projected to the target dimension.
        targets: (B, T, D) quantized targets (detach them or not, as your model requires).
        mask_indices: (B, T) bool, True at masked steps (at least one).
        lengths_or_padding_mask: lengths (B,) or padding mask (B, T) (True = padded), or None.
        codebook_logits: optional (B, T, G, V) quantizer logits for the diversity penalty.
        generator: torch.Generator for the negative sampling.
    Returns:
        0-d float32 loss, or ``(loss, parts)`` with ``return_parts=True``, parts a dict of
        detached "contrastive", "diversity" and "num_masked".
    """

    def __init__(
        self,
        num_negatives: int = 100,
        temperature: float = 0.1,
        diversity_weight: float = 0.1,
        reduction: str = "mean",
        negatives_from: str = "all",
        backend: str | None = None,
    ):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise InputError(f"MPCLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        if negatives_from not in NEGATIVE_POOLS:
            raise InputError(f"MPCLoss: negatives_from must be one of {NEGATIVE_POOLS}, got {negatives_from!r}")
        if not temperature > 0:
            raise InputError(f"MPCLoss: temperature must be > 0, got {temperature}")
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.diversity_weight = float(diversity_weight)
        self.reduction = reduction
        self.negatives_from = negatives_from
        self.backend = backend

    def forward(
        self,
        context: torch.Tensor,
        targets: torch.Tensor,
        mask_indices: torch.Tensor,
        lengths_or_padding_mask: torch.Tensor | None = None,
        codebook_logits: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_parts: bool = False,
    ):
        _check_sequences("MPCLoss", context, targets, mask_indices)
        batch, steps, dim = context.shape
        pos_idx, neg_idx = sample_negatives(
            lengths_or_padding_mask, mask_indices, self.num_negatives, generator, self.negatives_from
        )
        n = pos_idx.numel()
        if n == 0:
            raise InputError("MPCLoss: mask_indices selects no step")
        flat_context = context.reshape(batch * steps, dim)
        contrastive = nce(flat_context[pos_idx], targets.reshape(batch * steps, dim), pos_idx, neg_idx,
                          self.temperature, self.reduction, backend=self.backend)
        loss = contrastive
        diversity = None
        if codebook_logits is not None and self.diversity_weight != 0:
            if tuple(codebook_logits.shape[:2]) != (batch, steps):
                raise InputError(
                    f"MPCLoss: codebook_logits has shape {tuple(codebook_logits.shape)}, expected ({batch}, {steps}, G, V)"
                )
            valid = valid_mask(lengths_or_padding_mask, batch, steps, context.device).to(context.device)
            diversity = diversity_loss(codebook_logits, valid)
            scale = self.diversity_weight * (n if self.reduction == "sum" else 1)
            loss = loss + scale * diversity.to(loss.dtype)
        if not return_parts:
            return loss
        parts = {
            "contrastive": contrastive.detach(),
            "diversity": diversity.detach() if diversity is not None else None,
            "num_masked": n,
        }
        return loss, parts

    def extra_repr(self) -> str:
        return (f"num_negatives={self.num_negatives}, temperature={self.temperature}, "
                f"diversity_weight={self.diversity_weight}, reduction={self.reduction!r}")


@dataclass
class Branch:
    """One branch of the Siamese network (real or synthetic mixtures) as :class:`MICLoss` takes it.

    Attributes:
        context: (B, T, D) context outputs projected to the target dimension (MPC's predictions).
        targets: (B, T, D) quantized targets.
        mask_indices: (B, T) bool masked steps.
        lengths_or_padding_mask: lengths (B,), padding mask (B, T) (True = padded) or None.
        codebook_logits: optional (B, T, G, V) quantizer logits (diversity penalty).
        cues: optional (B, T, C) contextual cues compared by MMD; ``context`` when None.
    """

    context: torch.Tensor
    targets: torch.Tensor
    mask_indices: torch.Tensor
    lengths_or_padding_mask: torch.Tensor | None = None
    codebook_logits: torch.Tensor | None = None
    cues: torch.Tensor | None = None

    def valid_cues(self) -> torch.Tensor:
        """(n_valid, C) cue vectors of the unpadded steps, pooled over the batch."""
        cues = self.context if self.cues is None else self.cues
        if cues.dim() != 3 or tuple(cues.shape[:2]) != tuple(self.context.shape[:2]):
            raise InputError(f"MICLoss: cues must be (B, T, C) matching context, got {tuple(cues.shape)}")
        valid = valid_mask(self.lengths_or_padding_mask, cues.shape[0], cues.shape[1], cues.device).to(cues.device)
        return cues[valid]


class MICLoss(nn.Module):
    """Mixture invariant coding: MPC on both Siamese branches + alpha * MMD between their cues.

        L = MPC(real) + MPC(synthetic) + alpha * MMD^2(cues(real), cues(synthetic))

    The MMD compares the contextual cues of every unpadded step of the real batch with those of
    the synthetic batch (N != M allowed), with the multi-kernel Gaussian MMD of
    :func:`sepkit.kernels.mmd` (bandwidth heuristic by default, a constant of the loss).

    Args:
        alpha: weight of the MMD term (DIP paper's best: 10).
        num_negatives, temperature, diversity_weight, reduction, negatives_from: as :class:`MPCLoss`.
        bandwidths, multipliers, estimator: as :func:`sepkit.kernels.mmd` (unbiased by default).
        backend: kernel backend for both ops.

    Shapes (forward): two :class:`Branch` objects; output a 0-d float32 loss, or
    ``(loss, parts)`` with ``return_parts=True`` (parts: "mpc_real", "mpc_synthetic", "mmd",
    detached).
    """

    def __init__(
        self,
        alpha: float = 10.0,
        num_negatives: int = 100,
        temperature: float = 0.1,
        diversity_weight: float = 0.1,
        reduction: str = "mean",
        negatives_from: str = "all",
        bandwidths: Sequence[float] | None = None,
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        estimator: str = "unbiased",
        backend: str | None = None,
    ):
        super().__init__()
        self.alpha = float(alpha)
        self.mpc = MPCLoss(num_negatives, temperature, diversity_weight, reduction, negatives_from, backend)
        self.mmd = MMDLoss(bandwidths, multipliers, estimator, backend)

    def forward(self, real: Branch, synthetic: Branch, generator: torch.Generator | None = None,
                return_parts: bool = False):
        mpc_real = self.mpc(real.context, real.targets, real.mask_indices, real.lengths_or_padding_mask,
                            real.codebook_logits, generator)
        mpc_synth = self.mpc(synthetic.context, synthetic.targets, synthetic.mask_indices,
                             synthetic.lengths_or_padding_mask, synthetic.codebook_logits, generator)
        x, y = real.valid_cues(), synthetic.valid_cues()
        if x.shape[-1] != y.shape[-1]:
            raise InputError(f"MICLoss: real cues have {x.shape[-1]} features, synthetic {y.shape[-1]}")
        discrepancy = self.mmd(x, y)
        loss = mpc_real + mpc_synth + self.alpha * discrepancy.to(mpc_real.dtype)
        if not return_parts:
            return loss
        return loss, {"mpc_real": mpc_real.detach(), "mpc_synthetic": mpc_synth.detach(), "mmd": discrepancy.detach()}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


__all__ = ["sample_negatives", "diversity_loss", "valid_mask", "MPCLoss", "MICLoss", "Branch"]
