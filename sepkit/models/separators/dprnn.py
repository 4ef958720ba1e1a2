"""Dual-path RNN (Luo, Chen and Yoshioka, "Dual-path RNN: efficient long sequence modeling for
time-domain single-channel speech separation", ICASSP 2020).

Defaults are the paper's configuration: 64 encoder filters of 2 samples (stride 1), blocks of
width 64, BLSTMs of 128 units per direction, chunks of 250 frames with hop 125, 6 dual-path
blocks, gLN: about 2.6 M parameters for two sources.

Note on the width: the 2.6 M of the paper is reached with the blocks working at the encoder's
width (``bottleneck=64``, as in the authors' release). A 128-wide bottleneck with the same LSTMs
gives about 3.6 M; pass ``bottleneck=128`` for that.

``causal=True``: unidirectional LSTMs both within and across chunks, cLN on the input and a
per-frame channel norm (chanLN) inside the blocks, so no output frame depends on a later input
frame (beyond the encoder window).
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError
from sepkit.nn.checkpoint import check_checkpointing, run_block
from sepkit.nn.graph import outside_graph
from sepkit.nn.norm import make_norm

from .base import Decoder, Encoder, MaskSeparator
from .dual_path import (
    DualPathMasker,
    from_inter_chunk,
    from_intra_chunk,
    inter_chunk,
    intra_chunk,
)


class RNNPath(nn.Module):
    """One path of a DPRNN block: LSTM over sequences, linear back to D, norm, residual.

    ``forward(seq (batch, L, D)) -> (batch, L, D)`` before the norm; the block applies the norm
    in the (B, D, K, n) layout. The LSTM runs outside torch.compile's graphs
    (:func:`~sepkit.nn.graph.outside_graph`); the projection compiles with the block around it.
    """

    def __init__(self, channels: int, hidden: int, bidirectional: bool, dropout: float = 0.0):
        super().__init__()
        self.rnn = nn.LSTM(channels, hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden * (2 if bidirectional else 1), channels)

    @outside_graph
    def recurrent(self, seq: torch.Tensor) -> torch.Tensor:
        """The LSTM's outputs (batch, L, H * directions)."""
        return self.rnn(seq)[0]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(self.recurrent(seq)))


class DPRNNBlock(nn.Module):
    """Intra-chunk then inter-chunk RNN path, each ``x + norm(path(x))``: (B, D, K, n) -> same.

    ``checkpointing="blocks"`` recomputes each path (intra, inter) in the backward pass.
    """

    def __init__(self, channels: int, hidden: int, norm: str = "gLN", causal: bool = False, dropout: float = 0.0,
                 checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("DPRNNBlock", checkpointing)
        self.intra = RNNPath(channels, hidden, bidirectional=not causal, dropout=dropout)
        self.intra_norm = make_norm(norm, channels)
        self.inter = RNNPath(channels, hidden, bidirectional=not causal, dropout=dropout)
        self.inter_norm = make_norm(norm, channels)

    def _intra_path(self, x: torch.Tensor) -> torch.Tensor:
        return self.intra_norm(from_intra_chunk(self.intra(intra_chunk(x)), x.shape[0]))

    def _inter_path(self, x: torch.Tensor) -> torch.Tensor:
        return self.inter_norm(from_inter_chunk(self.inter(inter_chunk(x)), x.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + run_block(self._intra_path, x, checkpointing=self.checkpointing)
        return x + run_block(self._inter_path, x, checkpointing=self.checkpointing)


class DPRNN(MaskSeparator):
    """DPRNN separator: (B, T) or (B, 1, T) mixture -> (B, S, T) sources.

    Args:
        n_src: number of sources S.
        n_filters: encoder / decoder filters N.
        kernel_size: filter length in samples.
        stride: encoder hop in samples.
        bottleneck: width D of the dual-path blocks.
        hidden: LSTM units per direction.
        chunk_size: K, frames per chunk.
        hop_size: frames between chunks (default K // 2).
        n_blocks: number of dual-path blocks.
        norm: "gLN" (default) or "chanLN" inside the blocks; the input norm is gLN, or cLN when causal.
        causal: unidirectional LSTMs and causal norms.
        dropout: dropout after each LSTM.
        mask_act: "sigmoid" (default), "relu", "softmax" or "linear".
        encoder_activation: "linear" (default), "relu" or "gated".
        sample_rate: rate the model is meant for, in Hz (metadata).
        frontend, frontend_dim: the frontend hook (see :mod:`sepkit.models.separators.base`).
        checkpointing: "none" (default) or "blocks": recompute each intra- and inter-chunk path in
            the backward pass (see :mod:`sepkit.nn.checkpoint`).
        encoder_padding: "cover" (default) or "none", the framing of the waveform (see
            :mod:`sepkit.models.separators.base`).
        chunk_padding: "tight" (default), "wide" or "paired", the chunking of the frames (see
            :mod:`sepkit.models.separators.dual_path`).
        bottleneck_bias: a bias on the masker's N -> bottleneck convolution (default False).
    """

    def __init__(self, n_src: int = 2, n_filters: int = 64, kernel_size: int = 2, stride: int = 1,
                 bottleneck: int = 64, hidden: int = 128, chunk_size: int = 250, hop_size: int | None = None,
                 n_blocks: int = 6, norm: str | None = None, causal: bool = False, dropout: float = 0.0,
                 mask_act: str = "sigmoid", encoder_activation: str = "linear", sample_rate: int = 8000,
                 frontend: nn.Module | None = None, frontend_dim: int | None = None, encoder_padding: str = "cover",
                 chunk_padding: str = "tight", bottleneck_bias: bool = False,
                 checkpointing: str = "none"):
        super().__init__()
        self.n_src = self._check_n_src("DPRNN", n_src)
        check_checkpointing("DPRNN", checkpointing)
        self.sample_rate, self.causal = sample_rate, causal
        block_norm = norm or ("chanLN" if causal else "gLN")
        if causal and block_norm == "gLN":
            raise InputError("DPRNN: gLN looks at the whole utterance; use norm='chanLN' when causal")
        self.encoder = Encoder(n_filters, kernel_size, stride, encoder_activation, encoder_padding)
        blocks = [DPRNNBlock(bottleneck, hidden, block_norm, causal, dropout, checkpointing) for _ in range(n_blocks)]
        self.masker = DualPathMasker(n_filters, bottleneck, n_src, blocks, chunk_size,
                                     hop_size or chunk_size // 2, norm="cLN" if causal else "gLN",
                                     mask_act=mask_act, chunk_padding=chunk_padding, bottleneck_bias=bottleneck_bias)
        self.decoder = Decoder(n_filters, kernel_size, stride)
        self._init_frontend(frontend, frontend_dim)

    @classmethod
    def from_asteroid(cls, path) -> "DPRNN":
        """An Asteroid DPRNNTasNet model file (local) as a DPRNN in eval mode; see
        :func:`sepkit.models.separators.published.load_asteroid`."""
        from .published import load_asteroid

        return load_asteroid(path, expect="dprnn")


__all__ = ["DPRNN", "DPRNNBlock", "RNNPath"]
