"""The ``codec`` task: train a DAC-shaped neural audio codec (no GAN) and measure its round trip.

Model: :class:`sepkit.codecs.DAC` with ``model.args`` as its keywords (``model.name: dac``;
``sample_rate`` comes from ``data.sample_rate``). Data: the recipe's separation data; every
mixture and every clean source of a batch is a training signal, so the codec learns both the
speech and the overlapped speech a separator will encode.

Loss per signal batch x (B, 1, T), round trip y = decode(quantize(encode(x))):

    waveform_weight * |y - x|_1  +  stft_weight * sum_w [ |log|Y_w| - log|X_w||_1 + |  |Y_w| - |X_w|  |_1 ]
    + si_sdr_weight * (-SI-SDR(y, x) in dB) + commitment_weight * commitment + codebook_weight * codebook
    [+ unquantized_weight * the same reconstruction terms for decode(encode(x))]

with |X_w| the STFT magnitude at window w (hop w / 4, Hann; ``stft_windows``), clamped at 1e-5
before the log, as the official multi-scale STFT loss. Without the adversarial losses of the
official training, magnitude losses leave the phase free; the SI-SDR term (``si_sdr_weight``)
makes the round trip follow the waveform, which Codec SI-SDR needs. The unquantized term trains the decoder on
continuous latents too, which is what Codecformer decodes.

Validation and evaluation: round-trip SI-SDR of the mixtures and sources (monitor ``si_sdr``,
with the RVQ) and ``si_sdr_unquantized`` (decoding the continuous latents). Inference: the round
trip, written as ``<stem>_decoded.wav``.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.codecs import DAC
from sepkit.codecs.base import fit_length
from sepkit.data import resample
from sepkit.metrics import si_sdr

from ..builders import build_dataset
from ..config import ConfigError
from ..evaluate import items
from .base import Task


@dataclasses.dataclass
class CodecOptions:
    """Weights of the loss terms (module docstring) and the STFT windows in samples."""

    waveform_weight: float = 1.0
    stft_weight: float = 1.0
    stft_windows: list = dataclasses.field(default_factory=lambda: [2048, 512])
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    si_sdr_weight: float = 0.0
    unquantized_weight: float = 0.0


def stft_loss(estimate: torch.Tensor, target: torch.Tensor, windows) -> torch.Tensor:
    """Multi-scale STFT loss of (N, T) signals: per window, L1 of log magnitudes + L1 of magnitudes."""
    total = estimate.new_zeros(())
    for w in windows:
        win = torch.hann_window(w, device=estimate.device, dtype=estimate.dtype)
        spec = [torch.stft(x, w, w // 4, window=win, return_complex=True).abs() for x in (estimate, target)]
        total = total + F.l1_loss(spec[0].clamp_min(1e-5).log10(), spec[1].clamp_min(1e-5).log10())
        total = total + F.l1_loss(spec[0], spec[1])
    return total


class CodecTask(Task):
    """Training of a DAC-shaped codec (see the module docstring)."""

    name = "codec"
    monitor = "si_sdr"
    monitor_mode = "max"
    Options = CodecOptions

    def check_config(self) -> None:
        if self.cfg.model.name.lower() != "dac":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the codec task trains model.name=dac")
        rate = self.cfg.model.args.get("sample_rate")
        if rate is not None and int(rate) != self.sample_rate:
            raise ConfigError(f"model.args.sample_rate={rate!r} differs from data.sample_rate={self.sample_rate}; "
                              "drop it (the data's rate is used)")
        o = self.options
        if not o.stft_windows or not all(isinstance(w, int) and w >= 8 for w in o.stft_windows):
            raise ConfigError(f"task_args.stft_windows={o.stft_windows!r}: must be a list of ints >= 8")
        for name in ("waveform_weight", "stft_weight", "commitment_weight", "codebook_weight", "si_sdr_weight",
                     "unquantized_weight"):
            if getattr(o, name) < 0:
                raise ConfigError(f"task_args.{name}={getattr(o, name)!r}: must be >= 0")

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args, sample_rate=self.sample_rate)
        try:
            return DAC(**args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {exc} (DAC takes encoder_dim, encoder_rates, latent_dim, decoder_dim, "
                              "decoder_rates, n_codebooks, codebook_size, codebook_dim, quantizer_dropout)") from None
        except ValueError as exc:
            raise ConfigError(f"model.args: {exc}") from None

    def dataset(self, which: str):
        return build_dataset(self.cfg.data, which, self.cfg.train.seed)

    @staticmethod
    def signals(batch: dict) -> torch.Tensor:
        """Mixtures and sources of a batch as (N, 1, T) codec inputs."""
        parts = [batch["mixture"][:, None]]
        if "sources" in batch:
            parts.append(batch["sources"])
        return torch.cat(parts, dim=1).reshape(-1, 1, batch["mixture"].shape[-1])

    def reconstruction(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        o = self.options
        loss = o.waveform_weight * F.l1_loss(estimate, target)
        if o.stft_weight:
            loss = loss + o.stft_weight * stft_loss(estimate[:, 0], target[:, 0], o.stft_windows)
        if o.si_sdr_weight:
            loss = loss - o.si_sdr_weight * si_sdr(estimate[:, 0], target[:, 0]).mean()
        return loss

    def training_step(self, model: DAC, batch: dict):
        x = self.signals(batch)
        o = self.options
        z = model.encode(x)
        q = model.quantizer(z)
        y = fit_length(model.decoder(q.z_q), x.shape[-1])
        recon = self.reconstruction(y, x)
        loss = recon + o.commitment_weight * q.commitment_loss + o.codebook_weight * q.codebook_loss
        logs = {"recon": recon.item(), "commitment": q.commitment_loss.item()}
        if o.unquantized_weight:
            y_c = fit_length(model.decoder(z), x.shape[-1])
            recon_c = self.reconstruction(y_c, x)
            loss = loss + o.unquantized_weight * recon_c
            logs["recon_unquantized"] = recon_c.item()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None) -> list[dict]:
        model.eval()
        device = self.model_device(model)
        rows = []
        for item in items(dataset, max_items, progress):
            x = self.signals({k: v.unsqueeze(0) for k, v in item.items() if k in ("mixture", "sources")}).to(device)
            z = model.encode(x)
            y = fit_length(model.decode(model.quantize(z)[0]), x.shape[-1])
            y_c = fit_length(model.decode(z), x.shape[-1])
            ref = x.double().cpu()
            rows.append({"id": item["id"], "si_sdr": float(si_sdr(y.double().cpu(), ref).mean()),
                         "si_sdr_unquantized": float(si_sdr(y_c.double().cpu(), ref).mean())})
        return rows

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, **options) -> dict:
        """Round trip of ``waveform`` (T,) through the codec (with its RVQ) at ``sample_rate``."""
        x = self.to_model_rate(waveform, sample_rate).to(self.model_device(model))
        y = fit_length(model.decode(model.quantize(model.encode(x[None, None]))[0]), x.shape[-1])[0, 0].cpu()
        return {"decoded": resample(y, self.sample_rate, sample_rate)[: waveform.shape[-1]]}

    def output_names(self) -> list[str]:
        return ["decoded"]


TASK = CodecTask
