"""Ex-Diff: SGMSE+ guided by frame-wise latents of a discriminative model through cross-attention.

Hao, Liu, et al., "Extract and Diffuse: Latent integration for improved diffusion-based speech and
vocal enhancement" (arXiv 2409.09642). A latent extractor (the USS model: PANNs sound event
detection probabilities of speech or vocal classes, :class:`sepkit.models.panns.PannsLatent`; or
any callable ``wave (B, T) -> (B, frames, D)``, e.g. the demo's
:class:`sepkit.models.sad.SpeechActivityDetector`) runs once on the noisy input; its frames are
linearly resampled to the STFT frame rate, concatenated with a positional encoding and attended to
by the NCSN++ bottleneck (:class:`sepkit.models.ncsnpp.LatentCrossAttention`). Training and sampling
are SGMSE+'s (:class:`sepkit.models.sgmse.SGMSE`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sepkit.errors import InputError, InputTypeError

from .ncsnpp import NCSNpp
from .sgmse import OUVESDE, SGMSE, SpecRepresentation

__all__ = ["ExDiff", "resample_frames"]


def resample_frames(latents: torch.Tensor, src_rate: float, dst_rate: float, n_out: int) -> torch.Tensor:
    """Linear interpolation of frame sequences (B, L, D) at ``src_rate`` frames/s to ``n_out``
    frames at ``dst_rate`` (frame k of either at time k / rate); held constant past the ends."""
    if latents.dim() != 3 or latents.shape[1] < 1:
        raise InputError(f"resample_frames: latents must have shape (B, L >= 1, D), got {tuple(latents.shape)}")
    if src_rate <= 0 or dst_rate <= 0:
        raise InputError(f"resample_frames: rates must be positive, got {src_rate}, {dst_rate}")
    length = latents.shape[1]
    pos = (torch.arange(n_out, device=latents.device, dtype=torch.float64) * (src_rate / dst_rate)).clamp(0, length - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=length - 1)
    w = (pos - lo).to(latents.dtype)[None, :, None]
    return latents[:, lo] * (1 - w) + latents[:, hi] * w


class ExDiff(SGMSE):
    """The guided score model (see the module docstring).

    Args:
        backbone: an :class:`NCSNpp` built with ``latent_dim`` = the extractor's D.
        extractor: ``wave (B, T) at the model's rate -> (B, frames, D)``; run without gradients
            (it is pretrained and frozen). A module is registered as the submodule ``extractor``.
        frame_rate: the extractor's frames per second (read from ``extractor.frame_rate`` when None).
        sde, representation, t_eps, parametrisation, time_grid: as :class:`SGMSE` (an Ex-Diff
            fine-tuned from a released SGMSE+ model keeps the release's "score" and "sgmse").
    """

    def __init__(self, backbone: NCSNpp, extractor: Callable[[torch.Tensor], torch.Tensor], frame_rate: float | None = None,
                 sde: OUVESDE | None = None, representation: SpecRepresentation | None = None, t_eps: float = 0.03,
                 parametrisation: str = "noise", time_grid: str = "uniform"):
        super().__init__(backbone, sde, representation, t_eps, parametrisation, time_grid)
        if getattr(backbone, "latent_dim", None) is None:
            raise InputError("ExDiff: the backbone has no cross-attention; build it with latent_dim = the latent width")
        if not callable(extractor):
            raise InputTypeError(f"ExDiff: extractor must be callable wave (B, T) -> (B, frames, D), got {type(extractor).__name__}")
        frame_rate = getattr(extractor, "frame_rate", None) if frame_rate is None else frame_rate
        if frame_rate is None or float(frame_rate) <= 0:
            raise InputError("ExDiff: give frame_rate (the extractor's frames per second) or an extractor with a "
                             "positive .frame_rate")
        if isinstance(extractor, nn.Module):
            self.extractor = extractor
        else:
            self._extractor_fn = extractor
        self.frame_rate = float(frame_rate)

    def _extract(self, wave: torch.Tensor) -> torch.Tensor:
        fn = self.extractor if "extractor" in self._modules else self._extractor_fn
        with torch.no_grad():
            out = fn(wave)
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[0] != wave.shape[0]:
            raise InputError(f"ExDiff: the extractor must return (B={wave.shape[0]}, frames, D), got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        if out.shape[2] != self.backbone.latent_dim:
            raise InputError(f"ExDiff: the extractor gives D={out.shape[2]} but the backbone takes "
                             f"latent_dim={self.backbone.latent_dim}")
        return out.float()

    def latents(self, noisy: torch.Tensor) -> torch.Tensor:
        """Latents of noisy waves (B, T) at the STFT frame rate: (B, 1 + T // hop, D)."""
        rep = self.representation
        lat = self._extract(noisy)
        return resample_frames(lat, self.frame_rate, rep.sample_rate / rep.hop_length, rep.frames(noisy.shape[-1]))

    def conditioning(self, noisy: torch.Tensor, n_frames: int) -> dict:
        return {"latents": self.latents(noisy), "kv_lengths": None}
