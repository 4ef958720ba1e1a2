"""Prerequisite runs: what a task needs trained before its own training (a codec, a teacher, a
pretrained encoder or frontend, a detector), under one rule.

A task declares them (:meth:`~sepkit.train.tasks.Task.prerequisites`): a name, the recipe to
train and the argument that receives the run folder (``model.args.KEY`` or ``task_args.KEY``);
one whose argument the user gave is not declared. Before the task's model is built, the trainer
calls :func:`ensure_prerequisites`, which for each one, in the run folder
``<run>/prereq-<name>``:

- trains it when nothing was saved there yet (a folder left by a run interrupted before its
  first checkpoint is started afresh);
- resumes it when it was interrupted (its newest checkpoint is before its ``train.max_steps``);
- reuses it when it is complete;
- refuses, naming the first differing key, when its recipe changed since it was trained (a
  changed prerequisite would silently give the existing checkpoints another part); the
  logging, validation and checkpoint cadence and the loading options are not compared.

The argument then holds the folder's absolute path for this process, and checkpoints record it
relative to the run folder (:func:`portable`; ``meta.json`` lists the prerequisites), so a run
folder can move: :func:`~sepkit.train.restore.load_trained` resolves them against the folder it
loads from (:func:`resolve_recorded`).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from sepkit.errors import CheckpointError, ConfigError

from .checkpoint import read_meta, resolve_checkpoint
from .checks import mark_run_folder
from .config import RecipeConfig

ARG_SECTIONS = ("model.args.", "task_args.")
# keys that do not change what a prerequisite learns (cadence, loading): left out of the comparison
NOT_COMPARED = {"train": ("eval_every", "ckpt_every", "log_every", "keep_checkpoints", "max_valid_items",
                          "find_unused_parameters"),
                "data": ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")}


@dataclasses.dataclass
class Prerequisite:
    """A run a task needs first.

    name: its folder is ``<run>/prereq-<name>``; config: the recipe it trains (a
    :class:`RecipeConfig`, e.g. from :func:`~sepkit.train.config.load_recipe` with overrides);
    arg: the argument that receives its run folder, ``"model.args.KEY"`` or ``"task_args.KEY"``;
    what: a few words for the progress line (default: the recipe's name)."""

    name: str
    config: RecipeConfig
    arg: str
    what: str = ""

    def __post_init__(self):
        if not self.arg.startswith(ARG_SECTIONS) or self.arg.count(".") != (2 if self.arg.startswith("model") else 1):
            raise ConfigError(f"prerequisite {self.name!r}: arg must be model.args.KEY or task_args.KEY, got {self.arg!r}")

    @property
    def folder(self) -> str:
        return f"prereq-{self.name}"


def get_arg(cfg: RecipeConfig, arg: str):
    """The value of ``model.args.KEY`` or ``task_args.KEY`` in ``cfg`` (None when absent)."""
    section = cfg.model.args if arg.startswith("model.args.") else cfg.task_args
    return section.get(arg.rsplit(".", 1)[1])


def set_in_dict(raw: dict, arg: str, value) -> None:
    """Set ``model.args.KEY`` or ``task_args.KEY`` in a recipe or meta dict (``raw["model"]["args"]``,
    ``raw["args"]`` for a checkpoint's meta, ``raw["task_args"]``)."""
    key = arg.rsplit(".", 1)[1]
    if arg.startswith("task_args."):
        raw.setdefault("task_args", {})[key] = value
    elif isinstance(raw.get("model"), dict):
        raw["model"].setdefault("args", {})[key] = value
    elif isinstance(raw.get("args"), dict):
        raw["args"][key] = value


def _state(path: Path):
    """(checkpoint folder, step) of the run at ``path``, or None when nothing was saved there."""
    if not (path / "checkpoints" / "LATEST").is_file():
        return None
    ckpt = resolve_checkpoint(path)
    return ckpt, int(read_meta(ckpt).get("step", 0))


def _differences(want: dict, have: dict, prefix: str = "") -> list[str]:
    keys = list(want) + [k for k in have if k not in want]
    out = []
    for k in keys:
        a, b = want.get(k, "<absent>"), have.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: trained with {b!r}, now {a!r}")
    return out


def _comparable(raw: dict, skip: list[str]) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items() if k not in ("recipe", "description")}
    for section, keys in NOT_COMPARED.items():
        for k in keys:
            raw.get(section, {}).pop(k, None)
    for arg in skip:  # the prerequisite's own prerequisites: paths filled in when it trained
        set_in_dict(raw, arg, None)
    return raw


