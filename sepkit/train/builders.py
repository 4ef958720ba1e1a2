"""Build data sets, models and losses from a :class:`RecipeConfig`."""
from __future__ import annotations

import torch

from sepkit.data import DynamicMixing, LibriMix, MixtureSpec, SyntheticMixtures, WSJ0Mix
from sepkit.data.augment import Augmented, augment_spec
from sepkit.data.loading import LoaderOptions
from sepkit.data.spoken import SpokenCorpus, SpokenMixtures
from sepkit.losses import PITLoss, SDRLoss, SISDRLoss
from sepkit.models.separators import SEPARATORS, build_separator

from .config import ConfigError, DataConfig, ModelConfig, RecipeConfig

DATASETS = ("synthetic", "spoken", "librimix", "wsj0mix")
BUILTIN = ("synthetic", "spoken")  # generated here, mixed by the data.synthetic keys
_SYNTH_SIZES = {"train": "num_train", "valid": "num_valid", "test": "num_test"}
_SYNTH_DEFAULT_SIZES = {"num_train": 20000, "num_valid": 500, "num_test": 500}
_SYNTH_SPLIT_NAMES = {"train": "train", "valid": "dev", "test": "test"}


def synthetic_spec(data: DataConfig, which: str, segment: float | None, n_src: int | None = None,
                   sizes: dict | None = None) -> tuple[MixtureSpec, int, int]:
    """(MixtureSpec, number of items, speaker pool size) of the ``which`` split from
    ``data.synthetic``: its ``num_train`` / ``num_valid`` / ``num_test`` (defaults ``sizes``) and
    ``num_speakers`` keys, the rest MixtureSpec fields (an unknown key is a ConfigError); with a
    ``segment`` (training crops) utterances are drawn exactly one segment long. ``n_src`` replaces
    ``data.n_src`` (tasks that draw a varying number of speakers use 1)."""
    opts = dict(data.synthetic)
    counts = {k: opts.pop(k, v) for k, v in dict(_SYNTH_DEFAULT_SIZES, **(sizes or {})).items()}
    num_speakers = opts.pop("num_speakers", 100)
    spec_fields = set(MixtureSpec.__dataclass_fields__) - {"sample_rate", "n_src"}
    bad = sorted(set(opts) - spec_fields)
    if bad:
        raise ConfigError(f"data.synthetic: unknown key(s) {bad}; expected {sorted(spec_fields | set(counts) | {'num_speakers'})}")
    if segment is not None:
        opts.update(min_duration=segment, max_duration=segment)
    for k in ("sir_range", "snr_range", "rt60_range"):
        if k in opts:
            opts[k] = tuple(opts[k])
    try:
        spec = MixtureSpec(sample_rate=data.sample_rate, n_src=data.n_src if n_src is None else n_src, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.synthetic: {exc}") from None
    key = _SYNTH_SIZES[which]
    size = counts[key]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"data.synthetic.{key}={size!r}: must be an integer >= 1 (the {which} set's size)")
    return spec, size, num_speakers


def _synthetic(data: DataConfig, which: str, segment: float | None, seed: int) -> SyntheticMixtures:
    spec, size, num_speakers = synthetic_spec(data, which, segment)
    return SyntheticMixtures(size, spec, split=_SYNTH_SPLIT_NAMES[which], num_speakers=num_speakers, seed=seed,
                             dynamic_mixing=data.dynamic_mixing and which == "train")


_SPOKEN_DEFAULTS = {"train_utterances": 2000, "eval_utterances": 200, "cache": None}


def spoken_corpus(data: DataConfig, split: str, max_utterances: int, seed: int, progress: bool = True) -> SpokenCorpus:
    """The rendered corpus of ``split`` from ``data.spoken`` (``train_utterances`` for splits
    named ``train*``, ``eval_utterances`` for the others, at most ``max_utterances``; ``cache``)."""
    opts = {**_SPOKEN_DEFAULTS, **data.spoken}
    bad = sorted(set(opts) - set(_SPOKEN_DEFAULTS))
    if bad:
        raise ConfigError(f"data.spoken: unknown key(s) {bad}; expected {sorted(_SPOKEN_DEFAULTS)}")
    for key in ("train_utterances", "eval_utterances"):
        if not (isinstance(opts[key], int) and not isinstance(opts[key], bool) and opts[key] >= 1):
            raise ConfigError(f"data.spoken.{key}={opts[key]!r}: must be a whole number >= 1")
    if opts["cache"] is not None and not isinstance(opts["cache"], str):
        raise ConfigError(f"data.spoken.cache={opts['cache']!r}: must be a folder path or null (the default cache)")
    size = opts["train_utterances" if split.startswith("train") else "eval_utterances"]
    return SpokenCorpus.build(opts["cache"], split, min(size, max_utterances), seed, data.sample_rate, progress)


