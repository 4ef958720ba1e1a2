"""Bi-LSTM mask separator (the BLSTM TasNet of Luo and Mesgarani, "TasNet: time-domain audio
separation network for real-time, single-channel speech separation", ICASSP 2018).

Defaults follow that paper: gated encoder (``relu(U x) * sigmoid(V x)``) of 500 filters of 40
samples (stride 20, 5 ms at 8 kHz), gLN, 4 BLSTM layers of 500 units per direction with identity
skip connections from the second layer on, a linear layer to S x 500 and sigmoid masks: about
23.1 M parameters for two sources (the paper reports 23.6 M for its implementation).

``causal=True``: unidirectional LSTMs (500 units) and cLN.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError
from sepkit.nn.checkpoint import check_checkpointing, run_block
from sepkit.nn.graph import outside_graph
from sepkit.nn.norm import make_norm

from .base import Decoder, Encoder, MaskSeparator, check_choice, mask_activation


class LSTMMasker(nn.Module):
    """Stacked (B)LSTMs estimating masks: (batch, N, F) -> (batch, S, N, F).

    norm(N), then ``n_layers`` LSTM layers of ``hidden`` units (per direction); layer i >= 1 adds
    its input to its output (identity skip); dropout between layers; linear -> S*N; mask act.
    ``checkpointing="blocks"`` recomputes each LSTM layer in the backward pass. The LSTMs run
    outside torch.compile's graphs (:func:`~sepkit.nn.graph.outside_graph`); the norm, skips and
    output layer compile.
    """

    def __init__(self, in_channels: int, n_src: int, hidden: int = 500, n_layers: int = 4,
                 bidirectional: bool = True, norm: str = "gLN", dropout: float = 0.0, mask_act: str = "sigmoid",
                 checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("LSTMMasker", checkpointing)
        check_choice("LSTMMasker", "mask_act", mask_act, ("relu", "sigmoid", "softmax", "linear"))
        if n_layers < 1:
            raise InputError(f"LSTMMasker: n_layers must be >= 1, got {n_layers}")
        self.n_src, self.mask_act = n_src, mask_act
        width = hidden * (2 if bidirectional else 1)
        self.norm = make_norm(norm, in_channels)
        self.layers = nn.ModuleList(
            nn.LSTM(in_channels if i == 0 else width, hidden, batch_first=True, bidirectional=bidirectional)
            for i in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width, n_src * in_channels)

    @outside_graph
    def recurrent(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Outputs (batch, F, width) of LSTM layer ``i`` on ``x`` (batch, F, in)."""
        return self.layers[i](x)[0]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        B, N, frames = w.shape
        x = self.norm(w).transpose(1, 2)  # (B, F, N)
        for i in range(len(self.layers)):
            y = run_block(self.recurrent, i, x, checkpointing=self.checkpointing)
            x = self.dropout(y + x if i > 0 else y)
        masks = self.output(x).reshape(B, frames, self.n_src, N).permute(0, 2, 3, 1)
        return mask_activation(self.mask_act, masks)


class BiLSTMSeparator(MaskSeparator):
    """Bi-LSTM mask separator: (B, T) or (B, 1, T) mixture -> (B, S, T) sources.

    Args:
        n_src: number of sources S.
        n_filters: encoder / decoder filters N.
        kernel_size, stride: encoder filter length and hop in samples.
        hidden: LSTM units per direction.
        n_layers: LSTM layers.
        norm: input norm, "gLN" (default) or, when causal, "cLN" (default) / "chanLN".
        causal: unidirectional LSTMs.
        dropout: dropout after each LSTM layer.
        mask_act: "sigmoid" (default), "relu", "softmax" or "linear".
        encoder_activation: "gated" (default), "relu" or "linear".
        sample_rate: rate the model is meant for, in Hz (metadata).
        frontend, frontend_dim: the frontend hook (see :mod:`sepkit.models.separators.base`).
        checkpointing: "none" (default) or "blocks": recompute each LSTM layer in the backward
            pass (see :mod:`sepkit.nn.checkpoint`).
    """

    def __init__(self, n_src: int = 2, n_filters: int = 500, kernel_size: int = 40, stride: int = 20,
                 hidden: int = 500, n_layers: int = 4, norm: str | None = None, causal: bool = False,
                 dropout: float = 0.0, mask_act: str = "sigmoid", encoder_activation: str = "gated",
                 sample_rate: int = 8000, frontend: nn.Module | None = None, frontend_dim: int | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        self.n_src = self._check_n_src("BiLSTMSeparator", n_src)
        check_checkpointing("BiLSTMSeparator", checkpointing)
        self.sample_rate, self.causal = sample_rate, causal
        norm = norm or ("cLN" if causal else "gLN")
        if causal and norm == "gLN":
            raise InputError("BiLSTMSeparator: gLN looks at the whole utterance; use norm='cLN' when causal")
        self.encoder = Encoder(n_filters, kernel_size, stride, encoder_activation)
        self.masker = LSTMMasker(n_filters, n_src, hidden, n_layers, not causal, norm, dropout, mask_act,
                                 checkpointing)
        self.decoder = Decoder(n_filters, kernel_size, stride)
        self._init_frontend(frontend, frontend_dim)


__all__ = ["BiLSTMSeparator", "LSTMMasker"]
