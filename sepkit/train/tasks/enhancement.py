"""The ``enhancement`` task: a noisy recording in, the estimated clean speech out.

Items are ``{"mixture": noisy (T,), "sources": clean (1, T), "id"}``; the built-in defaults are
the synthetic generator and the spoken corpus with one speaker and noise (``data.n_src`` must be
1). The model maps (B, T) to (B, T) (or (B, 1, T)); by default it is a separator of
``model.name`` with one source.
The default loss is negative SI-SDR (``task_args.loss``).
Evaluation reports SI-SDR, SI-SDRi and, where the ``eval`` extra is installed, PESQ (wide band at
16 kHz, narrow band at 8 kHz) and ESTOI; validation SI-SDR (the monitor) and SI-SDRi.

Subclasses (the GCRN and diffusion recipes) override :meth:`enhance` (how a trained model
produces its estimate, e.g. a sampler), :meth:`training_step`, :meth:`dataset` for their corpora
or :meth:`build_model`.
"""
from __future__ import annotations

import dataclasses
import sys

import torch
from torch import nn

from sepkit.data import resample
from sepkit.losses import SISDRLoss
from sepkit.metrics import estoi, pesq, si_sdr, si_sdri

from ..builders import BUILTIN, build_dataset, build_model
from ..config import ConfigError
from ..evaluate import items, summarize
from .base import Task
from .common import have_module, scaled_to_input


@dataclasses.dataclass
class EnhancementOptions:
    """loss: "si_sdr" (negative SI-SDR) or "l1" (waveform L1); perceptual: also report PESQ
    and ESTOI in evaluation (skipped, with a note, when the packages are missing)."""

    loss: str = "si_sdr"
    perceptual: bool = True


class EnhancementTask(Task):
    """Single-speaker enhancement (see the module docstring)."""

    name = "enhancement"
    chunked = True
    monitor = "si_sdr"
    monitor_mode = "max"
    Options = EnhancementOptions
    LOSSES = ("si_sdr", "l1")

    def check_config(self) -> None:
        if self.cfg.data.n_src != 1:
            raise ConfigError(f"data.n_src={self.cfg.data.n_src}: the enhancement task estimates one source; set data.n_src=1")
        if getattr(self.options, "loss", "si_sdr") not in self.LOSSES:
            raise ConfigError(f"task_args.loss={self.options.loss!r}: must be one of {self.LOSSES}")

    def build_model(self) -> nn.Module:
        """A separator of ``model.name`` with one source (a mask-based enhancer)."""
        return build_model(self.cfg.model, self.cfg.data)

    def dataset(self, which: str):
        data = self.cfg.data
        if data.dataset in BUILTIN:
            data = dataclasses.replace(data, synthetic={"noise": True, **data.synthetic})
        return build_dataset(data, which, self.cfg.train.seed)

    # -- the model's estimate --------------------------------------------------------------
    def enhance(self, model: nn.Module, noisy: torch.Tensor, **options) -> torch.Tensor:
        """``noisy`` (B, T) at the model's rate -> the estimate (B, T)."""
        out = model(noisy)
        return out.reshape(out.shape[0], -1)[:, : noisy.shape[-1]]

    def loss(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Training loss of ``estimate`` (B, T) against ``clean`` (B, T)."""
        if self.options.loss == "l1":
            return (estimate.float() - clean).abs().mean()
        return SISDRLoss()(estimate.float().unsqueeze(1), clean.unsqueeze(1))

    def training_step(self, model: nn.Module, batch: dict):
        noisy, clean = batch["mixture"], batch["sources"][:, 0]
        est = model(noisy)
        est = est.reshape(est.shape[0], -1)[:, : noisy.shape[-1]]
        return self.loss(est, clean), {}

    # -- evaluation ------------------------------------------------------------------------
    def metrics(self, estimate: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, full: bool = True) -> dict:
        """Metrics of one utterance: ``estimate``, ``clean``, ``noisy`` (1, T), float64 on the CPU."""
        row = {"si_sdr": float(si_sdr(estimate, clean)), "si_sdri": float(si_sdri(estimate, clean, noisy))}
        if full and self.options.perceptual:
            if have_module("pesq") and self.sample_rate in (8000, 16000):
                mode = "wb" if self.sample_rate == 16000 else "nb"
                row["pesq"] = float(pesq(estimate.float(), clean.float(), self.sample_rate, mode=mode))
            if have_module("pystoi"):
                row["estoi"] = float(estoi(estimate, clean, self.sample_rate))
        return row

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None, full: bool = True, **options):
        if full and self.options.perceptual and not (have_module("pesq") and have_module("pystoi")):
            print("sepkit: PESQ/ESTOI skipped (pip install 'sepkit[eval]' to report them)", file=sys.stderr)
        model.eval()
        device = self.model_device(model)
        rows = []
        for item in items(dataset, max_items, progress):
            noisy = item["mixture"].to(device).unsqueeze(0)
            est = self.enhance(model, noisy, **options).double().cpu()
            clean = item["sources"][:1].double()
            rows.append({"id": item["id"], **self.metrics(est, clean, noisy.double().cpu(), full)})
        return rows

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items, full=False)
        return {k: v[0] for k, v in summarize(rows).items()}

    @torch.no_grad()
    def infer_chunk(self, model, piece: torch.Tensor, sample_rate: int, **options) -> torch.Tensor:
        """One chunk ``piece`` (L,) at ``sample_rate`` -> its estimate (1, L) at that rate, on the
        CPU (:meth:`enhance` at the model's rate, resampled there and back)."""
        x = resample(piece.float(), sample_rate, self.sample_rate).to(self.model_device(model))
        est = self.enhance(model, x.unsqueeze(0), **options)[0].float().cpu()
        return resample(est, self.sample_rate, sample_rate)[: piece.shape[-1]].unsqueeze(0)

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, chunk: float = 8.0, overlap: float = 1.0, **options) -> dict:
        """Enhance ``waveform`` (T,) at ``sample_rate``: chunks of ``chunk`` seconds overlapping by
        ``overlap`` seconds (cross-faded, :meth:`~.base.Task.infer_chunks`), each enhanced at the
        model's rate (:meth:`infer_chunk`), so memory is bounded by the chunk, not the recording.
        Returns ``{"enhanced": (T,)}`` at ``sample_rate``."""
        self.check_options(model, options)
        return {"enhanced": self.infer_chunks(model, waveform, sample_rate, chunk, overlap, **options)[0]}

    def output_names(self) -> list[str]:
        return ["enhanced"]

    @torch.no_grad()
    def example(self, model, item: dict) -> dict:
        """One test ``item`` enhanced by :meth:`infer`: ``{"noisy", "clean", "enhanced"}`` (T,),
        the estimate at the input's level (:func:`~.base.scaled_to_input`)."""
        noisy = item["mixture"].float()
        enhanced = scaled_to_input(self.infer(model, noisy, self.sample_rate)["enhanced"].float(), noisy)
        return {"noisy": noisy, "clean": item["sources"][0].float(), "enhanced": enhanced}

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """The noisy input (full width), then the clean reference beside the enhanced estimate
        (titled with its SI-SDRi): waveforms and spectrograms."""
        from ..report import plot_signals

        noisy, clean, enhanced = example["noisy"], example["clean"], example["enhanced"]
        gain = float(si_sdri(enhanced.double()[None], clean.double()[None], noisy.double()[None]))
        plot_signals(fig, [[("noisy", noisy)], [("clean", clean), (f"enhanced (SI-SDRi {gain:.1f} dB)", enhanced)]],
                     sample_rate)
        return True


TASK = EnhancementTask
