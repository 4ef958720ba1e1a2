"""Published checkpoints as sepkit checkpoint folders (``sepkit convert``).

The loaders live with the models (:mod:`sepkit.models.separators.published`, and
:func:`sepkit.models.separators.tfgridnet.load_espnet` for ESPnet's TFGridNetV2: a release's file
into a sepkit model, nothing else); this module, in the training layer, gives each converted
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
SOURCES = ("torchaudio", "speechbrain", "asteroid", "espnet")


def convert_published(source: str, path: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the release at ``path`` (``source``: one of :data:`SOURCES`) as the sepkit checkpoint
    folder ``out`` and return it.

    The folder holds ``model.safetensors``, ``meta.json`` and ``config.yaml`` (the model's recipe,
    task ``separation``, with the converted model's arguments, sources and sample rate), so
    :func:`sepkit.train.load_trained`, ``sepkit separate --ckpt`` and ``sepkit eval --ckpt``
    take it. Nothing is left on any failure; an existing ``out`` is an error unless ``overwrite``.
    """
    from sepkit.models.separators.published import load_published
    from sepkit.models.separators.tfgridnet import load_espnet

    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}, got {source!r}")
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


def same_output(a: nn.Module, b: nn.Module, length: int = 1601, tol: float = 1e-5) -> None:
    """Raise CheckpointError unless separators ``a`` and ``b`` give the same output (max abs
    difference <= ``tol``) on one random mixture of ``length`` samples."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, generator=gen)
    with torch.no_grad():
        diff = (a.eval()(x) - b.eval()(x)).abs().max().item()
    if not diff <= tol:
        raise CheckpointError(f"the converted checkpoint does not rebuild the loaded model (max |diff| {diff:.3g})")


__all__ = ["RECIPES", "SOURCES", "convert_published", "same_output"]
