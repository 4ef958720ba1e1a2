"""Published separator checkpoints, loaded from local files into sepkit's separators.

Nothing downloads and nothing in a file runs: tensors load with ``torch.load(...,
weights_only=True)`` (a file that needs code execution is refused with a message saying so) and
SpeechBrain's ``hyperparams.yaml`` is read as plain data (its ``!new:`` / ``!ref`` tags are kept
as data, never executed). Each loader builds the sepkit separator with the release's
architecture and loads the weights under sepkit's names after checking the whole key layout:
a key missing, unexpected or of the wrong shape raises :class:`PublishedCheckpointError` naming
it (in the release's own key names), before any weight is copied.

- :func:`load_torchaudio_convtasnet`: the weights of torchaudio's ``CONVTASNET_BASE_LIBRI2MIX``
  bundle (a state dict of ``conv_tasnet_base``), 8 kHz, relu masks; the framing is sepkit's
  default ("cover"), which for an even filter length is the release's.
- :func:`load_speechbrain_sepformer`: a SpeechBrain Sepformer folder (``hyperparams.yaml``,
  ``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt``: sepformer-wsj02mix, -libri2mix, -whamr);
  encoder padding "none", chunk padding "paired".
- :func:`load_asteroid`: an Asteroid model file (``model_name``, ``state_dict``, ``model_args``)
  of a ``ConvTasNet`` or a ``DPRNNTasNet``; encoder padding "none" (both), chunk padding "wide"
  and a bottleneck bias (DPRNN).

:func:`load_published` loads any of them by source name; :func:`sepkit.train.convert.convert_published`
writes one as a sepkit checkpoint folder that ``sepkit separate --ckpt`` and ``sepkit eval --ckpt`` take.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from sepkit.errors import CheckpointError, InputError
from sepkit.files import key_mismatch, load_failure, load_state_dict_file

SOURCES = ("torchaudio", "speechbrain", "asteroid")


class PublishedCheckpointError(CheckpointError):
    """A published checkpoint cannot be loaded: a foreign or corrupt file, an architecture
    sepkit does not reproduce, or a key missing, unexpected or of the wrong shape (named)."""


@dataclass
class Loaded:
    """A loaded release: the separator, its registry name and constructor arguments (what a
    sepkit recipe's ``model.args`` holds), the sample rate in Hz, and where it came from."""

    model: nn.Module
    name: str
    args: dict
    sample_rate: int
    source: dict = field(default_factory=dict)


# -- key layouts ---------------------------------------------------------------------------

def _renamer(rules: list[tuple[str, str]]):
    """sepkit key -> release key by the first matching ``(pattern, replacement)`` rule."""
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(key: str) -> str:
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                return pattern.sub(repl, key)
        raise AssertionError(f"no release name for sepkit key {key}")  # a sepkit model the rules do not cover
    return rename


def _load_layout(model: nn.Module, state: dict, rename, what: str, ignored=()) -> None:
    """Load the release's ``state`` (its key names) into ``model`` after checking the layout.

    ``rename`` maps each sepkit key to the release's name; ``ignored`` are release keys that do
    not affect the output (checked by the caller). Raises PublishedCheckpointError naming the
    first missing, unexpected or misshapen key (and how many there are)."""
    own = model.state_dict()
    names = {rename(k): k for k in own}
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    missing, unexpected, shapes = key_mismatch({o: own[k] for o, k in names.items()}, state)
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) missing (first: {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (first: {unexpected[0]!r})")
    if shapes:
        o = shapes[0]
        problems.append(f"{len(shapes)} key(s) of the wrong shape (first: {o!r} is {tuple(state[o].shape)}, "
                        f"this architecture needs {tuple(own[names[o]].shape)})")
    if problems:
        raise PublishedCheckpointError(f"{what}: not the expected key layout: " + "; ".join(problems))
    for o, k in names.items():
        v = state[o]
        if not v.is_floating_point():
            raise PublishedCheckpointError(f"{what}: {o!r} has dtype {v.dtype}; a floating-point tensor is needed")
        if not bool(torch.isfinite(v).all()):
            raise PublishedCheckpointError(f"{what}: {o!r} holds NaN or Inf values")
    model.load_state_dict({k: state[o].to(own[k].dtype) for o, k in names.items()}, strict=True)
    model.eval()


def _tensor_dict(path, what: str) -> dict:
    try:
        return load_state_dict_file(path, what)
    except ValueError as exc:
        raise PublishedCheckpointError(str(exc)) from None


def _numpy_scalar_globals() -> list:
    """The data-only numpy constructors that model files pickle their numpy numbers with
    (``numpy.core.multiarray.scalar`` and ``numpy.dtype``, under numpy 1 and 2 names): allowed
    in the weights-only unpickler, which still refuses every other global."""
    try:
        import numpy as np
    except ImportError:
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtype_classes = [c for c in vars(getattr(np, "dtypes", object)).values()
                     if isinstance(c, type) and issubclass(c, np.dtype)]  # what numpy.dtype(...) returns
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *dtype_classes]


def _plain(value):
    """numpy numbers (as model files store them) -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    item = getattr(value, "item", None)
    if item is not None and not isinstance(value, torch.Tensor) and type(value).__module__.startswith("numpy"):
        return item()
    return value


def _torch_load(path, what: str):
    """Any plain (weights_only) object, e.g. an Asteroid package dict; numpy numbers in it are
    read (see :func:`_numpy_scalar_globals`) and returned as Python numbers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {str(path)!r}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return _plain(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:
        raise PublishedCheckpointError(
            f"{what}: {str(path)!r} cannot be loaded with weights_only=True: files that need code execution are "
            f"refused ({load_failure(err)})") from None


# -- torchaudio ----------------------------------------------------------------------------

_TORCHAUDIO_BLOCK = {"conv_in": "conv_layers.0", "prelu1": "conv_layers.1", "norm1": "conv_layers.2",
                     "dconv": "conv_layers.3", "prelu2": "conv_layers.4", "norm2": "conv_layers.5",
                     "res_conv": "res_out", "skip_conv": "skip_out"}
TORCHAUDIO_CONVTASNET_KEYS = _renamer(
    [(r"encoder\.conv\.weight", "encoder.weight"), (r"decoder\.deconv\.weight", "decoder.weight"),
     (r"masker\.input\.0\.(\w+)", r"mask_generator.input_norm.\1"),
     (r"masker\.input\.1\.(\w+)", r"mask_generator.input_conv.\1"),
     (r"masker\.output\.0\.(\w+)", r"mask_generator.output_prelu.\1"),
     (r"masker\.output\.1\.(\w+)", r"mask_generator.output_conv.\1")]
    + [(rf"masker\.blocks\.(\d+)\.{ours}\.(\w+)", rf"mask_generator.conv_layers.\1.{theirs}.\2")
       for ours, theirs in _TORCHAUDIO_BLOCK.items()])
"""sepkit ConvTasNet key -> key of torchaudio's ``conv_tasnet_base`` state dict."""


def load_torchaudio_convtasnet(path, mask_act: str = "relu", layers: int = 8, sample_rate: int = 8000,
                               _loaded: bool = False):
    """The weights of torchaudio's ``CONVTASNET_BASE_LIBRI2MIX`` bundle (a ``conv_tasnet_base``
    state dict, e.g. ``conv_tasnet_base_libri2mix.pt``) as a sepkit :class:`ConvTasNet`.

    The sizes (N, L, B = Sc, H, P, sources, X * R blocks) are read from the tensor shapes; the
    stride is L / 2 (L must be even). ``mask_act``: "relu" for the bundle (torchaudio's
    constructor default is "sigmoid"); ``layers``: blocks per repeat X (8 in the bundle; the
    file does not record it); ``sample_rate``: 8000 Hz for the bundle (metadata).
    """
    from .conv_tasnet import ConvTasNet

    what = f"torchaudio ConvTasNet {str(path)!r}"
    state = _tensor_dict(path, "torchaudio ConvTasNet")
    need = ["encoder.weight", "mask_generator.input_conv.weight", "mask_generator.conv_layers.0.conv_layers.0.weight",
            "mask_generator.conv_layers.0.conv_layers.3.weight", "mask_generator.output_conv.weight"]
    for key in need:
        if key not in state:
            raise PublishedCheckpointError(f"{what}: key {key!r} missing; not a torchaudio ConvTasNet state dict")
    enc = state["encoder.weight"]
    if enc.dim() != 3 or enc.shape[1] != 1:
        raise PublishedCheckpointError(f"{what}: 'encoder.weight' has shape {tuple(enc.shape)}; expected (N, 1, L)")
    n_filters, kernel = int(enc.shape[0]), int(enc.shape[2])
    if kernel % 2:
        raise PublishedCheckpointError(f"{what}: encoder kernel size {kernel} is odd; sepkit reproduces the framing "
                                       "of even kernel sizes (stride = L / 2) only")
    blocks = len({m.group(1) for k in state if (m := re.match(r"mask_generator\.conv_layers\.(\d+)\.", k))})
    if layers < 1 or blocks % layers:
        raise PublishedCheckpointError(f"{what}: {blocks} blocks do not split into repeats of layers={layers}; "
                                       "pass the number of blocks per repeat (X) as layers")
    out_rows = int(state["mask_generator.output_conv.weight"].shape[0])
    if out_rows % n_filters:
        raise PublishedCheckpointError(f"{what}: 'mask_generator.output_conv.weight' has {out_rows} rows, not a "
                                       f"multiple of N={n_filters}")
    bottleneck = int(state["mask_generator.input_conv.weight"].shape[0])
    args = dict(n_filters=n_filters, kernel_size=kernel, stride=kernel // 2, bottleneck=bottleneck,
                hidden=int(state["mask_generator.conv_layers.0.conv_layers.0.weight"].shape[0]), skip=bottleneck,
                conv_kernel=int(state["mask_generator.conv_layers.0.conv_layers.3.weight"].shape[-1]),
                layers=layers, repeats=blocks // layers, norm="gLN", mask_act=mask_act, encoder_activation="linear")
    n_src = out_rows // n_filters
    try:
        model = ConvTasNet(n_src=n_src, sample_rate=int(sample_rate), **args)
    except ValueError as exc:
        raise PublishedCheckpointError(f"{what}: {exc}") from None
    _load_layout(model, state, TORCHAUDIO_CONVTASNET_KEYS, what)
    loaded = Loaded(model, "convtasnet", args, int(sample_rate), {"from": "torchaudio", "path": str(path)})
    return loaded if _loaded else model


# -- SpeechBrain ---------------------------------------------------------------------------

@dataclass
class Tagged:
    """A YAML node with a tag (``!new:...``, ``!ref``, ``!name:...``), kept as plain data."""

    tag: str
    value: object


class PlainTagLoader(yaml.SafeLoader):
    """A SafeLoader that reads every unknown tag as :class:`Tagged` data (nothing is imported,
    constructed or called): how sepkit reads hyperpyyaml files."""


def _tagged(loader, tag_suffix, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(node.tag, value)


PlainTagLoader.add_multi_constructor("!", _tagged)
PlainTagLoader.add_multi_constructor("tag:yaml.org,2002:python/", _tagged)


def read_hyperparams(path) -> dict:
    """The top-level mapping of a hyperpyyaml file, tags kept as :class:`Tagged` data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SpeechBrain hyperparams: no file at {str(path)!r}")
    try:
        data = yaml.load(path.read_text(), Loader=PlainTagLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PublishedCheckpointError(f"{path}: not a readable YAML file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise PublishedCheckpointError(f"{path}: the top level is not a mapping")
    return data


class _Hyper:
    """Look-ups in a hyperparams mapping, resolving ``!ref <key>`` to top-level entries."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def resolve(self, value, where: str, depth: int = 0):
        while isinstance(value, Tagged) and value.tag == "!ref":
            ref = str(value.value).strip()
            m = re.fullmatch(r"<([\w.]+)>", ref)
            if not m or depth > 20:
                raise PublishedCheckpointError(f"{self.path}: {where}: !ref {ref!r} is not a plain <key> reference; "
                                               "sepkit does not evaluate expressions")
            key = m.group(1)
            if key not in self.data:
                raise PublishedCheckpointError(f"{self.path}: {where}: !ref <{key}> names no top-level key")
            value, depth, where = self.data[key], depth + 1, key
        return value

    def component(self, module_key: str, top_keys: tuple[str, ...], cls_name: str) -> Tagged:
        """The ``!new:`` node of ``modules.<module_key>`` (or a top-level key / the only node of
        class ``cls_name``)."""
        node = None
        modules = self.resolve(self.data.get("modules"), "modules")
        if isinstance(modules, dict) and module_key in modules:
            node = self.resolve(modules[module_key], f"modules.{module_key}")
        for key in top_keys:
            if node is None and key in self.data:
                node = self.resolve(self.data[key], key)
        if node is None:
            found = [v for v in self.data.values() if isinstance(v, Tagged) and v.tag.endswith("." + cls_name)]
            node = found[0] if len(found) == 1 else None
        if not (isinstance(node, Tagged) and node.tag.startswith("!new:")):
            raise PublishedCheckpointError(f"{self.path}: no {module_key} entry (a !new: {cls_name} node) found")
        return node

    def args(self, node: Tagged, where: str, defaults: dict) -> dict:
        given = node.value if isinstance(node.value, dict) else {}
        out = dict(defaults)
        for key, value in given.items():
            out[key] = self.resolve(value, f"{where}.{key}")
        return out


# Constructor defaults of the release's modules (used when hyperparams.yaml leaves a key out).
_SB_ENCODER = {"kernel_size": 2, "out_channels": 64, "in_channels": 1}
_SB_MASKNET = {"num_layers": 1, "norm": "ln", "K": 200, "num_spks": 2, "skip_around_intra": True,
               "linear_layer_after_inter_intra": True, "use_global_pos_enc": False, "max_length": 20000}
_SB_TRANSFORMER = {"d_ffn": 2048, "dropout": 0.1, "activation": "relu", "use_positional_encoding": False,
                   "norm_before": False, "attention_type": "regularMHA", "kdim": None, "vdim": None}
_SB_DECODER = {"stride": 1, "padding": 0, "bias": True, "out_channels": 1}

_SB_LAYER = {  # sepkit TransformerBlock key (after "layers.<i>.") -> the release's; group 4: the parameter
    r"self_attn\.(in_proj_weight|in_proj_bias)": r"self_att.att.\4",
    r"self_attn\.out_proj\.(\w+)": r"self_att.att.out_proj.\4",
    r"linear1\.(\w+)": r"pos_ffn.ffn.0.\4", r"linear2\.(\w+)": r"pos_ffn.ffn.3.\4",
    r"norm1\.(\w+)": r"norm1.norm.\4", r"norm2\.(\w+)": r"norm2.norm.\4"}
SPEECHBRAIN_SEPFORMER_KEYS = _renamer(
    [(r"encoder\.conv\.weight", "encoder.ckpt:conv1d.weight"), (r"decoder\.deconv\.weight", "decoder.ckpt:weight"),
     (r"masker\.norm\.(\w+)", r"masknet.ckpt:norm.\1"), (r"masker\.bottleneck\.weight", "masknet.ckpt:conv1d.weight"),
     (r"masker\.blocks\.(\d+)\.(intra|inter)\.norm\.(\w+)", r"masknet.ckpt:dual_mdl.\1.\2_mdl.mdl.norm.norm.\3"),
     (r"masker\.blocks\.(\d+)\.(intra|inter)_norm\.(\w+)", r"masknet.ckpt:dual_mdl.\1.\2_norm.\3"),
     (r"masker\.prelu\.weight", "masknet.ckpt:prelu.weight"), (r"masker\.to_sources\.(\w+)", r"masknet.ckpt:conv2d.\1"),
     (r"masker\.output\.(\w+)", r"masknet.ckpt:output.0.\1"),
     (r"masker\.output_gate\.(\w+)", r"masknet.ckpt:output_gate.0.\1"),
     (r"masker\.to_masks\.weight", "masknet.ckpt:end_conv1x1.weight")]
    + [(rf"masker\.blocks\.(\d+)\.(intra|inter)\.layers\.(\d+)\.{ours}",
        rf"masknet.ckpt:dual_mdl.\1.\2_mdl.mdl.layers.\3.{theirs}")
       for ours, theirs in _SB_LAYER.items()])
"""sepkit Sepformer key -> ``<file>:<key>`` in a SpeechBrain Sepformer folder."""


def _sb_require(path, where: str, value, allowed, what: str) -> None:
    if value not in allowed:
        raise PublishedCheckpointError(f"{path}: {where}={value!r}: sepkit's Sepformer reproduces {what} only "
                                       f"({', '.join(repr(a) for a in allowed)})")


def load_speechbrain_sepformer(folder, sample_rate: int | None = None, _loaded: bool = False):
    """A SpeechBrain Sepformer model folder as a sepkit :class:`Sepformer`.

    ``folder`` holds ``hyperparams.yaml`` (read without executing it: sources, encoder kernel /
    stride / filters, dual blocks, chunk size K, transformer layers, d_model, heads, feed-forward
    width) and ``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt`` (state dicts).
    ``sample_rate``: Hz; default the YAML's ``sample_rate``, else 8000 (the rate of
    sepformer-wsj02mix, -libri2mix and -whamr).
    """
    from .sepformer import Sepformer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SpeechBrain Sepformer: no folder at {str(folder)!r}")
    hp_path = folder / "hyperparams.yaml"
    hp = _Hyper(read_hyperparams(hp_path), hp_path)
    enc = hp.args(hp.component("encoder", ("Encoder",), "Encoder"), "Encoder", _SB_ENCODER)
    mask_node = hp.component("masknet", ("MaskNet",), "Dual_Path_Model")
    if not mask_node.tag.endswith(".Dual_Path_Model"):
        raise PublishedCheckpointError(f"{hp_path}: the masknet is {mask_node.tag[5:]}; sepkit loads Dual_Path_Model "
                                       "Sepformers only")
    mask = hp.args(mask_node, "MaskNet", _SB_MASKNET)
    dec = hp.args(hp.component("decoder", ("Decoder",), "Decoder"), "Decoder", _SB_DECODER)
    blocks = {}
    for part in ("intra_model", "inter_model"):
        node = mask.get(part)
        if not (isinstance(node, Tagged) and node.tag.endswith(".SBTransformerBlock")):
            raise PublishedCheckpointError(f"{hp_path}: MaskNet.{part} is not an SBTransformerBlock")
        blocks[part] = hp.args(node, f"MaskNet.{part}", _SB_TRANSFORMER)
        b = blocks[part]
        _sb_require(hp_path, f"{part}.use_positional_encoding", b["use_positional_encoding"], (True,), "positional encoding")
        _sb_require(hp_path, f"{part}.norm_before", b["norm_before"], (True,), "pre-norm layers")
        _sb_require(hp_path, f"{part}.activation", b["activation"], ("relu",), "ReLU feed-forward layers")
        _sb_require(hp_path, f"{part}.attention_type", b["attention_type"], ("regularMHA",), "regular attention")
        _sb_require(hp_path, f"{part}.kdim", b["kdim"], (None,), "kdim = vdim = d_model")
        _sb_require(hp_path, f"{part}.vdim", b["vdim"], (None,), "kdim = vdim = d_model")
    for key in ("num_layers", "d_model", "nhead", "d_ffn"):
        if blocks["intra_model"].get(key) != blocks["inter_model"].get(key):
            raise PublishedCheckpointError(f"{hp_path}: intra_model.{key}={blocks['intra_model'].get(key)!r} differs "
                                           f"from inter_model.{key}={blocks['inter_model'].get(key)!r}; sepkit's "
                                           "Sepformer uses one size for both")
    _sb_require(hp_path, "MaskNet.norm", mask["norm"], ("ln",), "the global layer norm")
    _sb_require(hp_path, "MaskNet.skip_around_intra", mask["skip_around_intra"], (True,), "the skip around intra")
    _sb_require(hp_path, "MaskNet.linear_layer_after_inter_intra", mask["linear_layer_after_inter_intra"], (False,),
                "no linear layer after intra / inter")
    _sb_require(hp_path, "MaskNet.use_global_pos_enc", mask["use_global_pos_enc"], (False,), "no global positions")
    _sb_require(hp_path, "Encoder.in_channels", enc["in_channels"], (1,), "single-channel input")
    _sb_require(hp_path, "Decoder.bias", dec["bias"], (False,), "a decoder without bias")
    _sb_require(hp_path, "Decoder.padding", dec["padding"], (0,), "an unpadded decoder")
    kernel, n_filters = enc["kernel_size"], enc["out_channels"]
    stride = kernel // 2  # the release's encoder hop
    if dec.get("kernel_size") != kernel or dec["stride"] != stride:
        raise PublishedCheckpointError(f"{hp_path}: Decoder kernel_size={dec.get('kernel_size')!r}, "
                                       f"stride={dec['stride']!r} do not match the encoder's ({kernel}, {stride})")
    chunk = mask["K"]
    if not isinstance(chunk, int) or chunk < 2 or chunk % 2:
        raise PublishedCheckpointError(f"{hp_path}: MaskNet.K={chunk!r}; an even chunk size is needed")
    block = blocks["intra_model"]
    if mask.get("in_channels", n_filters) != n_filters or mask.get("out_channels") != block["d_model"]:
        raise PublishedCheckpointError(f"{hp_path}: MaskNet in_channels / out_channels ({mask.get('in_channels')!r}, "
                                       f"{mask.get('out_channels')!r}) do not match the encoder's {n_filters} filters "
                                       f"and d_model={block['d_model']!r}")
    rate = sample_rate if sample_rate is not None else hp.resolve(hp.data.get("sample_rate", 8000), "sample_rate")
    if not isinstance(rate, int) or rate < 1:
        raise PublishedCheckpointError(f"{hp_path}: sample_rate={rate!r} is not a positive integer (Hz)")
    args = dict(n_filters=n_filters, kernel_size=kernel, stride=stride, d_model=block["d_model"], nhead=block["nhead"],
                dim_feedforward=block["d_ffn"], n_layers=block["num_layers"], n_blocks=mask["num_layers"],
                chunk_size=chunk, hop_size=chunk // 2, mask_act="relu", encoder_activation="relu",
                encoder_padding="none", chunk_padding="paired")
    n_src = mask["num_spks"]
    try:
        model = Sepformer(n_src=n_src, sample_rate=rate, **args)
    except (TypeError, ValueError) as exc:
        raise PublishedCheckpointError(f"{hp_path}: {exc}") from None
    state, pos = {}, {}
    for name in ("encoder", "masknet", "decoder"):
        for key, value in _tensor_dict(folder / f"{name}.ckpt", f"SpeechBrain {name}.ckpt").items():
            if re.fullmatch(r"dual_mdl\.\d+\.(intra|inter)_mdl\.pos_enc\.pe", key) and name == "masknet":
                pos[f"{name}.ckpt:{key}"] = value
            else:
                state[f"{name}.ckpt:{key}"] = value
    _check_positions(model, pos, folder)
    _load_layout(model, state, SPEECHBRAIN_SEPFORMER_KEYS, f"SpeechBrain Sepformer {str(folder)!r}")
    loaded = Loaded(model, "sepformer", args, rate, {"from": "speechbrain", "path": str(folder)})
    return loaded if _loaded else model


def _check_positions(model, tables: dict, folder) -> None:
    """The release stores its fixed sinusoidal table; it must be the one sepkit computes."""
    from sepkit.nn import SinusoidalPositionalEncoding

    d = model.masker.channels
    ref = SinusoidalPositionalEncoding(d, max_len=max([t.shape[-2] for t in tables.values()] or [1])).pe
    for key, table in tables.items():
        t = table.reshape(-1, table.shape[-1]).float()
        if t.shape[-1] != d or (t - ref[: t.shape[0]]).abs().max() > 1e-3:
            raise PublishedCheckpointError(f"SpeechBrain Sepformer {str(folder)!r}: {key!r} is not the sinusoidal "
                                           "positional table sepkit uses")


# -- Asteroid ------------------------------------------------------------------------------

def _norm_params(prefix_ours: str, prefix_theirs: str) -> list[tuple[str, str]]:
    return [(rf"{prefix_ours}\.weight", rf"{prefix_theirs}.gamma"), (rf"{prefix_ours}\.bias", rf"{prefix_theirs}.beta")]


_FILTERBANKS = [(r"encoder\.conv\.weight", "encoder.filterbank._filters"),
                (r"decoder\.deconv\.weight", "decoder.filterbank._filters")]
def _asteroid_convtasnet_keys(causal: bool):
    dconv = "shared_block.3.0" if causal else "shared_block.3"  # causal: (depthwise conv, chop) in a Sequential
    return _renamer(
        _FILTERBANKS + _norm_params(r"masker\.input\.0", "masker.bottleneck.0")
        + [(r"masker\.input\.1\.(\w+)", r"masker.bottleneck.1.\1"),
           (r"masker\.output\.0\.(\w+)", r"masker.mask_net.0.\1"),
           (r"masker\.output\.1\.(\w+)", r"masker.mask_net.1.\1")]
        + _norm_params(r"masker\.blocks\.(\d+)\.norm1", r"masker.TCN.\1.shared_block.2")
        + _norm_params(r"masker\.blocks\.(\d+)\.norm2", r"masker.TCN.\1.shared_block.5")
        + [(rf"masker\.blocks\.(\d+)\.{ours}\.(\w+)", rf"masker.TCN.\1.{theirs}.\2")
           for ours, theirs in {"conv_in": "shared_block.0", "prelu1": "shared_block.1", "dconv": dconv,
                                "prelu2": "shared_block.4", "res_conv": "res_conv", "skip_conv": "skip_conv"}.items()])


ASTEROID_CONVTASNET_KEYS = _asteroid_convtasnet_keys(causal=False)
"""sepkit ConvTasNet key -> key of an Asteroid ConvTasNet state dict (the causal variant:
``_asteroid_convtasnet_keys(causal=True)``)."""

ASTEROID_DPRNN_KEYS = _renamer(
    _FILTERBANKS + _norm_params(r"masker\.norm", "masker.bottleneck.0")
    + [(r"masker\.bottleneck\.(\w+)", r"masker.bottleneck.1.\1"),
       (r"masker\.blocks\.(\d+)\.(intra|inter)\.rnn\.(\w+)", r"masker.net.\1.\2_RNN.rnn.\3"),
       (r"masker\.blocks\.(\d+)\.(intra|inter)\.proj\.(\w+)", r"masker.net.\1.\2_linear.\3"),
       (r"masker\.blocks\.(\d+)\.(intra|inter)_norm\.weight", r"masker.net.\1.\2_norm.gamma"),
       (r"masker\.blocks\.(\d+)\.(intra|inter)_norm\.bias", r"masker.net.\1.\2_norm.beta"),
       (r"masker\.prelu\.weight", "masker.first_out.0.weight"), (r"masker\.to_sources\.(\w+)", r"masker.first_out.1.\1"),
       (r"masker\.output\.(\w+)", r"masker.net_out.0.\1"), (r"masker\.output_gate\.(\w+)", r"masker.net_gate.0.\1"),
       (r"masker\.to_masks\.weight", "masker.mask_net.weight")])
"""sepkit DPRNN key -> key of an Asteroid DPRNNTasNet state dict."""

_ASTEROID_FB = {"fb_name": ("free", "FreeFB"), "is_pinv": (False, None)}
_ASTEROID_CONVTASNET = {"n_src", "out_chan", "n_blocks", "n_repeats", "bn_chan", "hid_chan", "skip_chan",
                        "conv_kernel_size", "norm_type", "mask_act", "in_chan", "causal", "fb_name", "kernel_size",
                        "n_filters", "stride", "encoder_activation", "sample_rate", "is_pinv"}
_ASTEROID_DPRNN = {"n_src", "out_chan", "bn_chan", "hid_size", "chunk_size", "hop_size", "n_repeats", "norm_type",
                   "mask_act", "bidirectional", "rnn_type", "num_layers", "dropout", "in_chan", "fb_name",
                   "kernel_size", "n_filters", "stride", "encoder_activation", "sample_rate", "use_mulcat", "is_pinv"}
ASTEROID_MODELS = {"ConvTasNet": "convtasnet", "DPRNNTasNet": "dprnn"}


def _asteroid_arg(what, margs, key, default, allowed=None):
    value = margs.get(key, default)
    if allowed is not None and value not in allowed:
        raise PublishedCheckpointError(f"{what}: model_args.{key}={value!r}; sepkit reproduces "
                                       f"{', '.join(repr(a) for a in allowed)} only")
    return value


def load_asteroid(path, expect: str | None = None, _loaded: bool = False):
    """An Asteroid model file (a dict with ``model_name``, ``state_dict``, ``model_args``) as a
    sepkit :class:`ConvTasNet` (``model_name`` "ConvTasNet") or :class:`DPRNN` ("DPRNNTasNet").

    ``expect``: "convtasnet" or "dprnn" to refuse the other. Architecture options sepkit does not
    reproduce (another filterbank, GRU / multi-layer / unidirectional RNNs, MulCat, a causal
    DPRNN, a softmax over the DPRNN's filters) are refused, naming the ``model_args`` key. A
    causal ConvTasNet (cLN or cgLN) loads as sepkit's causal ConvTasNet.
    """
    from .conv_tasnet import ConvTasNet
    from .dprnn import DPRNN

    what = f"Asteroid model {str(path)!r}"
    package = _torch_load(path, "Asteroid model")
    if not isinstance(package, dict) or not {"model_name", "state_dict", "model_args"} <= set(package):
        got = sorted(package)[:6] if isinstance(package, dict) else type(package).__name__
        raise PublishedCheckpointError(f"{what}: not an Asteroid model file (needs the keys model_name, state_dict, "
                                       f"model_args; got {got})")
    name, margs, state = package["model_name"], package["model_args"], package["state_dict"]
    if name not in ASTEROID_MODELS:
        raise PublishedCheckpointError(f"{what}: model_name={name!r}; sepkit loads {sorted(ASTEROID_MODELS)}")
    kind = ASTEROID_MODELS[name]
    if expect is not None and kind != expect:
        raise PublishedCheckpointError(f"{what} holds a {name}, not a {'ConvTasNet' if expect == 'convtasnet' else 'DPRNNTasNet'}")
    if not isinstance(margs, dict) or not isinstance(state, dict) or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PublishedCheckpointError(f"{what}: model_args must be a dict and state_dict a dict of tensors")
    unknown = sorted(set(margs) - (_ASTEROID_CONVTASNET if kind == "convtasnet" else _ASTEROID_DPRNN))
    if unknown:
        raise PublishedCheckpointError(f"{what}: model_args.{unknown[0]} is not an option sepkit reproduces")
    for key, allowed in _ASTEROID_FB.items():
        _asteroid_arg(what, margs, key, allowed[0], allowed)
    n_src = margs.get("n_src")
    n_filters = _asteroid_arg(what, margs, "n_filters", 512 if kind == "convtasnet" else 64)
    kernel = _asteroid_arg(what, margs, "kernel_size", 16)
    stride = margs.get("stride") or kernel // 2
    _asteroid_arg(what, margs, "in_chan", None, (None, n_filters))
    _asteroid_arg(what, margs, "out_chan", None, (None, n_filters))
    enc_act = _asteroid_arg(what, margs, "encoder_activation", None, (None, "linear", "relu")) or "linear"
    rate = margs.get("sample_rate") or 8000
    if float(rate) != int(rate) or int(rate) < 1:
        raise PublishedCheckpointError(f"{what}: model_args.sample_rate={rate!r} is not a whole number of Hz")
    rate = int(rate)
    common = dict(n_filters=n_filters, kernel_size=kernel, stride=stride, encoder_activation=enc_act,
                  encoder_padding="none")
    ignored = ()
    if kind == "convtasnet":
        causal = bool(_asteroid_arg(what, margs, "causal", False, (False, True)))
        norms = {"cLN": "chanLN", "cgLN": "cLN"} if causal else {"gLN": "gLN", "cLN": "chanLN", "cgLN": "cLN"}
        norm = norms[_asteroid_arg(what, margs, "norm_type", "gLN", tuple(norms))]
        skip = _asteroid_arg(what, margs, "skip_chan", 128) or 0
        args = dict(common, bottleneck=_asteroid_arg(what, margs, "bn_chan", 128),
                    hidden=_asteroid_arg(what, margs, "hid_chan", 512), skip=skip,
                    conv_kernel=_asteroid_arg(what, margs, "conv_kernel_size", 3),
                    layers=_asteroid_arg(what, margs, "n_blocks", 8), repeats=_asteroid_arg(what, margs, "n_repeats", 3),
                    norm=norm, causal=causal, mask_act=_asteroid_arg(what, margs, "mask_act", "sigmoid",
                                                                     ("relu", "sigmoid", "softmax", "linear")))
        cls, rename = ConvTasNet, _asteroid_convtasnet_keys(causal)
        if skip:  # the last block's residual convolution feeds nothing the masks use
            last = args["layers"] * args["repeats"] - 1
            ignored = (f"masker.TCN.{last}.res_conv.weight", f"masker.TCN.{last}.res_conv.bias")
    else:
        _asteroid_arg(what, margs, "norm_type", "gLN", ("gLN",))
        _asteroid_arg(what, margs, "bidirectional", True, (True,))
        _asteroid_arg(what, margs, "num_layers", 1, (1,))
        _asteroid_arg(what, margs, "use_mulcat", False, (False,))
        if str(margs.get("rnn_type", "LSTM")).upper() != "LSTM":
            raise PublishedCheckpointError(f"{what}: model_args.rnn_type={margs['rnn_type']!r}; sepkit reproduces 'LSTM' only")
        chunk = _asteroid_arg(what, margs, "chunk_size", 100)
        args = dict(common, bottleneck=_asteroid_arg(what, margs, "bn_chan", 128),
                    hidden=_asteroid_arg(what, margs, "hid_size", 128), chunk_size=chunk,
                    hop_size=margs.get("hop_size") or chunk // 2, n_blocks=_asteroid_arg(what, margs, "n_repeats", 6),
                    mask_act=_asteroid_arg(what, margs, "mask_act", "sigmoid", ("relu", "sigmoid", "linear")),
                    chunk_padding="wide", bottleneck_bias=True)
        cls, rename = DPRNN, ASTEROID_DPRNN_KEYS
    try:
        model = cls(n_src=n_src, sample_rate=rate, **args)
    except (TypeError, ValueError) as exc:
        raise PublishedCheckpointError(f"{what}: {exc}") from None
    for key in ignored:
        if key in state and key.endswith("weight") and state[key].dim() != 3:
            raise PublishedCheckpointError(f"{what}: {key!r} has shape {tuple(state[key].shape)}")
    _load_layout(model, state, rename, what, ignored)
    loaded = Loaded(model, kind, args, rate, {"from": "asteroid", "path": str(path), "model_name": name})
    return loaded if _loaded else model


# -- loading by source ----------------------------------------------------------------------

def load_published(source: str, path) -> Loaded:
    """Load a release: ``source`` "torchaudio" (a state-dict file), "speechbrain" (a model
    folder) or "asteroid" (a model file)."""
    if source == "torchaudio":
        return load_torchaudio_convtasnet(path, _loaded=True)
    if source == "speechbrain":
        return load_speechbrain_sepformer(path, _loaded=True)
    if source == "asteroid":
        return load_asteroid(path, _loaded=True)
    raise InputError(f"source must be one of {SOURCES}, got {source!r}")


__all__ = [
    "PublishedCheckpointError", "Loaded", "Tagged", "PlainTagLoader", "read_hyperparams", "load_torchaudio_convtasnet",
    "load_speechbrain_sepformer", "load_asteroid", "load_published", "SOURCES",
    "TORCHAUDIO_CONVTASNET_KEYS", "SPEECHBRAIN_SEPFORMER_KEYS", "ASTEROID_CONVTASNET_KEYS", "ASTEROID_DPRNN_KEYS",
]
