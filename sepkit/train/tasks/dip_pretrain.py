"""The ``dip-pretrain`` task: self-supervised Siamese pretraining of the DIP frontend on two domains.

Every training item pairs an unlabelled mixture of the *synthetic* domain with one of the *real*
domain; both batches go through the same :class:`sepkit.models.dip.DIPFrontend` (shared weights)
and :class:`sepkit.models.dip.DIPPretrainLoss` scores them: MIC = MPC(real) + MPC(synthetic) +
alpha MMD^2 of the contextual cues (``task_args.alpha``, 10; 0 is plain MPC on both domains).

Domains:

- synthetic: ``task_args.synthetic_root`` (a folder of audio files) or, when null, the recipe's
  data section (``data.dataset``: the built-in generator, LibriMix, WSJ0-mix; only mixtures are
  used). The built-in generator's default here is clean and anechoic.
- real: ``task_args.real_root`` (a folder of audio files, e.g. REAL-M) or, when null, the
  built-in generator with ``task_args.real_synthetic`` over ``data.synthetic`` (default noise and
  reverberation on, other speakers): reverberant, noisy mixtures, *a stand-in for real
  recordings* so the demo runs anywhere.

Folders: every ``.wav``/``.flac`` below the root (sorted), resampled to ``data.sample_rate``; the
last ``task_args.held_out`` files (default 5 %, at least one) form the valid and test split, the
rest the training split; training items are ``data.segment``-second crops (seeded by the
trainer's seed, the epoch and the index), shorter files are zero-padded and their length kept.

Model: ``model.name: dip``, ``model.args``: :class:`sepkit.models.dip.DIPFrontend` arguments
(``config: base | small`` and any DIPConfig field); ``sample_rate`` comes from the data section.
The quantizer's temperature advances once per optimizer update (every ``train.grad_accum``
training steps) and is saved with the weights.

Starting from released weights: ``task_args.init`` names wav2vec2 or HuBERT weights (a file or
a transformers model folder in torchaudio's, fairseq's or Hugging Face's layout,
:meth:`sepkit.models.dip.DIPFrontend.load_wav2vec2`) that start a fresh run, as the DIP paper
starts from wav2vec2 base; ``model.args`` must describe that architecture (``config: base``).
The pretraining-only parts the file lacks (a torchaudio file has none of them; HuBERT no
quantizer) keep their initialisation. Not read again on ``--resume``.

Validation (monitor ``mpc``, lower is better), in eval mode with masks and negatives drawn from
a fixed seed: ``mpc`` = mean of ``mpc_real`` and ``mpc_synthetic`` (contrastive + diversity),
``perplexity`` of the codebooks, and the cross-domain discrepancy of the unmasked cues (what a
separator sees): ``mmd_cues``, the multi-kernel Gaussian MMD^2 (bandwidth heuristic, so it does
not depend on the cues' overall scale) between all valid frames of the real and the synthetic
items, and ``mmd_pooled``, the linear MMD of their utterance mean/variance pools. Evaluation
(``sepkit eval``, the final test) gives one row per pair with the same per-item figures (the MMD
of that pair's frames).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sepkit.data.folders import TwoDomains, collate_domains
from sepkit.errors import InputError
from sepkit.models.dip import MMD_MODES, DIPFrontend, DIPPretrainLoss

from ..config import ConfigError
from ..evaluate import items
from .base import Task
from .common import DEFAULT_REAL, config_error, domain_dataset

MODEL_NAMES = ("dip", "dip-frontend", "dip_frontend")
#: frames per domain that validation's frame-level MMD uses at most (evenly spaced)
MAX_MMD_FRAMES = 4000


@dataclasses.dataclass
class DIPPretrainOptions:
    """alpha: MMD weight (10; 0 = MPC); mmd: "frames" (multi-kernel MMD of frame-level cues) or
    "pooled" (linear MMD of utterance mean/variance pools); num_negatives, temperature,
    diversity_weight, feature_penalty_weight, negatives_from: MPC's (100, 0.1, 0.1, 10,
    "masked"); synthetic_root / real_root: folders of audio (null: the generator, see the
    module docstring); real_synthetic: generator settings of the stand-in real domain over
    data.synthetic; held_out: valid/test files of a folder (null: 5 %, at least one);
    valid_seed: seed of validation's masks and negatives; cache_items: keep the training pairs in
    memory once drawn (for small demo sets, where generating mixtures costs more than the step);
    init: released wav2vec2 / HuBERT weights that start the run (see the module docstring)."""

    alpha: float = 10.0
    mmd: str = "frames"
    num_negatives: int = 100
    temperature: float = 0.1
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    negatives_from: str = "masked"
    synthetic_root: str | None = None
    real_root: str | None = None
    real_synthetic: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_REAL))
    held_out: int | None = None
    valid_seed: int = 0
    cache_items: bool = False
    init: str | None = None


class DIPPretrainTask(Task):
    """Siamese MPC / MIC pretraining of the DIP frontend (see the module docstring)."""

    name = "dip_pretrain"
    monitor = "mpc"
    monitor_mode = "min"
    Options = DIPPretrainOptions

    def __init__(self, cfg):
        super().__init__(cfg)
        o = self.options
        self.loss_fn = DIPPretrainLoss(o.alpha, o.num_negatives, o.temperature, o.diversity_weight,
                                       o.feature_penalty_weight, o.negatives_from, o.mmd)
        self._micro = 0

    def check_config(self) -> None:
        o, cfg = self.options, self.cfg
        if cfg.model.name.lower() not in MODEL_NAMES:
            raise config_error("model.name", cfg.model.name, "the dip-pretrain task trains the DIP frontend: use 'dip'")
        if "sample_rate" in cfg.model.args and int(cfg.model.args["sample_rate"]) != int(cfg.data.sample_rate):
            raise ConfigError(f"model.args.sample_rate={cfg.model.args['sample_rate']} contradicts data.sample_rate="
                              f"{cfg.data.sample_rate}; set it in data only")
        if o.mmd not in MMD_MODES:
            raise config_error("task_args.mmd", o.mmd, f"must be one of {MMD_MODES}")
        if not o.alpha >= 0:
            raise config_error("task_args.alpha", o.alpha, "must be >= 0")
        if o.num_negatives < 1:
            raise config_error("task_args.num_negatives", o.num_negatives, "must be >= 1")
        if not isinstance(o.real_synthetic, dict):
            raise config_error("task_args.real_synthetic", o.real_synthetic, "must be a mapping of generator settings")
        if cfg.data.segment is None and cfg.data.batch_size != 1:
            raise ConfigError("data.segment=null (whole utterances) needs data.batch_size=1")

    # -- building ------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        args = {**self.cfg.model.args, "sample_rate": int(self.cfg.data.sample_rate)}
        try:
            return DIPFrontend(**args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.args: {exc}") from None

    def initialize(self, model: nn.Module) -> None:
        """``task_args.init``: load the released wav2vec2 / HuBERT weights into the frontend."""
        path = self.options.init
        if not path:
            return
        try:
            model.load_wav2vec2(path, what=f"task_args.init={path!r}")
        except FileNotFoundError as exc:
            raise ConfigError(f"task_args.init={path!r}: {exc}") from None

    def dataset(self, which: str):
        cache = self.options.cache_items and which == "train"
        return TwoDomains(domain_dataset(self, "real", which), domain_dataset(self, "synthetic", which), cache)

    def collate(self, items_: list[dict]) -> dict:
        return collate_domains(items_)

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, model: DIPFrontend, batch: dict):
        real = model.pretrain_outputs(batch["real"], batch["real_lengths"])
        synthetic = model.pretrain_outputs(batch["synthetic"], batch["synthetic_lengths"])
        loss, parts = self.loss_fn(real, synthetic)
        parts.pop("loss")
        parts["temperature"] = real.temperature
        self._micro += 1
        if self._micro % self.cfg.train.grad_accum == 0:          # one optimizer update done
            model.step_temperature()
        return loss, parts

    def _pair(self, model: DIPFrontend, item: dict, gen: torch.Generator):
        """Per-pair figures and the unmasked cues (n, C) of both items, in eval mode."""
        device = self.model_device(model)
        out, cues = {}, {}
        for name in ("real", "synthetic"):
            n = item[f"{name}_length"]
            wave = item[name][:n].to(device).unsqueeze(0)
            o = model.pretrain_outputs(wave, generator=gen)
            out[f"mpc_{name}"] = float(self.loss_fn.branch_mpc(o, gen))
            out[f"perplexity_{name}"] = float(o.perplexity)
            cues[name] = model(wave)[0].transpose(0, 1).float()      # (T', C): what a separator sees
        return out, cues

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None) -> list[dict]:
        model.eval()
        gen = torch.Generator().manual_seed(self.options.valid_seed)
        rows = []
        for item in items(dataset, max_items, progress):
            row, cues = self._pair(model, item, gen)
            row["mmd_cues"] = float(self.loss_fn.mic.mmd(cues["real"], cues["synthetic"]))
            rows.append({"id": item["id"], **row})
        return rows

    @torch.no_grad()
    def validate(self, model, dataset) -> dict:
        model.eval()
        gen = torch.Generator().manual_seed(self.options.valid_seed)
        rows, cues = [], {"real": [], "synthetic": []}
        for item in items(dataset, self.cfg.train.max_valid_items):
            row, c = self._pair(model, item, gen)
            rows.append(row)
            for k in cues:
                cues[k].append(c[k])
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        frames = {k: _spread(torch.cat(v)) for k, v in cues.items()}
        pooled = {k: _pooled(v) for k, v in cues.items()}
        return {
            "mpc": 0.5 * (mean["mpc_real"] + mean["mpc_synthetic"]),
            "mpc_real": mean["mpc_real"], "mpc_synthetic": mean["mpc_synthetic"],
            "perplexity": 0.5 * (mean["perplexity_real"] + mean["perplexity_synthetic"]),
            "mmd_cues": float(self.loss_fn.mic.mmd(frames["real"], frames["synthetic"])),
            "mmd_pooled": float((pooled["real"].mean(0) - pooled["synthetic"].mean(0)).square().sum()),
        }

    def infer(self, model, waveform, sample_rate, **options) -> dict:
        raise InputError("the dip-pretrain task has no waveform output: use its run as "
                         "model.args.frontend_ckpt of the dip-separate task")

    def output_names(self) -> list[str]:
        return []

    # -- the demo's example ----------------------------------------------------------------
    def example(self, model, item: dict) -> dict:
        """The test pair's two mixtures (T,), ``"real"`` and ``"synthetic"``, to listen to; the
        frontend has no waveform output (the panel draws the loss terms)."""
        return {name: item[name][: item[f"{name}_length"]].float() for name in ("real", "synthetic")}

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """The training loss terms (MPC of each domain, the MMD, the penalties; from the run's
        ``metrics.csv``; not the temperature or the perplexity) above the test pair's real and
        synthetic mixtures."""
        from ..report import plot_curves, plot_signals

        history = example.get("history", {})
        terms = sorted(k for k in history if k[0] == "train" and k[1] not in ("lr", "steps_per_s", "temperature", "perplexity"))
        if not terms:
            return False
        top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.4])
        ax = top.subplots()
        plot_curves(ax, history, terms, "training loss terms")
        if all(v > 0 for k in terms for v in history[k][1]):
            ax.set_yscale("log")
        top.subplots_adjust(left=0.07, right=0.98, bottom=0.18, top=0.85)
        plot_signals(bottom, [[("real-domain mixture", example["real"]),
                               ("synthetic-domain mixture", example["synthetic"])]], sample_rate)
        return True


def _spread(x: torch.Tensor, limit: int = MAX_MMD_FRAMES) -> torch.Tensor:
    """At most ``limit`` evenly spaced rows of ``x``."""
    if x.shape[0] <= limit:
        return x
    return x[torch.linspace(0, x.shape[0] - 1, limit).round().long()]


def _pooled(cues: list[torch.Tensor]) -> torch.Tensor:
    """(n_utt, 2 C) [mean, variance over time] of each utterance's cues (T', C)."""
    return torch.stack([torch.cat([c.mean(0), c.var(0, unbiased=False)]) for c in cues])


TASK = DIPPretrainTask

__all__ = ["DIPPretrainTask", "DIPPretrainOptions", "TASK"]
