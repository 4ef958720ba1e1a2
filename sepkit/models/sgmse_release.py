"""Released SGMSE+ checkpoints (PyTorch Lightning ``.ckpt`` files) as :class:`~sepkit.models.sgmse.SGMSE` models.

A release file is a Lightning checkpoint: ``state_dict`` holds the score network under ``dnn.``
(NCSN++ as one flat ``dnn.all_modules.<n>`` list), ``ema`` the exponential moving average of
its parameters (``shadow_params``, a list in the network's parameter order: the weights the
published results were obtained with), and ``hyper_parameters`` the training arguments: the
network's size (``nf``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``; absent keys
take the release's defaults), the SDE (``theta``, ``sigma_min``, ``sigma_max``, ``N``), ``t_eps``,
the STFT and its compression, and one pickled reference to the release's data-module class
(``sgmse.data_module.SpecsDataModule``).

The file is read with ``torch.load(weights_only=True)``; that one class reference is mapped to
an inert stand-in (:class:`DataModuleReference`), so nothing of the release is imported or run
and it need not be installed. A file that needs any other Python object is refused with its name.

The network is sepkit's :class:`~sepkit.models.ncsnpp.NCSNpp` with ``scale_by_time=True`` (the
release divides the output pyramid by t before the output layer) inside an ``SGMSE`` with
``parametrisation="score"`` (score = minus the network output) and ``time_grid="sgmse"`` (the
predictor steps ``t_i - t_{i+1}``); the key mapping (NIN attention weights transposed and
concatenated into ``in_proj_weight``) is :func:`convert_release_state`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sepkit.errors import CheckpointError
from sepkit.files import load_failure, load_strict

from .ncsnpp import NCSNpp
from .sgmse import OUVESDE, SGMSE, SpecRepresentation

__all__ = ["DataModuleReference", "DATA_MODULE", "LoadedSGMSE", "read_release", "release_args", "release_layout",
           "convert_release_state", "load_sgmse_release"]

#: the one pickled class reference a release's ``hyper_parameters`` hold
DATA_MODULE = "sgmse.data_module.SpecsDataModule"


class DataModuleReference:
    """Stands in for the release's data-module class in a loaded ``hyper_parameters``: it has no
    behaviour, and reading a file never imports the release."""


#: hyper_parameters that must have these values (the only variant sepkit's network and STFT
#: implement), with the release's defaults for absent keys
_FIXED = {
    "backbone": "ncsnpp", "sde": "ouve", "resblock_type": "biggan", "progressive": "output_skip",
    "progressive_input": "input_skip", "progressive_combine": "sum", "embedding_type": "fourier",
    "nonlinearity": "swish", "skip_rescale": True, "scale_by_sigma": True, "conditional": True, "centered": True,
    "fir": True, "resamp_with_conv": True, "init_scale": 0.0, "transform_type": "exponent", "window": "hann",
    "normalize": "noisy",
}
_LOSSES = ("score_matching", "mse", "mae", "denoiser")


@dataclass
class LoadedSGMSE:
    """A release loaded into sepkit.

    Attributes:
        model: the :class:`SGMSE` (eval mode), EMA weights when the file has them and they were asked for.
        args: its ``model.args`` for the diffusion task (NCSN++ and SDE arguments, ``scale_by_time``,
            ``parametrisation``, ``time_grid``).
        sample_rate: Hz (``sr``, 16000 where absent).
        steps: the release's sampler steps (``N``).
        weights: "ema" or "trained" (which weights were loaded).
        source: where it came from, for the checkpoint's meta.
    """

    model: SGMSE
    args: dict
    sample_rate: int
    steps: int
    weights: str
    source: str
    hyper_parameters: dict = field(default_factory=dict)


def read_release(path: str | os.PathLike) -> dict:
    """The contents of a release ``.ckpt`` (a dict), read without running code.

    Raises CheckpointError for a missing or unreadable file, a file needing a Python object other
    than the data-module reference (named), or one without a ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SGMSE+ checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([(DataModuleReference, DATA_MODULE)]):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot be read as an SGMSE+ checkpoint without running code "
                              f"({load_failure(err)}); refused") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return blob


def _hparam(hp: dict, key: str, default):
    value = hp.get(key, default)
    return default if value is None else value


