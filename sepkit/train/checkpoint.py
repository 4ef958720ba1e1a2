"""Checkpoints: safetensors weights plus optimizer, scheduler and RNG state, written atomically.

A checkpoint is a folder ``<run>/checkpoints/step-<NNNNNNN>/`` holding ``model.safetensors``
(the trained weights, without the frozen submodules the task names: those load from their own
source), ``ema.safetensors`` when ``train.ema`` is on (the averaged weights, what evaluation and
inference use), ``state.pt`` (optimizer, scheduler, step, RNG states; loaded with
``weights_only=True``), ``config.yaml`` (the full recipe: task, model, data) and ``meta.json``
(task, model name and constructor arguments, sample rate, number of sources, frozen submodules,
sepkit version). It is written into a temporary folder that is renamed
into place, and ``<run>/checkpoints/LATEST`` (the newest folder's name) is replaced atomically
after it, so an interrupted save never damages the last good checkpoint. ``BEST`` names the
checkpoint with the best validation score so far (never pruned).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

import sepkit
from sepkit.files import load_strict, staged_folder, umask_mode

LATEST = "LATEST"
BEST = "BEST"


from sepkit.errors import CheckpointError  # noqa: E402  (re-exported)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask_mode(tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _excluded(key: str, exclude) -> bool:
    return any(key == p or key.startswith(p + ".") for p in exclude)


def model_weights(model: torch.nn.Module, exclude: tuple[str, ...] = ()) -> dict:
    """The state dict of ``model`` on the CPU, without the entries under the ``exclude`` prefixes;
    a module wrapped by ``torch.compile(model)`` gives its inner module's keys (no ``_orig_mod.``)."""
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not _excluded(k, exclude)}


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: torch.nn.Module, meta: dict, config: dict,
                    optimizer=None, scheduler=None, extra: dict | None = None, keep: int | None = None,
                    exclude: tuple[str, ...] = (), ema: dict | None = None, protect: tuple[str, ...] = ()) -> Path:
    """Write ``run_dir/checkpoints/step-<step>`` atomically and point LATEST at it.

    ``exclude``: submodule names left out of the weights (frozen parts); ``ema``: averaged
    weights written to ``ema.safetensors``; ``keep``: step folders kept (the newest, plus the
    names in ``protect``, e.g. the best one)."""
    from safetensors.torch import save_file

    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = ckpt_root / name
    with staged_folder(final, trash_prefix=".old-") as tmp:
        save_file(model_weights(model, exclude), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        state = {"step": step, "rng": rng_state(), **(extra or {})}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        torch.save(state, tmp / "state.pt")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        meta = dict(meta, step=step, sepkit=sepkit.__version__, frozen=list(exclude), ema=ema is not None)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _atomic_text(ckpt_root / LATEST, name + "\n")
    if keep is not None and keep > 0:
        steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
        for old in steps[:-keep]:
            if old.name != name and old.name not in protect:
                shutil.rmtree(old, ignore_errors=True)
    return final


def write_model_checkpoint(out: str | os.PathLike, model: torch.nn.Module, config: dict, meta: dict,
                           overwrite: bool = False, check=None) -> Path:
    """Write a weights-only checkpoint folder ``out`` (no training state) and return it.

    The one writer of the checkpoint format besides :func:`save_checkpoint`, for models that did
    not train in a sepkit run (a converted release): ``model.safetensors`` (``model``'s state
    dict), ``config.yaml`` (the recipe ``config``, a plain dict) and ``meta.json`` (``meta``,
    completed with step 0, the sepkit version, no frozen parts and no EMA unless it says
    otherwise). Written into a temporary folder renamed into place; ``check(folder)``, when given,
    runs on the complete temporary folder before the rename (e.g. to rebuild the model from it
    and compare) and may raise to leave nothing behind. An existing ``out`` is refused unless
    ``overwrite``, and a folder that is not a sepkit checkpoint is never replaced."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it (nothing was written)")
    if out.exists() and not (out / "meta.json").is_file():
        raise FileExistsError(f"--out {out} exists and is not a sepkit checkpoint; refusing to replace it")
    meta = {"step": 0, "frozen": [], "ema": False, **meta, "sepkit": sepkit.__version__}
    with staged_folder(out) as tmp:
        save_file(model_weights(model), str(tmp / "model.safetensors"))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if check is not None:
            check(tmp)
    return out


def mark_best(run_dir: str | os.PathLike, step: int) -> None:
    """Point ``run_dir/checkpoints/BEST`` at the checkpoint of ``step`` (the best validation so far)."""
    _atomic_text(Path(run_dir) / "checkpoints" / BEST, f"step-{step:07d}\n")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, its ``model.safetensors``, or a run folder (its LATEST checkpoint)."""
    p = Path(path)
    if p.is_file() and p.name == "model.safetensors":
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    for candidate in (p / "checkpoints", p):
        latest = candidate / LATEST
        if latest.is_file():
            p = candidate / latest.read_text().strip()
            break
    if not (p / "model.safetensors").is_file() or not (p / "meta.json").is_file():
        raise CheckpointError(f"{p} is not a sepkit checkpoint (no model.safetensors and meta.json)")
    return p


def read_meta(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise CheckpointError(f"{ckpt / 'meta.json'} is unreadable or corrupt ({type(exc).__name__})") from None


def read_weights(ckpt: Path, name: str = "model.safetensors") -> dict:
    """The tensors of ``ckpt/name``, with a one-line error when it is corrupt."""
    from safetensors.torch import load_file

    path = ckpt / name
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})") from None


def load_weights(ckpt: Path, model: torch.nn.Module, exclude: tuple[str, ...] = (), name: str = "model.safetensors") -> None:
    """Load ``ckpt/name`` into ``model`` strictly (entries under the ``exclude`` prefixes, the
    frozen parts, are neither expected nor loaded), with one-line errors."""
    load_strict(model, read_weights(ckpt, name), f"{ckpt / name} holds weights of a different model", exclude=exclude)


def load_state(ckpt: Path) -> dict:
    path = ckpt / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: this checkpoint cannot resume training")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__})") from None
