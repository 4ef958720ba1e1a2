"""Rebuilding a trained model from its checkpoint alone: task, config and weights."""
from __future__ import annotations

import os

import torch
import yaml

from .checkpoint import CheckpointError, load_weights, read_meta, resolve_checkpoint
from .compiling import compile_model
from .config import ConfigError, RecipeConfig, config_from_dict
from .prerequisites import resolve_recorded, run_folder_of
from .tasks import Task, make_task


def read_config(ckpt) -> RecipeConfig:
    """The recipe saved with a checkpoint folder (``config.yaml``). Checkpoints written before
    tasks existed have no ``task`` key and read as the separation task."""
    path = ckpt / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path} is missing or corrupt ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a recipe")
    try:
        return config_from_dict(raw, str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def saved_config(ckpt) -> RecipeConfig:
    """The recipe a checkpoint folder was trained with, its prerequisites pointing into the run
    folder it lies in (see :func:`~sepkit.train.prerequisites.resolve_recorded`)."""
    return resolve_recorded(read_config(ckpt), read_meta(ckpt), ckpt)


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True,
                 compile: str = "none") -> tuple[Task, torch.nn.Module]:
    """``(task, model)`` of a checkpoint folder or run folder (its newest checkpoint), the model
    in eval mode on ``device`` with the EMA weights when the run kept them and ``ema`` is true,
    its forward under torch.compile in ``compile`` mode (:mod:`sepkit.train.compiling`;
    default "none": eager).

    Frozen submodules (a codec, a teacher) are not in the checkpoint: the task's ``build_model``
    loads them from the paths in the saved config; prerequisites the run trained are found in
    the run folder it is loaded from, wherever it has moved.
    """
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    cfg = saved_config(ckpt)
    task = make_task(cfg)
    task.run_dir = run_folder_of(ckpt)
    model = task.build_model()
    frozen = tuple(meta.get("frozen", ()))
    name = "ema.safetensors" if ema and meta.get("ema") else "model.safetensors"
    load_weights(ckpt, model, exclude=frozen, name=name)
    return task, compile_model(model.to(device).eval(), compile, "--compile")


def load_frontend(path: str | os.PathLike, config=None, **overrides):
    """A pretrained DIP frontend from a file (:func:`sepkit.models.dip.load_frontend`) or from a
    ``sepkit train`` run folder (or checkpoint folder) of the dip-pretrain task or of a model
    that carries a frontend; ``config`` (with ``overrides``), when given, must match it."""
    from sepkit.models.dip import DIPFrontend, describe_config, resolve_config
    from sepkit.models.dip import load_frontend as load_frontend_file

    if not os.path.isdir(path):
        return load_frontend_file(path, config, **overrides)
    _, model = load_trained(path)
    frontend = model if isinstance(model, DIPFrontend) else getattr(model, "frontend", None)
    if not isinstance(frontend, DIPFrontend):
        raise CheckpointError(f"load_frontend: the run at {str(path)!r} holds a {type(model).__name__}, not a DIPFrontend")
    if config is not None:
        expected = resolve_config(config, **overrides)
        if frontend.config != expected:
            raise CheckpointError(f"load_frontend: {str(path)!r} holds a frontend of config "
                                  f"{describe_config(frontend.config)}, expected {describe_config(expected)}")
    return frontend
