"""Released wav2vec2 / HuBERT weights in torchaudio's, fairseq's or Hugging Face's layout, as
torchaudio ``Wav2Vec2Model`` state dicts (what :class:`sepkit.models.dip.DIPFrontend` and the
GCRN's SSL branch load).

Layouts (:func:`detect_layout`, by key names):

- ``torchaudio``: ``feature_extractor.conv_layers.<i>.conv.weight``, ``encoder.transformer...``
  (a ``Wav2Vec2Model`` state dict, e.g. the files of ``torchaudio.pipelines``).
- ``fairseq``: ``feature_extractor.conv_layers.<i>.0.weight``, ``post_extract_proj``,
  ``encoder.layers.<i>.self_attn...`` (the ``"model"`` entry of a fairseq checkpoint; a
  ``w2v_model.`` prefix of a fine-tuned one is dropped). Converted by the key mapping of
  torchaudio's ``import_fairseq_model`` (its ``_convert_state_dict``).
- ``huggingface``: ``feature_projection.projection.weight``, ``encoder.layers.<i>.attention...``
  with an optional ``wav2vec2.`` / ``hubert.`` prefix (``pytorch_model.bin`` or
  ``model.safetensors`` of a transformers model folder). Converted by torchaudio's
  ``import_huggingface_model`` on a stand-in object that carries the file's tensors and the
  expected architecture (transformers need not be installed).

The pretraining-only parts of the file (wav2vec2's mask embedding, quantizer codebook and
projection, ``project_q`` and ``final_proj``; HuBERT's mask embedding) come back separately
under :class:`~sepkit.models.dip.DIPFrontend`'s names. Files are read with
``torch.load(weights_only=True)`` or safetensors; nothing runs code or downloads. A fairseq
checkpoint whose configuration is a pickled object is refused (it needs code); its ``"model"``
entry saved as a plain state dict loads.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from sepkit.errors import BackendError, CheckpointError
from sepkit.files import load_failure

__all__ = ["LAYOUTS", "detect_layout", "read_wav2vec2_file", "torchaudio_layout"]

LAYOUTS = ("torchaudio", "fairseq", "huggingface")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
_HF_PROJECTION = "feature_projection.projection.weight"


def read_wav2vec2_file(path: str | os.PathLike, what: str) -> dict:
    """The tensors of a weights file or a transformers model folder (``model.safetensors`` or
    ``pytorch_model.bin``): a state dict, the ``"model"`` entry of a fairseq checkpoint or the
    ``"state_dict"`` of another. FileNotFoundError for a missing path; CheckpointError for a file
    that needs code execution (refused, never run) or holds no tensors."""
    path = Path(path)
    if path.is_dir():
        found = next((path / f for f in _HF_FILES if (path / f).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{what}: {str(path)!r} is a folder without {' or '.join(_HF_FILES)}")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise CheckpointError(f"{what}: {str(path)!r} is not a readable safetensors file ({type(err).__name__})") from None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{what}: {str(path)!r} cannot be loaded with weights_only=True (files that need code "
                              f"execution are refused, never run; {load_failure(err)}); a fairseq checkpoint's "
                              f"\"model\" entry saved as a plain state dict loads") from None
    for key in ("model", "state_dict"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{what}: {str(path)!r} does not hold a dictionary of tensors")
    return blob


def detect_layout(state: dict) -> str | None:
    """"torchaudio", "fairseq", "huggingface", or None when the keys are of none of them."""
    if "encoder.feature_projection.projection.weight" in state:
        return "torchaudio"
    if any(re.fullmatch(r"(w2v_model\.)?(post_extract_proj\.weight|feature_extractor\.conv_layers\.0\.0\.weight)", k)
           for k in state):
        return "fairseq"
    if any(k.endswith(_HF_PROJECTION) and not k.startswith("encoder.") for k in state):
        return "huggingface"
    return None


def _parametrized(state: dict) -> dict:
    """weight_g / weight_v of the positional convolution under the parametrisation's names."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", k)
        out[re.sub(r"\.weight_v$", ".parametrizations.weight.original1", k)] = v
    return out


def _from_fairseq(state: dict) -> tuple[dict, dict]:
    try:
        from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict
    except ImportError as err:
        raise BackendError(f"reading fairseq wav2vec2 weights needs torchaudio's fairseq importer ({err})") from None
    state = {k[len("w2v_model."):] if k.startswith("w2v_model.") else k: v for k, v in state.items()}
    try:
        converted = _convert_state_dict(state)
    except ValueError as err:
        raise CheckpointError(f"not a fairseq wav2vec2 / HuBERT state dict ({err})") from None
    converted = {k: v for k, v in converted.items() if k != "label_embs_concat" and not k.startswith("aux.")}
    extra = {}
    if "mask_emb" in state:
        extra["mask_emb"] = state["mask_emb"]
    if "quantizer.vars" in state and "label_embs_concat" not in state:  # wav2vec2's pretraining head
        extra["quantizer.codebook"] = state["quantizer.vars"]
        for k in ("quantizer.weight_proj.weight", "quantizer.weight_proj.bias", "project_q.weight", "project_q.bias",
                  "final_proj.weight", "final_proj.bias"):
            if k in state:
                extra[k] = state[k]
    return _parametrized(converted), extra


