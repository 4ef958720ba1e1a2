"""Recipe configurations: plain YAML mapped onto dataclasses; an unknown key is an error.

A recipe file holds the sections below plus ``presets``, named partial configs merged over the
base (``--preset demo``). ``key=value`` overrides (``train.max_steps=200``, ``model.args.X=4``)
are applied last; values are parsed as YAML scalars.

    recipe: convtasnet-librimix
    task: separation                     # a module of sepkit.train.tasks (default separation)
    task_args: {...}                     # the task's options (its Options dataclass)
    data:  {dataset, root, split names, sample_rate, n_src, segment, batch_size, ...}
    model: {name, args: {...}}           # args go to the model's constructor
    optim: {optimizer, lr, weight_decay, clip_grad_norm, scheduler, scheduler_args}
    train: {max_steps, eval_every, ckpt_every, log_every, precision, seed, grad_accum, ema, compile, ...}
    presets: {demo: {...}}
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sepkit.data.augment import augment_spec
from sepkit.errors import ConfigError  # noqa: E402  (re-exported)

from .compiling import MODES as COMPILE_MODES


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched.

    dataset: "synthetic" (generated on the fly), "spoken" (utterances of the espeak-ng
        synthesizer, mixed on the fly like the synthetic ones), "librimix" or "wsj0mix".
    root: corpus root (librimix: the folder holding ``metadata/``; wsj0mix: holding tr/cv/tt).
    train_split / valid_split / test_split: split names of the corpus.
    mix: LibriMix mixture kind ("clean", "both", "single").
    sample_rate: Hz; n_src: sources per mixture.
    segment: training crop in seconds (None: whole utterances, batch size 1).
    valid_segment: crop of validation items in seconds (None: whole).
    dynamic_mixing: remix sources across utterances every epoch.
    batch_size: items per micro-batch (per rank).
    num_workers, pin_memory, persistent_workers, prefetch_factor: how the DataLoader runs
        (:mod:`sepkit.data.loading`): worker processes (0: the main process reads the data;
        any number gives the same batches), page-locked batches when training on CUDA,
        evaluation workers kept between validations, micro-batches read ahead per worker.
    augment: on-the-fly augmentation of the training items (reverberation, noise, speed,
        gain; :mod:`sepkit.data.augment` lists the keys); empty: off.
    synthetic: MixtureSpec fields and sizes for dataset "synthetic" (num_train, num_valid,
        num_test, min_duration, max_duration, mode, noise, reverb, ...); dataset "spoken" mixes
        by the same keys.
    spoken: the corpus of dataset "spoken": train_utterances, eval_utterances (rendered per
        split; at most n_src x the split's mixtures), cache (folder; default ~/.cache/sepkit).
    """

    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train-100"
    valid_split: str = "dev"
    test_split: str = "test"
    mix: str = "clean"
    sample_rate: int = 8000
    n_src: int = 2
    segment: float | None = 4.0
    valid_segment: float | None = None
    dynamic_mixing: bool = False
    batch_size: int = 4
    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    augment: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)
    spoken: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    """name: a separator name (``sepkit.models.separators.SEPARATORS``); args: constructor arguments."""

    name: str = "convtasnet"
    args: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """optimizer: "adam" or "adamw"; scheduler: "none", "plateau" (halve on a validation plateau),
    "step", "cosine" or "warmup_cosine"; scheduler_args: the scheduler's keyword arguments."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    clip_grad_norm: float | None = 5.0
    scheduler: str = "plateau"
    scheduler_args: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """max_steps: optimizer steps; eval_every / ckpt_every / log_every: in steps;
    precision: "fp32", "bf16" or "fp16" (autocast, on CUDA only); loss: the task's training
    loss (separation: "si_sdr", negative SI-SDR with PIT, or "sdr"); keep_checkpoints: how many
    step checkpoints to keep; grad_accum: micro-batches of ``data.batch_size`` summed into one
    optimizer step; ema: decay of an exponential moving average of the weights (None: off),
    kept in checkpoints and used for validation, evaluation and inference;
    find_unused_parameters: passed to DistributedDataParallel; compile: "none" (eager),
    "default" or "max-autotune": the training step and the model's forward under
    torch.compile (see :mod:`sepkit.train.compiling`)."""

    max_steps: int = 100000
    eval_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    precision: str = "fp32"
    seed: int = 0
    loss: str = "si_sdr"
    keep_checkpoints: int = 3
    max_valid_items: int | None = None
    grad_accum: int = 1
    ema: float | None = None
    find_unused_parameters: bool = False
    compile: str = "none"


@dataclass
class RecipeConfig:
    recipe: str = "unnamed"
    description: str = ""
    task: str = "separation"
    task_args: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
_FREE_FORM = {("data", "synthetic"), ("data", "augment"), ("data", "spoken"), ("model", "args"), ("optim", "scheduler_args")}
_SCALARS = ("recipe", "description", "task")


def _deep_merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _coerce(where: str, value: Any, annotation: str) -> Any:
    """Check ``value`` against a field annotation such as ``"float | None"``; numbers written in
    forms YAML leaves as strings ("3e-4") are converted. Raises ConfigError naming ``where``."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"{where} must not be null")
    for kind in kinds:
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "dict" and isinstance(value, dict):
            return value
        if kind == "tuple" and isinstance(value, (list, tuple)):
            return tuple(value)
        if kind == "list" and isinstance(value, (list, tuple)):
            return list(value)
    if isinstance(value, str):
        for kind in kinds:
            try:
                if kind == "float":
                    return float(value)
                if kind == "int":
                    return int(value)
            except ValueError:
                pass
    raise ConfigError(f"{where} must be {annotation.replace(' | ', ' or ')}, got {value!r}")


