"""Target speaker extraction (TSE) conditioned on a speaker embedding.

Both extractors map a mixture (B, T) and one speaker embedding (B, D) to the target speaker's
waveform (B, T). The embedding comes from the teacher applied to an enrollment utterance, or
from a :class:`sepkit.models.mixture2set.MixtureToSet` slot (enrollment-free).

* :class:`ConvTasNetTSE` - Conv-TasNet encoder / TCN / decoder (the parts of
  :mod:`sepkit.models.separators.conv_tasnet`) with FiLM conditioning (SpeakerBeam-style
  adaptation: ``x * (1 + gamma(e)) + beta(e)``) after the first block of every repeat.
* :class:`DualPathTSE` - dual-path chunking (:mod:`sepkit.models.separators.dual_path`) with
  DPRNN blocks; after every block each frame cross-attends (``sepkit.nn.CrossAttention``, long
  queries over a short memory) to ``n_tokens`` tokens projected from the embedding.

The embedding is L2-normalised inside both models, so teacher embeddings (unnormalised) and set
embeddings (unit norm) can be swapped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.nn import CrossAttention
from sepkit.nn.checkpoint import check_checkpointing, run_block
from sepkit.nn.norm import make_norm

from .mixture2set import teacher_embed
from .separators.base import Decoder, Encoder, as_waveform_batch, frame_padding, mask_activation
from .separators.conv_tasnet import TemporalBlock
from .separators.dprnn import DPRNNBlock
from .separators.dual_path import overlap_add, segment

__all__ = ["FiLM", "ConvTasNetTSE", "DualPathTSE", "check_embedding", "TSEWithConditioner"]


def check_embedding(owner: str, embedding, batch: int, dim: int) -> torch.Tensor:
    """Validate a (B, D) speaker embedding; a (D,) vector is broadcast over the batch."""
    if not isinstance(embedding, torch.Tensor) or not embedding.is_floating_point():
        raise InputTypeError(f"{owner}: embedding must be a floating-point tensor of shape ({batch}, {dim}), got "
                             f"{type(embedding).__name__ if not isinstance(embedding, torch.Tensor) else embedding.dtype}")
    if embedding.dim() == 1 and embedding.shape[0] == dim:
        embedding = embedding.unsqueeze(0).expand(batch, dim)
    if embedding.dim() != 2 or embedding.shape != (batch, dim):
        raise InputError(f"{owner}: embedding must have shape ({batch}, {dim}) (batch, emb_dim={dim}), got "
                         f"{tuple(embedding.shape)}; the model was built for {dim}-d speaker embeddings")
    if not torch.compiler.is_exporting() and not bool(torch.isfinite(embedding).all()):
        raise InputError(f"{owner}: embedding contains NaN or Inf")
    return F.normalize(embedding, dim=-1, eps=1e-8)


class FiLM(nn.Module):
    """Feature-wise affine conditioning: x (B, C, L), e (B, D) -> x * (1 + gamma(e)) + beta(e)."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.gamma = nn.Linear(emb_dim, channels)
        self.beta = nn.Linear(emb_dim, channels)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + self.gamma(e)).unsqueeze(-1) + self.beta(e).unsqueeze(-1)


