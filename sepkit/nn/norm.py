"""Normalisation layers of the time-domain separators (Conv-TasNet paper, section III-C).

All three take channels-first feature maps ``(B, C, *)`` (``(B, C, T)`` for sequences,
``(B, C, K, S)`` for dual-path chunks) and carry a per-channel gain and bias of shape ``(C,)``:

- :class:`GlobalLayerNorm` (gLN): one mean and variance per example over channels and all
  positions. Looks at the whole utterance: non-causal.
- :class:`CumulativeLayerNorm` (cLN): at frame ``t`` the statistics of channels and frames
  ``0..t``; causal. Sequences ``(B, C, T)`` only.
- :class:`ChannelLayerNorm` (chanLN): one mean and variance per position over channels (a
  LayerNorm over C); causal, and the choice inside the chunks of causal dual-path models.

Statistics are computed in float32 at least, whatever the input dtype; the output has the
input's dtype. gLN and chanLN run PyTorch's native ``group_norm`` (one group) and ``layer_norm``,
which compute exactly these statistics in one fused pass on every device; cLN's running
statistics have no native equivalent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError

EPS = 1e-8
"""Added to the variance of every normalisation here (the Conv-TasNet paper's epsilon)."""


def _check_input(layer: nn.Module, x: torch.Tensor, min_ndim: int, max_ndim: int | None = None) -> None:
    name = type(layer).__name__
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_ndim or (max_ndim is not None and x.dim() > max_ndim):
        want = f"{min_ndim}" if max_ndim == min_ndim else f"at least {min_ndim}"
        raise InputError(f"{name}: input must have {want} dimensions (B, C, ...), got shape {tuple(x.shape)}")
    if x.shape[1] != layer.channels:
        raise InputError(f"{name}: input has {x.shape[1]} channels (dim 1), expected {layer.channels}")


class _AffineNorm(nn.Module):
    def __init__(self, channels: int, eps: float = EPS, affine: bool = True):
        super().__init__()
        if channels < 1:
            raise InputError(f"{type(self).__name__}: channels must be >= 1, got {channels}")
        self.channels, self.eps = channels, eps
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return y
        shape = (1, self.channels) + (1,) * (y.dim() - 2)
        return y * self.weight.view(shape).to(y.dtype) + self.bias.view(shape).to(y.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}, affine={self.weight is not None}"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class GlobalLayerNorm(_AffineNorm):
    """gLN: ``(x - mean) / sqrt(var + eps) * gain + bias`` with statistics over (C, *) per example.

    Input and output ``(B, C, *)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, 3)
        # the same statistics as one group of GroupNorm: one fused native pass instead of five
        xf = x.to(_compute_dtype(x))
        weight = None if self.weight is None else self.weight.to(xf.dtype)
        bias = None if self.bias is None else self.bias.to(xf.dtype)
        return F.group_norm(xf, 1, weight, bias, self.eps).to(x.dtype)


class CumulativeLayerNorm(_AffineNorm):
    """cLN: frame ``t`` is normalised with the mean and variance of channels and frames ``0..t``.

    Input and output ``(B, C, T)``. Causal: output frame ``t`` depends on input frames ``<= t`` only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, 3, 3)
        xf = x.to(_compute_dtype(x))
        # Shift by the first frame's mean so the running E[x^2] - E[x]^2 does not cancel badly.
        shift = xf[:, :, :1].mean(dim=1, keepdim=True).detach()
        xs = xf - shift
        count = torch.arange(1, x.shape[2] + 1, device=x.device, dtype=xf.dtype) * self.channels
        mean = xs.sum(dim=1, keepdim=True).cumsum(dim=2) / count
        power = xs.square().sum(dim=1, keepdim=True).cumsum(dim=2) / count
        var = (power - mean.square()).clamp_min(0.0)
        return self._affine((xs - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


class ChannelLayerNorm(_AffineNorm):
    """chanLN: a LayerNorm over the channel dimension at every position.

    Input and output ``(B, C, *)``. Causal.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, 3)
        xf = x.to(_compute_dtype(x)).movedim(1, -1)  # channels last for the native layer_norm
        weight = None if self.weight is None else self.weight.to(xf.dtype)
        bias = None if self.bias is None else self.bias.to(xf.dtype)
        return F.layer_norm(xf, (self.channels,), weight, bias, self.eps).movedim(-1, 1).to(x.dtype)


NORMS = {"gLN": GlobalLayerNorm, "cLN": CumulativeLayerNorm, "chanLN": ChannelLayerNorm}


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a normalisation layer by name: ``"gLN"``, ``"cLN"``, ``"chanLN"`` or ``"none"`` (identity)."""
    if kind == "none":
        return nn.Identity()
    if kind not in NORMS:
        raise InputError(f"make_norm: unknown norm {kind!r}; choose one of {sorted(NORMS) + ['none']}")
    return NORMS[kind](channels)
