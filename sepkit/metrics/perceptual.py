"""Perceptual metrics: PESQ (ITU-T P.862, wide and narrow band) and STOI / ESTOI.

Thin batched wrappers over the ``pesq`` and ``pystoi`` packages, which are imported when first
used; they belong to sepkit's ``eval`` extra (``pip install 'sepkit[eval]'``). Inputs are
``(..., T)`` tensors (any device, any float dtype; computed on the CPU in float64), the output
holds one value per signal, shape ``(...)``, float64, on the input's device. Neither metric is
differentiable.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch

from sepkit.errors import InputError

from .sdr import _check_pair

PESQ_SAMPLE_RATES = (8000, 16000)


def _require(module: str, op: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{op} needs the '{module}' package, which is part of sepkit's 'eval' extra: "
            f"pip install 'sepkit[eval]' (or pip install {module})"
        ) from err


def _flatten_pair(op: str, estimate, reference) -> tuple[np.ndarray, np.ndarray, torch.Size, torch.device]:
    _check_pair(op, estimate, reference)
    if estimate.shape != reference.shape:
        raise InputError(
            f"{op}: estimate shape {tuple(estimate.shape)} differs from reference shape {tuple(reference.shape)}"
        )
    if not (bool(torch.isfinite(estimate).all()) and bool(torch.isfinite(reference).all())):
        raise InputError(f"{op}: estimate or reference contains NaN or Inf")
    lead = estimate.shape[:-1]
    est = estimate.detach().to("cpu", torch.float64).reshape(-1, estimate.shape[-1]).numpy()
    ref = reference.detach().to("cpu", torch.float64).reshape(-1, reference.shape[-1]).numpy()
    return est, ref, lead, estimate.device


def pesq(
    estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int, mode: str = "wb", on_error: str = "raise"
) -> torch.Tensor:
    """PESQ score of each estimate against its reference (MOS-LQO scale).

    Args:
        estimate: (..., T) degraded / separated signals.
        reference: (..., T) clean references, same shape.
        sample_rate: 16000 for ``mode="wb"``; 8000 or 16000 for ``mode="nb"``.
        mode: ``"wb"`` (P.862.2 wide band) or ``"nb"`` (P.862 narrow band).
        on_error: ``"raise"`` (a ValueError naming the item, e.g. for a reference with no
            detectable utterance) or ``"nan"`` (that item's score is NaN).

    Returns:
        (...) float64 scores.
    """
    if mode not in ("wb", "nb"):
        raise InputError(f"pesq: mode must be 'wb' or 'nb', got {mode!r}")
    if on_error not in ("raise", "nan"):
        raise InputError(f"pesq: on_error must be 'raise' or 'nan', got {on_error!r}")
    if sample_rate not in PESQ_SAMPLE_RATES:
        raise InputError(
            f"pesq: sample_rate must be 8000 or 16000, got {sample_rate}; resample first "
            "(torchaudio.functional.resample)"
        )
    if mode == "wb" and sample_rate != 16000:
        raise InputError("pesq: wide-band mode needs sample_rate 16000; resample to 16 kHz or use mode='nb'")
    backend = _require("pesq", "sepkit.metrics.pesq")
    est, ref, lead, device = _flatten_pair("pesq", estimate, reference)
    scores = np.empty(est.shape[0])
    for i in range(est.shape[0]):
        try:
            scores[i] = backend.pesq(sample_rate, ref[i], est[i], mode)
        except Exception as err:  # the package raises its own error classes (NoUtterancesError, ...)
            if on_error == "raise":
                raise InputError(f"pesq: item {i} of the flattened batch failed: {type(err).__name__}: {err}") from err
            scores[i] = float("nan")
    return torch.from_numpy(scores).reshape(lead).to(device)


def stoi(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int, extended: bool = False) -> torch.Tensor:
    """Short-time objective intelligibility (Taal et al., 2011), or extended STOI (Jensen and
    Taal, 2016) with ``extended=True``, of each estimate against its reference.

    Args:
        estimate: (..., T) processed signals.
        reference: (..., T) clean references, same shape.
        sample_rate: the signals' rate in Hz (resampled to 10 kHz inside the package).
        extended: ESTOI instead of STOI.

    Returns:
        (...) float64 scores (STOI in about [0, 1]).
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"stoi: sample_rate must be a positive int, got {sample_rate!r}")
    backend = _require("pystoi", "sepkit.metrics.stoi")
    est, ref, lead, device = _flatten_pair("stoi", estimate, reference)
    scores = np.array([backend.stoi(ref[i], est[i], sample_rate, extended=extended) for i in range(est.shape[0])],
                      dtype=np.float64)
    return torch.from_numpy(scores).reshape(lead).to(device)


def estoi(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Extended STOI: :func:`stoi` with ``extended=True``; returns (...) float64."""
    return stoi(estimate, reference, sample_rate, extended=True)


__all__ = ["pesq", "stoi", "estoi", "PESQ_SAMPLE_RATES"]
