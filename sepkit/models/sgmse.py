"""Score-based generative speech enhancement in the complex STFT domain (SGMSE+).

Richter, Welker, Lemercier, Lay, Gerkmann, "Speech enhancement and dereverberation with diffusion-
based generative models", IEEE/ACM TASLP 2023; the backbone of Ex-Diff (:mod:`sepkit.models.exdiff`).

* :class:`SpecRepresentation`: the complex STFT (n_fft 510, hop 128 at 16 kHz, periodic Hann,
  ``center=True``, unnormalised) with amplitude compression ``0.15 |X|^0.5 e^{j angle X}``
  through ``sepkit.kernels.compress_spec`` / ``decompress_spec``. Spectrograms are complex
  (B, 1, 256, frames).
* :class:`OUVESDE`: the Ornstein-Uhlenbeck variance-exploding SDE
  ``dx = theta (y - x) dt + sigma_min (sigma_max/sigma_min)^t sqrt(2 log(sigma_max/sigma_min)) dw``
  whose perturbation kernel has mean ``e^{-theta t} x0 + (1 - e^{-theta t}) y`` and a closed-form
  std (0.38898 at t = 1 for the defaults).
* :func:`dsm_loss`: denoising score matching, ``t ~ U(t_eps, 1)``, ``x_t = mean + std z``,
  ``0.5 * sum |std * score + z|^2`` per utterance, averaged over the batch.
* :func:`pc_sampler` (reverse-diffusion predictor + annealed Langevin corrector) and
  :func:`ode_sampler` (the probability-flow ODE, Euler steps); both seeded, with a tqdm bar.
* :class:`SGMSE`: a score network + the SDE + the representation: ``loss(clean, noisy)`` and
  ``enhance(noisy)`` on waveforms.

Complex Gaussian noise ``z`` is circular with ``E|z|^2 = 1`` (real and imaginary parts of variance
1/2 each), as ``torch.randn`` draws it for complex dtypes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.kernels import compress_spec, decompress_spec

__all__ = ["SpecRepresentation", "OUVESDE", "dsm_loss", "pc_sampler", "ode_sampler", "SGMSE", "SAMPLERS",
           "PARAMETRISATIONS", "TIME_GRIDS"]

SAMPLERS = ("pc", "ode")
#: how the score follows from the network output D: "noise" (sepkit's, ``-D / std(t)``) or
#: "score" (``-D``: the network scales itself, as the released SGMSE+ models do)
PARAMETRISATIONS = ("noise", "score")
#: step sizes of the predictor on ``t_i = linspace(1, t_eps, N)``: "uniform" (sepkit's, ``1 / N``
#: every step) or "sgmse" (the SGMSE+ release's, ``t_i - t_{i+1}``, and ``t_eps`` for the last)
TIME_GRIDS = ("uniform", "sgmse")
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check_wave(op: str, name: str, wave) -> None:
    if not isinstance(wave, torch.Tensor):
        raise InputTypeError(f"{op}: {name} must be a tensor, got {type(wave).__name__}")
    if wave.dim() != 2 or wave.shape[-1] < 1:
        raise InputError(f"{op}: {name} must have shape (batch, time), got {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise InputTypeError(f"{op}: {name} must be a floating-point waveform, got {wave.dtype}")
    if not torch.compiler.is_exporting() and not bool(torch.isfinite(wave).all()):
        raise InputError(f"{op}: {name} contains NaN or Inf samples")


def _check_spec(op: str, name: str, spec) -> None:
    if not isinstance(spec, torch.Tensor) or not spec.is_complex() or spec.dim() != 4 or spec.shape[1] != 1:
        shape = tuple(spec.shape) if isinstance(spec, torch.Tensor) else type(spec).__name__
        raise InputError(f"{op}: {name} must be a complex (B, 1, F, frames) spectrogram, got {shape}")


class SpecRepresentation(nn.Module):
    """Compressed complex STFT of SGMSE+: waveform (B, T) <-> complex spectrogram (B, 1, F, N).

    Args:
        n_fft: FFT size (510: F = 256 bins).
        hop_length: hop in samples (128: 8 ms at 16 kHz).
        sample_rate: the rate (Hz) the model runs at; inputs are not resampled here.
        power, scale: amplitude compression ``scale * |X|^power`` (0.5, 0.15).
        normalized: orthonormal STFT scaling (``torch.stft(normalized=True)``: magnitudes
            sqrt(n_fft) times smaller); off by default.

    ``N = 1 + T // hop_length`` frames (``center=True``).
    """

    def __init__(self, n_fft: int = 510, hop_length: int = 128, sample_rate: int = 16000, power: float = 0.5,
                 scale: float = 0.15, normalized: bool = False):
        super().__init__()
        if n_fft < 2 or hop_length < 1 or hop_length > n_fft:
            raise InputError(f"SpecRepresentation: need n_fft >= 2 and 1 <= hop_length <= n_fft, got {n_fft}, {hop_length}")
        if sample_rate < 1:
            raise InputError(f"SpecRepresentation: sample_rate must be positive, got {sample_rate}")
        self.n_fft, self.hop_length, self.sample_rate = n_fft, hop_length, sample_rate
        self.power, self.scale, self.normalized = float(power), float(scale), normalized
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def frames(self, num_samples: int) -> int:
        """STFT frames of a waveform of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, T) float -> compressed complex spectrogram (B, 1, F, N)."""
        _check_wave("SpecRepresentation", "wave", wave)
        spec = torch.stft(wave.float(), self.n_fft, self.hop_length, window=self.window.to(wave.device),
                          center=True, normalized=self.normalized, return_complex=True)
        return compress_spec(spec, self.power, self.scale)[:, None]

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Compressed complex spectrogram (B, 1, F, N) -> waveform (B, length)."""
        _check_spec("SpecRepresentation.inverse", "spec", spec)
        if spec.shape[2] != self.n_freq:
            raise InputError(f"SpecRepresentation.inverse: spec must have {self.n_freq} frequency bins, got {spec.shape[2]}")
        linear = decompress_spec(spec[:, 0], self.power, self.scale)
        return torch.istft(linear, self.n_fft, self.hop_length, window=self.window.to(spec.device), center=True,
                           normalized=self.normalized, length=length)

    def extra_repr(self) -> str:
        return (f"n_fft={self.n_fft}, hop_length={self.hop_length}, sample_rate={self.sample_rate}, "
                f"power={self.power}, scale={self.scale}")


