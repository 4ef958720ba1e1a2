"""The Descript Audio Codec (DAC) in sepkit, weight-compatible with the official release.

Architecture (Kumar et al., 2023, "High-Fidelity Audio Compression with Improved RVQGAN"):

* **Encoder**: a 7-tap convolution to ``encoder_dim`` channels, one :class:`EncoderBlock` per
  rate in ``encoder_rates`` (three dilated residual units at dilations 1, 3, 9, then Snake and a
  strided convolution of kernel ``2 * stride`` that doubles the channels), Snake and a 3-tap
  convolution to ``latent_dim``. One latent frame per ``hop_length = prod(encoder_rates)``
  samples.
* **Quantizer**: residual vector quantization over ``n_codebooks`` codebooks of
  ``codebook_size`` entries. Each stage projects the residual to ``codebook_dim`` channels
  (factorised codes), looks up the nearest entry after l2-normalising both (cosine similarity),
  and projects back; training uses the straight-through estimator, commitment and codebook
  losses, and quantizer dropout (a random number of codebooks for a ``quantizer_dropout``
  fraction of the batch).
* **Decoder**: a 7-tap convolution to ``decoder_dim``, one :class:`DecoderBlock` per rate in
  ``decoder_rates`` (Snake, a transposed convolution of kernel ``2 * stride`` that halves the
  channels, three residual units), Snake, a 7-tap convolution to one channel and tanh.

Every convolution is weight-normalised with the parameters ``weight_g`` and ``weight_v`` (the
layout of ``torch.nn.utils.weight_norm``, which the official weight files use); Snake parameters
are ``alpha`` of shape (1, C, 1) and run through the ``sepkit.kernels.snake`` op. Module and
parameter names follow the official release, so ``DAC().state_dict()`` has the official keys and
the official 16, 24 and 44.1 kHz weight files load as they are (:meth:`DAC.from_pretrained`).

The official configurations (``metadata["kwargs"]`` of their weight files):

* 16 kHz: encoder_rates (2, 4, 5, 8), decoder_rates (8, 5, 4, 2), 12 codebooks, hop 320, 50 Hz;
* 24 kHz: encoder_rates (2, 4, 5, 8), decoder_rates (8, 5, 4, 2), 32 codebooks, hop 320, 75 Hz;
* 44.1 kHz: encoder_rates (2, 4, 8, 8), decoder_rates (8, 8, 4, 2), 9 codebooks, hop 512, 86.13 Hz;

all with encoder_dim 64, latent_dim 1024, decoder_dim 1536, codebook_size 1024, codebook_dim 8
(:data:`DAC_CONFIGS`).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.files import load_torch_file
from sepkit.kernels import snake
from sepkit.nn import Snake

from .base import check_audio, check_latents

DAC_CONFIGS: dict[str, dict] = {
    "16khz": {"encoder_dim": 64, "encoder_rates": [2, 4, 5, 8], "latent_dim": 1024, "decoder_dim": 1536,
              "decoder_rates": [8, 5, 4, 2], "n_codebooks": 12, "codebook_size": 1024, "codebook_dim": 8,
              "quantizer_dropout": 0.5, "sample_rate": 16000},
    "24khz": {"encoder_dim": 64, "encoder_rates": [2, 4, 5, 8], "latent_dim": 1024, "decoder_dim": 1536,
              "decoder_rates": [8, 5, 4, 2], "n_codebooks": 32, "codebook_size": 1024, "codebook_dim": 8,
              "quantizer_dropout": 0.5, "sample_rate": 24000},
    "44khz": {"encoder_dim": 64, "encoder_rates": [2, 4, 8, 8], "latent_dim": 1024, "decoder_dim": 1536,
              "decoder_rates": [8, 8, 4, 2], "n_codebooks": 9, "codebook_size": 1024, "codebook_dim": 8,
              "quantizer_dropout": 0.5, "sample_rate": 44100},
}


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


class _WeightNorm:
    """Weight normalisation ``weight = weight_g * weight_v / ||weight_v||`` (norm over all axes but
    the first, as ``torch.nn.utils.weight_norm(dim=0)``), with its parameter names."""

    def _init_weight_norm(self) -> None:
        v = self.weight.detach().clone()
        del self.weight
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(_norm_except_dim0(v))

    def normalized_weight(self) -> torch.Tensor:
        """The effective convolution weight."""
        return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weight_norm through torch.nn.utils.parametrizations stores original0 (g) and original1 (v)
        for new, old in (("parametrizations.weight.original0", "weight_g"), ("parametrizations.weight.original1", "weight_v")):
            if prefix + new in state_dict and prefix + old not in state_dict:
                state_dict[prefix + old] = state_dict.pop(prefix + new)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class WNConv1d(_WeightNorm, nn.Conv1d):
    """``nn.Conv1d`` with weight normalisation (parameters ``weight_g`` (C_out, 1, 1), ``weight_v``,
    ``bias``). (B, C_in, T) -> (B, C_out, T_out)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` with weight normalisation (``weight_g`` (C_in, 1, 1), ``weight_v``,
    ``bias``). (B, C_in, F) -> (B, C_out, T_out)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.normalized_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)


class Snake1d(Snake):
    """DAC's Snake on (B, C, T): ``sepkit.nn.Snake`` with ``alpha`` stored as (1, C, 1), the
    official shape, so the state dict is the official one both ways."""

    def __init__(self, channels: int, backend: str | None = None):
        super().__init__(channels, dim=1, backend=backend)
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake(x, self.alpha.reshape(-1), dim=1, backend=self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        value = state_dict.get(prefix + "alpha")
        if value is not None and value.numel() == self.channels:
            state_dict[prefix + "alpha"] = value.reshape(1, self.channels, 1)
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class ResidualUnit(nn.Module):
    """Snake, 7-tap dilated conv, Snake, 1x1 conv, plus the input. (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int = 16, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            WNConv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Residual units at dim/2 channels, then a strided conv to ``dim``: (B, dim/2, T) -> (B, dim, T/stride)."""

    def __init__(self, dim: int = 16, stride: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, dilation=1),
            ResidualUnit(dim // 2, dilation=3),
            ResidualUnit(dim // 2, dilation=9),
            Snake1d(dim // 2),
            WNConv1d(dim // 2, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """(B, 1, T) -> (B, d_latent, T / prod(strides)); ``block`` holds the layers (official names)."""

    def __init__(self, d_model: int = 64, strides: Sequence[int] = (2, 4, 8, 8), d_latent: int = 64):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(1, d_model, kernel_size=7, padding=3)]
        for stride in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride=stride))
        layers += [Snake1d(d_model), WNConv1d(d_model, d_latent, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)
        self.enc_dim = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Snake, a transposed conv upsampling by ``stride``, residual units: (B, in, F) -> (B, out, ~F*stride)."""

    def __init__(self, input_dim: int = 16, output_dim: int = 8, stride: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            WNConvTranspose1d(input_dim, output_dim, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2)),
            ResidualUnit(output_dim, dilation=1),
            ResidualUnit(output_dim, dilation=3),
            ResidualUnit(output_dim, dilation=9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """(B, input_channel, F) -> (B, d_out, ~F * prod(rates)) in [-1, 1]; ``model`` holds the layers."""

    def __init__(self, input_channel: int, channels: int, rates: Sequence[int], d_out: int = 1):
        super().__init__()
        layers: list[nn.Module] = [WNConv1d(input_channel, channels, kernel_size=7, padding=3)]
        output_dim = channels
        for i, stride in enumerate(rates):
            input_dim, output_dim = channels // 2**i, channels // 2 ** (i + 1)
            layers.append(DecoderBlock(input_dim, output_dim, stride))
        layers += [Snake1d(output_dim), WNConv1d(output_dim, d_out, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VectorQuantize(nn.Module):
    """One factorised, l2-normalised VQ stage (parameters ``in_proj``, ``out_proj``, ``codebook``)."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.in_proj = WNConv1d(input_dim, codebook_dim, kernel_size=1)
        self.out_proj = WNConv1d(codebook_dim, input_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Codes (B, F) of the entries nearest to ``z_e`` (B, codebook_dim, F) after l2-normalisation."""
        b, d, f = z_e.shape
        enc = F.normalize(z_e.transpose(1, 2).reshape(b * f, d))
        book = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        return dist.argmin(dim=1).view(b, f)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors (B, codebook_dim, F) of ``codes`` (B, F)."""
        return F.embedding(codes, self.codebook.weight).transpose(1, 2)

    def forward(self, z: torch.Tensor):
        """z (B, input_dim, F) -> (z_q (B, input_dim, F), commitment (B,), codebook loss (B,), codes (B, F),
        projected latents z_e (B, codebook_dim, F)); z_q carries the straight-through gradient."""
        z_e = self.in_proj(z)
        codes = self.nearest(z_e)
        z_q = self.lookup(codes)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2])
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2])
        z_q = z_e + (z_q - z_e).detach()
        return self.out_proj(z_q), commitment, codebook, codes, z_e


class QuantizerOutput(NamedTuple):
    """Output of :class:`ResidualVectorQuantize`: quantized latents (B, D, F), codes (B, n_q, F),
    projected latents (B, sum codebook_dim, F), and the commitment and codebook losses (scalars)."""

    z_q: torch.Tensor
    codes: torch.Tensor
    latents: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor


class ResidualVectorQuantize(nn.Module):
    """Residual VQ: each stage quantizes what the previous ones left (parameter ``quantizers``)."""

    def __init__(self, input_dim: int = 512, n_codebooks: int = 9, codebook_size: int = 1024,
                 codebook_dim: int | Sequence[int] = 8, quantizer_dropout: float = 0.0):
        super().__init__()
        dims = [codebook_dim] * n_codebooks if isinstance(codebook_dim, int) else list(codebook_dim)
        self.n_codebooks, self.codebook_dim, self.codebook_size = n_codebooks, dims, codebook_size
        self.quantizer_dropout = float(quantizer_dropout)
        self.quantizers = nn.ModuleList(VectorQuantize(input_dim, codebook_size, d) for d in dims)

    def forward(self, z: torch.Tensor, n_quantizers: int | None = None) -> QuantizerOutput:
        """z (B, D, F) -> :class:`QuantizerOutput`. In eval mode the first ``n_quantizers``
        (default all) stages are used; in training all, except that a ``quantizer_dropout``
        fraction of the batch keeps a random number of stages (1 to n_codebooks)."""
        batch = z.shape[0]
        if n_quantizers is None:
            n_quantizers = self.n_codebooks
        if not isinstance(n_quantizers, int) or not 1 <= n_quantizers <= self.n_codebooks:
            raise InputError(f"ResidualVectorQuantize: n_quantizers must be an int in [1, {self.n_codebooks}], "
                             f"got {n_quantizers!r}")
        keep = torch.full((batch,), n_quantizers, device=z.device)
        if self.training:
            keep = torch.full((batch,), self.n_codebooks, device=z.device)
            n_drop = int(batch * self.quantizer_dropout)
            if n_drop:
                keep[:n_drop] = torch.randint(1, self.n_codebooks + 1, (n_drop,), device=z.device)
        stages = self.n_codebooks if self.training else n_quantizers
        z_q, residual = torch.zeros_like(z), z
        commitment = codebook = z.new_zeros(())
        codes, latents = [], []
        for i, quantizer in enumerate(self.quantizers[:stages]):
            z_q_i, commit_i, book_i, codes_i, z_e_i = quantizer(residual)
            mask = (i < keep).to(z.dtype)
            z_q = z_q + z_q_i * mask[:, None, None]
            residual = residual - z_q_i
            commitment = commitment + (commit_i * mask).mean()
            codebook = codebook + (book_i * mask).mean()
            codes.append(codes_i)
            latents.append(z_e_i)
        return QuantizerOutput(z_q, torch.stack(codes, dim=1), torch.cat(latents, dim=1), commitment, codebook)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, D, F) from codes (B, n_q, F), n_q <= n_codebooks."""
        if codes.dim() != 3 or codes.shape[1] > self.n_codebooks or codes.shape[1] < 1:
            raise InputError(f"ResidualVectorQuantize.from_codes: codes must be (B, n_q, F) with 1 <= n_q <= "
                             f"{self.n_codebooks}, got {tuple(codes.shape)}")
        return sum(q.out_proj(q.lookup(codes[:, i])) for i, q in enumerate(self.quantizers[: codes.shape[1]]))


class DACOutput(NamedTuple):
    """:meth:`DAC.forward`: decoded audio (B, 1, T) cropped to the input length, quantized latents
    z (B, D, F), codes (B, n_q, F), and the VQ commitment and codebook losses (scalars)."""

    audio: torch.Tensor
    z: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor


OFFICIAL_KWARGS = ("encoder_dim", "encoder_rates", "latent_dim", "decoder_dim", "decoder_rates", "n_codebooks",
                   "codebook_size", "codebook_dim", "quantizer_dropout", "sample_rate")


class DAC(nn.Module):
    """Descript Audio Codec: encoder, residual VQ and decoder (see the module docstring).

    Args (the official keywords and defaults; these defaults are the 44.1 kHz model's shape
    with 9 codebooks):
        encoder_dim: channels after the first encoder conv (doubled by each encoder block).
        encoder_rates: encoder strides; their product is ``hop_length``.
        latent_dim: latent channels D (default ``encoder_dim * 2 ** len(encoder_rates)``).
        decoder_dim: channels after the first decoder conv (halved by each decoder block).
        decoder_rates: decoder upsampling factors.
        n_codebooks: RVQ stages.
        codebook_size: entries per codebook.
        codebook_dim: dimension of each codebook (an int or one per stage).
        quantizer_dropout: fraction of a training batch that uses a random number of stages.
        sample_rate: waveform rate in Hz.

    Members of the :class:`~sepkit.codecs.Codec` protocol: ``encode``, ``quantize``, ``decode``,
    ``sample_rate``, ``hop_length``, ``frame_rate``, ``latent_dim``.
    """

    def __init__(self, encoder_dim: int = 64, encoder_rates: Sequence[int] = (2, 4, 8, 8), latent_dim: int | None = None,
                 decoder_dim: int = 1536, decoder_rates: Sequence[int] = (8, 8, 4, 2), n_codebooks: int = 9,
                 codebook_size: int = 1024, codebook_dim: int | Sequence[int] = 8, quantizer_dropout: float = False,
                 sample_rate: int = 44100):
        super().__init__()
        for name, value in (("encoder_dim", encoder_dim), ("decoder_dim", decoder_dim), ("n_codebooks", n_codebooks),
                            ("codebook_size", codebook_size), ("sample_rate", sample_rate)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"DAC: {name} must be a positive int, got {value!r}")
        for name, rates in (("encoder_rates", encoder_rates), ("decoder_rates", decoder_rates)):
            if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
                raise InputError(f"DAC: {name} must be a non-empty list of positive ints, got {rates!r}")
        if decoder_dim % 2 ** len(decoder_rates):
            raise InputError(f"DAC: decoder_dim={decoder_dim} must be divisible by 2**len(decoder_rates)="
                             f"{2 ** len(decoder_rates)}")
        if not 0.0 <= float(quantizer_dropout) <= 1.0:
            raise InputError(f"DAC: quantizer_dropout must be in [0, 1], got {quantizer_dropout!r}")
        self.encoder_dim, self.encoder_rates = encoder_dim, list(encoder_rates)
        self.decoder_dim, self.decoder_rates = decoder_dim, list(decoder_rates)
        self.latent_dim = latent_dim if latent_dim is not None else encoder_dim * 2 ** len(encoder_rates)
        self.n_codebooks, self.codebook_size, self.codebook_dim = n_codebooks, codebook_size, codebook_dim
        self.quantizer_dropout, self.sample_rate = quantizer_dropout, sample_rate
        self.hop_length = int(math.prod(encoder_rates))
        self.encoder = Encoder(encoder_dim, encoder_rates, self.latent_dim)
        self.quantizer = ResidualVectorQuantize(self.latent_dim, n_codebooks, codebook_size, codebook_dim,
                                                quantizer_dropout)
        self.decoder = Decoder(self.latent_dim, decoder_dim, decoder_rates)
        for m in self.modules():  # biases of the plain convolutions start at zero
            if isinstance(m, WNConv1d):
                nn.init.zeros_(m.bias)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def config(self) -> dict:
        """The constructor keywords (what ``metadata["kwargs"]`` of a weight file holds)."""
        return {name: getattr(self, name) for name in OFFICIAL_KWARGS}

    def pad(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad (B, 1, T) with zeros to a multiple of ``hop_length`` (as the official preprocessing)."""
        right = -audio.shape[-1] % self.hop_length
        return F.pad(audio, (0, right)) if torch.compiler.is_exporting() or torch.jit.is_tracing() or right else audio

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform at ``sample_rate`` -> continuous pre-quantization latents
        (B, latent_dim, ceil(T / hop_length)); the input is first right-padded to a multiple of the hop."""
        check_audio("DAC.encode", audio)
        return self.encoder(self.pad(audio))

    def quantize(self, z: torch.Tensor, n_quantizers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual VQ of z (B, latent_dim, F) with the first ``n_quantizers`` codebooks (default all):
        (quantized latents (B, latent_dim, F), codes (B, n_q, F) int64)."""
        check_latents("DAC.quantize", z, self.latent_dim)
        out = self.quantizer(z, n_quantizers)
        return out.z_q, out.codes

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim, F) -> waveform (B, 1, T') in [-1, 1]. T' is F * hop_length when every
        rate is even; odd rates lose a few samples (16 and 24 kHz models: F * 320 - 8)."""
        check_latents("DAC.decode", z, self.latent_dim)
        return self.decoder(z)

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, latent_dim, F) from codes (B, n_q, F)."""
        return self.quantizer.from_codes(codes)

    def forward(self, audio: torch.Tensor, n_quantizers: int | None = None) -> DACOutput:
        """Encode, quantize and decode (B, 1, T) -> :class:`DACOutput` (audio cropped or zero-padded to T)."""
        length = audio.shape[-1]
        q = self.quantizer(self.encode(audio), n_quantizers)
        audio_hat = self.decoder(q.z_q)
        audio_hat = audio_hat[..., :length] if audio_hat.shape[-1] >= length else F.pad(audio_hat, (0, length - audio_hat.shape[-1]))
        return DACOutput(audio_hat, q.z_q, q.codes, q.commitment_loss, q.codebook_loss)

    # -- weight files -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"state_dict": ..., "metadata": {"kwargs": config}}``, the official file layout."""
        kwargs = self.config
        kwargs["encoder_rates"], kwargs["decoder_rates"] = list(self.encoder_rates), list(self.decoder_rates)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        tmp = f"{os.fspath(path)}.tmp"
        torch.save({"state_dict": state, "metadata": {"kwargs": kwargs}}, tmp)
        os.replace(tmp, path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "DAC":
        """Load a DAC weights file (official 16/24/44.1 kHz releases or :meth:`save`).

        The file is a ``torch.save``d dict ``{"state_dict": ..., "metadata": {"kwargs": {...}}}``,
        read with ``weights_only=True`` (a file that needs code execution is refused). Raises
        FileNotFoundError for a missing file and ValueError for a corrupt or foreign one (naming
        the missing key or the mismatched parameters). Returns the model in eval mode.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DAC.from_pretrained: no weights file at {path!r}")
        blob = load_torch_file(path, "DAC.from_pretrained", map_location)
        if not isinstance(blob, dict) or "state_dict" not in blob:
            keys = sorted(blob)[:8] if isinstance(blob, dict) else type(blob).__name__
            raise InputError(f"DAC.from_pretrained: {path!r} has no 'state_dict' key (found {keys}); expected "
                             "{'state_dict': ..., 'metadata': {'kwargs': ...}} as in the official DAC weights")
        metadata = blob.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("kwargs"), dict):
            raise InputError(f"DAC.from_pretrained: {path!r} has no 'metadata'['kwargs'] dict with the model's "
                             "constructor keywords (official DAC weight files have one)")
        kwargs = dict(metadata["kwargs"])
        unknown = sorted(set(kwargs) - set(OFFICIAL_KWARGS))
        if unknown:
            raise InputError(f"DAC.from_pretrained: metadata kwargs {unknown} are not DAC keywords "
                             f"(allowed: {list(OFFICIAL_KWARGS)})")
        model = cls(**kwargs)
        model.load_weights(blob["state_dict"], source=path)
        return model.eval()

    def load_weights(self, state_dict: dict, source: str = "state_dict") -> None:
        """Strictly load a state dict with the official keys; ValueError naming missing,
        unexpected or mis-shaped entries."""
        if not isinstance(state_dict, dict):
            raise InputError(f"DAC: {source} state_dict must be a dict of tensors, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and not _has_parametrized(state_dict, k)]
        if missing:
            raise InputError(f"DAC: {source} lacks {len(missing)} codec weights, e.g. {missing[:3]} "
                             "(is it a DAC weights file for this configuration?)")
        try:
            result = self.load_state_dict(state_dict, strict=False)
        except RuntimeError as err:
            raise InputError(f"DAC: {source} does not match the configuration {self.config}: {err}") from None
        if result.unexpected_keys:
            raise InputError(f"DAC: {source} has {len(result.unexpected_keys)} keys this DAC does not, e.g. "
                             f"{result.unexpected_keys[:3]}")


def _has_parametrized(state_dict: dict, key: str) -> bool:
    for old, new in (("weight_g", "parametrizations.weight.original0"), ("weight_v", "parametrizations.weight.original1")):
        if key.endswith(old) and key[: -len(old)] + new in state_dict:
            return True
    return False


__all__ = ["DAC", "DAC_CONFIGS", "DACOutput", "QuantizerOutput", "ResidualVectorQuantize", "VectorQuantize",
           "Encoder", "Decoder", "EncoderBlock", "DecoderBlock", "ResidualUnit", "Snake1d", "WNConv1d",
           "WNConvTranspose1d"]
