"""NCSN++ U-Net score network on complex spectrograms, in SGMSE+'s configuration by default.

Song et al., "Score-based generative modeling through stochastic differential equations", ICLR
2021 (NCSN++), as configured for speech by SGMSE+ (Richter et al., TASLP 2023): nf 128, channel
multipliers (1, 1, 2, 2, 2, 2, 2) over 7 resolutions, 2 BigGAN-style residual blocks per level,
self-attention at resolution 16 and in the bottleneck, FIR ([1, 3, 3, 1]) up/down-sampling, skip
rescaling by 1/sqrt(2), an input pyramid (``input_skip``) and an output pyramid (``output_skip``),
Gaussian Fourier embedding of log(t): 65,590,694 parameters (:data:`SGMSE_PARAMETERS`).

Input: the real and imaginary parts of the state x_t and of the noisy y, 4 channels of
(B, 4, F, N), F frequency bins (the "resolution" axis: 256 at level 0), N frames; F and N must be
multiples of 2^(levels - 1) (64 for the default). Output: complex (B, 1, F, N).

Conditioning (Ex-Diff): with ``latent_dim`` set, :class:`LatentCrossAttention` blocks let the
feature map attend to frame-wise latents (B, L, latent_dim) at the STFT frame rate, with key
lengths for padded batches; placed at the bottleneck by default (``placements=("bottleneck",)``)
or at the levels whose resolution is listed (``placements=(16,)``: after the residual blocks of
that level on the way down and on the way up). Each block is residual with a zero-initialised
output projection, so a fresh block leaves the network unchanged.

All attention goes through :mod:`sepkit.nn` (the ``sepkit.kernels.attention`` op). FIR resampling
is plain PyTorch (a depthwise convolution), no compiled extension.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.nn import CrossAttention, MultiheadAttention
from sepkit.nn.checkpoint import check_checkpointing, run_block

__all__ = [
    "NCSNpp", "LatentCrossAttention", "ResnetBlockBigGAN", "AttnBlock", "GaussianFourierProjection",
    "upfirdn2d", "upsample_2d", "downsample_2d", "sinusoid", "NCSNPP_CONFIGS", "SGMSE_PARAMETERS", "build_ncsnpp",
]

#: Parameter count of the default (SGMSE+) configuration without cross-attention.
SGMSE_PARAMETERS = 65_590_694

NCSNPP_CONFIGS = {
    "sgmse": {},
    "small": dict(nf=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=()),
}


# ----------------------------------------------------------------------------------------------
# initialisation and small layers
# ----------------------------------------------------------------------------------------------

def _variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM initialisation: uniform with variance ``scale / fan_avg`` (scale 0 -> 1e-10)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def _conv(in_ch: int, out_ch: int, kernel: int, init_scale: float = 1.0, bias: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias)
    _variance_scaling_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _dense(in_dim: int, out_dim: int) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    _variance_scaling_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of real-valued positions (L,) -> (L, dim): channel 2i is
    ``sin(p / 10000^(2i/dim))``, 2i+1 its cosine (fractional positions allowed: a down-sampled
    query grid sits between latent frames)."""
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(half * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * freqs[None, :]
    out = torch.zeros(positions.shape[0], dim, device=positions.device)
    out[:, 0::2] = torch.sin(angles)
    out[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return out


# ----------------------------------------------------------------------------------------------
# FIR resampling
# ----------------------------------------------------------------------------------------------

def _fir_kernel(k: Sequence[float]) -> torch.Tensor:
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.dim() == 1:
        k = torch.outer(k, k)
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the 2-D FIR ``kernel``, keep every
    ``down``-th sample; x (B, C, H, W) -> (B, C, H', W'), ``pad`` = (before, after) on both axes."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_2d(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """FIR upsampling by ``factor`` (B, C, H, W) -> (B, C, H*factor, W*factor), unit DC gain."""
    k = kernel * factor ** 2
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, kernel: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """FIR anti-aliased downsampling by ``factor`` (B, C, H, W) -> (B, C, H/factor, W/factor)."""
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


class _FIR(nn.Module):
    """Holds a FIR kernel as a non-persistent buffer (not in the state dict)."""

    def __init__(self, fir_kernel: Sequence[float]):
        super().__init__()
        self.register_buffer("kernel", _fir_kernel(fir_kernel), persistent=False)


class PyramidUpsample(_FIR):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_2d(x, self.kernel)


class PyramidDownsample(_FIR):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample_2d(x, self.kernel)


# ----------------------------------------------------------------------------------------------
# blocks
# ----------------------------------------------------------------------------------------------

class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar: (B,) -> (B, 2 * embedding_size), ``[sin, cos](2 pi x W)``
    with fixed ``W ~ N(0, scale^2)`` (a buffer ``W`` in the state dict)."""

    def __init__(self, embedding_size: int = 128, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Combine(nn.Module):
    """Merges the input pyramid into the feature map: ``conv1x1(pyramid) + h``."""

    def __init__(self, dim1: int, dim2: int):
        super().__init__()
        self.Conv_0 = _conv(dim1, dim2, 1)

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.Conv_0(pyramid) + h


class AttnBlock(nn.Module):
    """Self-attention over the (F, N) grid of a (B, C, F, N) map: ``(x + attn(GN(x))) / sqrt(2)``.

    Tokens are the F*N positions; ``heads`` heads of width C / heads (1 head: width C, as NCSN++).
    The output projection starts at zero (the block starts as ``x / sqrt(2)``).
    """

    def __init__(self, channels: int, heads: int = 1, skip_rescale: bool = True, backend: str | None = None):
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.attn = MultiheadAttention(channels, heads, backend=backend)
        nn.init.zeros_(self.attn.out_proj.weight)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, n = x.shape
        h = self.GroupNorm_0(x).flatten(2).transpose(1, 2)  # (B, F*N, C)
        h = self.attn(h).transpose(1, 2).reshape(b, c, f, n)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN residual block with optional FIR up/down-sampling and a time-embedding bias.

    ``h = conv(act(GN(x)))`` (resampled first when ``up``/``down``), ``+ dense(act(temb))``,
    ``conv(dropout(act(GN(h))))``; the skip is resampled and 1x1-projected when the shape changes;
    output ``(skip + h) / sqrt(2)``. (B, in_ch, H, W) -> (B, out_ch, H', W').
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, up: bool = False,
                 down: bool = False, dropout: float = 0.0, fir_kernel: Sequence[float] = (1, 3, 3, 1),
                 skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.up, self.down = up, down
        self.register_buffer("fir", _fir_kernel(fir_kernel), persistent=False)
        self.Conv_0 = _conv(in_ch, out_ch, 3)
        self.Dense_0 = _dense(temb_dim, out_ch) if temb_dim is not None else None
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(out_ch, out_ch, 3, init_scale=init_scale)
        self.Conv_2 = _conv(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x))
        if self.up:
            h, x = upsample_2d(h, self.fir), upsample_2d(x, self.fir)
        elif self.down:
            h, x = downsample_2d(h, self.fir), downsample_2d(x, self.fir)
        h = self.Conv_0(h)
        if self.Dense_0 is not None and temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class LatentCrossAttention(nn.Module):
    """Residual cross-attention of a feature map to frame-wise latents (Ex-Diff's integration).

    Queries: the F'*N' positions of GroupNorm(h) (B, C, F', N') plus a learned projection of the
    sinusoidal encoding of each position's time centre in latent frames (column j of a map
    down-sampled by ``stride`` covers frames ``[j stride, (j + 1) stride)``). Keys and values: the
    latents (B, L, latent_dim) concatenated with the sinusoidal encoding of their frame index
    (``pe_dim`` channels). Output ``h + out_proj(attn)``; ``out_proj`` starts at zero.

    Args:
        channels: C of the feature map.
        latent_dim: D of the latents.
        heads: attention heads (C divisible by heads).
        pe_dim: width of the positional encodings.
        backend: attention backend of :class:`sepkit.nn.CrossAttention`.
    """

    def __init__(self, channels: int, latent_dim: int, heads: int = 4, pe_dim: int = 64, backend: str | None = None):
        super().__init__()
        if latent_dim < 1 or pe_dim < 2 or pe_dim % 2:
            raise InputError(f"LatentCrossAttention: need latent_dim >= 1 and an even pe_dim >= 2, got {latent_dim}, {pe_dim}")
        self.channels, self.latent_dim, self.pe_dim = channels, latent_dim, pe_dim
        self.norm = _group_norm(channels)
        self.query_pos = nn.Linear(pe_dim, channels)
        self.attn = CrossAttention(channels, heads, kdim=latent_dim + pe_dim, backend=backend)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, h: torch.Tensor, latents: torch.Tensor, kv_lengths: torch.Tensor | None, stride: int) -> torch.Tensor:
        b, c, f, n = h.shape
        length = latents.shape[1]
        if kv_lengths is not None:  # zero the padding so that nothing there (not even NaN) flows on
            valid = torch.arange(length, device=latents.device)[None, :] < kv_lengths[:, None].to(latents.device)
            latents = torch.where(valid[..., None], latents, torch.zeros((), dtype=latents.dtype, device=latents.device))
        key_pos = sinusoid(torch.arange(length, device=h.device), self.pe_dim).to(latents.dtype)
        keys = torch.cat([latents, key_pos[None].expand(b, -1, -1)], dim=-1)
        centres = (torch.arange(n, device=h.device, dtype=torch.float32) + 0.5) * stride - 0.5
        q_pos = self.query_pos(sinusoid(centres, self.pe_dim).to(h.dtype))  # (N', C)
        q = self.norm(h).permute(0, 2, 3, 1) + q_pos  # (B, F', N', C)
        out = self.attn(q.reshape(b, f * n, c), keys, key_lengths=kv_lengths)
        return h + out.reshape(b, f, n, c).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------
# the U-Net
# ----------------------------------------------------------------------------------------------

class NCSNpp(nn.Module):
    """NCSN++ on complex spectrograms: ``forward(x, y, t) -> (B, 1, F, N)`` complex.

    Args:
        nf: base width (128).
        ch_mult: width multiplier per resolution level ((1, 1, 2, 2, 2, 2, 2)).
        num_res_blocks: residual blocks per level (2).
        attn_resolutions: frequency sizes of the levels with self-attention ((16,)); the bottleneck
            always has one.
        n_freq: frequency bins at level 0 (256); level i has ``n_freq / 2^i``.
        dropout: dropout inside the residual blocks (0).
        fir_kernel: FIR taps of the resampling ((1, 3, 3, 1)).
        fourier_scale: std of the Gaussian Fourier features of log(t) (16).
        attn_heads: heads of the self-attention blocks (1, as NCSN++).
        latent_dim: width D of conditioning latents; None: no cross-attention.
        placements: where the cross-attention blocks go: "bottleneck" and/or level resolutions.
        cross_heads, pe_dim: heads and positional-encoding width of the cross-attention.
        backend: attention backend of every attention layer (None: automatic).
        checkpointing: "none" (default) or "blocks": recompute each residual / attention block in the
            backward pass (:mod:`sepkit.nn.checkpoint`).
        scale_by_time: divide the output pyramid by t before the output 1x1 convolution (False).
            The released SGMSE+ networks are built so (their ``scale_by_sigma`` with sigma = t; the
            bias of the output layer is not scaled), and their score is minus the output
            (:class:`sepkit.models.sgmse.SGMSE` with ``parametrisation="score"``); sepkit's own
            parametrisation leaves it off and divides by std(t) outside the network.

    ``frame_multiple`` (2^(levels-1)) is the multiple N (and F) must be.
    """

    def __init__(self, nf: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), n_freq: int = 256, dropout: float = 0.0,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), fourier_scale: float = 16.0, attn_heads: int = 1,
                 latent_dim: int | None = None, placements: Sequence[str | int] = ("bottleneck",),
                 cross_heads: int = 4, pe_dim: int = 64, backend: str | None = None, checkpointing: str = "none",
                 scale_by_time: bool = False):
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if nf < 4 or nf % 4 or not ch_mult or min(ch_mult) < 1 or num_res_blocks < 1:
            raise InputError(f"NCSNpp: need nf a positive multiple of 4, a non-empty ch_mult of positive ints and "
                             f"num_res_blocks >= 1, got nf={nf}, ch_mult={ch_mult}, num_res_blocks={num_res_blocks}")
        levels = len(ch_mult)
        self.frame_multiple = 2 ** (levels - 1)
        if n_freq % self.frame_multiple:
            raise InputError(f"NCSNpp: n_freq={n_freq} must be a multiple of 2^(levels-1) = {self.frame_multiple}")
        self.resolutions = [n_freq // 2 ** i for i in range(levels)]
        self.nf, self.ch_mult, self.num_res_blocks, self.n_freq = nf, ch_mult, num_res_blocks, n_freq
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.latent_dim = latent_dim
        self.checkpointing = check_checkpointing("NCSNpp", checkpointing)
        placements = tuple(placements) if latent_dim is not None else ()
        for p in placements:
            if p != "bottleneck" and p not in self.resolutions:
                raise InputError(f"NCSNpp: placements must be 'bottleneck' or level resolutions {self.resolutions}, got {p!r}")
        if latent_dim is not None and not placements:
            raise InputError("NCSNpp: latent_dim is set but placements is empty; give at least one placement")
        self.placements = placements
        self.scale_by_time = bool(scale_by_time)
        temb_dim = 4 * nf
        channels = 4  # x.real, x.imag, y.real, y.imag

        def resblock(in_ch, out_ch=None, up=False, down=False):
            return ResnetBlockBigGAN(in_ch, out_ch, temb_dim, up=up, down=down, dropout=dropout, fir_kernel=fir_kernel)

        def cross(ch):
            return LatentCrossAttention(ch, latent_dim, cross_heads, pe_dim, backend)

        self.time_embed = GaussianFourierProjection(nf, fourier_scale)
        self.time_dense = nn.ModuleList([_dense(2 * nf, temb_dim), _dense(temb_dim, temb_dim)])
        self.pyramid_down = PyramidDownsample(fir_kernel)
        self.pyramid_up = PyramidUpsample(fir_kernel)
        self.conv_in = _conv(channels, nf, 3)

        # down path
        self.down = nn.ModuleList()
        skip_ch = [nf]
        in_ch = nf
        for i in range(levels):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[i]
                level.blocks.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if self.resolutions[i] in self.attn_resolutions:
                    level.attn.append(AttnBlock(in_ch, attn_heads, backend=backend))
                skip_ch.append(in_ch)
            level.cross = cross(in_ch) if self.resolutions[i] in placements else None
            if i != levels - 1:
                level.downsample = resblock(in_ch, down=True)
                level.combine = Combine(channels, in_ch)
                skip_ch.append(in_ch)
            self.down.append(level)

        # bottleneck
        self.mid_block1 = resblock(in_ch)
        self.mid_attn = AttnBlock(in_ch, attn_heads, backend=backend)
        self.mid_cross = cross(in_ch) if "bottleneck" in placements else None
        self.mid_block2 = resblock(in_ch)

        # up path
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[i]
                level.blocks.append(resblock(in_ch + skip_ch.pop(), out_ch))
                in_ch = out_ch
            level.attn = AttnBlock(in_ch, attn_heads, backend=backend) if self.resolutions[i] in self.attn_resolutions else None
            level.cross = cross(in_ch) if self.resolutions[i] in placements else None
            level.pyramid_norm = _group_norm(in_ch)
            level.pyramid_conv = _conv(in_ch, channels, 3, init_scale=0.0)
            level.upsample = resblock(in_ch, up=True) if i != 0 else None
            self.up.append(level)
        assert not skip_ch
        self.output_layer = nn.Conv2d(channels, 2, 1)

    def _run(self, module, *args):
        return run_block(module, *args, checkpointing=self.checkpointing)

    def _check(self, x, y, t, latents, kv_lengths):
        for name, s in (("x", x), ("y", y)):
            if not isinstance(s, torch.Tensor) or not s.is_complex() or s.dim() != 4 or s.shape[1] != 1:
                shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise InputError(f"NCSNpp: {name} must be a complex (B, 1, F, N) spectrogram, got {shape}")
        if y.shape != x.shape:
            raise InputError(f"NCSNpp: x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
        b, _, f, n = x.shape
        if f != self.n_freq or n % self.frame_multiple:
            raise InputError(f"NCSNpp: need F = n_freq = {self.n_freq} and frames N a multiple of {self.frame_multiple}, "
                             f"got F={f}, N={n} (pad the spectrogram)")
        if not isinstance(t, torch.Tensor) or t.shape != (b,):
            raise InputError(f"NCSNpp: t must be a (B,) = ({b},) tensor of diffusion times, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if self.latent_dim is None:
            if latents is not None:
                raise InputError("NCSNpp: latents given to a network built without cross-attention (latent_dim=None)")
            return None
        if latents is None:
            raise InputError(f"NCSNpp: this network is conditioned (latent_dim={self.latent_dim}); pass latents (B, L, D)")
        if latents.dim() != 3 or latents.shape[0] != b or latents.shape[2] != self.latent_dim:
            raise InputError(f"NCSNpp: latents must have shape (B={b}, L, D={self.latent_dim}), got {tuple(latents.shape)}")
        if kv_lengths is not None:
            kv_lengths = torch.as_tensor(kv_lengths, device=x.device)
            if kv_lengths.shape != (b,):
                raise InputError(f"NCSNpp: kv_lengths must have shape ({b},), got {tuple(kv_lengths.shape)}")
        return kv_lengths

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, latents: torch.Tensor | None = None,
                kv_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x, y complex (B, 1, F, N); t (B,) in (0, 1]; latents (B, L, latent_dim) and their valid
        lengths ``kv_lengths`` (B,) when conditioned. Returns complex (B, 1, F, N)."""
        kv_lengths = self._check(x, y, t, latents, kv_lengths)
        out = self.forward_planes(torch.cat([x.real, x.imag, y.real, y.imag], dim=1), t, latents, kv_lengths)
        return torch.complex(out[:, 0].float(), out[:, 1].float())[:, None]

    def forward_planes(self, inp: torch.Tensor, t: torch.Tensor, latents: torch.Tensor | None = None,
                       kv_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`forward` on real planes, unchecked: ``inp`` (B, 4, F, N) = real and imaginary
        parts of x, then of y; returns (B, 2, F, N), the real and imaginary parts of the output
        (the form that exports: ONNX has no complex tensors)."""
        temb = self.time_embed(torch.log(t.float()))
        temb = self.time_dense[1](F.silu(self.time_dense[0](temb)))

        pyramid = inp
        hs = [self.conv_in(inp)]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.blocks):
                h = self._run(block, hs[-1], temb)
                if len(level.attn):
                    h = self._run(level.attn[j], h)
                hs.append(h)
            if level.cross is not None:
                hs[-1] = level.cross(hs[-1], latents, kv_lengths, 2 ** i)
            if i != len(self.down) - 1:
                h = self._run(level.downsample, hs[-1], temb)
                pyramid = self.pyramid_down(pyramid)
                hs.append(level.combine(pyramid, h))

        h = self._run(self.mid_block1, hs[-1], temb)
        h = self._run(self.mid_attn, h)
        if self.mid_cross is not None:
            h = self.mid_cross(h, latents, kv_lengths, self.frame_multiple)
        h = self._run(self.mid_block2, h, temb)

        out = None
        for k, level in enumerate(self.up):
            i = len(self.up) - 1 - k
            for block in level.blocks:
                h = self._run(block, torch.cat([h, hs.pop()], dim=1), temb)
            if level.attn is not None:
                h = self._run(level.attn, h)
            if level.cross is not None:
                h = level.cross(h, latents, kv_lengths, 2 ** i)
            skip = level.pyramid_conv(F.silu(level.pyramid_norm(h)))
            out = skip if out is None else self.pyramid_up(out) + skip
            if level.upsample is not None:
                h = self._run(level.upsample, h, temb)
        if self.scale_by_time:
            out = out / t.float().reshape(-1, 1, 1, 1).to(out.dtype)
        return self.output_layer(out)  # (B, 2, F, N)


def build_ncsnpp(config: str = "sgmse", **overrides) -> NCSNpp:
    """NCSN++ from a named configuration (:data:`NCSNPP_CONFIGS`: "sgmse", "small") plus overrides."""
    if config not in NCSNPP_CONFIGS:
        raise InputError(f"build_ncsnpp: config must be one of {sorted(NCSNPP_CONFIGS)}, got {config!r}")
    return NCSNpp(**{**NCSNPP_CONFIGS[config], **overrides})