def _spoken(data: DataConfig, which: str, segment: float | None, seed: int) -> SpokenMixtures:
    spec, size, _ = synthetic_spec(data, which, segment)
    split = _SYNTH_SPLIT_NAMES[which]
    corpus = spoken_corpus(data, split, size * spec.n_src, seed)
    return SpokenMixtures(size, spec, corpus, split=split, seed=seed,
                          dynamic_mixing=data.dynamic_mixing and which == "train")


def build_dataset(data: DataConfig, which: str, seed: int = 0):
    """The ``which`` ("train", "valid" or "test") data set of a recipe; the training set is
    augmented as ``data.augment`` says (:func:`augmented`)."""
    ds = _corpus(data, which, seed)
    return augmented(ds, data, seed) if which == "train" else ds


def augmented(dataset, data: DataConfig, seed: int = 0):
    """``dataset`` wrapped in :class:`~sepkit.data.augment.Augmented` when ``data.augment``
    turns a step on, else itself."""
    spec = augment_spec(data.augment)
    return Augmented(dataset, spec, data.sample_rate, seed) if spec.enabled else dataset


def loader_options(data: DataConfig, seed: int = 0) -> LoaderOptions:
    """The DataLoader settings of a recipe's data section."""
    return LoaderOptions(num_workers=data.num_workers, pin_memory=data.pin_memory,
                         persistent_workers=data.persistent_workers, prefetch_factor=data.prefetch_factor, seed=seed)


def _corpus(data: DataConfig, which: str, seed: int):
    if data.dataset not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {DATASETS}, got {data.dataset!r}")
    segment = {"train": data.segment, "valid": data.valid_segment, "test": None}[which]
    train = which == "train"
    if data.dataset == "synthetic":
        return _synthetic(data, which, segment, seed)
    if data.dataset == "spoken":
        return _spoken(data, which, segment, seed)
    if data.root is None:
        raise ConfigError(f"data.root is required for data.dataset={data.dataset!r} (give data.root=PATH)")
    split = {"train": data.train_split, "valid": data.valid_split, "test": data.test_split}[which]
    if data.dataset == "librimix":
        ds = LibriMix(data.root, split, mix=data.mix, sample_rate=data.sample_rate, segment=segment,
                      random_crop=train, seed=seed)
    else:
        ds = WSJ0Mix(data.root, split, n_src=data.n_src, sample_rate=data.sample_rate, segment=segment,
                     random_crop=train, seed=seed)
    if ds.n_src != data.n_src:
        raise ConfigError(f"data.n_src={data.n_src} but {data.root} ({split}) has {ds.n_src} sources per mixture")
    if train and data.dynamic_mixing:
        ds = DynamicMixing(ds, seed=seed)
    return ds


def build_model(model: ModelConfig, data: DataConfig) -> torch.nn.Module:
    """The separator of a recipe; ``n_src`` and ``sample_rate`` come from the data section."""
    if model.name.lower() not in SEPARATORS:
        raise ConfigError(f"model.name must be one of {sorted(SEPARATORS)}, got {model.name!r}")
    args = dict(model.args)
    for key, value in (("n_src", data.n_src), ("sample_rate", data.sample_rate)):
        if key in args and args[key] != value:
            raise ConfigError(f"model.args.{key}={args[key]} contradicts data.{key}={value}; set it in data only")
        args[key] = value
    try:
        return build_separator(model.name, **args)
    except TypeError as exc:
        raise ConfigError(f"model.args: {exc}") from None


def build_loss(cfg: RecipeConfig) -> PITLoss:
    """Permutation-invariant negative SI-SDR (or SDR) averaged over sources and batch."""
    if cfg.train.loss == "si_sdr":
        return PITLoss(SISDRLoss(reduction="none"))
    if cfg.train.loss == "sdr":
        return PITLoss(SDRLoss(reduction="none"))
    raise ConfigError(f"train.loss must be 'si_sdr' or 'sdr', got {cfg.train.loss!r}")
