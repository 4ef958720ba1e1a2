"""Reference STFT masking and power-law spectrogram compression (readable spec, float64-correct).

Spectrograms are real views (..., 2) of complex STFTs (last axis: real, imaginary).

* power-law compression (SGMSE+: power p = 0.5, scale s = 0.15):
  ``compress(X) = s |X|^p e^{j angle X}``; its inverse ``decompress(Y) = (|Y| / s)^(1/p) e^{j angle Y}``.
  A bin of zero magnitude maps to zero with zero gradient (the derivative of |X|^p is unbounded
  there for p < 1; zero is the subgradient sepkit uses).
* mask bound: ``none``; ``sigmoid`` (elementwise; for a complex mask on the real and imaginary
  parts separately); ``tanh`` (a real mask: elementwise; a complex mask: tanh of its magnitude,
  keeping its phase, DCCRN's bounded "E" mask ``tanh(|M|) M / |M|``, equal to M's direction with
  unit slope at M = 0).
* ``stft_mask(X, M) = decompress(bound(M) * compress(X))`` with a real mask scaling both parts
  (kind ``magnitude``) or a complex product (kind ``complex``); without compression simply
  ``bound(M) * X``.
"""
from __future__ import annotations

import torch

KINDS = ("magnitude", "complex")
BOUNDS = ("none", "sigmoid", "tanh")
SGMSE_COMPRESSION = (0.5, 0.15)


def _safe_magnitude(z: torch.Tensor):
    """|z|, the unit vector z / |z| and the mask of nonzero bins of a (..., 2) view.

    Formed without squaring z: ``u = z / m`` with ``m = max(|Re z|, |Im z|)`` detached (1 at zero
    bins), ``|z| = m |u|`` and ``z / |z| = u / |u|`` with ``|u|`` in [1, sqrt 2] (1 at zero bins,
    whose unit vector is 0). Nothing under- or overflows for any finite bin (fp32 |z|^2 would
    below 1e-19 and above 1.8e19), forward or backward: |z| does not depend on m, so the
    gradients are those of the exact magnitude.
    """
    m = z.detach().abs().amax(dim=-1)
    nonzero = m > 0
    m = torch.where(nonzero, m, torch.ones_like(m))
    u = z / m[..., None]
    n = torch.sqrt(torch.where(nonzero, u[..., 0] ** 2 + u[..., 1] ** 2, torch.ones_like(m)))
    return m * n, u / n[..., None], nonzero


def power_law_reference(z: torch.Tensor, exponent: float, coef: float) -> torch.Tensor:
    """``coef * |z|^exponent * z / |z|`` on a (..., 2) view; zero bins map to zero."""
    r, unit, nonzero = _safe_magnitude(z)
    factor = torch.where(nonzero, coef * r ** exponent, torch.zeros_like(r))
    return unit * factor[..., None]


def compress_reference(spec: torch.Tensor, power: float = 0.5, scale: float = 0.15) -> torch.Tensor:
    """``scale * |X|^power * e^{j angle X}`` of a (..., 2) spectrogram view."""
    return power_law_reference(spec, power, scale)


def decompress_reference(spec: torch.Tensor, power: float = 0.5, scale: float = 0.15) -> torch.Tensor:
    """Inverse of :func:`compress_reference`: ``(|Y| / scale)^(1/power) * e^{j angle Y}``."""
    return power_law_reference(spec, 1.0 / power, scale ** (-1.0 / power))


def bound_mask_reference(mask: torch.Tensor, kind: str, bound: str) -> torch.Tensor:
    """Apply the mask bound: (...) real masks for kind magnitude, (..., 2) views for complex."""
    if bound == "none":
        return mask
    if bound == "sigmoid":
        return torch.sigmoid(mask)
    if kind == "magnitude":
        return torch.tanh(mask)
    r, unit, nonzero = _safe_magnitude(mask)
    return torch.where(nonzero[..., None], unit * torch.tanh(r)[..., None], mask)


def stft_mask_reference(
    spec: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "complex",
    bound: str = "none",
    compress: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Masked spectrogram, (..., 2) view in, (..., 2) view out (see the module docstring).

    Args:
        spec: (..., 2) real view of the complex STFT.
        mask: (...) real mask for ``kind="magnitude"``, (..., 2) view for ``kind="complex"``.
        kind: "magnitude" or "complex".
        bound: "none", "sigmoid" or "tanh".
        compress: None, or (power, scale): mask in the compressed domain and expand back.
    """
    x = spec if compress is None else compress_reference(spec, *compress)
    m = bound_mask_reference(mask, kind, bound)
    if kind == "magnitude":
        z = m[..., None] * x
    else:
        zr = m[..., 0] * x[..., 0] - m[..., 1] * x[..., 1]
        zi = m[..., 0] * x[..., 1] + m[..., 1] * x[..., 0]
        z = torch.stack((zr, zi), dim=-1)
    return z if compress is None else decompress_reference(z, *compress)
