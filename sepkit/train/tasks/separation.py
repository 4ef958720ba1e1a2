"""The ``separation`` task: a mixture in, one waveform per speaker out, trained with PIT.

Model: a separator of :mod:`sepkit.models.separators` named by ``model.name`` (``n_src`` and
``sample_rate`` come from the data section). Loss: ``train.loss`` ("si_sdr": negative SI-SDR,
or "sdr"), permutation invariant. Validation: SI-SDR and SI-SDRi (monitor: SI-SDR); evaluation:
SI-SDR, SI-SDRi, SDR, SDRi per utterance. Inference: chunked separation of a recording of any
length, resampled to the model's rate and back.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.data import resample
from sepkit.losses import PITLoss, SISDRLoss, reorder_sources
from sepkit.metrics import si_sdri

from ..builders import build_dataset, build_loss, build_model
from ..evaluate import METRICS, evaluate, summarize
from .base import Task
from .common import scaled_to_input


class SeparationTask(Task):
    """Supervised separation of ``data.n_src`` sources (see the module docstring).

    Subclasses change the model (:meth:`build_model`), the forward pass used for evaluation
    and inference (:meth:`separate`) or the loss (:meth:`loss`).
    """

    name = "separation"
    chunked = True
    monitor = "si_sdr"
    monitor_mode = "max"
    valid_metrics = ("si_sdr", "si_sdri")
    test_metrics = METRICS

    def __init__(self, cfg):
        super().__init__(cfg)
        self._loss = None

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, self.cfg.data)

    def dataset(self, which: str):
        return build_dataset(self.cfg.data, which, self.cfg.train.seed)

    def loss(self, estimate: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Permutation-invariant loss of ``estimate`` (B, S, T) against ``sources`` (B, S, T)."""
        if self._loss is None:
            self._loss = build_loss(self.cfg)
        value, _ = self._loss(estimate.float(), sources)
        return value

    def training_step(self, model: nn.Module, batch: dict):
        est = model(batch["mixture"])
        return self.loss(est, batch["sources"]), {}

    def separate(self, model: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
        """``mixture`` (B, T) at the model's rate -> sources (B, S, T)."""
        return model(mixture)

    def evaluate(self, model, dataset, progress=False, max_items=None, metrics=None):
        return evaluate(model, dataset, self.model_device(model), metrics=metrics or self.test_metrics,
                        max_items=max_items, progress=progress, separate=self.separate)

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items, metrics=self.valid_metrics)
        return {k: v[0] for k, v in summarize(rows).items()}

    @torch.no_grad()
    def infer_chunk(self, model, piece: torch.Tensor, sample_rate: int, **options) -> torch.Tensor:
        """One chunk ``piece`` (L,) at ``sample_rate`` -> its sources (S, L) at that rate, on the
        CPU (resampled to the model's rate and back when they differ)."""
        x = resample(piece.float(), sample_rate, self.sample_rate).to(self.model_device(model))
        est = self.separate(model, x.unsqueeze(0))[0].float().cpu()
        return resample(est, self.sample_rate, sample_rate)[:, : piece.shape[-1]]

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, chunk: float = 8.0, overlap: float = 1.0, **options) -> dict:
        """Separate ``waveform`` (T,) at ``sample_rate``: chunks of ``chunk`` seconds overlapping
        by ``overlap`` seconds at the input's rate (:meth:`~.base.Task.infer_chunks`: sources
        aligned across chunks), each resampled to the model's rate and back (:meth:`infer_chunk`).
        Returns ``{"s1": (T,), ...}``; the same chunks as ``sepkit separate`` reads from a file."""
        est = self.infer_chunks(model, waveform, sample_rate, chunk, overlap, **options)
        return {f"s{k + 1}": src for k, src in enumerate(est)}

    @torch.no_grad()
    def example(self, model, item: dict) -> dict:
        """One test ``item`` separated by :meth:`infer`: ``{"mixture", "reference_k",
        "estimate_k"}`` (T,) for k = 1..S, the estimates ordered to match the references (PIT on
        SI-SDR) and scaled together to the mixture's level (:func:`~.common.scaled_to_input`)."""
        mixture, refs = item["mixture"].float(), item["sources"].float()
        est = torch.stack(list(self.infer(model, mixture, self.sample_rate).values())).float()
        if est.shape == refs.shape:
            _, perm = PITLoss(SISDRLoss(reduction="none"))(est[None], refs[None])
            est = reorder_sources(est[None], perm)[0]
        est = scaled_to_input(est, mixture)
        out = {"mixture": mixture}
        out.update({f"reference_{k + 1}": r for k, r in enumerate(refs)})
        out.update({f"estimate_{k + 1}": e for k, e in enumerate(est)})
        return out

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """The mixture (full width), then per source its reference beside its estimate (titled
        with the estimate's SI-SDRi): waveforms and spectrograms."""
        from ..report import plot_signals

        mixture = example["mixture"]
        grid = [[("mixture", mixture)]]
        k = 1
        while f"estimate_{k}" in example:
            est, ref = example[f"estimate_{k}"], example.get(f"reference_{k}")
            title = f"estimate {k}"
            if ref is not None:
                gain = float(si_sdri(est.double()[None], ref.double()[None], mixture.double()))
                title += f" (SI-SDRi {gain:.1f} dB)"
            grid.append([(f"reference {k}", ref) if ref is not None else None, (title, est)])
            k += 1
        plot_signals(fig, grid, sample_rate)
        return True


TASK = SeparationTask
