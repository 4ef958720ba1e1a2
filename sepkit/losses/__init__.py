"""Training losses of sepkit.

- Separation: :class:`SISDRLoss`, :class:`SDRLoss`, :class:`CodecSISDRLoss` and the
  permutation-invariant wrapper :class:`PITLoss` (any pairwise loss, any number of sources).
- Self-supervised pretext losses (DIP frontend): :class:`MPCLoss`, :class:`MICLoss`, with
  :func:`sample_negatives`; :class:`MMDLoss` (fused multi-kernel MMD).
"""
from .pit import PITLoss, best_permutation_exhaustive, best_permutation_hungarian, pairwise_losses, reorder_sources
from .sisdr import CodecSISDRLoss, SDRLoss, SISDRLoss, sdr_loss, si_sdr_loss
from .contrastive import Branch, MICLoss, MPCLoss, diversity_loss, sample_negatives
from .mmd import MMDLoss

__all__ = [
    "SISDRLoss", "SDRLoss", "CodecSISDRLoss", "si_sdr_loss", "sdr_loss",
    "PITLoss", "pairwise_losses", "reorder_sources", "best_permutation_exhaustive", "best_permutation_hungarian",
    "MPCLoss", "MICLoss", "Branch", "sample_negatives", "diversity_loss", "MMDLoss",
]
