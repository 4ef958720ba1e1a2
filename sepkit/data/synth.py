"""Synthetic speech-like sources and mixtures: the embedded default data set.

Each source is a source-filter "utterance": syllables made of an optional consonant onset
(fricative noise, plosive closure + burst + aspiration, or a voiced nasal), a voiced vowel nucleus
and an optional coda, separated by occasional pauses. Voiced parts are a sum of harmonics of a
moving f0 (phrase declination, syllable accents, slight vibrato), each harmonic weighted by a
cascade of four formant resonances that glide between vowel targets and by a glottal spectral
tilt; aspiration noise rides on the voicing. Syllable-rate amplitude envelopes (raised-cosine
attacks and decays, random stress) shape the whole.

Speakers differ by mean f0 and its range (roughly 85-150 Hz and 165-255 Hz, the usual adult
ranges), formant scaling (vocal-tract length), speaking rate, breathiness and spectral tilt, so a
separator has to learn the same cues it uses on real speech: harmonicity, continuity of f0 and
formants, onsets.

Mixtures sum ``n_src`` sources from distinct speakers at random relative levels (SIR, dB),
optionally with stationary coloured noise at a random SNR and synthetic reverberation
(exponentially decaying noise tails after a direct path and sparse early reflections; the
reverberant images are the targets, so ``mixture == sum(sources) + noise`` always holds).
Everything is deterministic given ``(seed, split, index)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sepkit.errors import InputError

__all__ = [
    "Speaker",
    "make_speakers",
    "synth_utterance",
    "synth_noise",
    "synth_rir",
    "MixtureSpec",
    "synth_mixture",
    "mix_utterances",
    "SyntheticMixtures",
    "SeededDataset",
    "split_code",
]

# Vowel formant targets F1..F3 (Hz) of an adult male voice (Peterson & Barney style averages);
# F4 is set per speaker. Speakers scale all of them.
_VOWELS = np.array(
    [
        [270, 2290, 3010],  # i
        [390, 1990, 2550],  # I
        [530, 1840, 2480],  # e
        [660, 1720, 2410],  # ae
        [730, 1090, 2440],  # a
        [570, 840, 2410],   # o (open)
        [440, 1020, 2240],  # U
        [300, 870, 2240],   # u
        [640, 1190, 2390],  # ^
        [490, 1350, 1690],  # er
    ],
    dtype=np.float64,
)
_NASAL = np.array([250.0, 1100.0, 2300.0])
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])
_FRAME_RATE = 200  # control tracks, frames per second (5 ms)


@dataclass(frozen=True)
class Speaker:
    """Voice parameters of one synthetic speaker.

    Attributes:
        id: speaker name, e.g. ``"0012"``.
        f0: mean fundamental frequency (Hz).
        f0_range: f0 excursion (semitones) of accents and declination.
        formant_scale: multiplies every formant frequency (vocal-tract length; ~1.15 for women).
        rate: syllables per second.
        breathiness: aspiration noise level relative to voicing.
        tilt: glottal source slope, harmonic ``k`` has amplitude ``k ** -tilt``.
    """

    id: str
    f0: float
    f0_range: float
    formant_scale: float
    rate: float
    breathiness: float
    tilt: float


def split_code(split: str) -> int:
    """A stable integer for a split name, used in seeds (``hash()`` is salted per process)."""
    return int.from_bytes(split.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)


def make_speakers(n: int, seed: int, split: str = "train") -> list[Speaker]:
    """``n`` speakers drawn deterministically from ``(seed, split)``: half low voices (f0 85-150 Hz,
    formant scale 0.88-1.02), half high voices (f0 165-255 Hz, scale 1.06-1.22), in random order.
    Different splits get disjoint speaker sets (different draws)."""
    if n < 1:
        raise InputError(f"make_speakers: need at least one speaker, got {n}")
    rng = np.random.default_rng([seed, split_code(split), 0x5BEA])
    speakers = []
    for i in range(n):
        high = (i % 2 == 1) if n > 1 else bool(rng.integers(2))
        if high:
            f0 = rng.uniform(165, 255)
            scale = rng.uniform(1.06, 1.22)
        else:
            f0 = rng.uniform(85, 150)
            scale = rng.uniform(0.88, 1.02)
        speakers.append(
            Speaker(
                id=f"{split[:2]}{i:04d}",
                f0=float(f0),
                f0_range=float(rng.uniform(2.0, 7.0)),
                formant_scale=float(scale),
                rate=float(rng.uniform(3.5, 6.0)),
                breathiness=float(rng.uniform(0.02, 0.15)),
                tilt=float(rng.uniform(0.8, 1.6)),
            )
        )
    order = rng.permutation(n)
    return [speakers[j] for j in order]


def _raised_cosine(n: int, attack: int, decay: int) -> np.ndarray:
    env = np.ones(n)
    attack = min(attack, n // 2)
    decay = min(decay, n - attack)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if decay > 0:
        env[n - decay :] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(decay) + 1) / decay)
    return env


def _bandpass_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sample_rate: int) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz by zeroing FFT bins (smooth 10% skirts)."""
    if n <= 0:
        return np.zeros(0)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    hi = min(hi, 0.49 * sample_rate)
    lo = min(lo, 0.8 * hi)
    skirt = 0.1 * (hi - lo) + 1.0
    gain = np.clip((freqs - lo) / skirt + 1, 0, 1) * np.clip((hi - freqs) / skirt + 1, 0, 1)
    out = np.fft.irfft(spec * gain, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along the last axis (edges padded with the end values)."""
    if width <= 1:
        return x
    pad = width // 2
    xp = np.concatenate([np.repeat(x[..., :1], pad, -1), x, np.repeat(x[..., -1:], width - 1 - pad, -1)], -1)
    c = np.cumsum(xp, axis=-1)
    c = np.concatenate([np.zeros_like(c[..., :1]), c], -1)
    return (c[..., width:] - c[..., :-width]) / width


def _pulse_train(f0: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Band-limited unit pulses (Hann-windowed sinc, 16 taps, fractional positions) at the
    epochs where the running phase of ``f0`` (Hz per sample, shape ``(T,)``) crosses an
    integer."""
    T = f0.shape[0]
    phase = np.cumsum(f0) / sample_rate + rng.uniform(0, 1)
    n_pulses = int(phase[-1])
    if n_pulses < 1:
        return np.zeros(T)
    targets = np.arange(1, n_pulses + 1, dtype=np.float64)
    idx = np.searchsorted(phase, targets)  # first sample at or after the crossing
    idx = np.clip(idx, 1, T - 1)
    prev = phase[idx - 1]
    where = idx - 1 + (targets - prev) / np.maximum(phase[idx] - prev, 1e-12)  # fractional epoch
    base = np.floor(where).astype(np.int64)
    taps = np.arange(-7, 9)
    n = base[:, None] + taps[None, :]
    x = n - where[:, None]
    kernel = np.sinc(0.9 * x) * (0.5 + 0.5 * np.cos(np.pi * x / 8.5))
    out = np.zeros(T + 32)
    np.add.at(out, np.clip(n + 16, 0, T + 31).ravel(), kernel.ravel())
    return out[16 : T + 16]


def _stft_filter(x: np.ndarray, gain: np.ndarray, hop: int, win: int, nfft: int) -> np.ndarray:
    """Filter ``x`` ``(T,)`` with a gain that changes every ``hop`` samples: ``gain[f]`` ``(bins,)``
    applies to the frame centred on sample ``f * hop`` (Hann analysis and synthesis windows,
    weighted overlap-add normalized by the summed squared window)."""
    T = x.shape[0]
    n_frames = gain.shape[0]
    pad = np.zeros(n_frames * hop + win)
    pad[win // 2 : win // 2 + T] = x
    window = np.hanning(win + 2)[1:-1]
    starts = np.arange(n_frames) * hop
    frames = pad[starts[:, None] + np.arange(win)[None, :]] * window
    spec = np.fft.rfft(frames, nfft, axis=1) * gain
    out_frames = np.fft.irfft(spec, nfft, axis=1)[:, :win] * window
    out = np.zeros_like(pad)
    norm = np.zeros_like(pad)
    for j in range(4 if hop * 4 == win else win // hop):
        sel = slice(j, n_frames, win // hop)
        s = starts[sel]
        out[(s[:, None] + np.arange(win)[None, :]).ravel()] += out_frames[sel].ravel()
        norm[(s[:, None] + np.arange(win)[None, :]).ravel()] += np.tile(window**2, len(s))
    out = out / np.maximum(norm, 1e-3)
    return out[win // 2 : win // 2 + T]


def synth_utterance(speaker: Speaker, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One speech-like utterance of exactly ``num_samples`` samples at ``sample_rate`` Hz.

    Returns a float64 array of shape ``(num_samples,)`` with RMS 0.05 over its active part
    (about -26 dBFS), near-silence (a noise floor 60 dB down) before, between phrases and
    after.
    """
    if num_samples < 1:
        raise InputError(f"synth_utterance: num_samples must be positive, got {num_samples}")
    sr = sample_rate
    hop = sr // _FRAME_RATE
    n_frames = num_samples // hop + 2
    fs = speaker.formant_scale

    # Control tracks at 200 frames/s.
    voice = np.zeros(n_frames)  # voicing amplitude
    formants = np.zeros((4, n_frames))
    formants[:] = (np.array([500.0, 1500.0, 2500.0, 3500.0]) * fs)[:, None]
    accent = np.zeros(n_frames)  # semitones
    noise = np.zeros(num_samples)  # consonant noise, already shaped

    def frames(sec: float) -> int:
        return max(1, int(round(sec * _FRAME_RATE)))

    t = frames(rng.uniform(0.05, 0.3))  # leading silence
    end = n_frames - frames(rng.uniform(0.05, 0.2))
    prev_vowel = _VOWELS[rng.integers(len(_VOWELS))]
    syllable_len = 1.0 / speaker.rate
    while t < end - frames(0.08):
        stress = 10 ** (rng.uniform(-8, 0) / 20)
        accent_here = rng.uniform(-0.5, 0.5) * speaker.f0_range
        # Onset consonant.
        kind = rng.choice(["none", "fricative", "plosive", "nasal"], p=[0.3, 0.3, 0.25, 0.15])
        if kind in ("fricative", "plosive"):
            if kind == "fricative":
                dur = frames(rng.uniform(0.06, 0.14) * (4.5 / speaker.rate) ** 0.5)
                band = [(0.55, 0.95), (0.3, 0.5), (0.1, 0.9)][rng.integers(3)]
                level = rng.uniform(0.1, 0.4)
            else:
                t += frames(rng.uniform(0.03, 0.06))  # closure: silence
                dur = frames(rng.uniform(0.015, 0.05))
                band = (0.05, 0.95)
                level = rng.uniform(0.2, 0.5)
            s0, s1 = t * hop, min((t + dur) * hop, num_samples)
            if s1 > s0:
                n = s1 - s0
                nyq = sr / 2
                burst = _bandpass_noise(rng, n, band[0] * nyq, band[1] * nyq, sr)
                if kind == "plosive":
                    env = np.exp(-np.arange(n) / (0.35 * n))
                else:
                    env = _raised_cosine(n, n // 3, n // 3)
                noise[s0:s1] += level * stress * burst * env
            t += dur
        elif kind == "nasal":
            dur = frames(rng.uniform(0.04, 0.08))
            sl = slice(t, min(t + dur, n_frames))
            voice[sl] = 0.3 * stress
            formants[:3, sl] = (_NASAL * fs)[:, None]
            formants[3, sl] = 3300 * fs
            accent[sl] = accent_here
            t += dur
        if t >= end:
            break
        # Vowel nucleus, gliding from the previous vowel's formants to the new target.
        vowel = _VOWELS[rng.integers(len(_VOWELS))]
        dur = frames(max(0.06, rng.normal(0.6, 0.15) * syllable_len))
        sl = slice(t, min(t + dur, n_frames))
        m = sl.stop - sl.start
        glide = np.clip(np.arange(m) / max(1, min(m, frames(0.04))), 0, 1)
        jitter = rng.uniform(0.92, 1.08, size=3)
        target = vowel * jitter
        formants[:3, sl] = ((prev_vowel + (target - prev_vowel) * glide[:, None]).T) * fs
        formants[3, sl] = rng.uniform(3300, 3700) * fs
        env = _raised_cosine(m, frames(0.025), frames(0.04))
        voice[sl] = np.maximum(voice[sl], stress * env)
        accent[sl] = accent_here + np.linspace(0, rng.uniform(-1, 1), m)
        prev_vowel = target
        t += dur
        # Coda: short fricative tail or nothing.
        if rng.random() < 0.25 and t < end:
            dur = frames(rng.uniform(0.04, 0.1))
            s0, s1 = t * hop, min((t + dur) * hop, num_samples)
            if s1 > s0:
                n = s1 - s0
                nyq = sr / 2
                noise[s0:s1] += rng.uniform(0.05, 0.25) * stress * _bandpass_noise(rng, n, 0.5 * nyq, 0.95 * nyq, sr) * _raised_cosine(n, n // 4, n // 2)
            t += dur
        # Pause between phrases, or a short gap between syllables.
        if rng.random() < 0.12:
            t += frames(rng.uniform(0.15, 0.5))
        else:
            t += frames(rng.uniform(0.0, 0.03))

    # f0 track (Hz): declination over the utterance + smoothed accents + vibrato.
    time_f = np.arange(n_frames) / _FRAME_RATE
    decl = np.linspace(0.5, -0.5, n_frames) * 0.5 * speaker.f0_range
    semis = decl + _smooth(accent, frames(0.06)) + 0.15 * np.sin(2 * np.pi * rng.uniform(4, 6) * time_f)
    f0 = speaker.f0 * 2.0 ** (semis / 12)
    formants = _smooth(formants, 3)
    voice = _smooth(voice, 2)

    # Upsample control tracks to samples (linear interpolation).
    pos = np.arange(num_samples) / hop
    i0 = np.minimum(pos.astype(np.int64), n_frames - 2)
    frac = pos - i0
    f0_s = f0[i0] * (1 - frac) + f0[i0 + 1] * frac
    voice_s = voice[i0] * (1 - frac) + voice[i0 + 1] * frac

    # Glottal excitation: band-limited pulses at the pitch epochs (a flat harmonic comb that
    # follows f0), plus aspiration noise.
    excitation = _pulse_train(f0_s, sr, rng)
    excitation /= np.sqrt(np.mean(excitation**2)) + 1e-12
    excitation += speaker.breathiness * rng.standard_normal(num_samples)

    # Vocal tract: time-varying filtering in the STFT domain (window 4 frames, hop 1 frame) by
    # the cascade of four formant resonances times the glottal spectral tilt.
    win = 4 * hop
    nfft = 2 * win
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)[None, :]  # (1, bins)
    gain = (np.maximum(freqs, f0[:, None]) / f0[:, None]) ** (-speaker.tilt)  # (frames, bins)
    for i in range(4):
        F = formants[i][:, None]
        B = _BANDWIDTHS[i] * (fs if i else 1.0)
        gain = gain * (F * F) / np.sqrt((F * F - freqs * freqs) ** 2 + (B * freqs) ** 2)
    gain = gain * np.clip((0.47 * sr - freqs) / (0.03 * sr), 0, 1)
    voiced = _stft_filter(excitation, gain, hop, win, nfft)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
    out = voiced * voice_s + noise

    active = np.abs(out) > 1e-4 * (np.abs(out).max() + 1e-12)
    rms = np.sqrt(np.mean(out[active] ** 2)) if active.any() else 0.0
    if rms > 0:
        out *= 0.05 / rms
    out += 0.05 * 1e-3 * rng.standard_normal(num_samples)  # recording noise floor, -60 dB
    return out


def synth_noise(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary coloured noise (spectral slope between white and brown, plus a random
    low-frequency hump like room rumble or a fan), unit RMS, shape ``(num_samples,)``."""
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    slope = rng.uniform(0.0, 2.0)  # power ~ 1 / f**slope
    shape = (np.maximum(freqs, 20.0) / 1000.0) ** (-slope / 2)
    hump_f = rng.uniform(100, 600)
    shape += rng.uniform(0, 3) * np.exp(-0.5 * ((freqs - hump_f) / (0.3 * hump_f)) ** 2)
    out = np.fft.irfft(spec * shape, num_samples)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def synth_rir(sample_rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: unit direct path, a few sparse early reflections in
    the first 50 ms, then a Gaussian-noise tail decaying by 60 dB in ``rt60`` seconds whose
    energy sits 0 to 10 dB below the direct path (direct-to-reverberant ratio)."""
    n = max(2, int(1.2 * rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.005 * sample_rate) + 1] = 0.0
    tail *= 10 ** (-rng.uniform(0.0, 10.0) / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    rir = tail
    for _ in range(int(rng.integers(3, 8))):
        d = int(rng.integers(int(0.002 * sample_rate) + 1, int(0.05 * sample_rate) + 2))
        if d < n:
            rir[d] += rng.uniform(-0.5, 0.5)
    rir[0] = 1.0
    return rir


@dataclass(frozen=True)
class MixtureSpec:
    """How synthetic mixtures are drawn.

    Attributes:
        sample_rate: Hz (8000 or 16000 are the usual).
        n_src: speakers per mixture.
        min_duration, max_duration: utterance length range (seconds).
        mode: ``"min"`` (mixture as long as the shortest utterance) or ``"max"`` (the longest,
            shorter ones zero-padded), as in LibriMix / WSJ0-2mix.
        sir_range: level of each source relative to the first (dB), uniform.
        noise: add coloured noise; ``snr_range`` its level under the speech sum (dB).
        reverb: convolve each source with its own synthetic RIR, ``rt60_range`` seconds.
    """

    sample_rate: int = 8000
    n_src: int = 2
    min_duration: float = 3.0
    max_duration: float = 6.0
    mode: str = "min"
    sir_range: tuple[float, float] = (-5.0, 5.0)
    noise: bool = False
    snr_range: tuple[float, float] = (0.0, 15.0)
    reverb: bool = False
    rt60_range: tuple[float, float] = (0.2, 0.6)

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise InputError(f"MixtureSpec: mode must be 'min' or 'max', got {self.mode!r}")
        if self.n_src < 1:
            raise InputError(f"MixtureSpec: n_src must be at least 1, got {self.n_src}")
        if not 0 < self.min_duration <= self.max_duration:
            raise InputError(f"MixtureSpec: need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if self.sample_rate < 1000:
            raise InputError(f"MixtureSpec: sample_rate {self.sample_rate} Hz is too low")


def synth_mixture(spec: MixtureSpec, speakers: list[Speaker], rng: np.random.Generator) -> dict:
    """Draw one mixture of synthetic utterances (:func:`mix_utterances` with
    :func:`synth_utterance`).

    Returns a dict with ``mixture`` ``(T,)``, ``sources`` ``(n_src, T)``, ``noise`` ``(T,)`` or
    None (float32 arrays, ``mixture == sources.sum(0) + noise``, peak at most 0.9),
    ``speakers`` (ids), ``gains_db`` (per source), ``snr_db`` and ``rt60`` (None when off).
    """
    if len(speakers) < spec.n_src:
        raise InputError(f"synth_mixture: need {spec.n_src} distinct speakers, only {len(speakers)} given")
    return mix_utterances(spec, [s.id for s in speakers],
                          lambda s, n, r: synth_utterance(speakers[s], n, spec.sample_rate, r), rng)


def mix_utterances(spec: MixtureSpec, speakers: list[str], utterance, rng: np.random.Generator) -> dict:
    """Draw one mixture of ``spec.n_src`` distinct speakers out of ``speakers`` (ids), their
    utterances made by ``utterance(speaker_index, num_samples, rng)`` (a float array
    ``(num_samples,)`` at ``spec.sample_rate``): lengths in the duration range, levels (SIR),
    reverberation and noise as ``spec`` says. Returns the record of :func:`synth_mixture`."""
    if len(speakers) < spec.n_src:
        raise InputError(f"mix_utterances: need {spec.n_src} distinct speakers, only {len(speakers)} given")
    sr = spec.sample_rate
    who = rng.choice(len(speakers), size=spec.n_src, replace=False)
    lengths = [int(rng.uniform(spec.min_duration, spec.max_duration) * sr) for _ in who]
    T = min(lengths) if spec.mode == "min" else max(lengths)
    sources = np.zeros((spec.n_src, T))
    gains = [0.0] + [float(rng.uniform(*spec.sir_range)) for _ in range(spec.n_src - 1)]
    rt60 = None
    for j, (s, n) in enumerate(zip(who, lengths)):
        utt = utterance(int(s), n, rng)
        if spec.reverb:
            rt60 = float(rng.uniform(*spec.rt60_range))
            from scipy.signal import fftconvolve

            utt = fftconvolve(utt, synth_rir(sr, rt60, rng))[:n]
        m = min(n, T)
        sources[j, :m] = utt[:m] * 10 ** (gains[j] / 20)
    speech = sources.sum(0)
    noise = None
    snr = None
    if spec.noise:
        snr = float(rng.uniform(*spec.snr_range))
        noise = synth_noise(T, sr, rng)
        speech_rms = np.sqrt(np.mean(speech**2)) + 1e-12
        noise *= speech_rms * 10 ** (-snr / 20)
    mixture = speech + (noise if noise is not None else 0.0)
    peak = max(np.abs(mixture).max(), np.abs(sources).max(), np.abs(noise).max() if noise is not None else 0.0)
    if peak > 0.9:
        scale = 0.9 / peak
        mixture, sources = mixture * scale, sources * scale
        if noise is not None:
            noise = noise * scale
    return {
        "mixture": mixture.astype(np.float32),
        "sources": sources.astype(np.float32),
        "noise": None if noise is None else noise.astype(np.float32),
        "speakers": [speakers[s] for s in who],
        "gains_db": gains,
        "snr_db": snr,
        "rt60": rt60,
    }


class SeededDataset(torch.utils.data.Dataset):
    """A data set of ``num_examples`` items drawn on the fly, each from its own seeded generator.

    Item ``index`` draws from :meth:`rng`, ``np.random.default_rng([seed, split_code(split),
    index])``; with ``dynamic_mixing`` the key also holds ``epoch + 1``, so every epoch
    (:meth:`set_epoch`) draws anew, otherwise item ``index`` is the same every epoch. Subclasses
    set ``num_examples``, ``seed``, ``split``, ``dynamic_mixing`` and ``epoch`` (0) and define
    ``__getitem__``.
    """

    num_examples: int
    seed: int
    split: str
    dynamic_mixing: bool
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def rng(self, index: int) -> np.random.Generator:
        key = [self.seed, split_code(self.split), index]
        if self.dynamic_mixing:
            key.append(self.epoch + 1)
        return np.random.default_rng(key)


class SyntheticMixtures(SeededDataset):
    """Synthetic mixtures generated on the fly, deterministic by ``(seed, split, index)``.

    Items are dicts: ``mixture`` ``(T,)``, ``sources`` ``(n_src, T)`` float32 tensors and ``id``.
    With ``dynamic_mixing`` a fresh mixture is drawn for every ``(epoch, index)`` (call
    :meth:`set_epoch`); otherwise item ``i`` is the same every epoch.

    Args:
        num_examples: length of the data set.
        spec: :class:`MixtureSpec`.
        split: split name; different splits use disjoint speaker sets.
        num_speakers: size of the split's speaker pool.
        seed: base seed.
        noisy_target: with ``spec.noise``: the returned mixture includes noise (always true; kept
            for symmetry with LibriMix ``mix_both``).
    """

    def __init__(self, num_examples: int, spec: MixtureSpec, split: str = "train", num_speakers: int = 100, seed: int = 0, dynamic_mixing: bool = False):
        if num_examples < 1:
            raise InputError(f"SyntheticMixtures: num_examples must be positive, got {num_examples}")
        self.num_examples = num_examples
        self.spec = spec
        self.split = split
        self.seed = seed
        self.dynamic_mixing = dynamic_mixing
        self.speakers = make_speakers(max(num_speakers, spec.n_src), seed, split)
        self.sample_rate = spec.sample_rate
        self.n_src = spec.n_src
        self.epoch = 0

    def draw(self, index: int) -> dict:
        """The full :func:`synth_mixture` record of item ``index``."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"SyntheticMixtures: index {index} out of range for {self.num_examples} examples")
        return synth_mixture(self.spec, self.speakers, self.rng(index))

    def __getitem__(self, index: int) -> dict:
        rec = self.draw(index)
        return {
            "mixture": torch.from_numpy(rec["mixture"]),
            "sources": torch.from_numpy(rec["sources"]),
            "id": f"{self.split}-{index:06d}",
        }
