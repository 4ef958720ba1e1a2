"""The ``diffusion`` task: score-based enhancement, SGMSE+ (``model.name: sgmse``) or Ex-Diff
(``model.name: exdiff``, guided by a frozen USS latent extractor).

Training: denoising score matching (:func:`sepkit.models.sgmse.dsm_loss`) on (clean, noisy)
pairs; an EMA of the weights (``train.ema``, 0.999 in the recipes) is what validation,
evaluation and inference sample with (the trainer swaps it in). Evaluation: the sampler
(``task_args.sampler``, ``steps``, ``snr``, ``corrector_steps``, seeded by ``seed``) per
utterance; metrics SI-SDR, SI-SDRi, SI-SIR, SI-SAR (against the noise ``noisy - clean``), PESQ and
ESTOI, and the energy of the output in the frames where the clean reference is silent
(``silent_db``, dB relative to the reference's mean active-frame power; ``silent_db_input`` the
same for the noisy input). ``sepkit separate --steps N`` sets the sampler steps and shows a bar.

Model arguments (``model.args``): ``config`` ("sgmse": the 65.6 M NCSN++, "small") and any
:class:`sepkit.models.ncsnpp.NCSNpp` argument as an override (``nf``, ``ch_mult``,
``placements``, ...); the SDE's ``theta``, ``sigma_min``, ``sigma_max`` and ``t_eps``; for
Ex-Diff ``uss`` ("sad": the demo's :class:`sepkit.models.sad.SpeechActivityDetector`, trained
first as a prerequisite (:meth:`DiffusionTask.prerequisites`) on the same data; "panns": a PANNs
``Cnn14_DecisionLevelMax`` checkpoint), ``uss_classes`` (AudioSet indices for "panns") and
``uss_ckpt``, where the USS weights are read from (a sepkit run folder for "sad", set by
the prerequisite when absent; a PANNs ``.pth`` for "panns"); they are frozen and not
stored in this task's checkpoints. ``parametrisation`` and ``time_grid``
(:class:`sepkit.models.sgmse.SGMSE`) and the network's ``scale_by_time`` keep sepkit's defaults
("noise", "uniform", false) for training from scratch; a converted SGMSE+ release
(``sepkit convert --from sgmse``) sets "score", "sgmse" and true.

Starting from released weights: ``task_args.init`` names a sepkit checkpoint folder of this task
(a converted SGMSE+ release, or a run: its EMA weights when it kept them). Its NCSN++, SDE and
parametrisation arguments replace this recipe's (:meth:`DiffusionTask.derive_arguments`, so the saved
config rebuilds the model), and its weights start a fresh run (:meth:`DiffusionTask.initialize`);
an Ex-Diff model takes the backbone from an SGMSE+ one and starts its cross-attention blocks
fresh (their output projections are zero, so the guided model starts as the unguided one).

Data: ``data.dataset`` "synthetic" (one speaker in noise, with ``task_args.pauses`` silent gaps of
``pause_range`` seconds cut into the speech so that there are reference-silent frames),
"voicebank" (:class:`sepkit.data.voicebank.VoiceBankDemand`) or "musdb"
(:class:`sepkit.data.musdb.MUSDB18`, vocals vs the rest), ``data.root`` the corpus folder.

:class:`SADTask` (``task: sepkit.train.tasks.diffusion:SADTask``) trains the detector: frame-wise
binary cross-entropy against :func:`sepkit.models.sad.activity_labels` of the clean speech.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.data import resample
from sepkit.data.pauses import WithPauses
from sepkit.errors import InputError
from sepkit.metrics.activity import si_sir_sar, silent_frame_db
from sepkit.models.ncsnpp import NCSNPP_CONFIGS, NCSNpp, build_ncsnpp
from sepkit.models.panns import SPEECH_CLASSES
from sepkit.models.sad import SpeechActivityDetector, activity_labels
from sepkit.models.sgmse import OUVESDE, PARAMETRISATIONS, SAMPLERS, SGMSE, TIME_GRIDS, SpecRepresentation

from ..builders import build_dataset
from ..checkpoint import CheckpointError
from ..config import ConfigError, config_from_dict
from ..evaluate import items, summarize
from ..prerequisites import Prerequisite
from .base import Task
from .common import have_module
from .enhancement import EnhancementTask

DATASETS = ("synthetic", "voicebank", "musdb")
MODELS = ("sgmse", "exdiff")
USS = ("sad", "panns")
_SDE_ARGS = ("theta", "sigma_min", "sigma_max", "t_eps")
_SCORE_ARGS = ("parametrisation", "time_grid")
_GUIDE_ARGS = ("uss", "uss_classes", "uss_ckpt")
_NCSNPP_ARGS = tuple(p for p in inspect.signature(NCSNpp).parameters if p != "latent_dim")
_SPLIT_CODE = {"train": 1, "valid": 2, "test": 3}


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DataOptions:
    """pauses, pause_range: silent gaps cut into synthetic speech (count per item, seconds)."""

    pauses: int = 2
    pause_range: list = dataclasses.field(default_factory=lambda: [0.2, 0.5])


def enhancement_dataset(task: Task, which: str):
    """The (noisy, clean) pairs of a recipe's data section (see the module docstring)."""
    data = task.cfg.data
    seed = task.cfg.train.seed
    segment = {"train": data.segment, "valid": data.valid_segment, "test": None}[which]
    if data.dataset == "synthetic":
        data = dataclasses.replace(data, synthetic={"noise": True, **data.synthetic})
        ds = build_dataset(data, which, seed)
        opts = task.options
        return WithPauses(ds, data.sample_rate, opts.pauses, opts.pause_range, seed, which) if opts.pauses else ds
    if data.root is None:
        raise ConfigError(f"data.root is required for data.dataset={data.dataset!r} (give data.root=PATH)")
    if data.dataset == "voicebank":
        from sepkit.data.voicebank import VoiceBankDemand

        return VoiceBankDemand(data.root, which, data.sample_rate, segment, random_crop=which == "train", seed=seed)
    from sepkit.data.musdb import MUSDB18

    return MUSDB18(data.root, which, data.sample_rate, segment, random_crop=which == "train", seed=seed)


