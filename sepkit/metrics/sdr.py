"""Signal-to-distortion ratios in dB: SI-SDR, SNR and BSS-eval SDR, and their improvements.

Every function takes ``estimate`` and ``reference`` with time on the last axis, shapes
broadcastable to each other (``(B, S, T)`` against ``(B, S, T)``, or ``(B, S, 1, T)`` against
``(B, 1, S, T)`` for all pairs), and returns one value per signal (the broadcast leading shape),
e.g. ``(B, S)``: one value per separated utterance. Average over the last axis yourself for one
value per mixture. The functions are differentiable (the losses in :mod:`sepkit.losses` are
their negatives); they compute in float32 at least (BSS-eval SDR in float64) and return that
compute dtype.

Silent signals: every ratio is ``10 log10((num + eps) / (den + eps))`` with ``eps = EPS = 1e-8``
(and the SI-SDR scale ``(<s_hat, s> + eps) / (||s||^2 + eps)``), so a silent reference or a silent
estimate gives a finite value and a finite gradient; with both silent the ratio is 0 dB. eps moves
a ratio by at most ``10 log10(1 + eps / min(num, den))`` dB: below 0.001 dB while both the target
and the error energies exceed 5e-5 (pass ``eps=0`` for the exact ratio of non-silent signals).
"""
from __future__ import annotations

import torch

from sepkit.errors import InputError, InputTypeError

EPS = 1e-8
"""Epsilon added to the numerator and denominator of every ratio here (see the module docstring)."""

BSS_FILTER_LENGTH = 512
"""Taps of the distortion filter allowed by BSS-eval's ``bss_eval_sources`` SDR."""

GRAM_LOAD = 1e-12
"""Diagonal loading of the BSS-eval SDR's Gram matrix, relative to the reference energy."""


def spd_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve batched symmetric positive (semi-)definite systems ``matrix @ x = rhs`` by Cholesky.

    ``torch.linalg.cholesky_ex`` factorises every system of the batch and reports, per system,
    whether the factorisation failed (not positive definite in floating point); those systems
    alone are solved again by least squares: the minimum-norm solution through the symmetric
    pseudo-inverse (``torch.linalg.pinv(hermitian=True)``, an eigendecomposition, on any device).
    sepkit solves its symmetric systems this way rather than with the LU of
    ``torch.linalg.solve``: Cholesky costs half as much, and batched float64 LU solves hang on some
    builds after ``torch.set_num_threads`` (oneMKL DLASWP parameter error).

    Args:
        matrix: (..., n, n) symmetric positive (semi-)definite, float32 or float64.
        rhs: (..., n, k) right-hand sides, same batch shape and dtype.
    Returns:
        (..., n, k) solutions; differentiable in both arguments.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    solution = torch.cholesky_solve(rhs, factor)
    failed = info != 0
    if bool(failed.any()):
        fallback = torch.linalg.pinv(matrix[failed], hermitian=True) @ rhs[failed]
        solution = solution.masked_scatter(failed[..., None, None].expand_as(solution), fallback)
    return solution


def _check_pair(op: str, estimate, reference) -> torch.Size:
    for name, t in (("estimate", estimate), ("reference", reference)):
        if not isinstance(t, torch.Tensor):
            raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise InputTypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() < 1 or t.shape[-1] < 1:
            raise InputError(f"{op}: {name} must have a non-empty time axis (last), got shape {tuple(t.shape)}")
    if estimate.shape[-1] != reference.shape[-1]:
        raise InputError(
            f"{op}: estimate has {estimate.shape[-1]} samples but reference has {reference.shape[-1]} "
            "(time is the last axis; trim or pad first)"
        )
    if estimate.device != reference.device:
        raise InputError(f"{op}: estimate is on {estimate.device} but reference is on {reference.device}")
    try:
        return torch.broadcast_shapes(estimate.shape, reference.shape)
    except RuntimeError:
        raise InputError(
            f"{op}: estimate shape {tuple(estimate.shape)} and reference shape {tuple(reference.shape)} "
            "do not broadcast"
        ) from None


