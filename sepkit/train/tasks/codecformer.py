"""The ``codecformer`` task: separation in a frozen codec's latent space (Codecformer).

Model: :class:`sepkit.models.codecformer.Codecformer` (``model.name: codecformer``) over the DAC
read from ``model.args.codec_weights`` (a DAC weights file such as the official 16 kHz release,
or a run folder of the codec task); the other ``model.args`` are Codecformer's keywords (d_model,
nhead, dim_feedforward, n_layers, dropout, quantize, max_frames, attention_backend, checkpointing). ``n_src``
and ``sample_rate`` come from the data section; the data stay at their rate (8 kHz) and the model
resamples to the codec's rate inside. The codec is frozen (:meth:`frozen`): not trained, not in
the optimizer, not in the checkpoints; it is reloaded from ``codec_weights`` when a checkpoint is
rebuilt.

Loss (``task_args.loss``), permutation invariant:

* ``"codec_si_sdr"`` (default, the paper's Codec SI-SDR): negative SI-SDR against the codec
  round trip of each clean source (the "transmitted" target), computed without gradient the first
  time an item is seen and cached in memory (key: item id and a digest of its samples, so random
  crops and dynamic mixing stay correct; at most ``target_cache`` items).
* ``"si_sdr"``: negative SI-SDR against the clean sources.

Evaluation, per utterance, sources aligned by PIT on SI-SDR: ``si_sdr`` (vs the clean sources),
``si_sdri`` (vs the mixture), ``si_sdri_rt`` (improvement over the codec round trip of the
mixture, the baseline a codec-based pipeline starts from) and ``csi_sdr`` (Codec SI-SDR: vs the
round trips of the sources). Validation: si_sdr (the monitor), si_sdri, si_sdri_rt.

Prerequisite: with ``task_args.codec_recipe`` (e.g. ``dac-codec``, preset
``task_args.codec_preset``) and no ``codec_weights``, that codec recipe is a prerequisite
(:meth:`CodecformerTask.prerequisites`): trained first in ``<run>/prereq-codec`` (resumed when
interrupted, reused when complete), its run folder going into ``model.args.codec_weights``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from sepkit.codecs import DAC
from sepkit.losses import CodecSISDRLoss, PITLoss, SISDRLoss, reorder_sources
from sepkit.metrics import si_sdr
from sepkit.models.codecformer import Codecformer

from ..config import ConfigError, load_recipe
from ..evaluate import items, summarize
from ..prerequisites import Prerequisite
from ..restore import load_trained
from .common import local_file
from .separation import SeparationTask

MODEL_ARGS = ("codec_weights", "d_model", "nhead", "dim_feedforward", "n_layers", "dropout", "quantize", "max_frames",
              "attention_backend", "checkpointing")


@dataclasses.dataclass
class CodecformerOptions:
    """loss: "codec_si_sdr" or "si_sdr"; target_cache: most cached transmitted targets (0: off);
    codec_recipe / codec_preset: the codec recipe trained first (a prerequisite) when
    model.args.codec_weights is not given."""

    loss: str = "codec_si_sdr"
    target_cache: int = 20000
    codec_recipe: str | None = None
    codec_preset: str | None = None


class CodecformerTask(SeparationTask):
    """Codecformer training (see the module docstring)."""

    name = "codecformer"
    Options = CodecformerOptions
    LOSSES = ("codec_si_sdr", "si_sdr")
    valid_metrics = ("si_sdr", "si_sdri", "si_sdri_rt")
    test_metrics = ("si_sdr", "si_sdri", "si_sdri_rt", "csi_sdr")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._targets: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def check_config(self) -> None:
        if self.cfg.model.name.lower() != "codecformer":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the codecformer task trains model.name=codecformer")
        bad = sorted(set(self.cfg.model.args) - set(MODEL_ARGS))
        if bad:
            raise ConfigError(f"unknown key(s) {', '.join('model.args.' + b for b in bad)}; model.args has {list(MODEL_ARGS)}")
        if self.options.loss not in self.LOSSES:
            raise ConfigError(f"task_args.loss={self.options.loss!r}: must be one of {self.LOSSES}")
        if self.options.target_cache < 0:
            raise ConfigError(f"task_args.target_cache={self.options.target_cache!r}: must be >= 0")
        if self.options.codec_preset is not None and self.options.codec_recipe is None:
            raise ConfigError("task_args.codec_preset is set without task_args.codec_recipe")

    # -- prerequisites and model -------------------------------------------------------------
    def prerequisites(self) -> list[Prerequisite]:
        """With ``task_args.codec_recipe`` and no ``model.args.codec_weights``: that codec recipe's
        run, into ``model.args.codec_weights``."""
        if self.cfg.model.args.get("codec_weights") or self.options.codec_recipe is None:
            return []
        sub = load_recipe(self.options.codec_recipe, preset=self.options.codec_preset)
        if sub.task != "codec":
            raise ConfigError(f"task_args.codec_recipe={self.options.codec_recipe!r} is a {sub.task!r} recipe, "
                              "not a codec one")
        return [Prerequisite("codec", sub, "model.args.codec_weights", what="the codec")]

    def codec(self, path) -> DAC:
        """The codec of ``model.args.codec_weights``: a DAC weights file, or a run folder of the
        codec task."""
        if Path(path).is_dir():
            _, codec = load_trained(path)
            if not isinstance(codec, DAC):
                raise ConfigError(f"model.args.codec_weights={str(path)!r}: the run holds a {type(codec).__name__}, "
                                  "not a DAC codec")
            return codec
        return DAC.from_pretrained(path)

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        path = local_file("model.args.codec_weights", args.pop("codec_weights", None))
        try:
            codec = self.codec(path)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"model.args.codec_weights={str(path)!r}: {exc}") from None
        try:
            return Codecformer(codec, n_src=self.cfg.data.n_src, sample_rate=self.sample_rate, **args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.args: {exc}") from None

    def frozen(self, model: nn.Module) -> tuple[str, ...]:
        return ("codec",)

    # -- training ------------------------------------------------------------------------------
    def transmitted(self, model: Codecformer, batch: dict) -> torch.Tensor:
        """Codec round trips (B, S, T) of the batch's clean sources, from the cache when seen before."""
        sources = batch["sources"]
        if not self.options.target_cache:
            return model.round_trip(sources)
        ids = batch.get("id") or [None] * sources.shape[0]
        keys = [(str(i), hashlib.blake2b(s.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest())
                for i, s in zip(ids, sources)]
        todo = [b for b, k in enumerate(keys) if k not in self._targets]
        if todo:
            fresh = model.round_trip(sources[todo])
            for b, t in zip(todo, fresh):
                self._targets[keys[b]] = t.detach().cpu()
            while len(self._targets) > self.options.target_cache:
                self._targets.popitem(last=False)
        return torch.stack([self._targets[k] for k in keys]).to(sources.device)

    def loss(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._loss is None:
            pair = CodecSISDRLoss if self.options.loss == "codec_si_sdr" else SISDRLoss
            self._loss = PITLoss(pair(reduction="none"))
        value, _ = self._loss(estimate.float(), target)
        return value

    def training_step(self, model: nn.Module, batch: dict):
        est = model(batch["mixture"])
        target = self.transmitted(model, batch) if self.options.loss == "codec_si_sdr" else batch["sources"]
        return self.loss(est, target), {}

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None, metrics=None) -> list[dict]:
        metrics = metrics or self.test_metrics
        model.eval()
        device = self.model_device(model)
        pit = PITLoss(SISDRLoss(reduction="none"))
        rows = []
        for item in items(dataset, max_items, progress):
            mix = item["mixture"].to(device)[None]
            ref = item["sources"].to(device)[None]
            est = model(mix).float()
            est = reorder_sources(est, pit(est, ref)[1])
            e, r, m = est.double().cpu(), ref.double().cpu(), mix[:, None].double().cpu()
            score = si_sdr(e, r)
            row = {"id": item["id"], "si_sdr": float(score.mean())}
            if "si_sdri" in metrics:
                row["si_sdri"] = float((score - si_sdr(m, r)).mean())
            if "si_sdri_rt" in metrics:
                rt = model.round_trip(mix)[:, None].double().cpu()
                row["si_sdri_rt"] = float((score - si_sdr(rt, r)).mean())
            if "csi_sdr" in metrics:
                row["csi_sdr"] = float(si_sdr(e, model.round_trip(ref).double().cpu()).mean())
            rows.append(row)
        return rows

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items, metrics=self.valid_metrics)
        return {k: v[0] for k, v in summarize(rows).items()}


TASK = CodecformerTask