def check_data(task: Task) -> None:
    data = task.cfg.data
    if data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset={data.dataset!r}: the {task.name} task reads one of {DATASETS}")
    if data.n_src != 1:
        raise ConfigError(f"data.n_src={data.n_src}: the {task.name} task estimates one source; set data.n_src=1")
    pr = task.options.pause_range
    if task.options.pauses < 0 or not (isinstance(pr, (list, tuple)) and len(pr) == 2 and 0 < pr[0] <= pr[1]):
        raise ConfigError(f"task_args.pauses={task.options.pauses}, pause_range={pr}: need pauses >= 0 and "
                          "0 < low <= high seconds")


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------
# the diffusion task
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DiffusionOptions(DataOptions):
    """sampler: "pc" or "ode"; steps: sampler steps (30); snr, corrector_steps: the annealed
    Langevin corrector (0.5, 1); seed: sampler seed; valid_steps: sampler steps in validation
    (None: ``steps``); perceptual: PESQ and ESTOI in evaluation; sad_steps, sad_batch, sad_lr, sad_model: how the prerequisite trains the demo
    detector (optimizer steps, batch size, Adam learning rate, SpeechActivityDetector arguments);
    init: a sepkit checkpoint folder of this task whose weights start the run (see the module
    docstring)."""

    sampler: str = "pc"
    steps: int = 30
    snr: float = 0.5
    corrector_steps: int = 1
    seed: int = 0
    valid_steps: int | None = None
    perceptual: bool = True
    sad_steps: int = 300
    sad_batch: int = 8
    sad_lr: float = 3e-3
    sad_model: dict = dataclasses.field(default_factory=dict)
    init: str | None = None


