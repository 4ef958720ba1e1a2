"""Speech activity and what an enhancer leaves where there is no speech: frame activity labels
of clean speech, the SI-SIR / SI-SAR split of an estimate's error, and the level of the estimate
in the silent frames of the reference."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sepkit.errors import InputError


def activity_labels(clean: torch.Tensor, hop_length: int = 128, win_length: int = 512,
                    threshold_db: float = -35.0) -> torch.Tensor:
    """Frame labels (B, 1 + T // hop_length) in {0, 1}: 1 where the frame energy of the clean
    speech (B, T) (a Hann window of ``win_length`` centred on sample ``k * hop_length``) lies
    within ``threshold_db`` of the utterance's loudest frame; all zero for silent utterances."""
    if not isinstance(clean, torch.Tensor) or clean.dim() != 2 or not clean.is_floating_point():
        shape = tuple(clean.shape) if isinstance(clean, torch.Tensor) else type(clean).__name__
        raise InputError(f"activity_labels: wave must be a float (B, T) tensor, got {shape}")
    x = F.pad(clean.float()[:, None], (win_length // 2, win_length // 2))
    frames = x.unfold(-1, win_length, hop_length)[:, 0]  # (B, N, win)
    window = torch.hann_window(win_length, periodic=True, device=clean.device)
    energy = (frames * window).square().sum(-1)
    db = 10 * torch.log10(energy + 1e-10)
    top = db.amax(dim=-1, keepdim=True)
    labels = (db > top + threshold_db) & (top > -80.0)
    return labels.float()[:, : 1 + clean.shape[-1] // hop_length]



def si_sir_sar(estimate: torch.Tensor, clean: torch.Tensor, noise: torch.Tensor, eps: float = 1e-10) -> tuple[float, float]:
    """Scale-invariant SIR and SAR (dB) of ``estimate`` (T,) against the target ``clean`` and the
    interference ``noise``: the estimate's projection on span(clean, noise) splits into the
    target part (its projection on clean) and the interference part; the rest is artefact."""
    s, n, e = (x.double() - x.double().mean() for x in (clean, noise, estimate))
    basis = torch.stack([s, n], dim=1)  # (T, 2)
    from sepkit.metrics.sdr import spd_solve

    coef = spd_solve(basis.T @ basis, (basis.T @ e)[:, None])[:, 0]  # normal equations, by Cholesky
    target = (e @ s) / (s @ s + eps) * s
    proj = basis @ coef
    interf, artif = proj - target, e - proj
    sir = 10 * math.log10((float(target @ target) + eps) / (float(interf @ interf) + eps))
    sar = 10 * math.log10((float(proj @ proj) + eps) / (float(artif @ artif) + eps))
    return sir, sar



def silent_frame_db(estimate: torch.Tensor, clean: torch.Tensor, hop: int = 128, win: int = 512) -> float:
    """Mean power of ``estimate`` (T,) over the frames where ``clean`` is silent (more than 35 dB
    under its loudest frame), in dB relative to the clean speech's mean power over its active
    frames; NaN when no frame is silent."""
    active = activity_labels(clean[None].float(), hop, win)[0].bool()
    if bool(active.all()) or not bool(active.any()):
        return float("nan")

    def frame_power(x):
        x = F.pad(x.float()[None, None], (win // 2, win // 2))[0, 0]
        return x.unfold(-1, win, hop)[: active.shape[0]].square().mean(-1)

    ref = float(frame_power(clean)[active].mean())
    return 10 * math.log10((float(frame_power(estimate)[~active].mean()) + 1e-12) / (ref + 1e-12))



__all__ = ["activity_labels", "si_sir_sar", "silent_frame_db"]