class _WaveTSE(nn.Module):
    """Encoder -> conditioned masker -> decoder, one output source."""

    emb_dim: int

    def _mask(self, w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, mixture: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """mixture (B, T) or (B, 1, T), embedding (B, emb_dim) (or (emb_dim,)) -> target (B, T)."""
        name = type(self).__name__
        wave = as_waveform_batch(name, mixture, self)
        e = check_embedding(name, embedding, wave.shape[0], self.emb_dim).to(wave.dtype)
        length = wave.shape[-1]
        left, right, _ = frame_padding(length, self.encoder.kernel_size, self.encoder.stride)
        w = self.encoder(F.pad(wave, (left, right)))
        out = self.decoder(self._mask(w, e) * w)
        return out[:, left: left + length]


class ConvTasNetTSE(_WaveTSE):
    """Conv-TasNet target speaker extractor with FiLM: (B, T) mixture, (B, D) embedding -> (B, T).

    Args:
        emb_dim: D of the conditioning embedding (192 for the public ECAPA-TDNN).
        n_filters, kernel_size, stride, bottleneck, hidden, skip, conv_kernel, layers, repeats,
        norm: as :class:`sepkit.models.ConvTasNet` (defaults the Conv-TasNet paper's).
        mask_act: mask nonlinearity ("relu").
        sample_rate: Hz (metadata).
        checkpointing: "none" (default) or "blocks": recompute each TCN block in the backward pass
            (:mod:`sepkit.nn.checkpoint`).

    FiLM sits after the first :class:`TemporalBlock` of each repeat, acting on the bottleneck
    channels.
    """

    def __init__(self, emb_dim: int = 192, n_filters: int = 512, kernel_size: int = 16, stride: int = 8,
                 bottleneck: int = 128, hidden: int = 512, skip: int = 128, conv_kernel: int = 3, layers: int = 8,
                 repeats: int = 3, norm: str = "gLN", mask_act: str = "relu", sample_rate: int = 8000,
                 checkpointing: str = "none"):
        super().__init__()
        if emb_dim < 1:
            raise InputError(f"ConvTasNetTSE: emb_dim must be >= 1, got {emb_dim}")
        self.checkpointing = check_checkpointing("ConvTasNetTSE", checkpointing)
        self.emb_dim, self.sample_rate, self.layers, self.mask_act = emb_dim, sample_rate, layers, mask_act
        self.encoder = Encoder(n_filters, kernel_size, stride)
        self.input = nn.Sequential(make_norm(norm, n_filters), nn.Conv1d(n_filters, bottleneck, 1))
        total = layers * repeats
        self.blocks = nn.ModuleList(
            TemporalBlock(bottleneck, hidden, skip, conv_kernel, 2 ** (i % layers), norm, False,
                          residual=not (skip > 0 and i == total - 1))
            for i in range(total)
        )
        self.films = nn.ModuleList(FiLM(emb_dim, bottleneck) for _ in range(repeats))
        self.use_skip = skip > 0
        self.output = nn.Sequential(nn.PReLU(), nn.Conv1d(skip if self.use_skip else bottleneck, n_filters, 1))
        self.decoder = Decoder(n_filters, kernel_size, stride)

    def _mask(self, w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = self.input(w)
        skip_sum = 0.0
        for i, block in enumerate(self.blocks):
            res, skip = run_block(block, x, checkpointing=self.checkpointing)
            if res is not None:
                x = x + res
            if skip is not None:
                skip_sum = skip_sum + skip
            if i % self.layers == 0:
                x = self.films[i // self.layers](x, e)
        return mask_activation(self.mask_act, self.output(skip_sum if self.use_skip else x))


class CrossAttentionCondition(nn.Module):
    """Frames attend to speaker tokens: x (B, C, K, n), e (B, D) -> x + attn(norm(x), tokens(e)).

    ``n_tokens`` tokens of width C are a linear projection of the embedding (so the softmax has
    more than one key to choose from)."""

    def __init__(self, emb_dim: int, channels: int, n_tokens: int = 4, nhead: int = 4, backend: str | None = None):
        super().__init__()
        self.n_tokens, self.channels = n_tokens, channels
        self.tokens = nn.Linear(emb_dim, n_tokens * channels)
        self.norm = nn.LayerNorm(channels)
        self.attn = CrossAttention(channels, nhead, backend=backend)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        B, C, K, n = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(B, K * n, C)
        mem = self.tokens(e).view(B, self.n_tokens, C)
        out = self.attn(self.norm(seq), mem)
        return x + out.view(B, K, n, C).permute(0, 3, 1, 2)


class DualPathTSE(_WaveTSE):
    """Dual-path (DPRNN) target speaker extractor with cross-attention conditioning.

    Args:
        emb_dim: D of the conditioning embedding.
        n_filters, kernel_size, stride: encoder (64 filters of 16 samples, stride 8 by default).
        channels: width of the dual-path blocks.
        hidden: LSTM units per direction.
        chunk_size, hop_size: chunking, in encoder frames (hop defaults to half a chunk).
        n_blocks: DPRNN blocks, each followed by a :class:`CrossAttentionCondition`.
        n_tokens, nhead: conditioning tokens and attention heads.
        mask_act: mask nonlinearity ("sigmoid").
        sample_rate: Hz (metadata).
        backend: attention backend.
        checkpointing: "none" (default) or "blocks": recompute each intra- and inter-chunk path in the backward pass
            (:mod:`sepkit.nn.checkpoint`).
    """

    def __init__(self, emb_dim: int = 192, n_filters: int = 64, kernel_size: int = 16, stride: int = 8,
                 channels: int = 64, hidden: int = 128, chunk_size: int = 100, hop_size: int | None = None,
                 n_blocks: int = 6, n_tokens: int = 4, nhead: int = 4, mask_act: str = "sigmoid",
                 sample_rate: int = 8000, backend: str | None = None, checkpointing: str = "none"):
        super().__init__()
        if emb_dim < 1:
            raise InputError(f"DualPathTSE: emb_dim must be >= 1, got {emb_dim}")
        check_checkpointing("DualPathTSE", checkpointing)
        self.emb_dim, self.sample_rate, self.mask_act = emb_dim, sample_rate, mask_act
        self.chunk_size, self.hop_size = chunk_size, hop_size or chunk_size // 2
        if not 1 <= self.hop_size <= chunk_size:
            raise InputError(f"DualPathTSE: need 1 <= hop_size <= chunk_size, got {self.hop_size}, {chunk_size}")
        self.encoder = Encoder(n_filters, kernel_size, stride)
        self.norm = make_norm("gLN", n_filters)
        self.bottleneck = nn.Conv1d(n_filters, channels, 1, bias=False)
        self.blocks = nn.ModuleList(DPRNNBlock(channels, hidden, checkpointing=checkpointing) for _ in range(n_blocks))
        self.conditions = nn.ModuleList(CrossAttentionCondition(emb_dim, channels, n_tokens, nhead, backend)
                                        for _ in range(n_blocks))
        self.prelu = nn.PReLU()
        self.to_mask = nn.Conv1d(channels, n_filters, 1)
        self.decoder = Decoder(n_filters, kernel_size, stride)

    def _mask(self, w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        frames = w.shape[-1]
        x = segment(self.bottleneck(self.norm(w)), self.chunk_size, self.hop_size)
        for block, cond in zip(self.blocks, self.conditions):
            x = cond(block(x), e)
        x = overlap_add(self.prelu(x), self.hop_size, frames)
        return mask_activation(self.mask_act, self.to_mask(x))


class TSEWithConditioner(nn.Module):
    """``extractor`` (trainable) and ``conditioner`` (frozen: a mixture2set model with
    ``predictor`` and ``teacher``, or a bare teacher)."""

    def __init__(self, extractor: nn.Module, conditioner: nn.Module, sample_rate: int):
        super().__init__()
        self.extractor, self.conditioner, self.sample_rate = extractor, conditioner, sample_rate

    @property
    def teacher(self) -> nn.Module:
        return getattr(self.conditioner, "teacher", self.conditioner)

    @property
    def has_predictor(self) -> bool:
        return hasattr(self.conditioner, "predictor")

    @property
    def n_slots(self) -> int:
        return self.conditioner.predictor.n_slots if self.has_predictor else 0

    @torch.no_grad()
    def enrolled(self, enrollment: torch.Tensor) -> torch.Tensor:
        """(B, T_e) enrollment utterances -> (B, D) teacher embeddings (centred like the
        predictor's targets when the conditioner is a mixture2set model)."""
        if hasattr(self.conditioner, "embed"):
            return self.conditioner.embed(enrollment)
        return teacher_embed(self.teacher, enrollment, self.sample_rate)

    @torch.no_grad()
    def slots(self, mixture: torch.Tensor):
        """(B, T) -> predicted set (embeddings (B, S, D), presence logits (B, S))."""
        if not self.has_predictor:
            raise InputError("this TSE model has no set predictor (trained with a teacher only): "
                             "predicted conditioning and --target-slot need model.args.predictor_ckpt")
        return self.conditioner.predictor(mixture)

    @torch.no_grad()
    def predicted(self, mixture: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The predicted slot most cosine-similar to ``reference`` (B, D): (B, D)."""
        emb = self.slots(mixture).embeddings
        k = torch.einsum("bsd,bd->bs", emb, F.normalize(reference, dim=-1)).argmax(1)
        return emb[torch.arange(emb.shape[0], device=emb.device), k]

    def forward(self, mixture: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return self.extractor(mixture, embedding)

