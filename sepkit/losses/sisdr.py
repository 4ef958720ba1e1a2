"""Signal-level separation losses: negative SI-SDR, negative SDR, and Codec SI-SDR.

Each loss is a module ``loss(estimate, target) -> tensor`` on ``(..., T)`` signals (typically
``(B, S, T)``) that are already aligned; wrap it in :class:`sepkit.losses.PITLoss` for
permutation-invariant training. ``reduction="none"`` returns one loss per signal (``(...)``,
the form PITLoss needs), ``"mean"`` (default) their mean, ``"sum"`` their sum.

Stability: the ratios carry ``eps`` (default :data:`sepkit.metrics.EPS` = 1e-8) in numerator and
denominator, so a silent target (or estimate) gives a finite loss and a finite gradient. The
maths lives in :mod:`sepkit.metrics.sdr`; the losses are its negatives.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.metrics.sdr import BSS_FILTER_LENGTH, EPS, sdr, si_sdr, snr

REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(name: str, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise InputError(f"{name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


class SISDRLoss(nn.Module):
    """Negative scale-invariant SDR in dB: ``-si_sdr(estimate, target)``.

    Args:
        zero_mean: remove the signals' means first (the standard SI-SDR).
        eps: stabiliser of the ratios (finite loss and gradient on silent targets).
        reduction: "mean", "sum" or "none".

    Shapes: estimate and target ``(..., T)``, broadcastable; output a scalar, or ``(...)`` with
    ``reduction="none"``.
    """

    def __init__(self, zero_mean: bool = True, eps: float = EPS, reduction: str = "mean"):
        super().__init__()
        self.zero_mean, self.eps = zero_mean, eps
        self.reduction = _check_reduction(type(self).__name__, reduction)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _reduce(-si_sdr(estimate, target, self.zero_mean, self.eps), self.reduction)

    def extra_repr(self) -> str:
        return f"zero_mean={self.zero_mean}, eps={self.eps}, reduction={self.reduction!r}"


class SDRLoss(nn.Module):
    """Negative SDR in dB.

    Args:
        filter_length: ``None`` (default) for the plain SDR ``10 log10(||s||^2 / ||s - s_hat||^2)``
            (a.k.a. SNR loss: neither scale nor filter is forgiven); an int ``L`` for the BSS-eval
            SDR that forgives a causal ``L``-tap distortion filter
            (:data:`~sepkit.metrics.BSS_FILTER_LENGTH` = 512 as in ``bss_eval_sources``; it
            solves an ``L x L`` system per signal in float64).
        zero_mean: remove the signals' means first.
        eps: stabiliser of the ratios.
        reduction: "mean", "sum" or "none".
    """

    def __init__(self, filter_length: int | None = None, zero_mean: bool = False, eps: float = EPS,
                 reduction: str = "mean"):
        super().__init__()
        if filter_length is not None and (not isinstance(filter_length, int) or filter_length < 1):
            raise InputError(f"SDRLoss: filter_length must be None or a positive int, got {filter_length!r}")
        self.filter_length, self.zero_mean, self.eps = filter_length, zero_mean, eps
        self.reduction = _check_reduction(type(self).__name__, reduction)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.filter_length is None:
            values = snr(estimate, target, self.zero_mean, self.eps)
        else:
            values = sdr(estimate, target, self.filter_length, self.zero_mean, self.eps)
            values = values.to(torch.promote_types(torch.promote_types(estimate.dtype, target.dtype), torch.float32))
        return _reduce(-values, self.reduction)

    def extra_repr(self) -> str:
        return (f"filter_length={self.filter_length}, zero_mean={self.zero_mean}, eps={self.eps}, "
                f"reduction={self.reduction!r}")


class CodecSISDRLoss(SISDRLoss):
    """Codec SI-SDR (Codecformer): negative SI-SDR against the *transmitted* target.

    The target is the codec round trip ``t = decode(encode(s))`` of the clean source ``s`` (what
    the receiver could at best reconstruct), not ``s`` itself; the caller computes it, normally
    without gradient, and passes it in: ``loss(estimate, transmitted)``.

    Codec round trips pad to a multiple of their hop, so ``transmitted`` may be longer than
    ``estimate``: it is cropped to the estimate's length. A shorter ``transmitted`` is an error.

    Args as :class:`SISDRLoss`. Shapes: estimate ``(..., T)``, transmitted ``(..., T')`` with
    ``T' >= T``.
    """

    def forward(self, estimate: torch.Tensor, transmitted: torch.Tensor) -> torch.Tensor:
        if not isinstance(estimate, torch.Tensor) or not isinstance(transmitted, torch.Tensor):
            raise InputTypeError("CodecSISDRLoss: estimate and transmitted must be torch.Tensors")
        if estimate.dim() < 1 or transmitted.dim() < 1:
            raise InputError("CodecSISDRLoss: estimate and transmitted need a time axis (last)")
        if transmitted.shape[-1] < estimate.shape[-1]:
            raise InputError(
                f"CodecSISDRLoss: transmitted target has {transmitted.shape[-1]} samples, fewer than the "
                f"estimate's {estimate.shape[-1]}; pass the full codec round trip of the clean source"
            )
        return super().forward(estimate, transmitted[..., : estimate.shape[-1]])


def si_sdr_loss(estimate: torch.Tensor, target: torch.Tensor, zero_mean: bool = True, eps: float = EPS) -> torch.Tensor:
    """Per-signal negative SI-SDR ``(..., T) -> (...)``: the functional form of :class:`SISDRLoss`."""
    return -si_sdr(estimate, target, zero_mean, eps)


def sdr_loss(estimate: torch.Tensor, target: torch.Tensor, filter_length: int | None = None,
             zero_mean: bool = False, eps: float = EPS) -> torch.Tensor:
    """Per-signal negative SDR ``(..., T) -> (...)``: the functional form of :class:`SDRLoss`."""
    return SDRLoss(filter_length, zero_mean, eps, reduction="none")(estimate, target)


__all__ = ["SISDRLoss", "SDRLoss", "CodecSISDRLoss", "si_sdr_loss", "sdr_loss", "BSS_FILTER_LENGTH", "EPS"]