def release_args(hp: dict, what: str = "the checkpoint") -> tuple[dict, dict]:
    """(NCSN++ arguments, SGMSE arguments) of a release's ``hyper_parameters``; CheckpointError
    naming the key for a variant sepkit does not implement."""
    if not isinstance(hp, dict):
        raise CheckpointError(f"{what}: hyper_parameters are missing")
    for key, want in _FIXED.items():
        got = hp.get(key, want)
        if got != want and not (isinstance(want, float) and isinstance(got, (int, float)) and float(got) == want):
            raise CheckpointError(f"{what}: hyper_parameters {key}={got!r}; sepkit implements {key}={want!r} only")
    loss = hp.get("loss_type", "score_matching")
    if loss not in _LOSSES:
        raise CheckpointError(f"{what}: hyper_parameters loss_type={loss!r}: the network does not give a score "
                              f"(sepkit reads {_LOSSES})")
    n_fft, hop = int(_hparam(hp, "n_fft", 510)), int(_hparam(hp, "hop_length", 128))
    if (n_fft, hop) != (510, 128):
        raise CheckpointError(f"{what}: hyper_parameters n_fft={n_fft}, hop_length={hop}; sepkit's diffusion "
                              "task runs the STFT of n_fft 510, hop 128")
    power, scale = float(_hparam(hp, "spec_abs_exponent", 0.5)), float(_hparam(hp, "spec_factor", 0.15))
    if (power, scale) != (0.5, 0.15):
        raise CheckpointError(f"{what}: hyper_parameters spec_abs_exponent={power}, spec_factor={scale}; "
                              "sepkit's diffusion task compresses with 0.15 |X|^0.5")
    image = int(_hparam(hp, "image_size", 256))
    if image != n_fft // 2 + 1:
        raise CheckpointError(f"{what}: hyper_parameters image_size={image} differs from the {n_fft // 2 + 1} "
                              "frequency bins")
    net = {
        "nf": int(_hparam(hp, "nf", 128)),
        "ch_mult": [int(m) for m in _hparam(hp, "ch_mult", (1, 1, 2, 2, 2, 2, 2))],
        "num_res_blocks": int(_hparam(hp, "num_res_blocks", 2)),
        "attn_resolutions": [int(r) for r in _hparam(hp, "attn_resolutions", (16,))],
        "dropout": float(_hparam(hp, "dropout", 0.0)),
        "fir_kernel": [float(k) for k in _hparam(hp, "fir_kernel", (1, 3, 3, 1))],
        "fourier_scale": float(_hparam(hp, "fourier_scale", 16.0)),
        "scale_by_time": True,
    }
    sgmse = {
        "theta": float(_hparam(hp, "theta", 1.5)), "sigma_min": float(_hparam(hp, "sigma_min", 0.05)),
        "sigma_max": float(_hparam(hp, "sigma_max", 0.5)), "t_eps": float(_hparam(hp, "t_eps", 0.03)),
        "N": int(_hparam(hp, "N", 30)), "sample_rate": int(_hparam(hp, "sr", 16000)),
        "parametrisation": "score", "time_grid": "sgmse",
    }
    return net, sgmse


def release_layout(net: NCSNpp) -> list[tuple[str, str]]:
    """(sepkit module prefix, kind) of each entry of the release's ``all_modules`` list, in its
    order; kind "same" (identical sub-keys) or "attn" (NIN attention weights)."""
    if net.latent_dim is not None:
        raise CheckpointError("the SGMSE+ release has no cross-attention; build the network with latent_dim=None")
    seq = [("time_embed", "same"), ("time_dense.0", "same"), ("time_dense.1", "same"), ("conv_in", "same")]
    last = len(net.down) - 1
    for i, level in enumerate(net.down):
        for j in range(len(level.blocks)):
            seq.append((f"down.{i}.blocks.{j}", "same"))
            if len(level.attn):
                seq.append((f"down.{i}.attn.{j}", "attn"))
        if i != last:
            seq += [(f"down.{i}.downsample", "same"), (f"down.{i}.combine", "same")]
    seq += [("mid_block1", "same"), ("mid_attn", "attn"), ("mid_block2", "same")]
    for k, level in enumerate(net.up):
        seq += [(f"up.{k}.blocks.{j}", "same") for j in range(len(level.blocks))]
        if level.attn is not None:
            seq.append((f"up.{k}.attn", "attn"))
        seq += [(f"up.{k}.pyramid_norm", "same"), (f"up.{k}.pyramid_conv", "same")]
        if level.upsample is not None:
            seq.append((f"up.{k}.upsample", "same"))
    return seq


