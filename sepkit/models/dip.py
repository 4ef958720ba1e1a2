"""The DIP frontend: a self-supervised, domain-invariant pretrained frontend for separators.

A wav2vec2-style network pretrained on unlabelled mixtures of two domains (synthetic and real)
with the MPC / MIC pretext tasks, then plugged into a separator through its frontend hook::

    wave (B, T) at 16 kHz
      -> LocalEncoder: 7 convolutions (512 channels, kernels 10,3,3,3,3,2,2, strides
         5,2,2,2,2,2,2; GELU; a per-channel norm after the first)       z (B, 512, T')  50 Hz
      -> LayerNorm, Linear 512 -> d ------------------------------.
      |                                  [span masking: masked frames <- mask embedding]
      |                                   -> ContextNetwork: + convolutional relative
      |                                      positional embedding, LayerNorm, post-norm
      |                                      transformer layers (sepkit.nn)  cues c (B, T', d)
      |                                   -> final_proj d -> final_dim     predictions
      '-> GumbelQuantizer (G = 2 groups x V = 320 entries) -> project_q   targets q (B, T', final_dim)

``DIPFrontend.forward(wave, lengths)`` returns the unmasked cues as (B, d, T') features, what
``ConvTasNet(frontend=DIPFrontend(...))`` and the other separators add to their encoder output
through ``FrontendAdapter`` (linear resampling 50 Hz -> the separator's frame rate and a 1x1
projection). :func:`build_dip_separator` builds a separator around a frontend and checks that
both run at the same sample rate.

Pretraining (:meth:`DIPFrontend.pretrain_outputs` + :class:`DIPPretrainLoss`): a real-domain and
a synthetic-domain batch go through the same module (Siamese branches share every weight).

- MPC = the wav2vec2 contrastive loss over the masked steps (K = 100 distractors drawn from the
  same utterance's masked steps, cosine similarity, temperature 0.1; ``sepkit.kernels.nce``)
  + 0.1 x the codebook-diversity term (GV - perplexity) / GV + 10 x the feature penalty (mean
  square of the local encoder's output).
- MIC = MPC(real) + MPC(synthetic) + alpha x MMD^2(cues(real), cues(synthetic)), alpha = 10.
  ``mmd="frames"`` (default): the multi-kernel Gaussian MMD (``sepkit.kernels.mmd``) between the
  frame-level cues of every unpadded step of the two batches, as the paper describes.
  ``mmd="pooled"``: the linear MMD ||mean phi(real) - mean phi(synthetic)||^2 of utterance-level
  features phi = [mean over time, variance over time] of the cues, the variant the authors'
  released code uses. alpha = 0 gives exactly MPC on both branches.

Padding: ``lengths`` (B,) in samples; the frames whose receptive field lies inside the valid
samples are valid (:meth:`DIPFrontend.frame_lengths`), the first layer's norm takes its
statistics over valid frames only, padded frames are zeroed before the positional convolution
and ignored as attention keys, so valid outputs do not depend on the padding; masking never
selects padded frames.

Differences from wav2vec2 (documented, deliberate): no layer drop; the feed-forward's inner
dropout equals ``dropout`` (wav2vec2 base: 0); no dropout on attention probabilities (the fused
attention kernel has none); the diversity term averages the codebook probabilities over every
valid step (wav2vec2: over the masked ones).

Released weights: :meth:`DIPFrontend.from_wav2vec2` / :meth:`DIPFrontend.load_wav2vec2` take
wav2vec2 base or HuBERT base in torchaudio's, fairseq's or Hugging Face's layout
(:mod:`sepkit.models.wav2vec2_weights`), the pretraining-only parts from the file where it has
them; on equal weights the frontend's output is torchaudio's ``wav2vec2_base``'s (unpadded input).

Configurations (:data:`DIP_CONFIGS`): ``"base"`` = wav2vec2 base (12 layers, d 768, 12 heads,
FFN 3072, final dim 256, 95.04 M parameters); ``"small"`` for CPU runs (128 conv channels, 4
layers, d 256, 4 heads, FFN 1024, final dim 128, about 4.2 M). Any field can be overridden by
keyword: ``DIPFrontend("small", n_layers=2)``.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import CheckpointError, InputError, InputTypeError
from sepkit.files import load_strict, load_torch_file
from sepkit.losses.contrastive import Branch, MICLoss, MPCLoss, diversity_loss
from sepkit.nn import TransformerBlock
from sepkit.nn.checkpoint import check_checkpointing, run_block

CHECKPOINT_FORMAT = "sepkit.dip_frontend"
MMD_MODES = ("frames", "pooled")


@dataclass(frozen=True)
class DIPConfig:
    """Architecture and pretraining hyperparameters of a :class:`DIPFrontend` (wav2vec2 base).

    Attributes:
        conv_channels: channels of every local-encoder convolution (512).
        conv_kernels, conv_strides: per-layer kernel sizes and strides (samples; 7 layers,
            total stride 320: 16 kHz -> 50 frames/s, receptive field 400 samples = 25 ms).
        d_model, n_layers, n_heads, ffn_dim: the contextual transformer.
        final_dim: width of the predictions and quantized targets compared by the loss (256).
        groups, num_vars: the product quantizer's G codebooks of V entries (2 x 320).
        codevector_dim: total width of a quantized vector (G codebook entries concatenated).
        temperature_start, temperature_end, temperature_decay: Gumbel-softmax temperature
            schedule, ``max(start * decay ** updates, end)`` (2 -> 0.5, x0.999995 per update).
        pos_conv_kernel, pos_conv_groups: the convolutional relative positional embedding.
        dropout: transformer dropout; dropout_input: on the projected local features;
            dropout_features: on the quantizer's input.
        feature_grad_mult: scales the gradient reaching the local encoder (0.1 in base).
        mask_prob: probability that a valid frame starts a masked span (0.065).
        mask_length: frames per masked span (10).
        min_masks: fewest spans per utterance (2).
        sample_rate: the rate of the input audio (Hz).
    """

    conv_channels: int = 512
    conv_kernels: tuple = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple = (5, 2, 2, 2, 2, 2, 2)
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    final_dim: int = 256
    groups: int = 2
    num_vars: int = 320
    codevector_dim: int = 256
    temperature_start: float = 2.0
    temperature_end: float = 0.5
    temperature_decay: float = 0.999995
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    dropout: float = 0.1
    dropout_input: float = 0.1
    dropout_features: float = 0.1
    feature_grad_mult: float = 0.1
    mask_prob: float = 0.065
    mask_length: int = 10
    min_masks: int = 2
    sample_rate: int = 16000

    def __post_init__(self):
        object.__setattr__(self, "conv_kernels", tuple(int(k) for k in self.conv_kernels))
        object.__setattr__(self, "conv_strides", tuple(int(s) for s in self.conv_strides))
        name = "DIPConfig"
        if len(self.conv_kernels) != len(self.conv_strides) or not self.conv_kernels:
            raise InputError(f"{name}: conv_kernels and conv_strides need the same (non-zero) length, got "
                             f"{self.conv_kernels} and {self.conv_strides}")
        if any(not 1 <= s <= k for k, s in zip(self.conv_kernels, self.conv_strides)):
            raise InputError(f"{name}: every stride must lie in [1, kernel], got kernels {self.conv_kernels}, "
                             f"strides {self.conv_strides}")
        for key in ("conv_channels", "d_model", "n_layers", "n_heads", "ffn_dim", "final_dim", "groups",
                    "num_vars", "codevector_dim", "pos_conv_kernel", "pos_conv_groups", "mask_length",
                    "sample_rate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: {key} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise InputError(f"{name}: d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.d_model % self.pos_conv_groups:
            raise InputError(f"{name}: d_model={self.d_model} must be a multiple of "
                             f"pos_conv_groups={self.pos_conv_groups}")
        if self.codevector_dim % self.groups:
            raise InputError(f"{name}: codevector_dim={self.codevector_dim} must be a multiple of groups={self.groups}")
        if not 0 < self.temperature_end <= self.temperature_start or not 0 < self.temperature_decay <= 1:
            raise InputError(f"{name}: need 0 < temperature_end <= temperature_start and "
                             f"0 < temperature_decay <= 1, got {self.temperature_start}, {self.temperature_end}, "
                             f"{self.temperature_decay}")
        for key in ("dropout", "dropout_input", "dropout_features"):
            if not 0 <= getattr(self, key) < 1:
                raise InputError(f"{name}: {key} must lie in [0, 1), got {getattr(self, key)}")
        if not 0 < self.feature_grad_mult <= 1:
            raise InputError(f"{name}: feature_grad_mult must lie in (0, 1], got {self.feature_grad_mult}")
        if not 0 <= self.mask_prob <= 1:
            raise InputError(f"{name}: mask_prob must lie in [0, 1], got {self.mask_prob}")
        if isinstance(self.min_masks, bool) or not isinstance(self.min_masks, int) or self.min_masks < 0:
            raise InputError(f"{name}: min_masks must be an int >= 0, got {self.min_masks!r}")

    @property
    def hop(self) -> int:
        """Samples per frame (the product of the strides: 320)."""
        return math.prod(self.conv_strides)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees (400 for the wav2vec2 stack)."""
        field = 1
        for k, s in zip(reversed(self.conv_kernels), reversed(self.conv_strides)):
            field = (field - 1) * s + k
        return field

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_kernels"], d["conv_strides"] = list(self.conv_kernels), list(self.conv_strides)
        return d