class DiffusionTask(EnhancementTask):
    """SGMSE+ and Ex-Diff training, sampling and evaluation (see the module docstring)."""

    name = "diffusion"
    monitor = "si_sdr"
    monitor_mode = "max"
    infer_options = ("steps",)
    Options = DiffusionOptions

    # -- configuration -------------------------------------------------------------------
    @property
    def guided(self) -> bool:
        return self.cfg.model.name.lower() == "exdiff"

    def check_config(self) -> None:
        check_data(self)
        o, args = self.options, dict(self.cfg.model.args)
        name = self.cfg.model.name.lower()
        if name not in MODELS:
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the diffusion task builds one of {MODELS}")
        allowed = (set(_NCSNPP_ARGS) | set(_SDE_ARGS) | set(_SCORE_ARGS) | {"config"}
                   | (set(_GUIDE_ARGS) if self.guided else set()))
        bad = sorted(set(args) - allowed)
        if bad:
            raise ConfigError(f"model.args: unknown key(s) {bad} for model {name!r}; allowed: {sorted(allowed)}")
        if args.get("config", "sgmse") not in NCSNPP_CONFIGS:
            raise ConfigError(f"model.args.config={args['config']!r}: must be one of {sorted(NCSNPP_CONFIGS)}")
        if self.guided and args.get("uss", "sad") not in USS:
            raise ConfigError(f"model.args.uss={args['uss']!r}: must be one of {USS}")
        if args.get("parametrisation", "noise") not in PARAMETRISATIONS:
            raise ConfigError(f"model.args.parametrisation={args['parametrisation']!r}: must be one of {PARAMETRISATIONS}")
        if args.get("time_grid", "uniform") not in TIME_GRIDS:
            raise ConfigError(f"model.args.time_grid={args['time_grid']!r}: must be one of {TIME_GRIDS}")
        if o.sampler not in SAMPLERS:
            raise ConfigError(f"task_args.sampler={o.sampler!r}: must be one of {SAMPLERS}")
        for key in ("steps", "sad_steps", "sad_batch"):
            if int(getattr(o, key)) < 1:
                raise ConfigError(f"task_args.{key}={getattr(o, key)}: must be a positive integer")
        if o.valid_steps is not None and o.valid_steps < 1:
            raise ConfigError(f"task_args.valid_steps={o.valid_steps}: must be a positive integer or null")
        self.check_network()
        if o.snr <= 0 or o.corrector_steps < 0:
            raise ConfigError(f"task_args.snr={o.snr}, corrector_steps={o.corrector_steps}: need snr > 0, corrector_steps >= 0")

    def model_meta(self) -> dict:
        return {**super().model_meta(), "uss": self.cfg.model.args.get("uss", "sad") if self.guided else None}

    # -- prerequisites -------------------------------------------------------------------
    def sad_config(self):
        """The recipe that trains the demo's speech-activity detector on this recipe's data."""
        o, cfg = self.options, self.cfg
        raw = {
            "recipe": f"{cfg.recipe}-sad",
            "description": "speech-activity detector (the Ex-Diff demo's USS stand-in)",
            "task": "sepkit.train.tasks.diffusion:SADTask",
            "task_args": {"pauses": o.pauses, "pause_range": list(o.pause_range)},
            "data": dict(dataclasses.asdict(cfg.data), batch_size=o.sad_batch),
            "model": {"name": "sad", "args": dict(o.sad_model)},
            "optim": {"optimizer": "adam", "lr": o.sad_lr, "scheduler": "none"},
            "train": {"max_steps": o.sad_steps, "eval_every": o.sad_steps, "ckpt_every": o.sad_steps,
                      "log_every": max(1, min(50, o.sad_steps)), "seed": cfg.train.seed,
                      "max_valid_items": cfg.train.max_valid_items},
        }
        return config_from_dict(raw, f"{cfg.recipe} (sad prerequisite)")

    def derive_arguments(self) -> None:
        """With ``task_args.init``: take its network, SDE and parametrisation arguments into
        ``model.args`` (see :meth:`adopt_init`)."""
        if self.options.init:
            self.adopt_init(progress=True)

    def prerequisites(self) -> list[Prerequisite]:
        """Ex-Diff with ``uss: sad`` and no ``model.args.uss_ckpt``: the speech-activity detector
        (:meth:`sad_config`) into ``model.args.uss_ckpt``."""
        if not self.guided or self.cfg.model.args.get("uss", "sad") != "sad" or self.cfg.model.args.get("uss_ckpt"):
            return []
        return [Prerequisite("sad", self.sad_config(), "model.args.uss_ckpt",
                             what="the speech-activity detector, the USS stand-in")]

    # -- starting from released weights ---------------------------------------------------
    _INIT_ARGS = tuple(a for a in _NCSNPP_ARGS if a not in ("backend", "checkpointing", "placements", "cross_heads",
                                                            "pe_dim")) + _SDE_ARGS + _SCORE_ARGS + ("config",)

    def _init_checkpoint(self):
        """(checkpoint folder, its config) of ``task_args.init``; ConfigError naming the key."""
        from ..checkpoint import resolve_checkpoint
        from ..restore import read_config

        key = f"task_args.init={self.options.init!r}"
        try:
            ckpt = resolve_checkpoint(self.options.init)
            cfg = read_config(ckpt)
        except CheckpointError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        if cfg.task != self.name or cfg.model.name.lower() not in MODELS:
            raise ConfigError(f"{key} holds a {cfg.task} / {cfg.model.name} checkpoint; give one of the diffusion "
                              f"task (model {' or '.join(MODELS)}), e.g. from `sepkit convert --from sgmse`")
        if int(cfg.data.sample_rate) != self.sample_rate:
            raise ConfigError(f"{key} runs at {cfg.data.sample_rate} Hz, this recipe at {self.sample_rate} Hz "
                              f"(data.sample_rate)")
        return ckpt, cfg

    def adopt_init(self, progress: bool = False) -> None:
        """Replace this recipe's network, SDE and parametrisation arguments with those of
        ``task_args.init`` (the weights define the model; Ex-Diff keeps its guidance and
        cross-attention arguments)."""
        _, cfg = self._init_checkpoint()
        theirs = {k: v for k, v in cfg.model.args.items() if k in self._INIT_ARGS}
        args = self.cfg.model.args
        for k in self._INIT_ARGS:
            args.pop(k, None)
        args.update(theirs)
        if progress:
            print(f"sepkit: starting from {self.options.init} (its network and SDE arguments: "
                  f"{', '.join(f'{k}={v}' for k, v in sorted(theirs.items()))})")

    def initialize(self, model: nn.Module) -> None:
        """With ``task_args.init``: load its weights (EMA when the run kept them) into ``model``;
        Ex-Diff's cross-attention blocks and extractor keep their own (fresh, frozen) weights
        when the checkpoint has none."""
        if not self.options.init:
            return
        from sepkit.files import load_strict
        from sepkit.models.ncsnpp import LatentCrossAttention

        from ..checkpoint import read_meta, read_weights

        ckpt, _ = self._init_checkpoint()
        name = "ema.safetensors" if read_meta(ckpt).get("ema") else "model.safetensors"
        state = read_weights(ckpt, name)
        fresh = tuple(n for n, m in model.named_modules() if isinstance(m, LatentCrossAttention)
                      and not any(k.startswith(n + ".") for k in state))
        load_strict(model, state, f"task_args.init {ckpt / name} holds weights of a different model",
                    exclude=self.frozen(model) + fresh)

    # -- the model -----------------------------------------------------------------------
    def _extractor(self):
        args = self.cfg.model.args
        path = args.get("uss_ckpt")
        uss = args.get("uss", "sad")
        if not path:
            raise ConfigError(f"model.args.uss_ckpt is required for model exdiff with uss={uss!r}: give "
                              f"model.args.uss_ckpt=PATH ({'a sepkit run folder of the detector' if uss == 'sad' else 'a PANNs Cnn14_DecisionLevelMax .pth'})")
        if uss == "sad":
            from ..restore import load_trained

            try:
                sad_task, sad = load_trained(path)
            except CheckpointError as exc:
                raise CheckpointError(f"model.args.uss_ckpt={path!r}: no USS (speech-activity detector) weights: {exc}") from None
            if not isinstance(sad, SpeechActivityDetector):
                raise CheckpointError(f"model.args.uss_ckpt={path!r} holds a {type(sad).__name__}, not a speech-activity detector")
            if sad.sample_rate != self.sample_rate:
                raise CheckpointError(f"model.args.uss_ckpt={path!r}: detector at {sad.sample_rate} Hz, model at {self.sample_rate} Hz")
            return sad
        from sepkit.models.panns import Cnn14, PannsLatent

        if not Path(path).is_file():
            raise CheckpointError(f"model.args.uss_ckpt={path!r}: PANNs checkpoint not found")
        try:
            cnn = Cnn14.from_panns(path, decision_level="max")
        except ValueError as exc:
            raise CheckpointError(f"model.args.uss_ckpt={path!r}: {exc}") from None
        return PannsLatent(cnn, tuple(args.get("uss_classes", SPEECH_CLASSES)), self.sample_rate)

    def check_network(self) -> None:
        """Build the NCSN++ of ``model.args`` on the meta device (no memory, no weights): a wrong
        argument (e.g. ``placements``) is a ConfigError now, before any prerequisite trains."""
        args = {k: v for k, v in self.cfg.model.args.items()
                if k not in _SDE_ARGS + _SCORE_ARGS + _GUIDE_ARGS + ("config",)}
        latent = {"latent_dim": 1} if self.guided else {}
        try:
            with torch.device("meta"):
                build_ncsnpp(self.cfg.model.args.get("config", "sgmse"), **latent, **args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.args: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        sde_args = {k: args.pop(k) for k in _SDE_ARGS if k in args}
        score_args = {k: args.pop(k) for k in _SCORE_ARGS if k in args}
        for k in _GUIDE_ARGS:
            args.pop(k, None)
        config = args.pop("config", "sgmse")
        t_eps = float(sde_args.pop("t_eps", 0.03))
        sde = OUVESDE(N=self.options.steps, **sde_args)
        rep = SpecRepresentation(sample_rate=self.sample_rate)
        if not self.guided:
            return SGMSE(build_ncsnpp(config, **args), sde, rep, t_eps, **score_args)
        from sepkit.models.exdiff import ExDiff

        dim = 1 if self.cfg.model.args.get("uss", "sad") == "sad" else len(self.cfg.model.args.get("uss_classes", SPEECH_CLASSES))
        backbone = build_ncsnpp(config, latent_dim=dim, **args)  # first: the same seed, the same start as sgmse
        return ExDiff(backbone, self._extractor(), sde=sde, representation=rep, t_eps=t_eps, **score_args)

    def frozen(self, model: nn.Module) -> tuple[str, ...]:
        return ("extractor",) if self.guided else ()

    def dataset(self, which: str):
        return enhancement_dataset(self, which)

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict):
        return model.loss(batch["sources"][:, 0], batch["mixture"]), {}

    def enhance(self, model: nn.Module, noisy: torch.Tensor, steps: int | None = None, progress: bool = False,
                **options) -> torch.Tensor:
        """The sampler's estimate (B, T) of ``noisy`` (B, T) in ``steps`` steps (the recipe's when
        None). Its memory grows with the length it samples (about 2.8 GB per minute of audio at
        one step), which is why :meth:`infer` (the enhancement task's) goes in cross-faded chunks."""
        o = self.options
        return model.enhance(noisy, o.sampler, steps or o.steps, o.snr, o.corrector_steps, seed=o.seed,
                             progress=progress)

    def metrics(self, estimate, clean, noisy, full: bool = True) -> dict:
        """The enhancement metrics plus SI-SIR, SI-SAR and the silent-frame energies; PESQ is NaN
        where it finds no utterance in the estimate (a barely trained model)."""
        from sepkit.metrics import estoi, pesq, si_sdr, si_sdri

        row = {"si_sdr": float(si_sdr(estimate, clean)), "si_sdri": float(si_sdri(estimate, clean, noisy))}
        if full and self.options.perceptual:
            if have_module("pesq") and self.sample_rate in (8000, 16000):
                try:
                    row["pesq"] = float(pesq(estimate.float(), clean.float(), self.sample_rate,
                                             mode="wb" if self.sample_rate == 16000 else "nb"))
                except ValueError:
                    row["pesq"] = float("nan")
            if have_module("pystoi"):
                row["estoi"] = float(estoi(estimate, clean, self.sample_rate))
        if full:
            row["si_sir"], row["si_sar"] = si_sir_sar(estimate[0], clean[0], (noisy - clean)[0])
            row["silent_db"] = silent_frame_db(estimate[0], clean[0])
            row["silent_db_input"] = silent_frame_db(noisy[0], clean[0])
        return row

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items, full=False,
                             steps=self.options.valid_steps or self.options.steps)
        return {k: v[0] for k, v in summarize(rows).items()}

    def check_options(self, model, options: dict) -> None:
        super().check_options(model, options)
        steps = options.get("steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise InputError(f"--steps must be a positive integer, got {steps!r}")

    # -- the demo's example ----------------------------------------------------------------
    @torch.no_grad()
    def example(self, model, item: dict, n_states: int = 4) -> dict:
        """The enhancement example (``noisy``, ``clean``, ``enhanced``) plus the sampler's
        states on the way: ``"states"`` (K, T), the waveforms of ``n_states`` intermediate
        states x_t (evenly spaced over the steps, the prior draw first), and ``"state_times"``
        (a list of K floats) their diffusion times t."""
        seen = []
        score = model.score

        def recording(x, t, y, **cond):  # the samplers call the score at every state they visit
            if not seen or float(t[0]) != seen[-1][0]:
                seen.append((float(t[0]), x.detach().clone()))
            return score(x, t, y, **cond)

        model.score = recording
        try:
            out = super().example(model, item)
        finally:
            del model.score
        if not seen:
            return out
        picks = sorted({round(i * (len(seen) - 1) / max(1, n_states - 1)) for i in range(n_states)})
        noisy = item["mixture"].float().to(self.model_device(model)).unsqueeze(0)
        _, _, norm = model.specs(noisy)
        n, length = model.representation.frames(noisy.shape[-1]), noisy.shape[-1]
        states = [(model.representation.inverse(seen[i][1][..., :n], length) * norm)[0].float().cpu() for i in picks]
        out["states"] = torch.stack(states)
        out["state_times"] = [seen[i][0] for i in picks]
        return out

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """The enhancement panel's noisy input, the sampler's intermediate states (t from 1 to
        t_eps) and the clean reference beside the enhanced output."""
        if "states" not in example:
            return super().plot_example(fig, example, sample_rate)
        from sepkit.metrics import si_sdri

        from ..report import plot_signals

        noisy, clean, enhanced = example["noisy"], example["clean"], example["enhanced"]
        gain = float(si_sdri(enhanced.double()[None], clean.double()[None], noisy.double()[None]))
        states = [(f"sampler state t={float(t):.2f}", w)
                  for t, w in zip(example["state_times"], example["states"], strict=True)]
        plot_signals(fig, [[("noisy", noisy)], states,
                           [("clean", clean), (f"enhanced (SI-SDRi {gain:.1f} dB)", enhanced)]], sample_rate)
        return True


# ------------------------------------------------------------------------------------------
# the speech-activity detector (prerequisite of the Ex-Diff demo)
# ------------------------------------------------------------------------------------------

class SADTask(Task):
    """Trains :class:`SpeechActivityDetector` (``model.name: sad``, ``model.args`` its
    arguments) on the diffusion task's data; validation reports frame accuracy (the monitor)."""

    name = "sad"
    monitor = "accuracy"
    monitor_mode = "max"
    Options = DataOptions

    def check_config(self) -> None:
        check_data(self)
        if self.cfg.model.name.lower() != "sad":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the sad task builds model 'sad'")
        bad = sorted(set(self.cfg.model.args) - set(inspect.signature(SpeechActivityDetector).parameters) - {"sample_rate"})
        if bad:
            raise ConfigError(f"model.args: unknown key(s) {bad} for SpeechActivityDetector")

    def build_model(self) -> nn.Module:
        return SpeechActivityDetector(**{**self.cfg.model.args, "sample_rate": self.sample_rate})

    def dataset(self, which: str):
        return enhancement_dataset(self, which)

    def _labels(self, model, clean):
        return activity_labels(clean, model.hop_length, model.n_fft)

    def training_step(self, model, batch):
        logits = model.logits(batch["mixture"])
        labels = self._labels(model, batch["sources"][:, 0])
        return F.binary_cross_entropy_with_logits(logits, labels), {}

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None):
        model.eval()
        device = self.model_device(model)
        rows = []
        for item in items(dataset, max_items, progress):
            probs = model(item["mixture"].to(device)[None])[0, :, 0].cpu()
            labels = self._labels(model, item["sources"][:1])[0]
            rows.append({"id": item["id"], "accuracy": float(((probs > 0.5).float() == labels).float().mean()),
                         "speech_fraction": float(labels.mean())})
        return rows

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, **options) -> dict:
        """The speech probability held over each frame's hop: ``{"activity": (T,)}``."""
        x = self.to_model_rate(waveform, sample_rate).to(self.model_device(model))
        probs = model(x[None])[0, :, 0].cpu()
        gate = probs.repeat_interleave(model.hop_length)[: x.shape[-1]]
        return {"activity": resample(gate, self.sample_rate, sample_rate)[: waveform.shape[-1]]}

    def output_names(self) -> list[str]:
        return ["activity"]


TASK = DiffusionTask
