"""Evaluation metrics: batched tensors in, one value per utterance out.

- :mod:`.sdr`: SI-SDR, SNR, BSS-eval SDR (512-tap distortion filter) and the improvements
  SI-SDRi and SDRi. Differentiable torch code, no extra dependency.
- :mod:`.perceptual`: PESQ (wide / narrow band), STOI and ESTOI over the ``pesq`` and ``pystoi``
  packages (the ``eval`` extra), imported when first called.

Linear algebra: the symmetric positive definite systems here (the BSS-eval SDR's Gram matrix)
are solved by Cholesky, :func:`spd_solve` (``torch.linalg.cholesky_ex`` + ``torch.cholesky_solve``,
least squares only for a system whose factorisation reports failure), never by the LU of
``torch.linalg.solve``: Cholesky is half the work, and batched float64 LU solves of such sizes fail
or hang on some builds after ``torch.set_num_threads`` (oneMKL "Parameter 6 was incorrect on entry
to DLASWP"). Code elsewhere in sepkit that solves a symmetric system follows the same rule.

Estimates must be aligned with their references; align separated sources first with
:class:`sepkit.losses.PITLoss` and :func:`sepkit.losses.reorder_sources`.
"""
from .clustering import adjusted_rand_index, normalized_mutual_info, silhouette_score
from .perceptual import estoi, pesq, stoi
from .sdr import BSS_FILTER_LENGTH, EPS, sdr, sdri, si_sdr, si_sdri, snr, spd_solve

__all__ = ["adjusted_rand_index", "normalized_mutual_info", "silhouette_score", "si_sdr", "si_sdri", "sdr", "sdri", "snr", "pesq", "stoi", "estoi", "spd_solve", "EPS", "BSS_FILTER_LENGTH"]
