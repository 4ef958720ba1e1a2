"""Snake and SnakeBeta activation modules on the ``sepkit.kernels.snake`` op."""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError
from sepkit.kernels import snake


class Snake(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / (alpha + 1e-9)`` with one alpha per channel.

    Args:
        channels: number of channels C.
        dim: channel dimension of the input: 1 for (B, C, T) (convolutional codecs), -1 for
            (B, T, C) (transformers).
        logscale: store log(alpha) (initialised to 0, i.e. alpha = 1) instead of alpha
            (initialised to 1), as BigVGAN's ``alpha_logscale``.
        backend: kernel backend (None: automatic).

    Parameters: ``alpha`` of shape (C,). Loading a state dict whose alpha has the Descript Audio
    Codec's shape (1, C, 1) works: it is reshaped to (C,).
    """

    has_beta = False

    def __init__(self, channels: int, dim: int = 1, logscale: bool = False, backend: str | None = None):
        super().__init__()
        if channels < 1:
            raise InputError(f"{type(self).__name__}: channels must be >= 1, got {channels}")
        self.channels, self.dim, self.logscale, self.backend = channels, dim, logscale, backend
        init = torch.zeros if logscale else torch.ones
        self.alpha = nn.Parameter(init(channels))
        if self.has_beta:
            self.beta = nn.Parameter(init(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta if self.has_beta else None
        return snake(x, self.alpha, beta, dim=self.dim, logscale=self.logscale, backend=self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("alpha", "beta"):
            key = prefix + name
            value = state_dict.get(key)
            if value is not None and value.dim() != 1 and value.numel() == self.channels:
                state_dict[key] = value.reshape(self.channels)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.channels}, dim={self.dim}, logscale={self.logscale}"


class SnakeBeta(Snake):
    """SnakeBeta ``x + sin(alpha x)^2 / (beta + 1e-9)``: separate frequency and magnitude per channel.

    Same arguments as :class:`Snake`; parameters ``alpha`` and ``beta`` of shape (C,).
    """

    has_beta = True
