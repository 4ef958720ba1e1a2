"""Codecformer (Yip et al., "Towards Audio Codec-based Speech Separation", Interspeech 2024).

Separation in the latent space of a frozen neural audio codec (the 16 kHz Descript Audio Codec:
1024 channels at 50 frames per second):

    mixture (B, T) at ``sample_rate`` (8 kHz by default)
      -> resample to the codec's rate (16 kHz)                       (B, 1, T16)
      -> codec.encode (frozen, no gradient)                          z (B, 1024, F), F = ceil(T16 / 320)
      -> masker: gLN, 1x1 conv 1024 -> 256, sinusoidal positions, 16 pre-norm transformer layers
         (d 256, 8 heads, FFN 1024, ReLU, dropout 0.1) over the whole sequence - no chunking, no
         dual path - and a final LayerNorm; 1x1 conv 256 -> S x 1024; per source the gated head
         Snake(conv(h)) * sigmoid(conv(h)), a 1x1 conv and Snake      masks (B, S, 1024, F)
      -> masks * z (pre-quantization latents) [-> codec RVQ when ``quantize``]
      -> codec.decode (frozen weights, gradient flows to the masks)  (B*S, 1, ~T16)
      -> resample back to ``sample_rate``, crop / zero-pad to T        (B, S, T)

The masks use Snake, the activation of the codec encoder's last layer; the paper reports that tanh
and ReLU there fail. About 16.6 M trainable parameters for two sources (the codec is frozen:
``requires_grad`` off, kept in eval mode, and a state dict without ``codec.*`` keys loads).

Resampling (8 kHz <-> 16 kHz) is ``sepkit.data.resample`` (windowed sinc), inside the
model, so data, losses and outputs stay at the recipe's rate.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.codecs.base import Codec, fit_length, round_trip
from sepkit.data import resample
from sepkit.errors import InputError, InputTypeError
from sepkit.nn import GlobalLayerNorm, Snake

from .separators.base import as_waveform_batch
from .separators.sepformer import TransformerStack


class GatedMaskHead(nn.Module):
    """Per-source mask head on (N, D, F): ``snake(end(snake(conv_a(h)) * sigmoid(conv_b(h))))``.

    ``output`` = Conv1d(D, D, 1) + Snake, ``output_gate`` = Conv1d(D, D, 1) + sigmoid, ``end_conv``
    = Conv1d(D, D, 1, bias=False), then ``mask_act`` = Snake. (N, D, F) -> (N, D, F).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.output = nn.Sequential(nn.Conv1d(channels, channels, 1), Snake(channels, dim=1))
        self.output_gate = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.Sigmoid())
        self.end_conv = nn.Conv1d(channels, channels, 1, bias=False)
        self.mask_act = Snake(channels, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mask_act(self.end_conv(self.output(h) * self.output_gate(h)))


class Codecformer(nn.Module):
    """Codecformer separator: (B, T) or (B, 1, T) mixture at ``sample_rate`` -> (B, S, T) sources.

    Args:
        codec: a frozen :class:`sepkit.codecs.Codec` module (normally
            ``sepkit.codecs.DAC.from_pretrained(path)`` of the official 16 kHz weights).
        n_src: number of sources S (any).
        sample_rate: rate of the input and output waveforms in Hz (8000 for WSJ0-2mix / Libri2Mix
            8k); audio is resampled to and from ``codec.sample_rate`` inside.
        d_model: transformer width (bottleneck of the masker).
        nhead: attention heads.
        dim_feedforward: feed-forward width.
        n_layers: transformer layers (16), all over the full latent sequence.
        dropout: transformer dropout.
        quantize: pass the masked latents through the codec's RVQ before decoding (the paper's
            "with RVQ" ablation; off by default, as its best model).
        max_frames: longest latent sequence (positional-encoding table), 20000 frames = 400 s at 50 Hz.
        attention_backend: backend of the attention layers (None: automatic).
        checkpointing: "none" (default) or "blocks": recompute each transformer layer in the backward pass
            (:mod:`sepkit.nn.checkpoint`).
    """

    def __init__(self, codec: nn.Module, n_src: int = 2, sample_rate: int = 8000, d_model: int = 256,
                 nhead: int = 8, dim_feedforward: int = 1024, n_layers: int = 16, dropout: float = 0.1,
                 quantize: bool = False, max_frames: int = 20000, attention_backend: str | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        if not isinstance(codec, nn.Module) or not isinstance(codec, Codec):
            raise InputTypeError("Codecformer: codec must be an nn.Module with the sepkit.codecs.Codec members "
                                 f"(encode, quantize, decode, sample_rate, hop_length, frame_rate, latent_dim), got "
                                 f"{type(codec).__name__}")
        if not isinstance(n_src, int) or n_src < 1:
            raise InputError(f"Codecformer: n_src must be a positive int, got {n_src!r}")
        if not isinstance(sample_rate, int) or sample_rate < 1:
            raise InputError(f"Codecformer: sample_rate must be a positive int (Hz), got {sample_rate!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"Codecformer: dropout must be in [0, 1), got {dropout!r}")
        self.n_src, self.sample_rate, self.quantize = n_src, sample_rate, bool(quantize)
        self.codec = codec.requires_grad_(False).eval()
        latent = codec.latent_dim
        self.latent_dim = latent
        self.norm = GlobalLayerNorm(latent)
        self.conv_in = nn.Conv1d(latent, d_model, 1)
        self.transformer = TransformerStack(d_model, nhead, dim_feedforward, n_layers, dropout, causal=False,
                                            max_len=max_frames, backend=attention_backend, checkpointing=checkpointing)
        self.conv_out = nn.Conv1d(d_model, n_src * latent, 1)
        self.head = GatedMaskHead(latent)

    # -- the codec stays frozen -----------------------------------------------------------------

    def train(self, mode: bool = True) -> "Codecformer":
        super().train(mode)
        self.codec.eval()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load separator weights; ``codec.*`` keys are optional (the frozen codec keeps the weights it
        was built with when they are absent), every other key is strict."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("codec.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Codecformer.load_state_dict: missing keys {missing[:5]}, unexpected keys "
                               f"{result.unexpected_keys[:5]}")
        return result

    def trainable_parameters(self) -> int:
        """Number of trainable (non-codec) parameters."""
        return sum(p.numel() for name, p in self.named_parameters() if not name.startswith("codec."))

    # -- resampling ------------------------------------------------------------------------------

    def to_codec_rate(self, wave: torch.Tensor) -> torch.Tensor:
        """(..., T) at ``sample_rate`` -> (..., T16) at the codec's rate."""
        return resample(wave, self.sample_rate, self.codec.sample_rate)

    def from_codec_rate(self, wave: torch.Tensor, length: int) -> torch.Tensor:
        """(..., T16) at the codec's rate -> (..., length) at ``sample_rate`` (cropped or zero-padded)."""
        return fit_length(resample(wave, self.codec.sample_rate, self.sample_rate), length)

    # -- the model -------------------------------------------------------------------------------

    def encode(self, mixture: torch.Tensor) -> torch.Tensor:
        """(B, T) mixture at ``sample_rate`` -> pre-quantization latents z (B, latent_dim, F), no gradient."""
        mixture = as_waveform_batch("Codecformer", mixture, self)
        with torch.no_grad():
            return self.codec.encode(self.to_codec_rate(mixture)[:, None])

    def masks(self, z: torch.Tensor) -> torch.Tensor:
        """Latents z (B, latent_dim, F) -> masks (B, S, latent_dim, F); one attention pass over all F frames."""
        if z.dim() != 3 or z.shape[1] != self.latent_dim:
            raise InputError(f"Codecformer.masks: z must have shape (B, {self.latent_dim}, F), got {tuple(z.shape)}")
        b, d, f = z.shape
        h = self.conv_in(self.norm(z))                       # (B, d_model, F)
        h = self.transformer(h.transpose(1, 2)).transpose(1, 2)
        h = self.conv_out(h).view(b * self.n_src, d, f)      # (B*S, D, F)
        return self.head(h).view(b, self.n_src, d, f)

    def separate_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Masked latents (B, S, latent_dim, F) of z (B, latent_dim, F), quantized when ``quantize``."""
        zs = z[:, None] * self.masks(z)
        if self.quantize:
            b, s, d, f = zs.shape
            zs = self.codec.quantize(zs.reshape(b * s, d, f))[0].view(b, s, d, f)
        return zs

    def decode(self, zs: torch.Tensor, length: int) -> torch.Tensor:
        """Source latents (B, S, latent_dim, F) -> waveforms (B, S, length) at ``sample_rate``."""
        b, s, d, f = zs.shape
        wave = self.codec.decode(zs.reshape(b * s, d, f))[:, 0]
        return self.from_codec_rate(wave, length).view(b, s, length)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """mixture (B, T) or (B, 1, T) at ``sample_rate`` -> estimated sources (B, S, T) at ``sample_rate``."""
        mixture = as_waveform_batch("Codecformer", mixture, self)
        return self.decode(self.separate_latents(self.encode(mixture)), mixture.shape[-1])

    @torch.no_grad()
    def round_trip(self, wave: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """The codec round trip ("transmitted" signal) of waveforms (..., T) at ``sample_rate``,
        resampled like the model's input and output: the target of Codec SI-SDR for a clean source,
        and the baseline for a mixture. ``quantize`` defaults to the model's setting."""
        quantize = self.quantize if quantize is None else quantize
        lead, length = wave.shape[:-1], wave.shape[-1]
        flat = self.to_codec_rate(wave.reshape(-1, length))[:, None]
        out = round_trip(self.codec, flat, quantize=quantize)[:, 0]
        return self.from_codec_rate(out, length).reshape(*lead, length)


__all__ = ["Codecformer", "GatedMaskHead"]