def _build(raw: dict, source: str) -> RecipeConfig:
    known = {*_SCALARS, "task_args", *_SECTIONS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; expected {sorted(known)}")
    kwargs = {}
    for k in _SCALARS:
        if k in raw:
            if not isinstance(raw[k], str):
                raise ConfigError(f"{source}: {k} must be a string, got {raw[k]!r}")
            kwargs[k] = raw[k]
    if raw.get("task_args") is not None:
        if not isinstance(raw["task_args"], dict):
            raise ConfigError(f"{source}: task_args must be a mapping, got {type(raw['task_args']).__name__}")
        kwargs["task_args"] = copy.deepcopy(raw["task_args"])
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(section).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(section) - names)
        if bad:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(f'{name}.{b}' for b in bad)}; "
                              f"{name} has {sorted(names)}")
        for key, value in section.items():
            if (name, key) in _FREE_FORM and value is not None and not isinstance(value, dict):
                raise ConfigError(f"{source}: {name}.{key} must be a mapping")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        section = {k: _coerce(f"{source}: {name}.{k}", v, types[k]) for k, v in section.items()}
        kwargs[name] = cls(**section)
    cfg = RecipeConfig(**kwargs)
    check_ranges(cfg, source)
    return cfg


# (section, key, test, what is allowed); None values pass where the field allows None
_RANGES = [
    ("data", "sample_rate", lambda v: v >= 1000, "a rate in Hz >= 1000"),
    ("data", "n_src", lambda v: v >= 1, ">= 1"),
    ("data", "segment", lambda v: v > 0, "> 0 seconds, or null (whole utterances)"),
    ("data", "valid_segment", lambda v: v > 0, "> 0 seconds, or null (whole utterances)"),
    ("data", "batch_size", lambda v: v >= 1, ">= 1"),
    ("data", "num_workers", lambda v: v >= 0, ">= 0"),
    ("data", "prefetch_factor", lambda v: v >= 1, ">= 1 (micro-batches read ahead per worker)"),
    ("optim", "lr", lambda v: v > 0, "> 0"),
    ("optim", "weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim", "clip_grad_norm", lambda v: v > 0, "> 0, or null (no clipping)"),
    ("train", "max_steps", lambda v: v >= 1, ">= 1"),
    ("train", "eval_every", lambda v: v >= 1, ">= 1"),
    ("train", "ckpt_every", lambda v: v >= 1, ">= 1"),
    ("train", "log_every", lambda v: v >= 1, ">= 1"),
    ("train", "grad_accum", lambda v: v >= 1, ">= 1"),
    ("train", "keep_checkpoints", lambda v: v >= 1, ">= 1"),
    ("train", "max_valid_items", lambda v: v >= 1, ">= 1, or null (all)"),
    ("train", "ema", lambda v: 0 < v < 1, "a decay in (0, 1), e.g. 0.999, or null (off)"),
    ("train", "precision", lambda v: v in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16"),
    ("train", "compile", lambda v: v in COMPILE_MODES, ", ".join(COMPILE_MODES[:-1]) + " or " + COMPILE_MODES[-1]),
]


def check_ranges(cfg: RecipeConfig, source: str = "config") -> None:
    """The value ranges of the generic sections (ConfigError naming key, value and what is
    allowed). Task- and model-specific values are checked by the task."""
    for section, key, ok, allowed in _RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not ok(value):
            raise ConfigError(f"{source}: {section}.{key}={value!r}: must be {allowed}")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(f"{source}: optim.betas={list(cfg.optim.betas)}: must be two numbers in [0, 1)")
    try:
        augment_spec(cfg.data.augment)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def _apply_override(raw: dict, parts: list[str], value: Any, text: str) -> None:
    node = raw
    section = parts[0]
    if section not in _SECTIONS and len(parts) == 1 and section in _SCALARS:
        raw[section] = value
        return
    if section == "task_args":
        if len(parts) < 2:
            raise ConfigError(f"override {text!r}: give task_args.<key>=value")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {p} is not a mapping")
        node[parts[-1]] = value
        return
    if section not in _SECTIONS:
        raise ConfigError(f"override {text!r}: unknown section {section!r}; expected one of "
                          f"{sorted([*_SECTIONS, 'task_args'])} or {', '.join(_SCALARS)}")
    names = {f.name for f in dataclasses.fields(_SECTIONS[section])}
    if len(parts) < 2 or parts[1] not in names:
        raise ConfigError(f"override {text!r}: {section} has no key {'.'.join(parts[1:]) or '(none)'}; "
                          f"it has {sorted(names)}")
    if len(parts) > 2 and (section, parts[1]) not in _FREE_FORM:
        raise ConfigError(f"override {text!r}: {section}.{parts[1]} is not a mapping")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {text!r}: {p} is not a mapping")
    node[parts[-1]] = value


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up, in order: the folders in the environment variable
    ``SEPKIT_RECIPES`` (``os.pathsep``-separated), ``./recipes`` of the working directory, and the
    ``recipes/`` folder of the source checkout sepkit runs from (an editable install)."""
    dirs = [Path(d) for d in os.environ.get("SEPKIT_RECIPES", "").split(os.pathsep) if d]
    dirs += [Path.cwd() / "recipes", recipes_dir()]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def recipes_dir() -> Path:
    """The ``recipes/`` folder of the source checkout sepkit runs from."""
    return Path(__file__).resolve().parents[2] / "recipes"


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A path to a YAML file, or a recipe name: ``<name>.yaml`` in the first of
    :func:`recipe_dirs` that has it."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"recipe file not found: {p}")
        return p
    dirs = recipe_dirs()
    for d in dirs:
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    available = sorted({q.stem for d in dirs for q in d.glob("*.yaml")})
    where = ", ".join(str(d) for d in dirs) or "no recipes folder found; set SEPKIT_RECIPES"
    raise ConfigError(f"unknown recipe {str(name_or_path)!r}; available: {', '.join(available) or 'none'} "
                      f"(looked in {where}; or give a path to a .yaml file)")


def _read_mapping(path: Path) -> dict:
    """A YAML file holding a mapping of recipe sections (ConfigError naming the file otherwise)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of recipe sections, got {type(raw).__name__}")
    return raw


def load_recipe(name_or_path: str | os.PathLike, preset: str | None = None, overrides: list[str] = (),
                config_file: str | os.PathLike | None = None) -> RecipeConfig:
    """Load a recipe, merge ``config_file`` (a partial YAML), the preset and the overrides over it."""
    path = resolve_recipe(name_or_path)
    raw = _read_mapping(path)
    presets = raw.pop("presets", {}) or {}
    if config_file is not None:
        cfg_path = Path(config_file)
        if not cfg_path.is_file():
            raise ConfigError(f"config file not found: {cfg_path}")
        raw = _deep_merge(raw, _read_mapping(cfg_path))
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{path}: no preset {preset!r}; it has {sorted(presets) or 'none'}")
        raw = _deep_merge(raw, presets[preset])
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value, text)
    return _build(raw, str(path))


def config_from_dict(raw: dict, source: str = "config") -> RecipeConfig:
    """Build a :class:`RecipeConfig` from a plain dict (e.g. the copy saved in a checkpoint)."""
    return _build(copy.deepcopy(raw), source)


def build_options(cls, raw: dict, where: str = "task_args"):
    """Check a free-form mapping against the dataclass ``cls`` (a task's ``Options``): an unknown
    key or a value of the wrong type is a ConfigError naming ``where.<key>``."""
    raw = dict(raw or {})
    names = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
             for f in dataclasses.fields(cls)}
    bad = sorted(set(raw) - set(names))
    if bad:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{b}' for b in bad)}; {where} has "
                          f"{sorted(names) or 'no keys'}")
    return cls(**{k: _coerce(f"{where}.{k}", v, names[k]) for k, v in raw.items()})


def apply_overrides(cfg: RecipeConfig, overrides: list[str] = ()) -> RecipeConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied (checked like a recipe's)."""
    raw = cfg.to_dict()
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value, text)
    return _build(raw, "config")
