"""Separators: waveform (B, T) or (B, 1, T) in, (B, S, T) sources out (mask-based in the time domain,
but for TF-GridNet).

- :class:`ConvTasNet` (Luo and Mesgarani 2019), about 5.05 M parameters by default;
- :class:`DPRNN` (Luo et al. 2020), about 2.6 M;
- :class:`Sepformer` (Subakan et al. 2021), about 25.7 M, on sepkit's attention layers;
- :class:`BiLSTMSeparator` (BLSTM TasNet, Luo and Mesgarani 2018), about 23.1 M;
- :class:`TFGridNet` (Wang et al. 2023), time-frequency complex spectral mapping rather than a
  mask, 8.2 M (ESPnet's configuration) or 14.4 M (the paper's), on sepkit's attention.

Each takes ``n_src`` (any number of sources), ``causal`` where the architecture allows it, and the
frontend hook ``frontend_dim`` / ``frontend`` with ``forward(mixture, frontend_features=None)``
(see :mod:`.base`). :func:`build_separator` builds one by name, for configs.
"""
from __future__ import annotations

from torch import nn

from sepkit.errors import InputError

from .base import Decoder, Encoder, FrontendAdapter, MaskSeparator
from .bilstm import BiLSTMSeparator
from .conv_tasnet import ConvTasNet
from .dprnn import DPRNN
from .dual_path import overlap_add, segment
from .sepformer import Sepformer
from .tfgridnet import TFGridNet

SEPARATORS = {"convtasnet": ConvTasNet, "dprnn": DPRNN, "sepformer": Sepformer, "bilstm": BiLSTMSeparator,
              "tfgridnet": TFGridNet}


def build_separator(name: str, **kwargs) -> nn.Module:
    """Build a separator by (case-insensitive) name: "convtasnet", "dprnn", "sepformer", "bilstm",
    "tfgridnet"."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in SEPARATORS:
        raise InputError(f"build_separator: unknown separator {name!r}; choose one of {sorted(SEPARATORS)}")
    return SEPARATORS[key](**kwargs)


__all__ = [
    "ConvTasNet", "DPRNN", "Sepformer", "BiLSTMSeparator", "TFGridNet", "SEPARATORS", "build_separator",
    "MaskSeparator", "Encoder", "Decoder", "FrontendAdapter", "segment", "overlap_add",
]
