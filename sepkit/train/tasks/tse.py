"""The ``tse`` task: target speaker extraction conditioned on a speaker embedding.

Model (``model.name``: ``convtasnet_tse`` or ``dualpath_tse``, :mod:`sepkit.models.tse`):
:class:`~sepkit.models.tse.TSEWithConditioner`, the trainable ``extractor`` and a frozen ``conditioner`` that
gives the embeddings: a ``mixture2set`` run (``model.args.predictor_ckpt``: its predictor and
its teacher), or only a teacher (``model.args.teacher_ckpt``, enrolled conditioning only). With
neither, the ``task_args.predictor_recipe`` recipe (``demo`` preset) is trained first as a prerequisite under
``RUN/prereq-mixture2set``.

Conditioning (``task_args.conditioning``, used in training):

* ``"enrolled"``: the teacher's embedding of another utterance of the target speaker;
* ``"predicted"`` (the paper's enrollment-free setting): the predictor's slot for the target,
  chosen as the slot most cosine-similar to that enrollment embedding (at inference,
  ``--target-slot k`` chooses it directly).

Data: mixtures of ``task_args.speaker_counts`` speakers from the generator; the target is the
first source. Items: ``mixture`` (T,), ``target`` (T,), ``enrollment``
(``task_args.enroll_seconds``), ``id``. Loss: negative SI-SDR against the target. Evaluation:
SI-SDR and SI-SDRi with enrolled and with predicted conditioning (``si_sdri_enrolled``,
``si_sdri_predicted``); ``si_sdri`` is the training conditioning's (the monitor).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from sepkit.data import resample
from sepkit.data.mixing import collate_tensors
from sepkit.data.speakers import TSEMixtures
from sepkit.errors import InputError
from sepkit.losses import si_sdr_loss
from sepkit.metrics import si_sdr, si_sdri
from sepkit.models.tse import ConvTasNetTSE, DualPathTSE, TSEWithConditioner

from ..builders import synthetic_spec
from ..config import ConfigError, load_recipe
from ..evaluate import items as iterate_items
from ..evaluate import summarize
from ..prerequisites import Prerequisite
from .base import Task
from .common import SPLITS, load_teacher, scaled_to_input

EXTRACTORS = {"convtasnet_tse": ConvTasNetTSE, "dualpath_tse": DualPathTSE}
CONDITIONINGS = ("enrolled", "predicted")


@dataclasses.dataclass
class TSEOptions:
    """conditioning: "enrolled" or "predicted" in training; speaker_counts: speakers per
    mixture; enroll_seconds: enrollment length; predictor_recipe / predictor_preset /
    predictor_overrides: what :meth:`prerequisites` trains without ``model.args.predictor_ckpt`` and
    ``model.args.teacher_ckpt``."""

    conditioning: str = "predicted"
    speaker_counts: list = dataclasses.field(default_factory=lambda: [2, 3])
    enroll_seconds: float = 2.0
    predictor_recipe: str = "mixture2set"
    predictor_preset: str | None = "demo"
    predictor_overrides: list = dataclasses.field(default_factory=list)


class TSETask(Task):
    """Target speaker extraction (see the module docstring)."""

    name = "tse"
    monitor = "si_sdri"
    monitor_mode = "max"
    infer_options = ("target_slot",)
    Options = TSEOptions

    def check_config(self) -> None:
        if self.cfg.model.name.lower() not in EXTRACTORS:
            raise ConfigError(f"model.name={self.cfg.model.name!r}: must be one of {sorted(EXTRACTORS)}")
        if self.options.conditioning not in CONDITIONINGS:
            raise ConfigError(f"task_args.conditioning={self.options.conditioning!r}: must be one of {CONDITIONINGS}")
        args = self.cfg.model.args
        if self.options.conditioning == "predicted" and args.get("teacher_ckpt") and not args.get("predictor_ckpt"):
            raise ConfigError("task_args.conditioning='predicted' needs model.args.predictor_ckpt (a mixture2set run); "
                              "with only a teacher, use conditioning='enrolled'")
        for key in ("emb_dim", "sample_rate"):
            if key in args:
                raise ConfigError(f"model.args.{key}: set by the task (the teacher's dimension, data.sample_rate)")
        if self.cfg.data.dataset != "synthetic":
            raise ConfigError(f"data.dataset={self.cfg.data.dataset!r}: the tse task reads the built-in generator "
                              "(enrollment utterances are drawn per speaker)")

    def model_meta(self) -> dict:
        return {**super().model_meta(), "n_src": 1}

    def prerequisites(self) -> list[Prerequisite]:
        """Without ``model.args.predictor_ckpt`` or ``teacher_ckpt``: the mixture-to-set predictor
        (``task_args.predictor_recipe``) into ``model.args.predictor_ckpt``."""
        args, o = self.cfg.model.args, self.options
        if args.get("predictor_ckpt") or args.get("teacher_ckpt"):
            return []
        sub = load_recipe(o.predictor_recipe, o.predictor_preset,
                          [f"data.sample_rate={self.sample_rate}", *map(str, o.predictor_overrides)])
        return [Prerequisite("mixture2set", sub, "model.args.predictor_ckpt", what="the mixture-to-set predictor")]

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        predictor, teacher = args.pop("predictor_ckpt", None), args.pop("teacher_ckpt", None)
        if predictor:
            from ..restore import load_trained

            p = Path(predictor)
            if not p.exists():
                raise ConfigError(f"model.args.predictor_ckpt={predictor!r}: file not found")
            _, conditioner = load_trained(p)
            if not hasattr(conditioner, "predictor"):
                raise ConfigError(f"model.args.predictor_ckpt={predictor!r} is not a mixture2set run")
        elif teacher:
            conditioner = load_teacher(teacher)
        else:
            raise ConfigError("model.args.predictor_ckpt (a mixture2set run) or model.args.teacher_ckpt is required "
                              "(the demo preset trains one first, as a prerequisite)")
        conditioner.eval().requires_grad_(False)
        dim = getattr(conditioner, "teacher", conditioner).embed_dim
        try:
            extractor = EXTRACTORS[self.cfg.model.name.lower()](emb_dim=dim, sample_rate=self.sample_rate, **args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {exc}") from None
        return TSEWithConditioner(extractor, conditioner, self.sample_rate)

    def frozen(self, model) -> tuple[str, ...]:
        return ("conditioner",)

    def dataset(self, which: str):
        data = self.cfg.data
        segment = {"train": data.segment, "valid": data.valid_segment, "test": None}[which]
        spec, size, num_speakers = synthetic_spec(data, which, segment, n_src=1,
                                                  sizes={"num_valid": 100, "num_test": 200})
        return TSEMixtures(size, spec, self.options.speaker_counts, SPLITS[which], num_speakers,
                           int(self.options.enroll_seconds * self.sample_rate), seed=self.cfg.train.seed)

    def collate(self, items):
        return collate_tensors(items)

    def condition(self, model, mixture: torch.Tensor, enrollment: torch.Tensor, kind: str) -> torch.Tensor:
        core = getattr(model, "module", model)
        enrolled = core.enrolled(enrollment)
        return enrolled if kind == "enrolled" else core.predicted(mixture, enrolled)

    def training_step(self, model, batch):
        e = self.condition(model, batch["mixture"], batch["enrollment"], self.options.conditioning)
        est = model(batch["mixture"], e)
        return si_sdr_loss(est.float(), batch["target"]).mean(), {}

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None):
        model.eval()
        device = self.model_device(model)
        kinds = CONDITIONINGS if model.has_predictor else ("enrolled",)
        rows = []
        for item in iterate_items(dataset, max_items, progress):
            mix = item["mixture"].to(device).unsqueeze(0)
            target = item["target"].double().unsqueeze(0)
            row = {"id": item["id"]}
            for kind in kinds:
                e = self.condition(model, mix, item["enrollment"].to(device).unsqueeze(0), kind)
                est = model(mix, e).double().cpu()
                row[f"si_sdr_{kind}"] = float(si_sdr(est, target))
                row[f"si_sdri_{kind}"] = float(si_sdri(est, target, mix.double().cpu()))
            row["si_sdri"] = row[f"si_sdri_{self.options.conditioning}"]
            rows.append(row)
        return rows

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items)
        return {k: v[0] for k, v in summarize(rows).items()}

    def check_options(self, model, options: dict) -> None:
        super().check_options(model, options)
        slot = options.get("target_slot")
        if slot is None:
            raise InputError("the tse task needs --target-slot K: which predicted speaker of the mixture to extract "
                             f"(0..{max(model.n_slots - 1, 0)})")
        if not model.has_predictor:
            raise InputError("--target-slot needs a TSE model trained with a mixture2set predictor "
                             "(model.args.predictor_ckpt); this one has only a teacher")
        if not isinstance(slot, int) or not 0 <= slot < model.n_slots:
            raise InputError(f"--target-slot {slot} is out of range: the predictor has {model.n_slots} slots, "
                             f"choose 0..{model.n_slots - 1}")

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, target_slot: int | None = None, **options) -> dict:
        """Extract the speaker of predicted slot ``target_slot`` from ``waveform`` (T,) at
        ``sample_rate`` in one pass (the command's ``chunk`` / ``overlap`` are not used: the set
        is predicted from the whole recording); returns ``{"target": (T,)}`` at ``sample_rate``."""
        self.check_options(model, {"target_slot": target_slot})
        x = self.to_model_rate(waveform, sample_rate).to(self.model_device(model)).unsqueeze(0)
        e = model.slots(x).embeddings[:, target_slot]
        est = model(x, e)[0].float().cpu()
        return {"target": resample(est, self.sample_rate, sample_rate)[: waveform.shape[-1]]}

    def output_names(self) -> list[str]:
        return ["target"]

    # -- the demo's example ----------------------------------------------------------------
    @torch.no_grad()
    def example(self, model, item: dict) -> dict:
        """One test ``item``'s target extracted with the training conditioning
        (``task_args.conditioning``): ``{"mixture", "enrollment", "target", "extracted"}`` (T,)
        (the demo needs no ``--target-slot``: the item's enrollment names the speaker), the
        estimate at the mixture's level (:func:`~.base.scaled_to_input`)."""
        model.eval()
        device = self.model_device(model)
        mix = item["mixture"].float()
        x = mix.to(device).unsqueeze(0)
        e = self.condition(model, x, item["enrollment"].float().to(device).unsqueeze(0), self.options.conditioning)
        return {"mixture": mix, "enrollment": item["enrollment"].float(), "target": item["target"].float(),
                "extracted": scaled_to_input(model(x, e)[0].float().cpu(), mix)}

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """The mixture beside the enrollment utterance, then the target speaker's reference beside
        the extracted estimate (titled with its SI-SDRi)."""
        from ..report import plot_signals

        mix, target, est = example["mixture"], example["target"], example["extracted"]
        gain = float(si_sdri(est.double()[None], target.double()[None], mix.double()[None]))
        plot_signals(fig, [[("mixture", mix), ("enrollment (the target speaker)", example["enrollment"])],
                           [("target", target), (f"extracted (SI-SDRi {gain:.1f} dB)", est)]], sample_rate)
        return True


TASK = TSETask