def _centred(x: torch.Tensor, zero_mean: bool) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True) if zero_mean else x


def _upcast(dtype_a: torch.dtype, dtype_b: torch.dtype, floor: torch.dtype = torch.float32) -> torch.dtype:
    return torch.promote_types(torch.promote_types(dtype_a, dtype_b), floor)


def _ratio_db(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    return 10.0 * torch.log10((num + eps) / (den + eps))


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = True, eps: float = EPS) -> torch.Tensor:
    """Scale-invariant SDR (Le Roux et al., 2019) in dB.

    ``alpha = <s_hat, s> / ||s||^2``, ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)``.

    Args:
        estimate: (..., T) estimated signals.
        reference: (..., T) reference signals, broadcastable to ``estimate``.
        zero_mean: remove each signal's mean first (the usual definition).
        eps: stabiliser (module docstring).

    Returns:
        (...) SI-SDR in dB, dtype float32 or float64.
    """
    _check_pair("si_sdr", estimate, reference)
    dtype = _upcast(estimate.dtype, reference.dtype)
    est, ref = _centred(estimate.to(dtype), zero_mean), _centred(reference.to(dtype), zero_mean)
    dot = (est * ref).sum(dim=-1, keepdim=True)
    ref_energy = ref.square().sum(dim=-1, keepdim=True)
    target = (dot + eps) / (ref_energy + eps) * ref
    noise = est - target
    return _ratio_db(target.square().sum(dim=-1), noise.square().sum(dim=-1), eps)


def snr(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = False, eps: float = EPS) -> torch.Tensor:
    """Plain signal-to-noise ratio ``10 log10(||s||^2 / ||s - s_hat||^2)`` in dB (no scaling, no filter).

    Shapes and arguments as :func:`si_sdr`; returns (...).
    """
    _check_pair("snr", estimate, reference)
    dtype = _upcast(estimate.dtype, reference.dtype)
    est, ref = _centred(estimate.to(dtype), zero_mean), _centred(reference.to(dtype), zero_mean)
    return _ratio_db(ref.square().sum(dim=-1), (ref - est).square().sum(dim=-1), eps)


