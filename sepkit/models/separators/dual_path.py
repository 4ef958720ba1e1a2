"""Dual-path processing shared by DPRNN and Sepformer: chunking, overlap-add, and the masker
around a stack of dual-path blocks (DPRNN paper, Luo et al. 2020; Sepformer, Subakan et al. 2021).

Chunking turns a sequence (B, C, F) into overlapping chunks (B, C, K, n) of length K taken every
``hop`` frames (``K - hop`` zeros on the left, enough zeros on the right for whole chunks);
overlap-add sums them back into (B, C, F). Intra-chunk models run along K, inter-chunk models
along n.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.nn.norm import make_norm

from .base import check_choice, mask_activation


def chunk_padding(length: int, chunk_size: int, hop_size: int) -> tuple[int, int, int]:
    """(left, right, n_chunks) for splitting ``length`` frames into chunks of ``chunk_size`` every
    ``hop_size`` frames, with ``chunk_size - hop_size`` zeros on the left and at least as many on
    the right."""
    left = chunk_size - hop_size
    n_chunks = -(-(length + chunk_size - 2 * hop_size) // hop_size) + 1
    right = (n_chunks - 1) * hop_size + chunk_size - length - left
    return left, right, n_chunks


def segment(x: torch.Tensor, chunk_size: int, hop_size: int) -> torch.Tensor:
    """(B, C, F) -> overlapping chunks (B, C, K, n), K = chunk_size, see :func:`chunk_padding`."""
    left, right, _ = chunk_padding(x.shape[-1], chunk_size, hop_size)
    chunks = F.pad(x, (left, right)).unfold(-1, chunk_size, hop_size)  # (B, C, n, K)
    return chunks.transpose(2, 3).contiguous()


def overlap_add(chunks: torch.Tensor, hop_size: int, length: int) -> torch.Tensor:
    """Inverse of :func:`segment` up to the overlap: sum chunks (B, C, K, n) -> (B, C, length)."""
    B, C, K, n = chunks.shape
    left, right, n_expected = chunk_padding(length, K, hop_size)
    if n != n_expected:
        raise ValueError(f"overlap_add: {n} chunks do not cover {length} frames with chunk {K} and hop {hop_size}")
    padded = left + length + right
    cols = chunks.reshape(B, C * K, n)
    out = F.fold(cols, output_size=(1, padded), kernel_size=(1, K), stride=(1, hop_size))
    return out[:, :, 0, left: left + length]


class DualPathMasker(nn.Module):
    """Masker around dual-path blocks: (B, N, F) encoder features -> (B, S, N, F) masks.

    norm(N) -> 1x1 conv N -> D (no bias) -> chunks (B, D, K, n) -> blocks -> PReLU ->
    1x1 Conv2d D -> S*D -> overlap-add per source -> ``tanh(1x1) * sigmoid(1x1)`` gated output ->
    1x1 conv D -> N (no bias) -> mask activation.

    Args:
        in_channels: N, encoder filters.
        channels: D, the width the blocks work at.
        n_src: S.
        blocks: modules mapping (B, D, K, n) -> (B, D, K, n), applied in order.
        chunk_size, hop_size: K and the hop between chunks, in encoder frames.
        norm: input normalisation ("gLN", "cLN", ...).
        mask_act: "relu", "sigmoid", "softmax" (across sources) or "linear".
    """

    def __init__(self, in_channels: int, channels: int, n_src: int, blocks: list[nn.Module], chunk_size: int,
                 hop_size: int, norm: str = "gLN", mask_act: str = "relu"):
        super().__init__()
        check_choice(type(self).__name__, "mask_act", mask_act, ("relu", "sigmoid", "softmax", "linear"))
        if not 1 <= hop_size <= chunk_size:
            raise ValueError(f"DualPathMasker: need 1 <= hop_size <= chunk_size, got {hop_size}, {chunk_size}")
        self.n_src, self.channels, self.chunk_size, self.hop_size = n_src, channels, chunk_size, hop_size
        self.mask_act = mask_act
        self.norm = make_norm(norm, in_channels)
        self.bottleneck = nn.Conv1d(in_channels, channels, 1, bias=False)
        self.blocks = nn.ModuleList(blocks)
        self.prelu = nn.PReLU()
        self.to_sources = nn.Conv2d(channels, n_src * channels, 1)
        self.output = nn.Conv1d(channels, channels, 1)
        self.output_gate = nn.Conv1d(channels, channels, 1)
        self.to_masks = nn.Conv1d(channels, in_channels, 1, bias=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        B, N, frames = w.shape
        x = segment(self.bottleneck(self.norm(w)), self.chunk_size, self.hop_size)
        for block in self.blocks:
            x = block(x)
        x = self.to_sources(self.prelu(x))  # (B, S*D, K, n)
        x = x.reshape(B * self.n_src, self.channels, *x.shape[2:])
        x = overlap_add(x, self.hop_size, frames)  # (B*S, D, F)
        x = torch.tanh(self.output(x)) * torch.sigmoid(self.output_gate(x))
        masks = self.to_masks(x).reshape(B, self.n_src, N, frames)
        return mask_activation(self.mask_act, masks)


def intra_chunk(x: torch.Tensor) -> torch.Tensor:
    """(B, D, K, n) -> (B*n, K, D): sequences along the chunk."""
    B, D, K, n = x.shape
    return x.permute(0, 3, 2, 1).reshape(B * n, K, D)


def from_intra_chunk(y: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*n, K, D) -> (B, D, K, n)."""
    Bn, K, D = y.shape
    return y.reshape(batch, Bn // batch, K, D).permute(0, 3, 2, 1)


def inter_chunk(x: torch.Tensor) -> torch.Tensor:
    """(B, D, K, n) -> (B*K, n, D): sequences across chunks at one position."""
    B, D, K, n = x.shape
    return x.permute(0, 2, 3, 1).reshape(B * K, n, D)


def from_inter_chunk(y: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*K, n, D) -> (B, D, K, n)."""
    BK, n, D = y.shape
    return y.reshape(batch, BK // batch, n, D).permute(0, 3, 1, 2)


__all__ = [
    "segment", "overlap_add", "chunk_padding", "DualPathMasker",
    "intra_chunk", "from_intra_chunk", "inter_chunk", "from_inter_chunk",
]
