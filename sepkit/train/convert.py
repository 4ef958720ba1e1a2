"""Published checkpoints as sepkit checkpoint folders (``sepkit convert``).

The loaders live with the models (:mod:`sepkit.models.separators.published` for separators,
:func:`sepkit.models.separators.tfgridnet.load_espnet` for ESPnet's TFGridNetV2,
:mod:`sepkit.models.sgmse_release` for SGMSE+: a release's file into a sepkit model, nothing
else); this module, in the training layer, gives each converted
model its recipe and task and writes the folder with
:func:`~sepkit.train.checkpoint.write_model_checkpoint`, after checking that the folder rebuilds
the loaded model (:func:`~sepkit.train.restore.load_trained`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sepkit.errors import CheckpointError, InputError

from .checkpoint import write_model_checkpoint
from .config import config_from_dict, load_recipe
from .restore import load_trained
from .tasks import make_task

#: the recipe a converted separator gets (its data and training sections), by model name
RECIPES = {"convtasnet": "convtasnet", "dprnn": "dprnn", "sepformer": "sepformer", "tfgridnet": "tfgridnet"}
SEPARATOR_SOURCES = ("torchaudio", "speechbrain", "asteroid", "espnet")
SOURCES = SEPARATOR_SOURCES + ("sgmse",)


def convert_published(source: str, path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the release at ``path`` (``source``: one of :data:`SOURCES`) as the sepkit checkpoint
    folder ``out`` and return it.

    The folder holds ``model.safetensors``, ``meta.json`` and ``config.yaml`` (the model's recipe,
    task ``separation``, with the converted model's arguments, sources and sample rate; for
    ``sgmse`` see :func:`convert_sgmse`), so :func:`sepkit.train.load_trained`,
    ``sepkit separate --ckpt`` and ``sepkit eval --ckpt`` take it. Nothing is left on any
    failure; an existing ``out`` is an error unless ``overwrite``.
    """
    from sepkit.models.separators.published import load_published
    from sepkit.models.separators.tfgridnet import load_espnet

    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "sgmse":
        return convert_sgmse(path, out, overwrite)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it (nothing was written)")
    if out.exists() and not (out / "meta.json").is_file():
        raise FileExistsError(f"--out {out} exists and is not a sepkit checkpoint; refusing to replace it")
    loaded = load_espnet(path) if source == "espnet" else load_published(source, path)
    raw = load_recipe(RECIPES[loaded.name]).to_dict()
    raw["recipe"] = f"{loaded.name}-{source}"
    raw["description"] = f"{loaded.name} converted from the {source} release {Path(path).name}"
    raw["task"] = "separation"
    raw["model"]["args"] = dict(loaded.args)
    raw["data"]["sample_rate"] = loaded.sample_rate
    raw["data"]["n_src"] = loaded.model.n_src
    task = make_task(config_from_dict(raw, "converted config"))
    meta = dict(task.model_meta(), converted_from=loaded.source)

    def rebuilds(folder: Path) -> None:
        _, rebuilt = load_trained(folder)
        same_output(loaded.model, rebuilt)

    return write_model_checkpoint(out, loaded.model, raw, meta, overwrite=overwrite, check=rebuilds)


def convert_sgmse(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, ema: bool = True) -> Path:
    """Write the SGMSE+ release ``path`` (a Lightning ``.ckpt``,
    :func:`sepkit.models.sgmse_release.load_sgmse_release`; its EMA weights unless ``ema`` is
    False) as the sepkit checkpoint folder ``out`` and return it.

    The config is the ``sgmse`` recipe (task ``diffusion``, model ``sgmse``) with the release's
    network, SDE, ``t_eps``, ``parametrisation: score``, ``time_grid: sgmse`` and
    ``scale_by_time: true`` in ``model.args``, its sampler steps (``N``) in ``task_args.steps``
    and its sample rate, so ``sepkit separate --ckpt out`` enhances as the release does, and
    ``task_args.init=out`` starts SGMSE+ or Ex-Diff training from it."""
    from sepkit.models.sgmse_release import load_sgmse_release

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it (nothing was written)")
    loaded = load_sgmse_release(path, ema=ema)
    raw = load_recipe("sgmse").to_dict()
    raw["recipe"] = "sgmse-release"
    raw["description"] = f"SGMSE+ converted from the release {Path(path).name} ({loaded.weights} weights)"
    raw["task"] = "diffusion"
    raw["model"] = {"name": "sgmse", "args": dict(loaded.args)}
    raw["task_args"] = dict(raw.get("task_args") or {}, steps=loaded.steps, valid_steps=loaded.steps)
    raw["data"]["sample_rate"] = loaded.sample_rate
    task = make_task(config_from_dict(raw, "converted config"))
    meta = dict(task.model_meta(), converted_from=loaded.source, weights=loaded.weights)

    def rebuilds(folder: Path) -> None:
        _, rebuilt = load_trained(folder)
        same_score(loaded.model, rebuilt)

    return write_model_checkpoint(out, loaded.model, raw, meta, overwrite=overwrite, check=rebuilds)


def same_score(a: nn.Module, b: nn.Module, frames: int | None = None, tol: float = 1e-5) -> None:
    """Raise CheckpointError unless score models ``a`` and ``b`` (:class:`~sepkit.models.sgmse.SGMSE`)
    give the same score (max abs difference <= ``tol`` times the largest magnitude) on one random
    state, noisy spectrogram and time."""
    gen = torch.Generator().manual_seed(0)
    n = frames or int(getattr(a.backbone, "frame_multiple", 1))
    shape = (1, 1, a.representation.n_freq, n)
    x, y = (torch.randn(shape, dtype=torch.complex64, generator=gen) for _ in range(2))
    t = torch.rand(1, generator=gen) * 0.9 + 0.05
    with torch.no_grad():
        sa, sb = a.eval().score(x, t, y), b.eval().score(x, t, y)
    diff = (sa - sb).abs().max().item()
    if not diff <= tol * max(1.0, sa.abs().max().item()):
        raise CheckpointError(f"the converted checkpoint does not rebuild the loaded model (max |diff| {diff:.3g})")


def same_output(a: nn.Module, b: nn.Module, length: int = 1601, tol: float = 1e-5) -> None:
    """Raise CheckpointError unless separators ``a`` and ``b`` give the same output (max abs
    difference <= ``tol``) on one random mixture of ``length`` samples."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, generator=gen)
    with torch.no_grad():
        diff = (a.eval()(x) - b.eval()(x)).abs().max().item()
    if not diff <= tol:
        raise CheckpointError(f"the converted checkpoint does not rebuild the loaded model (max |diff| {diff:.3g})")


__all__ = ["RECIPES", "SOURCES", "SEPARATOR_SOURCES", "convert_published", "convert_sgmse", "same_output", "same_score"]