def sdr(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    filter_length: int = BSS_FILTER_LENGTH,
    zero_mean: bool = False,
    eps: float = EPS,
) -> torch.Tensor:
    """BSS-eval SDR in dB: the estimate may differ from its reference by a causal FIR filter.

    The target component is the least-squares projection ``P s_hat`` of the estimate onto the
    ``filter_length`` delayed copies ``s(t - k)``, ``k = 0..filter_length-1`` of its reference
    (reference zero-padded by ``filter_length - 1`` samples), and
    ``SDR = 10 log10(||P s_hat||^2 / ||s_hat - P s_hat||^2)``: the SDR of ``bss_eval_sources``
    (512 taps, which does not depend on the other sources), without its permutation search.
    ``filter_length=1`` gives a scale-invariant SDR without mean removal.

    The Gram (Toeplitz autocorrelation) system is solved in float64 with its diagonal loaded by
    :data:`GRAM_LOAD` times the reference energy (plus the smallest positive float64, for silent
    references): a change below 1e-6 dB against an unregularised solve on speech. The loaded
    Gram matrix is symmetric positive definite, so it is solved by Cholesky
    (:func:`spd_solve`; least squares only for a system whose factorisation fails).

    Args:
        estimate: (..., T) estimated signals.
        reference: (..., T) references, broadcastable to ``estimate``.
        filter_length: taps of the allowed distortion filter (>= 1).
        zero_mean: remove each signal's mean first.
        eps: stabiliser.

    Returns:
        (...) SDR in dB, float64.
    """
    shape = _check_pair("sdr", estimate, reference)
    if not isinstance(filter_length, int) or filter_length < 1:
        raise InputError(f"sdr: filter_length must be a positive int, got {filter_length!r}")
    est = _centred(estimate.to(torch.float64), zero_mean)
    ref = _centred(reference.to(torch.float64), zero_mean)
    T = shape[-1]
    taps = filter_length
    n_fft = 1 << (T + taps - 1 - 1).bit_length()  # >= T + taps - 1: circular == linear correlation
    ref_f = torch.fft.rfft(ref, n=n_fft)
    est_f = torch.fft.rfft(est, n=n_fft)
    # Autocorrelation r[k] = sum_t s(t) s(t + k), k = 0..taps-1, and the cross-correlation
    # b[k] = sum_t s(t - k) s_hat(t) = <s delayed by k, s_hat>.
    auto = torch.fft.irfft(ref_f * ref_f.conj(), n=n_fft)[..., :taps]
    cross = torch.fft.irfft(est_f * ref_f.conj(), n=n_fft)[..., :taps]
    auto, cross = torch.broadcast_tensors(auto, cross)
    lag = torch.arange(taps, device=auto.device)
    gram = auto[..., (lag[:, None] - lag[None, :]).abs()]  # symmetric Toeplitz (..., taps, taps)
    load = GRAM_LOAD * auto[..., :1, None] + torch.finfo(torch.float64).tiny  # relative diagonal loading
    gram = gram + load * torch.eye(taps, dtype=gram.dtype, device=gram.device)
    coef = spd_solve(gram, cross.unsqueeze(-1)).squeeze(-1)
    target_energy = (coef * cross).sum(dim=-1)  # ||P s_hat||^2 = c^T G c = c^T b
    est_energy = est.square().sum(dim=-1).expand(target_energy.shape)
    return _ratio_db(target_energy, (est_energy - target_energy).clamp_min(0.0), eps)


def _as_mixture(op: str, mixture: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(..., T) mixture for (..., S, T) references: a source axis of 1 is inserted (or kept)."""
    for name, t in (("reference", reference), ("mixture", mixture)):
        if not isinstance(t, torch.Tensor):
            raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if mixture.dim() == reference.dim() and mixture.shape[-2] == 1:
        return mixture
    if mixture.dim() == reference.dim() - 1:
        return mixture.unsqueeze(-2)
    raise InputError(
        f"{op}: mixture shape {tuple(mixture.shape)} does not match references {tuple(reference.shape)}: "
        "expected (..., T) or (..., 1, T) for references (..., S, T)"
    )


def si_sdri(
    estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor, zero_mean: bool = True, eps: float = EPS
) -> torch.Tensor:
    """SI-SDR improvement ``si_sdr(estimate, reference) - si_sdr(mixture, reference)`` in dB.

    Args:
        estimate: (..., S, T) separated sources (aligned with ``reference``).
        reference: (..., S, T) references.
        mixture: (..., T) or (..., 1, T) the input mixture.

    Returns:
        (..., S).
    """
    mix = _as_mixture("si_sdri", mixture, reference)
    return si_sdr(estimate, reference, zero_mean, eps) - si_sdr(mix, reference, zero_mean, eps)


def sdri(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    mixture: torch.Tensor,
    filter_length: int = BSS_FILTER_LENGTH,
    zero_mean: bool = False,
    eps: float = EPS,
) -> torch.Tensor:
    """BSS-eval SDR improvement ``sdr(estimate, reference) - sdr(mixture, reference)`` in dB.

    Shapes as :func:`si_sdri`; returns (..., S), float64.
    """
    mix = _as_mixture("sdri", mixture, reference)
    return sdr(estimate, reference, filter_length, zero_mean, eps) - sdr(mix, reference, filter_length, zero_mean, eps)


__all__ = ["EPS", "BSS_FILTER_LENGTH", "si_sdr", "snr", "sdr", "si_sdri", "sdri", "spd_solve"]
