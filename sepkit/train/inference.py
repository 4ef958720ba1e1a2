"""Separating recordings of any length: chunks with overlap-add and source alignment."""
from __future__ import annotations

import itertools

import torch

from sepkit.errors import InputError
from sepkit.losses import best_permutation_hungarian


def _align(prev: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Order of ``new``'s sources (S, L) that best matches ``prev`` (S, L) on their overlap
    (largest summed normalised correlation)."""
    S = prev.shape[0]
    p = prev / (prev.norm(dim=-1, keepdim=True) + 1e-8)
    n = new / (new.norm(dim=-1, keepdim=True) + 1e-8)
    corr = n @ p.T  # [new source, prev source]
    if S <= 4:
        best = max(itertools.permutations(range(S)), key=lambda perm: sum(float(corr[perm[j], j]) for j in range(S)))
        return torch.tensor(best)
    return best_permutation_hungarian(-corr.unsqueeze(0))[0]


@torch.no_grad()
def separate_waveform(model: torch.nn.Module, wav: torch.Tensor, chunk: int | None = None, overlap: int | None = None,
                      separate=None) -> torch.Tensor:
    """Separate a mono waveform (T,) into (S, T) with a separator taking (B, T).

    ``separate(model, mixture (B, T)) -> (B, S, T)`` replaces ``model(mixture)`` when given.

    Inputs longer than ``chunk`` samples are cut into chunks overlapping by ``overlap`` samples;
    each chunk's sources are reordered to match the previous chunk on the overlap, then
    cross-faded (linear ramps) into one signal per source. ``chunk=None`` separates in one call.
    """
    if wav.dim() != 1:
        raise InputError(f"separate_waveform: expected a mono waveform (T,), got shape {tuple(wav.shape)}")
    model.eval()
    run = model if separate is None else (lambda x: separate(model, x))
    T = wav.shape[0]
    if chunk is None or T <= chunk:
        return run(wav.unsqueeze(0))[0].float()
    overlap = chunk // 4 if overlap is None else overlap
    if not 0 < overlap < chunk:
        raise InputError(f"separate_waveform: need 0 < overlap < chunk, got overlap={overlap}, chunk={chunk}")
    hop = chunk - overlap
    starts = list(range(0, T - overlap, hop))
    out = None
    fade_in = torch.linspace(0, 1, overlap + 2, device=wav.device)[1:-1]
    for i, s in enumerate(starts):
        piece = wav[s:s + chunk]
        est = run(piece.unsqueeze(0))[0].float()
        if out is None:
            out = torch.zeros(est.shape[0], T, device=wav.device)
            out[:, :est.shape[1]] = est
            continue
        ov = min(overlap, est.shape[1])
        perm = _align(out[:, s:s + ov], est[:, :ov])
        est = est[perm]
        ramp = fade_in[:ov]
        out[:, s:s + ov] = out[:, s:s + ov] * (1 - ramp) + est[:, :ov] * ramp
        out[:, s + ov:s + est.shape[1]] = est[:, ov:]
    return out