def check_unchanged(p: Prerequisite, ckpt: Path, path: Path) -> None:
    """Raise CheckpointError when ``p``'s recipe differs from the one its run at ``path`` was
    trained with (the config saved in its checkpoint ``ckpt``)."""
    from .restore import read_config
    from .tasks import make_task

    nested = [q.arg for q in make_task(p.config).prerequisites()]
    recorded = [r["arg"] for r in read_meta(ckpt).get("prerequisites", [])]
    skip = sorted(set(nested) | set(recorded))
    diff = _differences(_comparable(p.config.to_dict(), skip), _comparable(read_config(ckpt).to_dict(), skip))
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise CheckpointError(f"the prerequisite {p.name!r} in {path} was trained with another recipe ({diff[0]}{more}); "
                              f"restore the options it was trained with, or remove {path} to train it anew")


def ensure_prerequisites(task, run_dir: str | Path, device, progress: bool = True) -> list[dict]:
    """Train, resume or reuse each of ``task``'s prerequisites under ``run_dir`` (the module's
    rule), set its argument in ``task`` to the absolute run folder, and return the records that
    checkpoints keep: ``[{"name", "arg", "path" (relative to run_dir), "step"}]``."""
    from .trainer import train

    run_dir = Path(run_dir)
    records = []
    for p in task.prerequisites():
        path = run_dir / p.folder
        state = _state(path)
        label = p.what or p.config.recipe
        if state is not None:
            ckpt, step = state
            check_unchanged(p, ckpt, path)
        if state is None or state[1] < p.config.train.max_steps:
            verb = "training" if state is None else f"resuming (at step {state[1]} of {p.config.train.max_steps})"
            print(f"sepkit: {verb} the prerequisite {p.name} ({label}) in {path}", file=sys.stderr)
            mark_run_folder(run_dir, task.cfg.recipe, task.name)  # the run has started
            train(p.config, path, resume=state is not None, device=str(device), progress=progress, test=False)
            state = _state(path)
        else:
            print(f"sepkit: the prerequisite {p.name} ({label}) in {path} is complete; reused", file=sys.stderr)
        task.set_argument(p.arg, str(path.resolve()))
        records.append({"name": p.name, "arg": p.arg, "path": p.folder, "step": state[1]})
    return records


def portable(raw: dict, records: list[dict]) -> dict:
    """A copy of a recipe or meta dict with each prerequisite's argument relative to the run
    folder (what checkpoints store)."""
    import copy

    raw = copy.deepcopy(raw)
    for r in records:
        set_in_dict(raw, r["arg"], r["path"])
    return raw


def run_folder_of(ckpt: Path) -> Path | None:
    """The run folder of a checkpoint folder (``<run>/checkpoints/step-N``), or None for a
    stand-alone checkpoint folder."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


def resolve_recorded(cfg: RecipeConfig, meta: dict, ckpt: Path) -> RecipeConfig:
    """``cfg`` with the prerequisites recorded in ``meta`` pointing into the run folder of
    ``ckpt`` (absolute paths): a run folder that moved still finds its parts."""
    records = meta.get("prerequisites") or []
    root = run_folder_of(ckpt)
    if not records or root is None:
        return cfg
    for r in records:
        section = cfg.model.args if r["arg"].startswith("model.args.") else cfg.task_args
        section[r["arg"].rsplit(".", 1)[1]] = str((root / r["path"]).resolve())
    return cfg


__all__ = ["Prerequisite", "ensure_prerequisites", "check_unchanged", "portable", "resolve_recorded",
           "run_folder_of", "get_arg", "set_in_dict"]
