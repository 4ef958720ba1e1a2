"""Helpers shared by the training tasks: config errors, local files, optional packages, the
output scaling of scale-invariant models, the frozen speaker-embedding teacher, and the two
data domains of the DIP tasks."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sepkit.data.folders import AudioFolder
from sepkit.errors import ConfigError, InputError
from sepkit.models.speaker import ECAPATDNN

from ..builders import build_dataset
from ..config import DataConfig

if TYPE_CHECKING:
    from .base import Task

#: recipe split name -> the synthetic speaker pool of that split
SPLITS = {"train": "train", "valid": "dev", "test": "test"}
#: the generator settings of the DIP tasks' stand-in real domain (over data.synthetic)
DEFAULT_REAL = {"noise": True, "reverb": True}
#: seed offset of the stand-in real domain's generator (other speakers and utterances)
REAL_SEED_OFFSET = 7919


def scaled_to_input(estimates: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """``estimates`` (S, T) or (T,), each scaled by its least-squares fit to ``mixture`` (T,):
    ``|<e, x>| / ||e||^2`` (the sign kept; RMS matching to ``x / sqrt(S)`` for an estimate
    orthogonal to it; silent estimates unchanged).

    Models trained with a scale-invariant loss leave the level of their outputs free; this puts
    each at its share of the input's level without looking at a reference (a good estimate
    ``c * s_k`` of a source of ``x = sum_k s_k`` comes back as about ``s_k``); no estimate
    comes out louder than the input, and scale-invariant metrics are unchanged."""
    est = estimates.reshape(-1, estimates.shape[-1]).double()
    mix = mixture.reshape(-1).double()
    if est.shape[-1] != mix.shape[-1]:
        return estimates
    energy = est.pow(2).sum(-1)
    fit = (est @ mix).abs() / energy.clamp_min(1e-30)
    rms = (mix.pow(2).sum() / est.shape[0] / energy.clamp_min(1e-30)).sqrt()
    gain = torch.where(energy == 0, torch.ones_like(fit), torch.where(fit == 0, rms, fit))
    return (est * gain[:, None]).to(estimates.dtype).reshape(estimates.shape)


def config_error(key: str, value, allowed: str) -> ConfigError:
    """The one-line config error: key, value and what is allowed."""
    return ConfigError(f"{key}={value!r}: {allowed}")


def local_file(key: str, path: str | os.PathLike | None) -> Path:
    """A path a recipe key names, checked to exist (ConfigError naming the key otherwise)."""
    if path is None or str(path) == "":
        raise ConfigError(f"{key} is required: give {key}=PATH")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{key}={str(path)!r}: file not found")
    return p


def have_module(module: str) -> bool:
    """Whether the package ``module`` is importable (an optional dependency)."""
    return importlib.util.find_spec(module) is not None


def load_teacher(path, key: str = "model.args.teacher_ckpt") -> nn.Module:
    """A frozen embedding teacher: a ``speaker`` run or checkpoint folder, or a SpeechBrain
    ``embedding_model.ckpt`` file. Returns a module ``wave (B, T) -> (B, D)`` with
    ``embed_dim`` and ``sample_rate`` attributes, in eval mode."""
    if path is None or str(path) == "":
        raise ConfigError(f"{key} is required: a speaker run folder, or SpeechBrain's embedding_model.ckpt "
                          "(the demo presets train one first, as a prerequisite)")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{key}={str(path)!r}: file not found")
    try:
        if p.is_dir():
            from ..restore import load_trained

            _, model = load_trained(p)
            teacher = getattr(model, "embedder", model)
        else:
            teacher = ECAPATDNN.from_speechbrain(p)
    except (InputError, FileNotFoundError) as exc:
        raise ConfigError(f"{key}={str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not hasattr(teacher, "embed_dim"):
        raise ConfigError(f"{key}={str(path)!r} is not a speaker-embedding model")
    return teacher.eval().requires_grad_(False)


def real_data(data: DataConfig, real_synthetic: dict) -> DataConfig:
    """The data section of the stand-in real domain: the generator with ``real_synthetic`` over
    ``data.synthetic``."""
    return dataclasses.replace(data, dataset="synthetic", synthetic={**data.synthetic, **real_synthetic})


def domain_dataset(task: Task, domain: str, which: str):
    """The ``which`` split of the ``domain`` ("real" or "synthetic") mixtures of a DIP task
    (options ``real_root`` / ``synthetic_root`` / ``real_synthetic`` / ``held_out``)."""
    cfg, opts = task.cfg, task.options
    root = opts.real_root if domain == "real" else opts.synthetic_root
    segment = cfg.data.segment if which == "train" else cfg.data.valid_segment
    if root is not None:
        try:
            return AudioFolder(root, which, cfg.data.sample_rate, segment, opts.held_out, cfg.train.seed)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"task_args.{domain}_root={str(root)!r}: {exc}") from None
    if domain == "real":
        if cfg.data.dataset != "synthetic" and opts.real_root is None:
            raise ConfigError(f"task_args.real_root is required with data.dataset={cfg.data.dataset!r} "
                              "(the stand-in real domain is the built-in generator's)")
        return build_dataset(real_data(cfg.data, opts.real_synthetic), which, cfg.train.seed + REAL_SEED_OFFSET)
    return build_dataset(cfg.data, which, cfg.train.seed)


__all__ = ["SPLITS", "DEFAULT_REAL", "REAL_SEED_OFFSET", "scaled_to_input", "config_error", "local_file",
           "have_module", "load_teacher", "real_data", "domain_dataset"]