class _Tensors:
    """A sub-module of the stand-in: what ``state_dict()`` returns."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return dict(self._state)


def _hf_config(kwargs: dict) -> SimpleNamespace:
    """transformers' config attributes that torchaudio's importer reads, for the architecture
    given as ``torchaudio.models.wav2vec2_model`` arguments."""
    conv = [tuple(c) for c in kwargs["extractor_conv_layer_config"]]
    return SimpleNamespace(
        feat_extract_norm=kwargs["extractor_mode"].replace("_norm", ""), conv_dim=[c[0] for c in conv],
        conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv], conv_bias=kwargs["extractor_conv_bias"],
        hidden_size=kwargs["encoder_embed_dim"], feat_proj_dropout=kwargs["encoder_projection_dropout"],
        num_conv_pos_embeddings=kwargs["encoder_pos_conv_kernel"],
        num_conv_pos_embedding_groups=kwargs["encoder_pos_conv_groups"], num_hidden_layers=kwargs["encoder_num_layers"],
        num_attention_heads=kwargs["encoder_num_heads"], attention_dropout=kwargs["encoder_attention_dropout"],
        intermediate_size=kwargs["encoder_ff_interm_features"], activation_dropout=kwargs["encoder_ff_interm_dropout"],
        hidden_dropout=kwargs["encoder_dropout"], do_stable_layer_norm=kwargs["encoder_layer_norm_first"],
        layerdrop=kwargs["encoder_layer_drop"],
    )


def _check_hf_config(folder: Path, config: SimpleNamespace, what: str) -> None:
    """A transformers ``config.json`` beside the weights must describe the expected architecture."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{what}: {path} is unreadable ({type(err).__name__})") from None
    for key in ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
                "do_stable_layer_norm", "feat_extract_norm"):
        if key in theirs and theirs[key] != getattr(config, key):
            raise CheckpointError(f"{what}: {path} has {key}={theirs[key]!r} where this model has "
                                  f"{getattr(config, key)!r}")


def _from_huggingface(state: dict, kwargs: dict, what: str) -> tuple[dict, dict]:
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    key = next(k for k in state if k.endswith(_HF_PROJECTION) and not k.startswith("encoder."))
    prefix = key[: -len(_HF_PROJECTION)]
    parts = {"feature_extractor": {}, "feature_projection": {}, "encoder": {}}
    extra = {}
    heads = {"quantizer.codevectors": "quantizer.codebook", "quantizer.weight_proj.weight": "quantizer.weight_proj.weight",
             "quantizer.weight_proj.bias": "quantizer.weight_proj.bias", "project_q.weight": "project_q.weight",
             "project_q.bias": "project_q.bias", "project_hid.weight": "final_proj.weight",
             "project_hid.bias": "final_proj.bias"}
    for k, v in state.items():
        if k in heads:
            extra[heads[k]] = v
            continue
        if not k.startswith(prefix):
            continue  # another head (lm_head, ...)
        rest = k[len(prefix):]
        if rest == "masked_spec_embed":
            extra["mask_emb"] = v
            continue
        part, _, sub = rest.partition(".")
        if part in parts:
            parts[part][sub] = v
    stand_in = SimpleNamespace(config=_hf_config(kwargs), **{n: _Tensors(p) for n, p in parts.items()})
    logger = logging.getLogger("torchaudio.models.wav2vec2.utils.import_huggingface")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its notice that no CTC head is imported
    try:
        imported = import_huggingface_model(stand_in)
    except RuntimeError as err:
        raise CheckpointError(f"{what}: the Hugging Face weights do not fit this architecture "
                              f"({str(err).splitlines()[0][:200]})") from None
    finally:
        logger.setLevel(level)
    return imported.state_dict(), extra


def torchaudio_layout(source, kwargs: dict, what: str) -> tuple[dict, dict, str | None]:
    """``(torchaudio state dict, pretraining parts, layout)`` of ``source``: a state dict in any
    of :data:`LAYOUTS`, or a path (:func:`read_wav2vec2_file`).

    ``kwargs``: the expected architecture as ``torchaudio.models.wav2vec2_model`` arguments (the
    Hugging Face importer builds it). The pretraining parts use DIPFrontend's names
    (``mask_emb``, ``quantizer.codebook``, ``quantizer.weight_proj.*``, ``project_q.*``,
    ``final_proj.*``); a state dict of no known layout comes back unchanged with layout None."""
    if isinstance(source, (str, os.PathLike)):
        state = read_wav2vec2_file(source, what)
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
    elif isinstance(source, dict):
        state, folder = source, None
    else:
        raise CheckpointError(f"{what}: expected a path or a state dict, got {type(source).__name__}")
    layout = detect_layout(state)
    if layout == "torchaudio":
        return _parametrized(state), {}, layout
    if layout == "fairseq":
        try:
            ta, extra = _from_fairseq(state)
        except CheckpointError as err:
            raise CheckpointError(f"{what}: {err}") from None
        return ta, extra, layout
    if layout == "huggingface":
        if folder is not None:
            _check_hf_config(folder, _hf_config(kwargs), what)
        ta, extra = _from_huggingface(state, kwargs, what)
        return ta, extra, layout
    return state, {}, None
