"""The ``dip-separate`` task: supervised separation with a pretrained DIP frontend.

A separator of ``model.name`` (convtasnet, dprnn, sepformer, bilstm) gets the cues of a
pretrained :class:`sepkit.models.dip.DIPFrontend` through its frontend hook (FrontendAdapter:
linear resampling of the 50 Hz cues to the encoder's frames, a 1x1 projection added to the
encoder output). ``model.args`` holds the separator's arguments plus:

- ``frontend_ckpt``: the pretrained frontend: a dip-pretrain run folder, a file written by
  ``DIPFrontend.save``, ``pretrain`` (train one first: ``task_args.pretrain_recipe`` with
  ``task_args.pretrain_preset``, under ``<run>/prereq-dip-pretrain``, reused when it exists; the
  path is recorded in the saved config), or null: no frontend (the plain separator, the baseline).
- ``frontend_config``: optional name or dict the checkpoint must match (a frontend of another
  configuration is refused with both named).

``task_args.freeze_frontend`` (default true) keeps the frontend frozen (in eval mode, out of the
optimizer and of the checkpoints: the frontend is reloaded from ``frontend_ckpt``); false fine-tunes
it with the separator. The separator and the frontend must run at the same sample rate
(``data.sample_rate``).

Training and validation use the recipe's data section (the synthetic domain, with references).
The test set is the synthetic test split followed by the *real* domain: ``task_args.real_root``
(a folder of reference-free mixtures, e.g. REAL-M: every file) or the stand-in of the dip-pretrain task
(the built-in generator with ``task_args.real_synthetic``: reverberant and noisy, with
references). Evaluation rows carry ids ``synthetic/<id>`` and ``real/<id>`` with SI-SDR(i) and
SDR(i) where references exist; the separated sources of real mixtures (all of a folder, the first
``task_args.write_real`` of the stand-in) are written to ``task_args.real_output`` (default
``<run>/real_separated``) as ``<id>_s<k>.wav``; a per-domain summary is printed.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.data import write_audio
from sepkit.data.folders import AudioFolder, PrefixedSets
from sepkit.models.dip import check_sample_rates

from ..builders import build_dataset, build_model
from ..config import ConfigError, ModelConfig, load_recipe
from ..evaluate import evaluate, items
from ..prerequisites import Prerequisite
from ..restore import load_frontend
from .common import DEFAULT_REAL, config_error, domain_dataset
from .separation import SeparationTask

FRONTEND_KEYS = ("frontend_ckpt", "frontend_config")
PRETRAIN = "pretrain"


@dataclasses.dataclass
class DIPSeparateOptions:
    """freeze_frontend: frozen (true) or fine-tuned frontend; real_root: folder of real,
    reference-free test mixtures (null: the stand-in domain); real_synthetic: generator settings
    of the stand-in over data.synthetic; real_output: folder for the separated
    real mixtures (null: <run>/real_separated); write_real: how many stand-in real mixtures to
    write; pretrain_recipe / pretrain_preset: what ``frontend_ckpt: pretrain`` trains."""

    freeze_frontend: bool = True
    real_root: str | None = None
    real_synthetic: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_REAL))
    real_output: str | None = None
    write_real: int = 4
    pretrain_recipe: str = "dip-pretrain"
    pretrain_preset: str | None = "demo"


class DIPSeparateTask(SeparationTask):
    """Separation with a pretrained DIP frontend (see the module docstring)."""

    name = "dip_separate"
    Options = DIPSeparateOptions

    def check_config(self) -> None:
        o = self.options
        if o.write_real < 0:
            raise config_error("task_args.write_real", o.write_real, "must be >= 0")
        ckpt = self.cfg.model.args.get("frontend_ckpt")
        if ckpt is not None and ckpt != PRETRAIN and not Path(str(ckpt)).exists():
            raise ConfigError(f"model.args.frontend_ckpt={str(ckpt)!r}: not found (a dip-pretrain run folder, a "
                              f"frontend file, {PRETRAIN!r} or null)")

    # -- building ------------------------------------------------------------------------
    def prerequisites(self) -> list[Prerequisite]:
        """``model.args.frontend_ckpt: pretrain``: the DIP pretraining (``task_args.pretrain_recipe``
        and ``pretrain_preset`` at this recipe's sample rate and seed) into that argument."""
        if self.cfg.model.args.get("frontend_ckpt") != PRETRAIN:
            return []
        overrides = [f"data.sample_rate={int(self.cfg.data.sample_rate)}", f"train.seed={self.cfg.train.seed}"]
        sub = load_recipe(self.options.pretrain_recipe, self.options.pretrain_preset, overrides)
        if sub.task.replace("-", "_") != "dip_pretrain":
            raise ConfigError(f"task_args.pretrain_recipe={self.options.pretrain_recipe!r} is a {sub.task} recipe, "
                              "not dip-pretrain")
        return [Prerequisite("dip-pretrain", sub, "model.args.frontend_ckpt", what="the DIP frontend")]

    def real_output(self) -> Path | None:
        """Where the separated real mixtures go: ``task_args.real_output``, else
        ``<run>/real_separated`` (None outside a run)."""
        if self.options.real_output:
            return Path(self.options.real_output)
        return Path(self.run_dir) / "real_separated" if self.run_dir is not None else None

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        ckpt, config = args.pop("frontend_ckpt", None), args.pop("frontend_config", None)
        if ckpt == PRETRAIN:
            raise ConfigError("model.args.frontend_ckpt='pretrain' is resolved when training; to build the model "
                              "elsewhere give the frontend's path")
        if ckpt is not None:
            try:
                frontend = load_frontend(ckpt, config)
                check_sample_rates(self.cfg.data.sample_rate, frontend)
            except (FileNotFoundError, ValueError) as exc:
                raise ConfigError(f"model.args.frontend_ckpt={str(ckpt)!r}: {exc}") from None
            args["frontend"] = frontend
        return build_model(ModelConfig(self.cfg.model.name, args), self.cfg.data)

    def frozen(self, model: nn.Module) -> tuple[str, ...]:
        if self.options.freeze_frontend and getattr(model, "frontend", None) is not None:
            return ("frontend",)
        return ()

    def dataset(self, which: str):
        if which != "test":
            return build_dataset(self.cfg.data, which, self.cfg.train.seed)
        if self.options.real_root is not None:
            try:
                real = AudioFolder(self.options.real_root, "all", self.cfg.data.sample_rate)
            except (FileNotFoundError, ValueError) as exc:
                raise ConfigError(f"task_args.real_root={self.options.real_root!r}: {exc}") from None
        else:
            real = domain_dataset(self, "real", "test")
        return PrefixedSets([("synthetic", build_dataset(self.cfg.data, "test", self.cfg.train.seed)), ("real", real)])

    # -- separation ----------------------------------------------------------------------
    def separate(self, model: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, S, T); inputs shorter than the frontend's receptive field are zero-padded."""
        frontend = getattr(model, "frontend", None)
        length = mixture.shape[-1]
        field = frontend.config.receptive_field if frontend is not None else 1
        if length < field:
            return model(F.pad(mixture, (0, field - length)))[..., :length]
        return model(mixture)

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None, metrics=None):
        model.eval()
        device = self.model_device(model)
        out_dir = self.real_output()
        rows, written = [], 0
        for item in items(dataset, max_items, progress):
            domain = item["id"].split("/", 1)[0] if "/" in item["id"] else "synthetic"
            has_ref = "sources" in item
            if domain == "real" and (not has_ref or written < self.options.write_real):
                if out_dir is None:
                    raise ConfigError("task_args.real_output is required to write the separated real mixtures")
                est = self.separate(model, item["mixture"].to(device).unsqueeze(0))[0].float().cpu()
                stem = item["id"].split("/", 1)[1].replace("/", "_")
                for k, src in enumerate(est):
                    write_audio(out_dir / f"{stem}_s{k + 1}.wav", src, self.sample_rate)
                written += 1
            if has_ref:
                (row,) = evaluate(model, [item], device, metrics=metrics or self.test_metrics,
                                  separate=self.separate)
                rows.append(row)
        _print_domains(rows, written, out_dir)
        return rows


def _print_domains(rows: list[dict], written: int, out_dir: Path | None) -> None:
    by = {}
    for r in rows:
        by.setdefault(r["id"].split("/", 1)[0] if "/" in r["id"] else "synthetic", []).append(r)
    if len(by) > 1 or "real" in by:
        for domain, rs in by.items():
            figures = ", ".join(f"{k} {sum(r[k] for r in rs) / len(rs):.2f} dB" for k in rs[0] if k != "id")
            print(f"dip-separate: {domain} ({len(rs)} utterances): {figures}", file=sys.stderr)
    if written and out_dir is not None:
        print(f"dip-separate: separated {written} real mixture(s) into {out_dir}", file=sys.stderr)


TASK = DIPSeparateTask

__all__ = ["DIPSeparateTask", "DIPSeparateOptions", "TASK"]
