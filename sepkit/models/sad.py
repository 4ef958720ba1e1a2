"""A small frame-wise speech-activity detector (SAD): the demo's stand-in for the USS latent.

Ex-Diff guides its diffusion model with the frame-wise speech (or vocal) presence probabilities of
a pretrained sound-event detector (PANNs, :mod:`sepkit.models.panns`). Where no such checkpoint is
at hand (the demo recipes), this detector, trained first on the same synthetic data, supplies the
same kind of latent: one probability per STFT frame.

Model: peak-normalised wave -> log-mel spectrogram (Hann window ``n_fft``, hop ``hop_length``,
``n_mels`` bands, ``center=True``: frame k is centred on sample ``k * hop_length``) -> 1x1 conv to
``channels`` -> ``layers`` residual blocks (dilated conv of ``kernel_size``, dilations 1, 2, 4,
..., ReLU) -> 1x1 conv to one logit per frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.metrics.activity import activity_labels

__all__ = ["SpeechActivityDetector", "activity_labels"]


def _check_wave(op: str, wave) -> None:
    if not isinstance(wave, torch.Tensor) or wave.dim() != 2 or not wave.is_floating_point():
        shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
        raise InputError(f"{op}: wave must be a float (B, T) tensor, got {shape}")


class SpeechActivityDetector(nn.Module):
    """Frame-wise speech presence: wave (B, T) at ``sample_rate`` -> probabilities (B, N, 1),
    N = 1 + T // hop_length frames at ``frame_rate`` = sample_rate / hop_length per second.

    Args:
        sample_rate: Hz (16000).
        n_fft: analysis window and FFT size (512).
        hop_length: frame hop in samples (128: the SGMSE+ STFT frame rate, 125 frames/s).
        n_mels: mel bands (40).
        channels: width of the convolutional stack (32).
        layers: residual dilated blocks (4: receptive field of about 0.5 s at the defaults).
        kernel_size: kernel of the dilated convolutions (5).
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 128, n_mels: int = 40,
                 channels: int = 32, layers: int = 4, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 == 0 or layers < 1 or channels < 1:
            raise InputError(f"SpeechActivityDetector: need an odd kernel_size, layers >= 1 and channels >= 1, got "
                             f"{kernel_size}, {layers}, {channels}")
        import torchaudio.functional as AF

        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.register_buffer("mel", AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate),
                             persistent=False)
        self.inp = nn.Conv1d(n_mels, channels, 1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=2 ** i, padding=(kernel_size // 2) * 2 ** i)
            for i in range(layers))
        self.out = nn.Conv1d(channels, 1, 1)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def dim(self) -> int:
        return 1

    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, T) -> logits (B, N)."""
        _check_wave("SpeechActivityDetector", wave)
        if wave.shape[-1] <= self.n_fft // 2:
            raise InputError(f"SpeechActivityDetector: wave must be longer than {self.n_fft // 2} samples, got {wave.shape[-1]}")
        wave = wave.float()
        wave = wave / wave.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
        spec = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True)
        feats = torch.log(spec.abs().square().transpose(1, 2) @ self.mel + 1e-6).transpose(1, 2)  # (B, mels, N)
        h = self.inp(feats - feats.mean(dim=(1, 2), keepdim=True))
        for block in self.blocks:
            h = h + block(F.relu(h))
        return self.out(F.relu(h))[:, 0]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(wave))[..., None]