class OUVESDE:
    """Ornstein-Uhlenbeck variance-exploding SDE of SGMSE+.

    Forward: ``dx = theta (y - x) dt + g(t) dw`` with
    ``g(t) = sigma_min (sigma_max / sigma_min)^t sqrt(2 log(sigma_max / sigma_min))``.

    Args:
        theta: stiffness (1.5; the Ex-Diff paper's gamma).
        sigma_min, sigma_max: noise schedule (0.05, 0.5).
        N: reverse steps of the discretisation (30).
    """

    T = 1.0

    def __init__(self, theta: float = 1.5, sigma_min: float = 0.05, sigma_max: float = 0.5, N: int = 30):
        if not (theta > 0 and 0 < sigma_min < sigma_max):
            raise InputError(f"OUVESDE: need theta > 0 and 0 < sigma_min < sigma_max, got theta={theta}, "
                             f"sigma_min={sigma_min}, sigma_max={sigma_max}")
        if int(N) < 1:
            raise InputError(f"OUVESDE: N must be a positive number of steps, got {N}")
        self.theta, self.sigma_min, self.sigma_max, self.N = float(theta), float(sigma_min), float(sigma_max), int(N)
        self.logsig = math.log(self.sigma_max / self.sigma_min)

    @staticmethod
    def _b(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, 1, 1, 1)

    def sde(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift theta (y - x), diffusion g(t) (B,)) at state x (B, 1, F, N), time t (B,)."""
        drift = self.theta * (y - x)
        diffusion = self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2 * self.logsig)
        return drift, diffusion

    def mean(self, x0: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self._b(torch.exp(-self.theta * t)).to(x0.real.dtype if x0.is_complex() else x0.dtype)
        return a * x0 + (1 - a) * y

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """Closed-form std of the perturbation kernel at t (B,):
        ``sqrt(sigma_min^2 (e^{2 (theta + L) t} - 1) e^{-2 theta t} L / (theta + L))``, L = log(sigma_max/sigma_min)."""
        th, lg = self.theta, self.logsig
        return torch.sqrt(self.sigma_min ** 2 * torch.exp(-2 * th * t) * torch.expm1(2 * (th + lg) * t) * lg / (th + lg))

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (like x0), std (B,)) of p(x_t | x0, y)."""
        return self.mean(x0, t, y), self.std(t)

    def prior_sampling(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(y, std(1)^2 I): the noisy spectrogram plus circular complex noise."""
        std = self.std(torch.ones(y.shape[0], device=y.device, dtype=y.real.dtype))
        z = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
        return y + self._b(std) * z

    def reverse(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, score: torch.Tensor,
                probability_flow: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Reverse-time SDE: (drift ``f - g^2 score`` (halved for the probability-flow ODE), diffusion
        g(t), zero for the ODE)."""
        drift, g = self.sde(x, t, y)
        drift = drift - self._b(g) ** 2 * score * (0.5 if probability_flow else 1.0)
        return drift, torch.zeros_like(g) if probability_flow else g

    def __repr__(self) -> str:
        return f"OUVESDE(theta={self.theta}, sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"


def dsm_loss(score_fn: ScoreFn, sde: OUVESDE, x0: torch.Tensor, y: torch.Tensor, t_eps: float = 0.03,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching on complex spectrograms x0 (clean), y (noisy), (B, 1, F, N).

    ``t ~ U(t_eps, 1)``, ``x_t = mean(x0, t, y) + std(t) z``; the loss is
    ``mean_b 0.5 * sum |std(t) score_fn(x_t, t, y) + z|^2`` (the perturbation kernel's score is
    ``-z / std``). Returns a scalar.
    """
    _check_spec("dsm_loss", "x0", x0)
    _check_spec("dsm_loss", "y", y)
    if x0.shape != y.shape:
        raise InputError(f"dsm_loss: x0 {tuple(x0.shape)} and y {tuple(y.shape)} must have the same shape")
    if not 0 < t_eps < sde.T:
        raise InputError(f"dsm_loss: t_eps must lie in (0, {sde.T}), got {t_eps}")
    b = x0.shape[0]
    t = torch.rand(b, device=x0.device, generator=generator) * (sde.T - t_eps) + t_eps
    mean, std = sde.marginal_prob(x0, t, y)
    z = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
    sigma = std.reshape(-1, 1, 1, 1)
    score = score_fn(mean + sigma * z, t, y)
    err = score * sigma + z
    return (0.5 * err.abs().square().reshape(b, -1).sum(dim=1)).mean()


def _generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def _steps(op: str, steps, t_eps: float) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"{op}: steps must be a positive integer, got {steps!r}")
    if not 0 < t_eps < 1:
        raise InputError(f"{op}: t_eps must lie in (0, 1), got {t_eps}")
    return steps


def _bar(progress: bool, steps: int, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=desc, unit="step", dynamic_ncols=True, leave=False)


@torch.no_grad()
def pc_sampler(score_fn: ScoreFn, sde: OUVESDE, y: torch.Tensor, steps: int = 30, snr: float = 0.5,
               corrector_steps: int = 1, t_eps: float = 0.03, denoise: bool = True, seed: int | None = None,
               progress: bool = False, time_grid: str = "uniform") -> torch.Tensor:
    """Predictor-corrector sampling of the reverse SDE from ``x_T ~ N(y, std(1)^2)``.

    At each of ``steps`` times ``t_i = linspace(1, t_eps, steps)``: ``corrector_steps`` annealed
    Langevin steps (step size ``2 (snr std(t))^2``), then one reverse-diffusion predictor step
    ``x <- x - (f - g^2 score) dt + g sqrt(dt) z`` with ``dt = 1 / steps`` (``time_grid="uniform"``)
    or ``dt = t_i - t_{i+1}``, ``t_eps`` for the last step (``"sgmse"``, the SGMSE+ release's:
    the steps add up to 1).

    Args:
        score_fn: ``(x_t, t (B,), y) -> score`` on complex (B, 1, F, N) spectrograms.
        y: the noisy compressed spectrogram (B, 1, F, N).
        denoise: return the last noise-free mean rather than the last noisy sample.
        seed: seeds the sampler's own generator (same seed, same output); None uses the global RNG.
        progress: show a tqdm bar over the steps.
        time_grid: the predictor's step sizes, one of :data:`TIME_GRIDS`.

    Returns:
        the enhanced spectrogram, like ``y``.
    """
    _check_spec("pc_sampler", "y", y)
    steps = _steps("pc_sampler", steps, t_eps)
    if snr <= 0 or corrector_steps < 0:
        raise InputError(f"pc_sampler: need snr > 0 and corrector_steps >= 0, got {snr}, {corrector_steps}")
    if time_grid not in TIME_GRIDS:
        raise InputError(f"pc_sampler: time_grid must be one of {TIME_GRIDS}, got {time_grid!r}")
    g = _generator(seed, y.device)
    x = sde.prior_sampling(y, g)
    x_mean = x
    times = torch.linspace(sde.T, t_eps, steps, device=y.device)
    bar = _bar(progress, steps, "pc sampler")
    for i in range(steps):
        if time_grid == "uniform":
            dt = 1.0 / steps
        else:
            dt = float(times[i] - times[i + 1]) if i + 1 < steps else float(times[-1])
        t = times[i].expand(y.shape[0])
        std = sde.std(t).reshape(-1, 1, 1, 1)
        for _ in range(corrector_steps):
            step = 2 * (snr * std) ** 2
            x_mean = x + step * score_fn(x, t, y)
            x = x_mean + torch.sqrt(2 * step) * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=g)
        drift, diffusion = sde.reverse(x, t, y, score_fn(x, t, y))
        x_mean = x - drift * dt
        x = x_mean + diffusion.reshape(-1, 1, 1, 1) * math.sqrt(dt) * torch.randn(
            x.shape, dtype=x.dtype, device=x.device, generator=g)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x_mean if denoise else x


@torch.no_grad()
def ode_sampler(score_fn: ScoreFn, sde: OUVESDE, y: torch.Tensor, steps: int = 30, t_eps: float = 0.03,
                seed: int | None = None, progress: bool = False) -> torch.Tensor:
    """Probability-flow ODE ``dx = (f - g^2 score / 2) dt`` integrated from t = 1 to ``t_eps`` with
    ``steps`` Euler steps on ``linspace(1, t_eps, steps + 1)``; the only randomness is the prior draw
    (seeded by ``seed``). Arguments as :func:`pc_sampler`."""
    _check_spec("ode_sampler", "y", y)
    steps = _steps("ode_sampler", steps, t_eps)
    g = _generator(seed, y.device)
    x = sde.prior_sampling(y, g)
    times = torch.linspace(sde.T, t_eps, steps + 1, device=y.device)
    bar = _bar(progress, steps, "ode sampler")
    for i in range(steps):
        t = times[i].expand(y.shape[0])
        drift, _ = sde.reverse(x, t, y, score_fn(x, t, y), probability_flow=True)
        x = x - drift * float(times[i] - times[i + 1])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x


class SGMSE(nn.Module):
    """SGMSE+ on waveforms: a score network, the OUVE SDE and the compressed STFT.

    The network ``backbone(x_t, y, t, **cond)`` takes complex (B, 1, F, N) spectrograms and
    times (B,) and returns a complex (B, 1, F, N) output ``D``; the score is ``-D / std(t)`` (the
    network predicts the normalised noise; ``parametrisation="noise"``) or ``-D``
    (``"score"``: the released SGMSE+ models, whose network divides by t itself,
    :class:`~sepkit.models.ncsnpp.NCSNpp` with ``scale_by_time=True``). Its frame count must be a
    multiple of ``backbone.frame_multiple``: spectrograms are zero-padded at the end to the next
    multiple.

    Args:
        backbone: the score network (e.g. :class:`sepkit.models.ncsnpp.NCSNpp`).
        sde: the SDE (``OUVESDE()`` when None).
        representation: the STFT (``SpecRepresentation()`` when None).
        t_eps: smallest diffusion time in training and sampling (0.03).
        parametrisation: one of :data:`PARAMETRISATIONS` ("noise", sepkit's, for training from
            scratch; "score" for the released weights, :mod:`sepkit.models.sgmse_release`).
        time_grid: the predictor's step sizes, one of :data:`TIME_GRIDS` ("uniform", sepkit's;
            "sgmse" the release's), see :func:`pc_sampler`.

    Waveforms are peak-normalised by the noisy input (``y / max|y|``) before the STFT and scaled
    back after; sampling rate ``representation.sample_rate``.
    """

    def __init__(self, backbone: nn.Module, sde: OUVESDE | None = None,
                 representation: SpecRepresentation | None = None, t_eps: float = 0.03,
                 parametrisation: str = "noise", time_grid: str = "uniform"):
        super().__init__()
        if parametrisation not in PARAMETRISATIONS:
            raise InputError(f"SGMSE: parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")
        if time_grid not in TIME_GRIDS:
            raise InputError(f"SGMSE: time_grid must be one of {TIME_GRIDS}, got {time_grid!r}")
        self.parametrisation, self.time_grid = parametrisation, time_grid
        self.backbone = backbone
        self.sde = sde if sde is not None else OUVESDE()
        self.representation = representation if representation is not None else SpecRepresentation()
        if not 0 < t_eps < 1:
            raise InputError(f"SGMSE: t_eps must lie in (0, 1), got {t_eps}")
        self.t_eps = float(t_eps)

    @property
    def sample_rate(self) -> int:
        return self.representation.sample_rate

    def score(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **cond) -> torch.Tensor:
        """Score of p(x_t | y) at complex x (B, 1, F, N), t (B,), y like x."""
        out = self.backbone(x, y, t, **cond)
        if self.parametrisation == "score":
            return -out
        return -out / self.sde.std(t).reshape(-1, 1, 1, 1)

    def _pad(self, spec: torch.Tensor) -> torch.Tensor:
        m = int(getattr(self.backbone, "frame_multiple", 1))
        extra = (-spec.shape[-1]) % m
        return F.pad(spec, (0, extra)) if extra else spec

    def specs(self, noisy: torch.Tensor, clean: torch.Tensor | None = None):
        """(y, x0 or None, normalisation (B, 1)) spectrograms of peak-normalised waveforms (B, T),
        frames padded to the backbone's multiple."""
        _check_wave("SGMSE", "noisy", noisy)
        norm = noisy.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
        y = self._pad(self.representation(noisy / norm))
        x0 = None
        if clean is not None:
            _check_wave("SGMSE", "clean", clean)
            if clean.shape != noisy.shape:
                raise InputError(f"SGMSE: clean {tuple(clean.shape)} and noisy {tuple(noisy.shape)} must have the same shape")
            x0 = self._pad(self.representation(clean / norm))
        return y, x0, norm

    def conditioning(self, noisy: torch.Tensor, n_frames: int) -> dict:
        """Extra keyword arguments of the backbone computed once per utterance (none here; see
        :class:`sepkit.models.exdiff.ExDiff`)."""
        return {}

    def loss(self, clean: torch.Tensor, noisy: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising score-matching loss (scalar) of clean and noisy waveforms (B, T)."""
        y, x0, _ = self.specs(noisy, clean)
        cond = self.conditioning(noisy, y.shape[-1])
        return dsm_loss(lambda x, t, yy: self.score(x, t, yy, **cond), self.sde, x0, y, self.t_eps, generator)

    @torch.no_grad()
    def enhance(self, noisy: torch.Tensor, sampler: str = "pc", steps: int | None = None, snr: float = 0.5,
                corrector_steps: int = 1, seed: int | None = 0, progress: bool = False) -> torch.Tensor:
        """Enhance noisy waveforms (B, T) at ``sample_rate`` -> (B, T).

        ``sampler`` "pc" (predictor-corrector) or "ode" (probability flow); ``steps`` defaults to
        ``sde.N`` (30).
        """
        if sampler not in SAMPLERS:
            raise InputError(f"SGMSE.enhance: sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = self.sde.N if steps is None else steps
        y, _, norm = self.specs(noisy)
        cond = self.conditioning(noisy, y.shape[-1])

        def score_fn(x, t, yy):
            return self.score(x, t, yy, **cond)

        if sampler == "pc":
            x = pc_sampler(score_fn, self.sde, y, steps, snr, corrector_steps, self.t_eps, seed=seed, progress=progress,
                           time_grid=self.time_grid)
        else:
            x = ode_sampler(score_fn, self.sde, y, steps, self.t_eps, seed=seed, progress=progress)
        n = self.representation.frames(noisy.shape[-1])
        return self.representation.inverse(x[..., :n], noisy.shape[-1]) * norm
