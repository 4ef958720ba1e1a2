"""Evaluation metrics: batched tensors in, one value per utterance out.

- :mod:`.sdr`: SI-SDR, SNR, BSS-eval SDR (512-tap distortion filter) and the improvements
  SI-SDRi and SDRi. Differentiable torch code, no extra dependency.
- :mod:`.perceptual`: PESQ (wide / narrow band), STOI and ESTOI over the ``pesq`` and ``pystoi``
  packages (the ``eval`` extra), imported when first called.

Estimates must be aligned with their references; align separated sources first with
:class:`sepkit.losses.PITLoss` and :func:`sepkit.losses.reorder_sources`.
"""
from .perceptual import estoi, pesq, stoi
from .sdr import BSS_FILTER_LENGTH, EPS, sdr, sdri, si_sdr, si_sdri, snr

__all__ = ["si_sdr", "si_sdri", "sdr", "sdri", "snr", "pesq", "stoi", "estoi", "EPS", "BSS_FILTER_LENGTH"]
