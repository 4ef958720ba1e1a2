"""Files sepkit writes and reads: temporary names renamed into place with the user's umask, and
plain state dicts loaded without running code.

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders whatever the umask; a
result renamed from one would stay private. :func:`umask_mode` gives it the mode a plain
``open``/``mkdir`` would have.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from sepkit.errors import CheckpointError, InputError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """chmod ``path`` to 0666 (files) or 0777 (folders) less the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def staged_folder(final: str | os.PathLike, trash_prefix: str | None = None):
    """Write a folder atomically: yields a temporary folder beside ``final`` (named
    ``.<final name>.XXXX``); when the block ends normally its files get the user's umask and it is
    renamed to ``final`` (an existing ``final`` is moved aside first and removed after);
    when the block raises, even on an interrupt, the temporary folder is removed and ``final`` is
    left as it was. ``trash_prefix``: the name prefix of the moved-aside folder (default
    ``.<final name>.old.``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        umask_mode(tmp, directory=True)
        yield tmp
        for f in tmp.iterdir():  # mkstemp and safetensors write 0600 files
            umask_mode(f)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=trash_prefix or f".{final.name}.old.", dir=final.parent))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def key_mismatch(want: dict, got: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, misshapen) keys of a state dict ``got`` against the expected one
    ``want`` (both name -> tensor or shape), in ``want``'s order (``got``'s for unexpected)."""
    def shape(v):
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    misshapen = [k for k in want if k in got and shape(want[k]) != shape(got[k])]
    return missing, unexpected, misshapen


def _excluded(key: str, exclude) -> bool:
    return any(key == p or key.startswith(p + ".") for p in exclude)


def layout_problems(want: dict, got: dict, limit: int = 3) -> str:
    """How the state dict ``got`` differs from the expected ``want`` (name -> tensor or shape), in
    words: missing, unexpected and misshapen keys (at most ``limit`` named of each); "" when the
    layouts agree."""
    missing, unexpected, shapes = key_mismatch(want, got)

    def named(keys):
        return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")

    def shape(v):
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({named(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({named(unexpected)})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatch(es): {k} has shape {shape(got[k])}, expected {shape(want[k])}")
    return "; ".join(problems)


def load_strict(model: torch.nn.Module, state: dict, what: str, exclude: tuple[str, ...] = (),
                finite: bool = True, strict: bool = True) -> None:
    """Load ``state`` (name -> tensor) into ``model`` after checking the whole key layout: the
    one strict state-dict loader of sepkit.

    ``what`` starts the error message (e.g. ``"DIPFrontend: the checkpoint is not of this
    configuration"``). Entries of ``model`` under the ``exclude`` prefixes (frozen parts that load
    from elsewhere) are neither expected nor loaded. ``strict=False`` ignores keys of ``state``
    beyond the model's (a file holding more, e.g. a whole model of which ``model`` is a part);
    every key of the model is still required. Raises
    :class:`~sepkit.errors.CheckpointError` naming the missing, unexpected and misshapen keys, or
    (``finite``) a tensor holding NaN or Inf, before any weight is copied."""
    own = {k: v for k, v in model.state_dict().items() if not _excluded(k, exclude)}
    if not strict:
        state = {k: v for k, v in state.items() if k in own}
    problems = layout_problems(own, state)
    if problems:
        raise CheckpointError(f"{what}: {problems}")
    if finite:
        for k, v in state.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"{what}: tensor {k} holds NaN or Inf values; it cannot be used")
    model.load_state_dict(state, strict=not exclude)


def load_failure(err: Exception) -> str:
    """What in a file stopped ``torch.load(weights_only=True)``, without torch's advice to retry
    with ``weights_only=False`` (which would run the file's code)."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it needs the Python object {found.group(1)}"
    noise = ("Weights only load failed", "Please file an issue", "Check the documentation", "weights_only")
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line and not any(n in line for n in noise)), "")
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def load_torch_file(path, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` of a file a user named; whatever stops it (a pickle
    that needs code, which is refused and never run; a text file, a WAV, a truncated file) is an
    InputError naming ``what``, the path and the reason."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{what}: {str(path)!r} cannot be loaded with weights_only=True and is refused (files that "
                         f"need code execution are never run; {load_failure(err)})") from None
    except Exception as err:  # noqa: BLE001 - torch.load raises KeyError, IndexError, ... on foreign bytes
        raise InputError(f"{what}: {str(path)!r} is not a readable torch file ({load_failure(err)})") from None


def load_state_dict_file(path, what: str = "checkpoint") -> dict:
    """Load a plain state dict with ``torch.load(..., weights_only=True)``.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a plain
    tensor dictionary (a pickle that needs code execution is refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{what}: {str(path)!r} is not a plain tensor state dict loadable with "
                         f"weights_only=True (files that need code execution are refused, never run; "
                         f"{load_failure(err)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{what}: {str(path)!r} does not hold a dictionary of tensors")
    return state
