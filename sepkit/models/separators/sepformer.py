"""Sepformer (Subakan et al., "Attention is all you need in speech separation", ICASSP 2021).

Defaults are the published WSJ0-2mix configuration: encoder of 256 filters, kernel 16, stride 8,
ReLU; masker with gLN and a 1x1 bottleneck, chunks of 250 frames with 50% overlap, 2 dual
blocks, each an intra-chunk and an inter-chunk transformer of 8 pre-norm layers (d_model 256,
8 heads, feed-forward 1024, ReLU, sinusoidal positions, final LayerNorm) followed by gLN, with
skip connections around both; PReLU, 1x1 to S x 256, overlap-add, tanh * sigmoid gate, 1x1 and
ReLU masks: about 25.7 M parameters for two sources.

The transformer layers are :class:`sepkit.nn.TransformerBlock`, whose attention never stores the
K x K score matrix (flash-style kernels on a GPU), so memory grows linearly with the chunk length.

``causal=True``: causal attention within and across chunks, cLN on the input, per-frame channel
norms (chanLN) inside the blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError
from sepkit.nn import SinusoidalPositionalEncoding, TransformerBlock
from sepkit.nn.checkpoint import check_checkpointing, run_block
from sepkit.nn.norm import make_norm

from .base import Decoder, Encoder, MaskSeparator
from .dual_path import (
    DualPathMasker,
    from_inter_chunk,
    from_intra_chunk,
    inter_chunk,
    intra_chunk,
)


class TransformerStack(nn.Module):
    """Sinusoidal positions, ``n_layers`` pre-norm :class:`sepkit.nn.TransformerBlock`, final LayerNorm
    (LayerNorm epsilon 1e-6 throughout, as in the published model).

    (batch, L, D) -> (batch, L, D); ``max_len`` bounds L. ``checkpointing="blocks"`` recomputes
    each layer in the backward pass.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, dim_feedforward: int = 1024, n_layers: int = 8,
                 dropout: float = 0.0, causal: bool = False, max_len: int = 20000, backend: str | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("TransformerStack", checkpointing)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len=max_len)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, nhead, dim_feedforward, dropout=dropout, activation="relu", norm_first=True,
                             causal=causal, backend=backend, layer_norm_eps=1e-6)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos(x)
        for layer in self.layers:
            x = run_block(layer, x, checkpointing=self.checkpointing)
        return self.norm(x)


class SepformerBlock(nn.Module):
    """Dual block: ``intra = x + norm(T_intra(x))`` along chunks, ``out = intra + norm(T_inter(intra))``
    across chunks. (B, D, K, n) -> same."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, n_layers: int, norm: str = "gLN",
                 causal: bool = False, dropout: float = 0.0, chunk_size: int = 250, max_chunks: int = 20000,
                 backend: str | None = None, checkpointing: str = "none"):
        super().__init__()
        self.intra = TransformerStack(d_model, nhead, dim_feedforward, n_layers, dropout, causal, chunk_size, backend,
                                      checkpointing)
        self.intra_norm = make_norm(norm, d_model)
        self.inter = TransformerStack(d_model, nhead, dim_feedforward, n_layers, dropout, causal, max_chunks, backend,
                                      checkpointing)
        self.inter_norm = make_norm(norm, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = x + self.intra_norm(from_intra_chunk(self.intra(intra_chunk(x)), B))
        return x + self.inter_norm(from_inter_chunk(self.inter(inter_chunk(x)), B))


class Sepformer(MaskSeparator):
    """Sepformer separator: (B, T) or (B, 1, T) mixture -> (B, S, T) sources.

    Args:
        n_src: number of sources S.
        n_filters: encoder / decoder filters N (also d_model unless ``d_model`` is given).
        kernel_size, stride: encoder filter length and hop in samples.
        d_model: transformer width (the bottleneck of the masker).
        nhead: attention heads.
        dim_feedforward: feed-forward width.
        n_layers: transformer layers in each intra and each inter transformer.
        n_blocks: dual blocks.
        chunk_size: K, frames per chunk; hop_size: frames between chunks (default K // 2).
        max_chunks: longest inter-chunk sequence (positional-encoding table); 20000 chunks of 125
            frames at stride 8 is over 5 hours at 8 kHz.
        norm: "gLN" (default) or "chanLN" inside the blocks; the input norm is gLN, or cLN when causal.
        causal: causal attention and causal norms.
        dropout: transformer dropout.
        mask_act: "relu" (default), "sigmoid", "softmax" or "linear".
        encoder_activation: "relu" (default), "linear" or "gated".
        attention_backend: backend of the attention kernels (None: automatic).
        sample_rate: rate the model is meant for, in Hz (metadata).
        frontend, frontend_dim: the frontend hook (see :mod:`sepkit.models.separators.base`).
        checkpointing: "none" (default) or "blocks": recompute each transformer layer in the
            backward pass (see :mod:`sepkit.nn.checkpoint`).
        encoder_padding: "cover" (default) or "none", the framing of the waveform (see
            :mod:`sepkit.models.separators.base`).
        chunk_padding: "tight" (default), "wide" or "paired", the chunking of the frames (see
            :mod:`sepkit.models.separators.dual_path`).
    """

    def __init__(self, n_src: int = 2, n_filters: int = 256, kernel_size: int = 16, stride: int = 8,
                 d_model: int | None = None, nhead: int = 8, dim_feedforward: int = 1024, n_layers: int = 8,
                 n_blocks: int = 2, chunk_size: int = 250, hop_size: int | None = None, max_chunks: int = 20000,
                 norm: str | None = None, causal: bool = False, dropout: float = 0.0, mask_act: str = "relu",
                 encoder_activation: str = "relu", attention_backend: str | None = None, sample_rate: int = 8000,
                 frontend: nn.Module | None = None, frontend_dim: int | None = None, encoder_padding: str = "cover",
                 chunk_padding: str = "tight", checkpointing: str = "none"):
        super().__init__()
        self.n_src = self._check_n_src("Sepformer", n_src)
        check_checkpointing("Sepformer", checkpointing)
        self.sample_rate, self.causal = sample_rate, causal
        d_model = d_model or n_filters
        block_norm = norm or ("chanLN" if causal else "gLN")
        if causal and block_norm == "gLN":
            raise InputError("Sepformer: gLN looks at the whole utterance; use norm='chanLN' when causal")
        self.encoder = Encoder(n_filters, kernel_size, stride, encoder_activation, encoder_padding)
        blocks = [
            SepformerBlock(d_model, nhead, dim_feedforward, n_layers, block_norm, causal, dropout, chunk_size,
                           max_chunks, attention_backend, checkpointing)
            for _ in range(n_blocks)
        ]
        self.masker = DualPathMasker(n_filters, d_model, n_src, blocks, chunk_size, hop_size or chunk_size // 2,
                                     norm="cLN" if causal else "gLN", mask_act=mask_act, chunk_padding=chunk_padding)
        self.decoder = Decoder(n_filters, kernel_size, stride)
        self._init_frontend(frontend, frontend_dim)

    @classmethod
    def from_speechbrain(cls, folder, **options) -> "Sepformer":
        """A SpeechBrain Sepformer model folder (local: hyperparams.yaml, encoder.ckpt, masknet.ckpt,
        decoder.ckpt) as a Sepformer in eval mode; see
        :func:`sepkit.models.separators.published.load_speechbrain_sepformer`."""
        from .published import load_speechbrain_sepformer

        return load_speechbrain_sepformer(folder, **options)


__all__ = ["Sepformer", "SepformerBlock", "TransformerStack"]