def convert_release_state(state: dict, net: NCSNpp, what: str = "the checkpoint") -> dict:
    """The release network's state dict (``all_modules.<n>.*`` and ``output_layer.*``, without
    the ``dnn.`` prefix) as ``net``'s keys; CheckpointError when the module lists differ."""
    layout = release_layout(net)
    entries: dict[int, dict] = {}
    out = {}
    for key, value in state.items():
        if key.startswith("output_layer."):
            out[key] = value
            continue
        head, _, rest = key.partition(".")
        index, _, sub = rest.partition(".")
        if head != "all_modules" or not index.isdigit() or not sub:
            raise CheckpointError(f"{what}: unexpected network key dnn.{key}")
        entries.setdefault(int(index), {})[sub] = value
    if sorted(entries) != list(range(len(layout))):
        raise CheckpointError(f"{what}: the network has {len(entries)} modules where NCSN++ of this size has "
                              f"{len(layout)} (nf={net.nf}, ch_mult={net.ch_mult}, num_res_blocks={net.num_res_blocks},"
                              f" attn_resolutions={net.attn_resolutions})")
    for n, (prefix, kind) in enumerate(layout):
        sub = entries[n]
        if kind == "same":
            out.update({f"{prefix}.{k}": v for k, v in sub.items()})
            continue
        try:
            out[f"{prefix}.GroupNorm_0.weight"] = sub.pop("GroupNorm_0.weight")
            out[f"{prefix}.GroupNorm_0.bias"] = sub.pop("GroupNorm_0.bias")
            out[f"{prefix}.attn.in_proj_weight"] = torch.cat([sub.pop(f"NIN_{i}.W").t() for i in range(3)])
            out[f"{prefix}.attn.in_proj_bias"] = torch.cat([sub.pop(f"NIN_{i}.b") for i in range(3)])
            out[f"{prefix}.attn.out_proj.weight"] = sub.pop("NIN_3.W").t().contiguous()
            out[f"{prefix}.attn.out_proj.bias"] = sub.pop("NIN_3.b")
        except KeyError as exc:
            raise CheckpointError(f"{what}: module dnn.all_modules.{n} is not an attention block (no {exc.args[0]})") from None
        if sub:
            raise CheckpointError(f"{what}: unexpected key dnn.all_modules.{n}.{sorted(sub)[0]} in an attention block")
    return out


def _ema_state(blob: dict, dnn: dict, what: str) -> dict | None:
    """The EMA weights in the network's layout (``dnn`` keys without the prefix), or None."""
    ema = blob.get("ema")
    if not isinstance(ema, dict) or ema.get("shadow_params") is None:
        return None
    shadow = ema["shadow_params"]
    keys = list(dnn)
    if len(shadow) != len(keys):
        raise CheckpointError(f"{what}: the EMA holds {len(shadow)} tensors for the network's {len(keys)} parameters")
    for k, v in zip(keys, shadow):
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(dnn[k].shape):
            raise CheckpointError(f"{what}: the EMA tensor for dnn.{k} has another shape")
    return dict(zip(keys, shadow))


def load_sgmse_release(path: str | os.PathLike, ema: bool = True, backend: str | None = None) -> LoadedSGMSE:
    """The SGMSE+ release at ``path`` (a Lightning ``.ckpt``) as an :class:`SGMSE` in eval mode.

    Args:
        path: the local checkpoint file (nothing is downloaded).
        ema: load the EMA weights (what the release is evaluated with) when the file has them;
            False: the trained weights.
        backend: attention backend of the network.
    Raises:
        CheckpointError: unreadable file, one that needs code, another network variant or size,
        weights that do not fit, NaN weights.
    """
    what = str(path)
    blob = read_release(path)
    hp = blob.get("hyper_parameters") or {}
    net_args, sg = release_args(hp, what)
    dnn = {k[4:]: v for k, v in blob["state_dict"].items() if k.startswith("dnn.")}
    if not dnn:
        raise CheckpointError(f"{what}: no network weights (no dnn.* keys in state_dict)")
    averaged = _ema_state(blob, dnn, what) if ema else None
    net = NCSNpp(**net_args, backend=backend)
    state = convert_release_state(averaged if averaged is not None else dnn, net, what)
    load_strict(net, state, f"{what} holds weights of a different model")
    rep = SpecRepresentation(sample_rate=sg["sample_rate"])
    model = SGMSE(net, OUVESDE(sg["theta"], sg["sigma_min"], sg["sigma_max"], sg["N"]), rep, sg["t_eps"],
                  parametrisation=sg["parametrisation"], time_grid=sg["time_grid"])
    args = {"config": "sgmse", **net_args, "theta": sg["theta"], "sigma_min": sg["sigma_min"],
            "sigma_max": sg["sigma_max"], "t_eps": sg["t_eps"], "parametrisation": sg["parametrisation"],
            "time_grid": sg["time_grid"]}
    plain = {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}
    return LoadedSGMSE(model.eval(), args, sg["sample_rate"], sg["N"], "ema" if averaged is not None else "trained",
                       f"sgmse:{Path(path).name}", plain)
