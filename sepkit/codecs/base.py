"""The codec protocol: what a separator needs from a neural audio codec.

A codec maps a waveform (B, 1, T) at ``sample_rate`` Hz to continuous latents (B, latent_dim, F)
at ``frame_rate`` Hz (one frame per ``hop_length`` samples), optionally quantizes them, and decodes
latents back to a waveform. Separators that work in a codec's latent space (Codecformer) use only
these members, so any codec that provides them can be plugged in.

* :class:`Codec` - the protocol (``typing.Protocol``, checkable with ``isinstance``).
* :class:`IdentityCodec` - latents are the samples themselves (latent_dim 1, hop 1): a codec
  whose round trip is exact, for tests and as a control.
* :func:`round_trip` - encode, optionally quantize, decode, then crop or zero-pad to the input
  length: the "transmitted" signal of Codec SI-SDR.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError


@runtime_checkable
class Codec(Protocol):
    """A neural audio codec as a separator sees it.

    Attributes:
        sample_rate: waveform rate in Hz.
        hop_length: samples per latent frame.
        frame_rate: latent frames per second (``sample_rate / hop_length``).
        latent_dim: channels of the continuous latents.
    """

    sample_rate: int
    hop_length: int
    latent_dim: int

    @property
    def frame_rate(self) -> float: ...

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, latent_dim, F) continuous latents, F = ceil(T / hop_length)."""

    def quantize(self, z: torch.Tensor, n_quantizers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, latent_dim, F) latents -> (quantized latents (B, latent_dim, F), codes (B, n_q, F))."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim, F) latents -> (B, 1, T') waveform, T' about F * hop_length."""


def check_audio(owner: str, audio, name: str = "audio") -> None:
    """Raise unless ``audio`` is a floating (B, 1, T) tensor with T >= 1."""
    if not isinstance(audio, torch.Tensor):
        raise InputTypeError(f"{owner}: {name} must be a torch.Tensor (B, 1, T), got {type(audio).__name__}")
    if audio.dim() != 3 or audio.shape[1] != 1 or audio.shape[-1] < 1:
        raise InputError(f"{owner}: {name} must have shape (B, 1, T) with T >= 1 (mono), got {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise InputTypeError(f"{owner}: {name} must be floating point, got {audio.dtype}")


def check_latents(owner: str, z, latent_dim: int, name: str = "z") -> None:
    """Raise unless ``z`` is a floating (B, latent_dim, F) tensor with F >= 1."""
    if not isinstance(z, torch.Tensor):
        raise InputTypeError(f"{owner}: {name} must be a torch.Tensor (B, {latent_dim}, F), got {type(z).__name__}")
    if z.dim() != 3 or z.shape[1] != latent_dim or z.shape[-1] < 1:
        raise InputError(f"{owner}: {name} must have shape (B, {latent_dim}, F) with F >= 1, got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise InputTypeError(f"{owner}: {name} must be floating point, got {z.dtype}")


def fit_length(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis of ``audio`` to ``length`` samples."""
    if torch.compiler.is_exporting() or torch.jit.is_tracing():  # one graph for both cases, of a size the tracer knows is length
        return F.pad(audio, (0, length))[..., :length]
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return F.pad(audio, (0, length - audio.shape[-1]))


def round_trip(codec: Codec, audio: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Codec round trip ``decode([quantize](encode(audio)))``, (B, 1, T) -> (B, 1, T).

    The output is cropped or zero-padded to the input's T samples (codecs pad the input to a
    multiple of their hop and their decoders may return a few samples more or fewer).
    """
    check_audio(type(codec).__name__, audio)
    z = codec.encode(audio)
    if quantize:
        z = codec.quantize(z)[0]
    return fit_length(codec.decode(z), audio.shape[-1])


class IdentityCodec(nn.Module):
    """The exact codec: latents are the waveform samples (latent_dim 1, hop 1, no quantization).

    ``encode`` (B, 1, T) -> (B, 1, T); ``quantize`` returns the latents and empty codes
    (B, 0, F); ``decode`` is the identity. Its round trip is the input, so Codec SI-SDR against
    it equals SI-SDR against the clean signal.
    """

    hop_length = 1
    latent_dim = 1

    def __init__(self, sample_rate: int = 16000):
        super().__init__()
        if not isinstance(sample_rate, int) or sample_rate < 1:
            raise InputError(f"IdentityCodec: sample_rate must be a positive int (Hz), got {sample_rate!r}")
        self.sample_rate = sample_rate

    @property
    def frame_rate(self) -> float:
        return float(self.sample_rate)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        check_audio("IdentityCodec", audio)
        return audio

    def quantize(self, z: torch.Tensor, n_quantizers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_latents("IdentityCodec", z, 1)
        return z, torch.zeros(z.shape[0], 0, z.shape[-1], dtype=torch.long, device=z.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_latents("IdentityCodec", z, 1)
        return z


__all__ = ["Codec", "IdentityCodec", "round_trip", "fit_length", "check_audio", "check_latents"]
