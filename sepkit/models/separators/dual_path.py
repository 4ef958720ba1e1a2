"""Dual-path processing shared by DPRNN and Sepformer: chunking, overlap-add, and the masker
around a stack of dual-path blocks (DPRNN paper, Luo et al. 2020; Sepformer, Subakan et al. 2021).

Chunking turns a sequence (B, C, F) into overlapping chunks (B, C, K, n) of length K taken every
``hop`` frames; overlap-add sums them back into (B, C, F). Intra-chunk models run along K,
inter-chunk models along n. The zero padding around the sequence (``mode``) decides how many
chunks there are, which the inter-chunk models and the block norms see:

- ``"tight"`` (default): ``K - hop`` zeros on the left, the fewest zeros on the right that give
  whole chunks (at least ``K - hop``).
- ``"wide"``: ``K`` zeros on the left, ``(F + K) // hop + 1`` chunks (between ``K - hop`` and ``K``
  zeros on the right); the chunking of the published Asteroid DPRNN checkpoints.
- ``"paired"``: 50% overlap only (``hop = K / 2``, K even): ``K / 2`` zeros on the left and the
  frames padded to whole pairs of chunks, ``2 * ((F + K / 2) // K + 1)`` chunks; the chunking of
  the published SpeechBrain Sepformer checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.nn.norm import make_norm

from .base import check_choice, mask_activation

CHUNK_PADDINGS = ("tight", "wide", "paired")


def chunk_padding(length: int, chunk_size: int, hop_size: int, mode: str = "tight") -> tuple[int, int, int]:
    """(left, right, n_chunks) for splitting ``length`` frames into chunks of ``chunk_size`` every
    ``hop_size`` frames, padded as ``mode`` says (see the module docstring; default "tight":
    ``chunk_size - hop_size`` zeros on the left and at least as many on the right)."""
    if mode == "wide":
        left = chunk_size
        n_chunks = (length + chunk_size) // hop_size + 1
    elif mode == "paired":
        if chunk_size % 2 or 2 * hop_size != chunk_size:
            raise InputError(f"chunk_padding: mode='paired' needs an even chunk_size and hop_size = chunk_size / 2, "
                             f"got {chunk_size}, {hop_size}")
        left = hop_size
        n_chunks = 2 * ((length + hop_size) // chunk_size + 1)
    else:
        check_choice("chunk_padding", "mode", mode, CHUNK_PADDINGS)
        left = chunk_size - hop_size
        n_chunks = -(-(length + chunk_size - 2 * hop_size) // hop_size) + 1
    right = (n_chunks - 1) * hop_size + chunk_size - length - left
    return left, right, n_chunks


def segment(x: torch.Tensor, chunk_size: int, hop_size: int, mode: str = "tight") -> torch.Tensor:
    """(B, C, F) -> overlapping chunks (B, C, K, n), K = chunk_size, see :func:`chunk_padding`."""
    left, right, _ = chunk_padding(x.shape[-1], chunk_size, hop_size, mode)
    chunks = F.pad(x, (left, right)).unfold(-1, chunk_size, hop_size)  # (B, C, n, K)
    return chunks.transpose(2, 3).contiguous()


def overlap_add(chunks: torch.Tensor, hop_size: int, length: int, mode: str = "tight") -> torch.Tensor:
    """Inverse of :func:`segment` (same ``mode``) up to the overlap: sum chunks (B, C, K, n) -> (B, C, length)."""
    B, C, K, n = chunks.shape
    left, right, n_expected = chunk_padding(length, K, hop_size, mode)
    if n != n_expected:
        raise InputError(f"overlap_add: {n} chunks do not cover {length} frames with chunk {K} and hop {hop_size}")
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
        chunk_padding: "tight" (default), "wide" or "paired" (see the module docstring).
        bottleneck_bias: give the N -> D convolution a bias (default False).
    """

    def __init__(self, in_channels: int, channels: int, n_src: int, blocks: list[nn.Module], chunk_size: int,
                 hop_size: int, norm: str = "gLN", mask_act: str = "relu", chunk_padding: str = "tight",
                 bottleneck_bias: bool = False):
        super().__init__()
        check_choice(type(self).__name__, "mask_act", mask_act, ("relu", "sigmoid", "softmax", "linear"))
        check_choice(type(self).__name__, "chunk_padding", chunk_padding, CHUNK_PADDINGS)
        self.chunk_mode = chunk_padding
        if not 1 <= hop_size <= chunk_size:
            raise InputError(f"DualPathMasker: need 1 <= hop_size <= chunk_size, got {hop_size}, {chunk_size}")
        self.n_src, self.channels, self.chunk_size, self.hop_size = n_src, channels, chunk_size, hop_size
        self.mask_act = mask_act
        self.norm = make_norm(norm, in_channels)
        self.bottleneck = nn.Conv1d(in_channels, channels, 1, bias=bottleneck_bias)
        self.blocks = nn.ModuleList(blocks)
        self.prelu = nn.PReLU()
        self.to_sources = nn.Conv2d(channels, n_src * channels, 1)
        self.output = nn.Conv1d(channels, channels, 1)
        self.output_gate = nn.Conv1d(channels, channels, 1)
        self.to_masks = nn.Conv1d(channels, in_channels, 1, bias=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        B, N, frames = w.shape
        x = segment(self.bottleneck(self.norm(w)), self.chunk_size, self.hop_size, self.chunk_mode)
        for block in self.blocks:
            x = block(x)
        x = self.to_sources(self.prelu(x))  # (B, S*D, K, n)
        x = x.reshape(B * self.n_src, self.channels, *x.shape[2:])
        x = overlap_add(x, self.hop_size, frames, self.chunk_mode)  # (B*S, D, F)
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
    "segment", "overlap_add", "chunk_padding", "CHUNK_PADDINGS", "DualPathMasker",
    "intra_chunk", "from_intra_chunk", "inter_chunk", "from_inter_chunk",
]