DIP_CONFIGS = {
    "base": DIPConfig(),
    "small": DIPConfig(conv_channels=128, d_model=256, n_layers=4, n_heads=4, ffn_dim=1024, final_dim=128,
                       codevector_dim=128, feature_grad_mult=1.0),
}


def resolve_config(config: "str | DIPConfig | dict", **overrides) -> DIPConfig:
    """A :class:`DIPConfig` from a name in :data:`DIP_CONFIGS`, a config, or a dict of its fields,
    with ``overrides`` applied (unknown keys raise ValueError naming them)."""
    if isinstance(config, str):
        if config not in DIP_CONFIGS:
            raise InputError(f"DIPFrontend: config must be one of {tuple(DIP_CONFIGS)}, got {config!r}")
        config = DIP_CONFIGS[config]
    elif isinstance(config, dict):
        overrides = {**config, **overrides}
        config = DIPConfig()
    elif not isinstance(config, DIPConfig):
        raise InputTypeError(f"DIPFrontend: config must be a name, a DIPConfig or a dict, got {type(config).__name__}")
    known = {f.name for f in fields(DIPConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"DIPFrontend: unknown config key(s) {unknown}; allowed: {sorted(known)}")
    return replace(config, **overrides) if overrides else config


# ---------------------------------------------------------------------------------------------
# masking


def span_mask(frame_lengths: torch.Tensor, num_frames: int, mask_prob: float = 0.065, span: int = 10,
              min_masks: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """wav2vec2 span masking: (B, num_frames) bool, True at masked frames.

    For an utterance of L valid frames, ``n = floor(mask_prob * L + u)`` (u ~ U[0, 1), so
    E[n] = mask_prob * L), at least ``min_masks``, span starts are drawn without replacement from
    the L - s + 1 positions whose span of s = min(span, L - 1) frames fits inside the valid
    frames, and each start masks its s frames (spans may overlap). About 1 - (1 - p)^s of the
    frames end up masked (0.49 for p = 0.065, s = 10); every run of masked frames is at least s
    long; padded frames (t >= L) are never masked. Utterances with fewer than 2 valid frames get
    no mask.

    Args:
        frame_lengths: (B,) integer valid frames per utterance, each in [0, num_frames].
        num_frames: T', the padded number of frames.
        mask_prob, span, min_masks: as above.
        generator: torch.Generator (CPU) for reproducible draws.
    """
    if not isinstance(frame_lengths, torch.Tensor) or frame_lengths.dim() != 1 or frame_lengths.is_floating_point():
        raise InputError("span_mask: frame_lengths must be a (B,) integer tensor")
    lengths = frame_lengths.detach().to("cpu", torch.int64)
    if bool(((lengths < 0) | (lengths > num_frames)).any()):
        raise InputError(f"span_mask: frame_lengths must lie in [0, {num_frames}], got {lengths.tolist()}")
    mask = torch.zeros(lengths.shape[0], num_frames, dtype=torch.bool)
    for b, length in enumerate(lengths.tolist()):
        if length < 2:
            continue
        s = min(span, length - 1)
        positions = length - s + 1
        u = float(torch.rand((), generator=generator))
        n = min(max(int(mask_prob * length + u), min_masks), positions)
        if n == 0:
            continue
        starts = torch.randperm(positions, generator=generator)[:n]
        mask[b, (starts[:, None] + torch.arange(s)[None, :]).reshape(-1)] = True
    return mask.to(frame_lengths.device)


# ---------------------------------------------------------------------------------------------
# modules


def _conv_frames(lengths: torch.Tensor, kernels, strides) -> torch.Tensor:
    for k, s in zip(kernels, strides):
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
    return lengths.clamp_min(0)


class LocalEncoder(nn.Module):
    """The convolutional local encoder: (B, T) samples -> (B, C, T') features.

    Layer i: ``Conv1d(C_in, C, kernel_i, stride_i, bias=False)``, then (first layer only) a
    per-channel norm over time (``norm``: GroupNorm with one group per channel, its statistics
    taken over the valid frames only), then GELU. Weights start Kaiming-normal.
    """

    def __init__(self, channels: int, kernels, strides):
        super().__init__()
        self.kernels, self.strides = tuple(kernels), tuple(strides)
        self.convs = nn.ModuleList(
            nn.Conv1d(1 if i == 0 else channels, channels, k, stride=s, bias=False)
            for i, (k, s) in enumerate(zip(self.kernels, self.strides))
        )
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)
        self.norm = nn.GroupNorm(channels, channels)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames (B,) of inputs with ``lengths`` (B,) valid samples."""
        return _conv_frames(lengths, self.kernels, self.strides)

    def _masked_norm(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if lengths is None:
            return self.norm(x)
        valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
        count = valid.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (x * valid).sum(-1, keepdim=True) / count
        var = ((x - mean).square() * valid).sum(-1, keepdim=True) / count
        x = (x - mean) * torch.rsqrt(var + self.norm.eps)
        return x * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, T); ``lengths`` (B,) valid samples or None. Returns (B, C, T')."""
        x = wave.unsqueeze(1)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i == 0:
                x = self._masked_norm(x, None if lengths is None else self.frame_lengths_after(lengths, 1))
            x = F.gelu(x)
        return x

    def frame_lengths_after(self, lengths: torch.Tensor, layers: int) -> torch.Tensor:
        return _conv_frames(lengths, self.kernels[:layers], self.strides[:layers])


class GumbelQuantizer(nn.Module):
    """Product quantizer with Gumbel-softmax selection: (..., in_dim) -> (..., codevector_dim).

    ``weight_proj`` maps a feature to G x V logits; each of the G groups picks one of its V
    entries of ``codebook`` (1, G V, codevector_dim / G) and the picks are concatenated. Training:
    straight-through hard Gumbel-softmax at the current temperature (gradients reach
    ``weight_proj`` and the codebook); eval: the argmax entry. The temperature is
    ``max(start * decay ** num_updates, end)``; ``num_updates`` is a buffer, so the schedule is
    saved in checkpoints; :meth:`step` advances it by one optimizer update.
    """

    def __init__(self, in_dim: int, groups: int, num_vars: int, codevector_dim: int,
                 temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)):
        super().__init__()
        self.groups, self.num_vars = groups, num_vars
        self.temperature_start, self.temperature_end, self.temperature_decay = (float(t) for t in temperature)
        self.weight_proj = nn.Linear(in_dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.codebook = nn.Parameter(torch.empty(1, groups * num_vars, codevector_dim // groups).uniform_())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    @property
    def temperature(self) -> float:
        """The current Gumbel-softmax temperature."""
        n = int(self.num_updates)
        return max(self.temperature_start * self.temperature_decay ** n, self.temperature_end)

    def step(self, updates: int = 1) -> None:
        """Advance the temperature schedule by ``updates`` optimizer updates."""
        self.num_updates += int(updates)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """x (..., in_dim) -> (quantized (..., codevector_dim), logits (..., G, V))."""
        lead = x.shape[:-1]
        logits = self.weight_proj(x).reshape(*lead, self.groups, self.num_vars)
        hard = F.one_hot(logits.argmax(-1), self.num_vars).to(logits.dtype)
        if self.training:
            u = torch.rand(logits.shape, generator=generator, device=generator.device if generator is not None
                           else logits.device, dtype=torch.float32).to(logits.device)
            gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
            soft = torch.softmax((logits.float() + gumbel) / self.temperature, dim=-1).to(logits.dtype)
            hard = F.one_hot(soft.argmax(-1), self.num_vars).to(logits.dtype)
            hard = hard - soft.detach() + soft               # straight-through estimator
        entries = self.codebook.view(self.groups, self.num_vars, -1)   # (G, V, dim / G)
        quantized = torch.einsum("...gv,gvd->...gd", hard, entries.to(hard.dtype))
        return quantized.reshape(*lead, -1), logits

    def extra_repr(self) -> str:
        return (f"groups={self.groups}, num_vars={self.num_vars}, temperature=({self.temperature_start}, "
                f"{self.temperature_end}, {self.temperature_decay})")


class RelativePositionalConv(nn.Module):
    """Convolutional relative positional embedding: (B, T', d) -> (B, T', d) to add to the input.

    A grouped ``Conv1d(d, d, kernel, groups)`` with weight normalisation over the kernel axis,
    'same' padding (the extra output of an even kernel is dropped), then GELU.
    """

    def __init__(self, d_model: int, kernel_size: int, groups: int, dropout: float = 0.0):
        super().__init__()
        conv = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 * (1.0 - dropout) / (kernel_size * d_model)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., : -self.trim]
        return F.gelu(y).transpose(1, 2)


class ContextNetwork(nn.Module):
    """The contextual network: (B, T', d) local features -> (B, T', d) contextual cues.

    ``x + pos_conv(x)`` (padded frames zeroed first), LayerNorm, dropout, then ``n_layers``
    post-norm :class:`sepkit.nn.TransformerBlock` (GELU feed-forward) with padded frames ignored
    as keys.
    """

    def __init__(self, cfg: DIPConfig, backend: str | None = None, checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("ContextNetwork", checkpointing)
        self.pos_conv = RelativePositionalConv(cfg.d_model, cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.dropout)
        self.layer_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.n_heads, cfg.ffn_dim, dropout=cfg.dropout, activation="gelu",
                             norm_first=False, backend=backend)
            for _ in range(cfg.n_layers)
        )

    def forward(self, x: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        if frame_lengths is not None:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < frame_lengths[:, None]
            x = x * valid[..., None].to(x.dtype)
        x = self.dropout(self.layer_norm(x + self.pos_conv(x)))
        for layer in self.layers:
            x = run_block(layer, x, frame_lengths, checkpointing=self.checkpointing)
        return x


@dataclass
class DIPOutputs:
    """What one pretraining pass of :class:`DIPFrontend` gives the losses.

    Attributes:
        context: (B, T', final_dim) predictions (cues through ``final_proj``).
        targets: (B, T', final_dim) quantized targets of the unmasked local features.
        cues: (B, T', d) contextual cues (transformer output), what MIC's MMD compares.
        codebook_logits: (B, T', G, V) quantizer logits.
        mask_indices: (B, T') bool, True at masked frames.
        frame_lengths: (B,) valid frames.
        feature_penalty: 0-d mean square of the local encoder's output over valid frames.
        perplexity: 0-d codebook perplexity sum_g exp(H(mean softmax_g)) over valid frames (of GV).
        temperature: the quantizer's temperature for this pass.
    """

    context: torch.Tensor
    targets: torch.Tensor
    cues: torch.Tensor
    codebook_logits: torch.Tensor
    mask_indices: torch.Tensor
    frame_lengths: torch.Tensor
    feature_penalty: torch.Tensor
    perplexity: torch.Tensor
    temperature: float

    def branch(self) -> Branch:
        """This pass as a Siamese branch of :class:`sepkit.losses.MICLoss`."""
        return Branch(self.context, self.targets, self.mask_indices, self.frame_lengths, self.codebook_logits,
                      self.cues)


class DIPFrontend(nn.Module):
    """The DIP frontend (see the module docstring).

    Args:
        config: "base" (wav2vec2 base, 95.04 M parameters), "small" (about 4.2 M), a
            :class:`DIPConfig` or a dict of its fields.
        backend: attention backend of the transformer (None, "triton", "torch", "sdpa",
            "xformers"); not part of the configuration.
        checkpointing: "none" (default) or "blocks": recompute each transformer layer in the
            backward pass (:mod:`sepkit.nn.checkpoint`); not part of the configuration.
        **overrides: fields of :class:`DIPConfig` replacing the config's.

    Attributes: ``config``, ``output_dim`` (d: the cue width), ``sample_rate`` (Hz),
    ``frame_rate`` (frames per second: sample_rate / 320).

    Shapes: ``forward(wave (B, T) or (B, 1, T), lengths (B,) samples or None) -> (B, d, T')``
    with T' = floor((T - 400) / 320) + 1 for the wav2vec2 stack; T >= 400 samples (25 ms).
    """

    def __init__(self, config: "str | DIPConfig | dict" = "base", backend: str | None = None,
                 checkpointing: str = "none", **overrides):
        super().__init__()
        cfg = resolve_config(config, **overrides)
        self.config = cfg
        self.output_dim, self.sample_rate = cfg.d_model, cfg.sample_rate
        self.frame_rate = cfg.sample_rate / cfg.hop
        self.local_encoder = LocalEncoder(cfg.conv_channels, cfg.conv_kernels, cfg.conv_strides)
        self.feature_norm = nn.LayerNorm(cfg.conv_channels)
        self.post_extract_proj = nn.Linear(cfg.conv_channels, cfg.d_model)
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.dropout_features = nn.Dropout(cfg.dropout_features)
        self.mask_emb = nn.Parameter(torch.empty(cfg.d_model).uniform_())
        self.context = ContextNetwork(cfg, backend, checkpointing)
        self.quantizer = GumbelQuantizer(cfg.conv_channels, cfg.groups, cfg.num_vars, cfg.codevector_dim,
                                         (cfg.temperature_start, cfg.temperature_end, cfg.temperature_decay))
        self.project_q = nn.Linear(cfg.codevector_dim, cfg.final_dim)
        self.final_proj = nn.Linear(cfg.d_model, cfg.final_dim)

    # -- shapes -------------------------------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """T' for an input of ``num_samples`` samples."""
        return int(self.local_encoder.frame_lengths(torch.tensor([num_samples]))[0])

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames (B,) for ``lengths`` (B,) valid samples."""
        return self.local_encoder.frame_lengths(lengths)

    def _check_input(self, wave, lengths):
        name = "DIPFrontend"
        if not isinstance(wave, torch.Tensor):
            raise InputTypeError(f"{name}: wave must be a torch.Tensor, got {type(wave).__name__}")
        if not wave.is_floating_point():
            raise InputTypeError(f"{name}: wave must be a floating-point waveform, got dtype {wave.dtype}")
        if wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        if wave.dim() != 2:
            raise InputError(f"{name}: wave must have shape (B, T) or (B, 1, T), got {tuple(wave.shape)}")
        field = self.config.receptive_field
        if wave.shape[-1] < field:
            raise InputError(f"{name}: wave has {wave.shape[-1]} samples; at least {field} (one frame, "
                             f"{1000 * field / self.sample_rate:g} ms at {self.sample_rate} Hz) are needed")
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(wave).all()):
            raise InputError(f"{name}: wave contains NaN or infinite samples")
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor):
                lengths = torch.as_tensor(lengths)
            if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
                raise InputError(f"{name}: lengths must be a (B,) integer tensor of valid samples")
            if lengths.shape[0] != wave.shape[0]:
                raise InputError(f"{name}: {lengths.shape[0]} lengths for a batch of {wave.shape[0]}")
            lengths = lengths.to(wave.device, torch.int64)
            if bool(((lengths < field) | (lengths > wave.shape[-1])).any()):
                raise InputError(f"{name}: lengths must lie in [{field}, {wave.shape[-1]}] samples, "
                                 f"got {lengths.tolist()}")
        return wave, lengths

    def _local_features(self, wave, lengths):
        """(features (B, T', C) normalised, feature penalty, frame lengths or None, valid (B, T'))."""
        z = self.local_encoder(wave, lengths)                       # (B, C, T')
        frames = z.shape[-1]
        frame_lengths = self.frame_lengths(lengths) if lengths is not None else None
        valid = (torch.arange(frames, device=z.device)[None, :] < frame_lengths[:, None]
                 if frame_lengths is not None else torch.ones(z.shape[0], frames, dtype=torch.bool, device=z.device))
        penalty = z.float().square().mean(1)[valid].mean()
        m = self.config.feature_grad_mult
        if m != 1.0:
            z = z * m + z.detach() * (1.0 - m)                    # gradient x m, value unchanged
        return self.feature_norm(z.transpose(1, 2)), penalty, frame_lengths, valid

    # -- the frontend -------------------------------------------------------------------------

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Contextual cues of unmasked input: wave (B, T) -> (B, output_dim, T')."""
        wave, lengths = self._check_input(wave, lengths)
        features, _, frame_lengths, _ = self._local_features(wave, lengths)
        x = self.dropout_input(self.post_extract_proj(features))
        return self.context(x, frame_lengths).transpose(1, 2)

    # -- pretraining --------------------------------------------------------------------------

    def compute_mask(self, frame_lengths: torch.Tensor, num_frames: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Span mask (B, T') with this config's statistics (:func:`span_mask`)."""
        cfg = self.config
        return span_mask(frame_lengths, num_frames, cfg.mask_prob, cfg.mask_length, cfg.min_masks, generator)

    def pretrain_outputs(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                         mask_indices: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> DIPOutputs:
        """One pretraining pass: masked context, quantized targets and what the losses need.

        Args:
            wave: (B, T) or (B, 1, T) samples; lengths: (B,) valid samples or None.
            mask_indices: (B, T') bool frames to mask, or None to draw them (:meth:`compute_mask`).
            generator: torch.Generator (CPU) for the mask and the Gumbel noise.
        Returns:
            :class:`DIPOutputs`.
        """
        wave, lengths = self._check_input(wave, lengths)
        features, penalty, frame_lengths, valid = self._local_features(wave, lengths)
        batch, frames, _ = features.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.int64, device=features.device)
        if mask_indices is None:
            mask_indices = self.compute_mask(frame_lengths, frames, generator)
        elif (not isinstance(mask_indices, torch.Tensor) or mask_indices.dtype != torch.bool
              or tuple(mask_indices.shape) != (batch, frames)):
            raise InputError(f"DIPFrontend: mask_indices must be a ({batch}, {frames}) bool tensor")
        mask_indices = mask_indices.to(features.device)
        if bool((mask_indices & ~valid).any()):
            raise InputError("DIPFrontend: mask_indices selects padded frames")
        x = self.dropout_input(self.post_extract_proj(features))
        x = torch.where(mask_indices[..., None], self.mask_emb.to(x.dtype), x)
        cues = self.context(x, frame_lengths)
        quantized, logits = self.quantizer(self.dropout_features(features), generator)
        perplexity = self.quantizer.groups * self.quantizer.num_vars * (1.0 - diversity_loss(logits.detach(), valid))
        return DIPOutputs(
            context=self.final_proj(cues), targets=self.project_q(quantized), cues=cues, codebook_logits=logits,
            mask_indices=mask_indices, frame_lengths=frame_lengths, feature_penalty=penalty,
            perplexity=perplexity, temperature=self.quantizer.temperature,
        )

    def step_temperature(self, updates: int = 1) -> None:
        """Advance the quantizer's temperature schedule (call once per optimizer update)."""
        self.quantizer.step(updates)

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        """{"format", "config", "state_dict"}: the frontend as data (what :meth:`save` writes, as safetensors
        with the configuration in the metadata)."""
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "state_dict": self.state_dict()}

    def save(self, path) -> None:
        """Write the frontend to ``path`` as safetensors (the weights) with the configuration as
        JSON in the file's metadata (``format``, ``config``): what :func:`load_frontend` reads.
        Written under a temporary name, then renamed."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        tmp = path + ".tmp"
        weights = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(weights, tmp, metadata={"format": CHECKPOINT_FORMAT, "config": json.dumps(self.config.to_dict())})
        os.replace(tmp, path)

    def load_checked(self, state_dict: dict) -> None:
        """Load ``state_dict`` strictly (:func:`sepkit.files.load_strict`): a state dict of another
        configuration raises CheckpointError naming the keys and this configuration."""
        c = self.config
        load_strict(self, state_dict, f"DIPFrontend: the checkpoint is not of this configuration (d_model="
                                      f"{c.d_model}, n_layers={c.n_layers}, conv_channels={c.conv_channels})")

    # -- released wav2vec2 / HuBERT weights -------------------------------------------------

    #: the pretraining-only parts (module prefixes) a wav2vec2 / HuBERT file may lack
    PRETRAINING_PARTS = ("mask_emb", "quantizer", "project_q", "final_proj")

    @classmethod
    def from_wav2vec2(cls, path_or_state, config: "str | DIPConfig | dict" = "base", backend: str | None = None,
                      **overrides) -> "DIPFrontend":
        """A frontend of ``config`` (wav2vec2 base by default) holding released wav2vec2 or
        HuBERT weights: :meth:`load_wav2vec2` on a new :class:`DIPFrontend`."""
        frontend = cls(config, backend=backend, **overrides)
        frontend.load_wav2vec2(path_or_state)
        return frontend

    def wav2vec2_arguments(self) -> dict:
        """This architecture as ``torchaudio.models.wav2vec2_model`` arguments (wav2vec2's
        group-norm feature extractor without convolution biases, post-norm transformer)."""
        c = self.config
        return dict(
            extractor_mode="group_norm",
            extractor_conv_layer_config=[(c.conv_channels, k, s) for k, s in zip(c.conv_kernels, c.conv_strides)],
            extractor_conv_bias=False, encoder_embed_dim=c.d_model, encoder_projection_dropout=c.dropout_input,
            encoder_pos_conv_kernel=c.pos_conv_kernel, encoder_pos_conv_groups=c.pos_conv_groups,
            encoder_num_layers=c.n_layers, encoder_num_heads=c.n_heads, encoder_attention_dropout=0.0,
            encoder_ff_interm_features=c.ffn_dim, encoder_ff_interm_dropout=c.dropout, encoder_dropout=c.dropout,
            encoder_layer_norm_first=False, encoder_layer_drop=0.0)

    def load_wav2vec2(self, path_or_state, what: str | None = None) -> tuple[str, ...]:
        """Load released wav2vec2 or HuBERT weights into this frontend, strictly.

        Args:
            path_or_state: a state dict in torchaudio's, fairseq's or Hugging Face's layout, or a
                file / transformers model folder holding one
                (:mod:`sepkit.models.wav2vec2_weights`; read without running code).
            what: how messages name the source (default: the path).
        Returns:
            the pretraining-only parts (:attr:`PRETRAINING_PARTS`) that the file lacks and that
            keep their initialisation: all of them for a torchaudio file; the quantizer,
            ``project_q`` and ``final_proj`` for HuBERT (its heads predict cluster labels, not
            quantized targets); none for a wav2vec2 pretraining checkpoint.
        Raises:
            CheckpointError: keys or shapes of another architecture (named), NaN weights, a
            file that needs code execution. FileNotFoundError: no such path.
        """
        from .wav2vec2_weights import torchaudio_layout

        what = what or (str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "the wav2vec2 weights")
        ta, extra, layout = torchaudio_layout(path_or_state, self.wav2vec2_arguments(), what)
        if layout is None:
            raise CheckpointError(f"{what}: not a wav2vec2 / HuBERT state dict in torchaudio's, fairseq's or Hugging "
                                  "Face's layout (no feature projection found)")
        state = {**_dip_from_torchaudio(ta, what), **extra}
        if any(k.startswith("quantizer.") for k in extra):
            state["quantizer.num_updates"] = torch.zeros((), dtype=torch.int64)  # a fresh temperature schedule
        fresh = tuple(p for p in self.PRETRAINING_PARTS if not any(k == p or k.startswith(p + ".") for k in state))
        load_strict(self, state, f"{what} holds weights of a different model", exclude=fresh)
        return fresh

    def extra_repr(self) -> str:
        c = self.config
        return (f"d_model={c.d_model}, n_layers={c.n_layers}, n_heads={c.n_heads}, ffn_dim={c.ffn_dim}, "
                f"conv_channels={c.conv_channels}, sample_rate={c.sample_rate}")


_TORCHAUDIO_NAMES = (
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", r"local_encoder.convs.\1.weight"),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)", r"local_encoder.norm.\1"),
    (r"encoder\.feature_projection\.layer_norm\.(weight|bias)", r"feature_norm.\1"),
    (r"encoder\.feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.(.+)", r"context.pos_conv.conv.\1"),
    (r"encoder\.transformer\.layer_norm\.(weight|bias)", r"context.layer_norm.\1"),
    (r"encoder\.transformer\.layers\.(\d+)\.attention\.out_proj\.(weight|bias)", r"context.layers.\1.self_attn.out_proj.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"context.layers.\1.norm1.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"context.layers.\1.linear1.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"context.layers.\1.linear2.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"context.layers.\1.norm2.\2"),
)


def _dip_from_torchaudio(state: dict, what: str) -> dict:
    """A torchaudio ``Wav2Vec2Model`` state dict under :class:`DIPFrontend`'s names: the same
    tensors, with each layer's q, k and v projections concatenated into ``in_proj_*``."""
    out, qkv = {}, {}
    for key, value in state.items():
        found = re.fullmatch(r"encoder\.transformer\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", key)
        if found:
            qkv[(found.group(1), found.group(3), found.group(2))] = value
            continue
        for pattern, name in _TORCHAUDIO_NAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, name, key)] = value
                break
        else:
            raise CheckpointError(f"{what}: {key} has no place in the DIP frontend (another wav2vec2 variant: the "
                                  "frontend is wav2vec2 base's architecture)")
    for layer, kind in sorted({(layer, kind) for layer, kind, _ in qkv}):
        try:
            out[f"context.layers.{layer}.self_attn.in_proj_{kind}"] = torch.cat(
                [qkv[(layer, kind, p)] for p in "qkv"])
        except KeyError:
            raise CheckpointError(f"{what}: layer {layer} lacks one of its q/k/v projections") from None
    return out


def describe_config(cfg: DIPConfig) -> str:
    """A configuration's name when it is a known one, else its main sizes."""
    for name, known in DIP_CONFIGS.items():
        if known == cfg:
            return f"{name!r}"
    return f"d_model={cfg.d_model}, n_layers={cfg.n_layers}, conv_channels={cfg.conv_channels}"


def load_frontend(path, config: "str | DIPConfig | dict | None" = None, backend: str | None = None,
                  **overrides) -> DIPFrontend:
    """A pretrained :class:`DIPFrontend` from a local file.

    Args:
        path: a file written by :meth:`DIPFrontend.save` (safetensors weights, the configuration
            in its metadata), one written by earlier sepkit versions (a weights-only torch file
            of ``{"format", "config", "state_dict"}``), or a bare state dict file (then
            ``config`` is required). A ``sepkit train`` run folder of the dip-pretrain task loads
            with :func:`sepkit.train.restore.load_frontend`.
        config: the configuration the caller expects (name, DIPConfig or dict), with
            ``overrides``; when the file records another one, the error names both.
        backend: attention backend of the rebuilt frontend.
    Raises:
        FileNotFoundError: no such file. InputError / CheckpointError: a folder, a file of another
        configuration, a foreign or corrupt file, or one that needs code execution to load.
    """
    path = os.fspath(path)
    expected = resolve_config(config, **overrides) if config is not None else None
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_frontend: no frontend checkpoint at {path!r}")
    if os.path.isdir(path):
        raise InputError(f"load_frontend: {path!r} is a folder; a sepkit run folder loads with "
                         "sepkit.train.restore.load_frontend")
    blob = _read_frontend_file(path)
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        try:
            stored = resolve_config(dict(blob["config"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"load_frontend: {path!r} has an invalid frontend config: {err}") from None
        if expected is not None and stored != expected:
            raise InputError(f"load_frontend: {path!r} holds a frontend of config {describe_config(stored)}, "
                             f"expected {describe_config(expected)}")
        state = blob.get("state_dict")
        cfg = stored
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        if expected is None:
            raise InputError(f"load_frontend: {path!r} is a bare state dict; pass config= (e.g. 'base')")
        state, cfg = blob, expected
    else:
        raise InputError(f"load_frontend: {path!r} is not a DIP frontend checkpoint (format {CHECKPOINT_FORMAT!r})")
    if not isinstance(state, dict):
        raise InputError(f"load_frontend: {path!r} has no state_dict")
    frontend = DIPFrontend(cfg, backend=backend)
    frontend.load_checked(state)
    return frontend


def _read_frontend_file(path: str):
    """The contents of a frontend file as ``{"format", "config", "state_dict"}`` (a safetensors
    file with sepkit's metadata), a bare state dict (safetensors without it), or whatever a
    weights-only ``torch.load`` of an older file gives. A file that needs code is refused."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - a corrupt or truncated file
            raise InputError(f"load_frontend: {path!r} is a corrupt safetensors file "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''})") from None
        if meta.get("format") == CHECKPOINT_FORMAT:
            try:
                config = json.loads(meta.get("config", ""))
            except json.JSONDecodeError:
                raise InputError(f"load_frontend: {path!r} has an unreadable frontend config") from None
            return {"format": CHECKPOINT_FORMAT, "config": config, "state_dict": state}
        return state
    return load_torch_file(path, "load_frontend")


# ---------------------------------------------------------------------------------------------
# separators with a frontend


def build_dip_separator(name: str, frontend: DIPFrontend, **separator_args) -> nn.Module:
    """A separator (``sepkit.models.build_separator`` name) with ``frontend`` on its hook.

    The separator's ``sample_rate`` (default: the frontend's) must equal the frontend's; the
    FrontendAdapter then resamples the 50 Hz cues to the separator's encoder frames.

    Raises:
        ValueError: the sample rates differ (the message names both and the fix).
    """
    from sepkit.models.separators import build_separator

    if not isinstance(frontend, nn.Module) or not hasattr(frontend, "output_dim"):
        raise InputTypeError(f"build_dip_separator: frontend must be a DIPFrontend, got {type(frontend).__name__}")
    separator_args.setdefault("sample_rate", frontend.sample_rate)
    check_sample_rates(separator_args["sample_rate"], frontend)
    return build_separator(name, frontend=frontend, **separator_args)


def check_sample_rates(separator_rate: int, frontend: DIPFrontend) -> None:
    """ValueError when a separator at ``separator_rate`` Hz would get ``frontend``'s features."""
    if int(separator_rate) != int(frontend.sample_rate):
        raise InputError(
            f"the separator runs at sample_rate={separator_rate} Hz but the DIP frontend at "
            f"{frontend.sample_rate} Hz; give both the same rate (separator sample_rate={frontend.sample_rate}, "
            "or a frontend built with sample_rate equal to the data's)"
        )


# ---------------------------------------------------------------------------------------------
# the pretraining loss


def pooled_linear_mmd(real: DIPOutputs, synthetic: DIPOutputs) -> torch.Tensor:
    """Linear MMD between utterance-level [mean, variance] pools of the two branches' cues.

    phi_b = [mean_t c_b,t, var_t c_b,t] over the valid frames of utterance b (2 C features);
    returns ||mean_b phi(real) - mean_b phi(synthetic)||^2 (0-d float32).
    """
    def pooled(out: DIPOutputs) -> torch.Tensor:
        cues, lengths = out.cues.float(), out.frame_lengths
        valid = (torch.arange(cues.shape[1], device=cues.device)[None, :] < lengths[:, None]).float()[..., None]
        count = valid.sum(1).clamp_min(1.0)
        mean = (cues * valid).sum(1) / count
        var = ((cues - mean[:, None]).square() * valid).sum(1) / count
        return torch.cat([mean, var], dim=-1)

    return (pooled(real).mean(0) - pooled(synthetic).mean(0)).square().sum()


class DIPPretrainLoss(nn.Module):
    """MPC on one branch, or MIC on two Siamese branches, plus the feature penalty.

        MPC(o)  = contrastive(o) + diversity_weight * (GV - perplexity) / GV
        loss    = MPC(real) + feature_penalty_weight * pen(real)                (one branch)
        loss    = MPC(real) + MPC(synth) + alpha * D(real, synth)
                  + feature_penalty_weight * (pen(real) + pen(synth))            (two branches)

    D is the multi-kernel Gaussian MMD^2 of the frame-level cues (``mmd="frames"``,
    :class:`sepkit.losses.MICLoss` on the fused ``mmd`` op) or :func:`pooled_linear_mmd`
    (``mmd="pooled"``). alpha = 0 gives MPC on both branches exactly.

    Args:
        alpha: MMD weight (10); num_negatives (100), temperature (0.1), diversity_weight (0.1),
        negatives_from ("masked": the same utterance's masked steps, wav2vec2's rule) as
        :class:`sepkit.losses.MPCLoss`; feature_penalty_weight (10); mmd: "frames" or "pooled";
        backend: kernel backend of the nce and mmd ops.

    ``forward(real, synthetic=None, generator=None) -> (loss, parts)``: :class:`DIPOutputs`
    in, 0-d float32 loss and a dict of detached floats ("loss", "mpc", "mpc_real",
    "mpc_synthetic", "mmd", "feature_penalty", "perplexity").
    """

    def __init__(self, alpha: float = 10.0, num_negatives: int = 100, temperature: float = 0.1,
                 diversity_weight: float = 0.1, feature_penalty_weight: float = 10.0, negatives_from: str = "masked",
                 mmd: str = "frames", backend: str | None = None):
        super().__init__()
        if mmd not in MMD_MODES:
            raise InputError(f"DIPPretrainLoss: mmd must be one of {MMD_MODES}, got {mmd!r}")
        if not math.isfinite(alpha) or alpha < 0:
            raise InputError(f"DIPPretrainLoss: alpha must be a finite number >= 0, got {alpha}")
        self.alpha, self.mmd_mode = float(alpha), mmd
        self.feature_penalty_weight = float(feature_penalty_weight)
        self.mic = MICLoss(alpha, num_negatives, temperature, diversity_weight, "mean", negatives_from,
                           backend=backend)
        self.mpc: MPCLoss = self.mic.mpc

    def branch_mpc(self, out: DIPOutputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """MPC of one branch (contrastive + diversity, no feature penalty)."""
        b = out.branch()
        return self.mpc(b.context, b.targets, b.mask_indices, b.lengths_or_padding_mask, b.codebook_logits, generator)

    def forward(self, real: DIPOutputs, synthetic: DIPOutputs | None = None,
                generator: torch.Generator | None = None):
        if synthetic is None:
            mpc = self.branch_mpc(real, generator)
            penalty = real.feature_penalty
            loss = mpc + self.feature_penalty_weight * penalty
            parts = {"mpc": mpc, "mpc_real": mpc, "feature_penalty": penalty, "perplexity": real.perplexity}
        else:
            if self.mmd_mode == "frames":
                mic, p = self.mic(real.branch(), synthetic.branch(), generator, return_parts=True)
                mpc_real, mpc_synth, discrepancy = p["mpc_real"], p["mpc_synthetic"], p["mmd"]
            else:
                mpc_real = self.branch_mpc(real, generator)
                mpc_synth = self.branch_mpc(synthetic, generator)
                discrepancy = pooled_linear_mmd(real, synthetic)
                mic = mpc_real + mpc_synth + self.alpha * discrepancy
            penalty = real.feature_penalty + synthetic.feature_penalty
            loss = mic + self.feature_penalty_weight * penalty
            parts = {"mpc": mpc_real + mpc_synth, "mpc_real": mpc_real, "mpc_synthetic": mpc_synth,
                     "mmd": discrepancy, "feature_penalty": penalty,
                     "perplexity": 0.5 * (real.perplexity + synthetic.perplexity)}
        parts["loss"] = loss
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, mmd={self.mmd_mode!r}, feature_penalty_weight={self.feature_penalty_weight}"


__all__ = [
    "DIPFrontend", "DIPConfig", "DIP_CONFIGS", "DIPOutputs", "DIPPretrainLoss", "LocalEncoder", "GumbelQuantizer",
    "RelativePositionalConv", "ContextNetwork", "span_mask", "load_frontend", "describe_config", "build_dip_separator",
    "check_sample_rates", "pooled_linear_mmd", "resolve_config",
]
