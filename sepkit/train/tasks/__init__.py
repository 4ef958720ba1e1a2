"""Training tasks: one module per kind of training, each exposing ``TASK``.

A recipe's ``task: <name>`` is the module ``sepkit.train.tasks.<name>`` (dashes read as
underscores), or ``package.module:ClassName`` for a task defined outside sepkit (importable
where training, evaluation and inference run); :func:`make_task` builds it for a config. See
:mod:`.base` for the interface.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..config import ConfigError, RecipeConfig
from .base import Task
from .enhancement import EnhancementTask
from .separation import SeparationTask


def available_tasks() -> list[str]:
    """Names of the task modules shipped with sepkit."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_task(name: str) -> type[Task]:
    """The task class of module ``name`` (ConfigError listing the available ones otherwise)."""
    if ":" in str(name):
        module_name, _, attr = str(name).partition(":")
        try:
            task = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"task={name!r}: cannot import it ({type(exc).__name__}: {exc})") from None
        if not (isinstance(task, type) and issubclass(task, Task)):
            raise ConfigError(f"task={name!r} is not a sepkit.train.tasks.Task subclass")
        return task
    key = str(name).replace("-", "_")
    if not key.isidentifier() or key == "base" or key not in available_tasks():
        raise ConfigError(f"task={name!r}: unknown task; available: {', '.join(available_tasks())}")
    module = importlib.import_module(f"{__name__}.{key}")
    task = getattr(module, "TASK", None)
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise ConfigError(f"task={name!r}: sepkit.train.tasks.{key} defines no TASK class")
    return task


def make_task(cfg: RecipeConfig) -> Task:
    """The task of ``cfg`` (``cfg.task``), with its options checked."""
    return get_task(cfg.task)(cfg)


__all__ = ["Task", "SeparationTask", "EnhancementTask", "available_tasks", "get_task", "make_task"]
