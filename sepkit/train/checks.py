"""Checks of command-line arguments made before any work: the device and the output folders."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import ConfigError


def resolve_device(text: str | torch.device | None, local_rank: int = 0, flag: str = "--device") -> torch.device:
    """The torch device ``text`` names (None: CUDA when present, else the CPU), checked to exist.

    A bare ``cuda`` gets an index (``local_rank``), as ``torch.cuda.set_device`` needs one. The
    ``SEPKIT_BACKEND`` environment variable is checked for that device too (BackendError)."""
    device = _resolve(text, local_rank, flag)
    from sepkit.kernels._backend import check_environment

    check_environment(device)  # SEPKIT_BACKEND, before any work
    return device


def _resolve(text, local_rank: int, flag: str) -> torch.device:
    if text is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag}={text!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"{flag}={text!r}: sepkit runs on cpu or cuda devices")
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag}={text!r}: no CUDA device is available here; use --device cpu")
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{flag}={text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a folder that exists or can be created and is writable (nothing is created)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: exists and is not a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{flag}={str(path)!r}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}={str(path)!r}: {probe} is not writable")
    return p


#: the file a training run writes first into its folder: what makes a folder a run
RUN_MARKER = "run.json"


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a sepkit training run (finished, interrupted, or started before its
    first checkpoint): its marker file, or a ``checkpoints`` folder (runs of earlier versions)."""
    p = Path(path)
    return (p / RUN_MARKER).is_file() or (p / "checkpoints" / "LATEST").is_file()


def check_run_folder(path: str | os.PathLike, resume: bool, flag: str = "--out") -> Path:
    """``path`` as the folder of a training run: new, empty, or a run; with ``resume`` a run.
    A non-empty folder that is not a run is refused (nothing in it is touched)."""
    p = check_output_dir(path, flag)
    if p.is_dir() and any(p.iterdir()) and not is_run_folder(p):
        raise ConfigError(f"{flag}={str(path)!r}: a non-empty folder that is not a sepkit run; choose a new or empty "
                          "folder (nothing was touched)")
    return p


def mark_run_folder(path: str | os.PathLike, recipe: str, task: str) -> None:
    """Write the run marker (once; an interrupted run keeps its first)."""
    import json

    import sepkit

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    marker = p / RUN_MARKER
    if not marker.is_file():
        tmp = p / f".{RUN_MARKER}.tmp"
        tmp.write_text(json.dumps({"sepkit": sepkit.__version__, "recipe": recipe, "task": task}, indent=1) + "\n")
        os.replace(tmp, marker)
