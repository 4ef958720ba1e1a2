"""On-the-fly augmentation of separation and enhancement items: speed, room reverberation,
additive noise, gain; every draw deterministic in ``(seed, epoch, index)``.

A recipe turns it on with ``data.augment`` (training items only)::

    data:
      augment:
        reverb: image            # none | image (image-source rooms, pyroomacoustics) | rirs (rir_dir)
        rir_dir: null            # a folder of measured room impulse responses (.wav/.flac)
        reverb_prob: 1.0
        rt60_range: [0.2, 0.6]   # s, image rooms
        room_min: [3, 3, 2.5]    # m, image rooms (length, width, height)
        room_max: [10, 8, 4]
        max_order: 20            # image order cap (cost grows as its cube)
        early_ms: 50             # target: direct path + reflections within 50 ms; 0: direct path; null: all
        noise_dir: null          # a folder of noise recordings (WHAM!/DEMAND/MUSAN-like: any tree of files)
        noise_prob: 1.0
        snr_range: [0, 15]       # dB, noise under the reverberant speech
        speed_range: [1.0, 1.0]  # resampling factor (0.95-1.05 is usual); 1: off
        gain_range: [0, 0]       # dB applied to mixture and targets

Per item, in this order (each step drawn from one generator seeded by
``(seed, epoch, index)``):

1. **speed**: every signal resampled by the factor ``f`` (rounded to 0.01; tempo and pitch move
   together, as Kaldi's speed perturbation), then cut or zero-padded back to its length.
2. **reverberation**: each source gets its own room impulse response: for ``image``, a
   shoebox room of random size with an RT60 drawn from ``rt60_range`` (wall absorption from
   Sabine's formula, pyroomacoustics' image-source method), one microphone and the sources at
   random positions at least 0.5 m from the walls and from the microphone; for ``rirs``, a
   random file of ``rir_dir`` (first channel). The response is cut to start 1 ms before its
   direct path (its largest sample) and scaled so that the direct path has unit gain. The
   mixture gets the full reverberant images; the targets are the sources convolved with the
   first ``early_ms`` after the direct path (WHAMR!-style early-reverberation targets: 0 gives
   its direct-path "anechoic" targets, null the reverberant images themselves).
3. **noise**: a random excerpt of a random file of ``noise_dir`` (looped when shorter) at an
   SNR drawn from ``snr_range`` relative to the reverberant speech, added to the mixture. Noise
   already in the item (``mixture - sum(sources)``, e.g. LibriMix ``mix_both``) is kept.
4. **gain**: mixture and targets scaled by a gain drawn from ``gain_range``; then, if any
   signal peaks above 0.99, all are scaled down together.

Every file of ``rir_dir`` and ``noise_dir`` must be at ``data.sample_rate``; a missing or empty
folder, a file at another rate, a range upside down: :class:`~sepkit.errors.ConfigError`
naming the key, raised by :func:`check_augment` before any work.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sepkit.errors import AudioError, ConfigError

from .audio import audio_info, read_audio, resample

__all__ = ["AugmentSpec", "Augmented", "augment_spec", "check_augment", "AUDIO_SUFFIXES"]

AUDIO_SUFFIXES = (".wav", ".flac")
REVERB_KINDS = ("none", "image", "rirs")
_KEY = "data.augment"


@dataclass(frozen=True)
class AugmentSpec:
    """``data.augment`` (see the module docstring for every key)."""

    reverb: str = "none"
    rir_dir: str | None = None
    reverb_prob: float = 1.0
    rt60_range: tuple = (0.2, 0.6)
    room_min: tuple = (3.0, 3.0, 2.5)
    room_max: tuple = (10.0, 8.0, 4.0)
    max_order: int = 20
    early_ms: float | None = 50.0
    noise_dir: str | None = None
    noise_prob: float = 1.0
    snr_range: tuple = (0.0, 15.0)
    speed_range: tuple = (1.0, 1.0)
    gain_range: tuple = (0.0, 0.0)

    @property
    def enabled(self) -> bool:
        """Whether any step changes an item."""
        return (self.reverb != "none" or self.noise_dir is not None or tuple(self.speed_range) != (1.0, 1.0)
                or tuple(self.gain_range) != (0.0, 0.0))


def _number(key: str, value, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{_KEY}.{key}={value!r}: must be {'an integer' if integer else 'a number'}")
    return int(value) if integer else float(value)


def _pair(key: str, value, size: int = 2) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != size:
        raise ConfigError(f"{_KEY}.{key}={value!r}: must be a list of {size} numbers")
    return tuple(_number(key, v) for v in value)


def augment_spec(raw: dict | None) -> AugmentSpec:
    """``data.augment`` checked (types and ranges; folders are checked by :func:`check_augment`):
    a ConfigError names the key, the value and what is allowed."""
    raw = dict(raw or {})
    names = {f.name for f in dataclasses.fields(AugmentSpec)}
    bad = sorted(set(raw) - names)
    if bad:
        raise ConfigError(f"unknown key(s) {', '.join(f'{_KEY}.{b}' for b in bad)}; {_KEY} has {sorted(names)}")
    out = {}
    for key, value in raw.items():
        if key in ("rt60_range", "snr_range", "speed_range", "gain_range"):
            out[key] = _pair(key, value)
        elif key in ("room_min", "room_max"):
            out[key] = _pair(key, value, 3)
        elif key in ("reverb_prob", "noise_prob"):
            out[key] = _number(key, value)
        elif key == "max_order":
            out[key] = _number(key, value, integer=True)
        elif key == "early_ms":
            out[key] = None if value is None else _number(key, value)
        elif key in ("rir_dir", "noise_dir"):
            if value is not None and (not isinstance(value, (str, os.PathLike)) or str(value) == ""):
                raise ConfigError(f"{_KEY}.{key}={value!r}: must be a folder path or null")
            out[key] = None if value is None else str(value)
        elif key == "reverb":
            if value is None or value is False:
                value = "none"
            if value not in REVERB_KINDS:
                raise ConfigError(f"{_KEY}.reverb={value!r}: must be one of {', '.join(REVERB_KINDS)}")
            out[key] = value
    spec = AugmentSpec(**out)
    for key in ("rt60_range", "snr_range", "speed_range", "gain_range"):
        lo, hi = getattr(spec, key)
        if lo > hi:
            raise ConfigError(f"{_KEY}.{key}={[lo, hi]}: the range is upside down (low > high); give [low, high]")
    if spec.rt60_range[0] <= 0:
        raise ConfigError(f"{_KEY}.rt60_range={list(spec.rt60_range)}: must be > 0 seconds")
    if not (0.5 <= spec.speed_range[0] and spec.speed_range[1] <= 2.0):
        raise ConfigError(f"{_KEY}.speed_range={list(spec.speed_range)}: factors must lie in [0.5, 2]")
    for key in ("reverb_prob", "noise_prob"):
        if not 0 <= getattr(spec, key) <= 1:
            raise ConfigError(f"{_KEY}.{key}={getattr(spec, key)}: must be a probability in [0, 1]")
    if spec.max_order < 0:
        raise ConfigError(f"{_KEY}.max_order={spec.max_order}: must be >= 0")
    if spec.early_ms is not None and spec.early_ms < 0:
        raise ConfigError(f"{_KEY}.early_ms={spec.early_ms}: must be >= 0 ms, or null (reverberant targets)")
    if any(lo < 1.0 + 0.0 or lo > hi for lo, hi in zip(spec.room_min, spec.room_max)):
        raise ConfigError(f"{_KEY}.room_min={list(spec.room_min)}, room_max={list(spec.room_max)}: each side "
                          "must be >= 1 m and room_min <= room_max")
    if spec.reverb == "rirs" and spec.rir_dir is None:
        raise ConfigError(f"{_KEY}.reverb=rirs needs {_KEY}.rir_dir=FOLDER (measured room impulse responses)")
    if spec.rir_dir is not None and spec.reverb != "rirs":
        raise ConfigError(f"{_KEY}.rir_dir is set but {_KEY}.reverb={spec.reverb!r}; set {_KEY}.reverb=rirs to "
                          "use it")
    return spec


def _scan(key: str, folder: str, sample_rate: int) -> tuple[tuple[str, int, int], ...]:
    """(path, frames, channels) of every audio file under ``folder``, sorted by path, each
    checked to be at ``sample_rate``."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{_KEY}.{key}={folder!r}: folder not found")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not paths:
        raise ConfigError(f"{_KEY}.{key}={folder!r}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in it")
    files = []
    for p in paths:
        try:
            rate, channels, frames = audio_info(p)
        except AudioError as exc:
            raise ConfigError(f"{_KEY}.{key}: {exc}") from None
        if rate != sample_rate:
            raise ConfigError(f"{_KEY}.{key}: {p} is at {rate} Hz but data.sample_rate is {sample_rate} Hz; "
                              "resample the folder or choose one at that rate")
        if frames < 1:
            raise ConfigError(f"{_KEY}.{key}: {p} is empty (0 samples)")
        files.append((str(p), frames, channels))
    return tuple(files)


def _sabine(rt60: float, dims) -> tuple[float, int]:
    import pyroomacoustics as pra

    return pra.inverse_sabine(rt60, list(dims))


def check_augment(spec: AugmentSpec, sample_rate: int) -> dict:
    """Check what ``spec`` needs from the machine (ConfigError naming the key): the folders
    exist, hold audio files, all at ``sample_rate``; pyroomacoustics for ``reverb: image``, and
    every RT60 of the range reachable in the largest room. Returns ``{"rirs": files, "noises":
    files}`` (``(path, frames, channels)`` tuples)."""
    out = {"rirs": (), "noises": ()}
    if spec.reverb == "image":
        try:
            import pyroomacoustics  # noqa: F401
        except ImportError:
            raise ConfigError(f"{_KEY}.reverb=image needs pyroomacoustics (pip install 'sepkit[augment]'), or "
                              f"use measured responses: {_KEY}.reverb=rirs {_KEY}.rir_dir=FOLDER") from None
        try:
            _sabine(spec.rt60_range[0], spec.room_max)
        except ValueError:
            raise ConfigError(f"{_KEY}.rt60_range={list(spec.rt60_range)}: an RT60 of {spec.rt60_range[0]} s is "
                              f"not reachable in a room of {list(spec.room_max)} m (room_max); raise the RT60 or "
                              "make the rooms smaller") from None
    if spec.reverb == "rirs":
        out["rirs"] = _scan("rir_dir", spec.rir_dir, sample_rate)
    if spec.noise_dir is not None:
        out["noises"] = _scan("noise_dir", spec.noise_dir, sample_rate)
    return out


def _read(path: str, channels: int, start: int = 0, frames: int = -1) -> np.ndarray:
    wav, _ = read_audio(path, None, channel=0 if channels > 1 else None, start=start, frames=frames)
    return wav.double().numpy()


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` (..., T') cut or zero-padded to (..., n)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.concatenate([x, np.zeros(x.shape[:-1] + (n - x.shape[-1],))], -1)


class Augmented(torch.utils.data.Dataset):
    """``dataset``'s items (``mixture`` (T,), ``sources`` (S, T)) augmented as ``spec`` says
    (module docstring); other keys pass through unchanged.

    Args:
        dataset: a separation or enhancement data set.
        spec: :class:`AugmentSpec` (from :func:`augment_spec`).
        sample_rate: the items' rate (Hz); the folders' files must have it.
        seed: with the epoch (:meth:`set_epoch`) and the index, seeds every draw.
    """

    def __init__(self, dataset, spec: AugmentSpec, sample_rate: int, seed: int = 0):
        self.dataset, self.spec, self.sample_rate, self.seed = dataset, spec, int(sample_rate), seed
        files = check_augment(spec, self.sample_rate)
        self.rirs, self.noises = files["rirs"], files["noises"]
        self.n_src = getattr(dataset, "n_src", None)
        self.epoch = 0
        self._rir_cache: dict[int, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, 0xA06])

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        if "sources" not in item or "mixture" not in item:
            raise ConfigError(f"{_KEY}: items of this data set have no mixture and sources to augment "
                              f"(keys {sorted(item)})")
        mixture, sources = self.apply(item["mixture"], item["sources"], self.rng(index))
        item["mixture"], item["sources"] = mixture, sources
        return item

    # -- the steps ---------------------------------------------------------------------------
    def apply(self, mixture: torch.Tensor, sources: torch.Tensor, rng: np.random.Generator):
        """Augmented ``(mixture (T,), sources (S, T))`` float32, same length T."""
        spec = self.spec
        T = mixture.shape[-1]
        src = sources.double().numpy().copy()
        residual = mixture.double().numpy() - src.sum(0)
        lo, hi = spec.speed_range
        if (lo, hi) != (1.0, 1.0):
            factor = round(float(rng.uniform(lo, hi)), 2)
            if factor != 1.0:
                signals = torch.from_numpy(np.concatenate([src, residual[None]]))
                sped = resample(signals, int(round(factor * 100)), 100).numpy()
                sped = _fit(sped, T)
                src, residual = sped[:-1], sped[-1]
        images, targets = src, src
        if spec.reverb != "none" and rng.random() < spec.reverb_prob:
            from scipy.signal import fftconvolve

            rirs = self._room(src.shape[0], rng) if spec.reverb == "image" else [
                self._measured(int(rng.integers(len(self.rirs)))) for _ in range(src.shape[0])]
            images, targets = np.zeros_like(src), np.zeros_like(src)
            for j, (full, early) in enumerate(rirs):
                images[j] = fftconvolve(src[j], full)[:T]
                targets[j] = fftconvolve(src[j], early)[:T]
        speech = images.sum(0)
        mix = speech + residual
        if self.noises and rng.random() < spec.noise_prob:
            noise = self._noise(int(rng.integers(len(self.noises))), T, rng)
            snr = float(rng.uniform(*spec.snr_range))
            noise_rms = np.sqrt(np.mean(noise**2))
            speech_rms = np.sqrt(np.mean(speech**2))
            if noise_rms > 0 and speech_rms > 0:
                mix = mix + noise * (speech_rms / noise_rms * 10 ** (-snr / 20))
        lo, hi = spec.gain_range
        gain = 10 ** (float(rng.uniform(lo, hi)) / 20) if (lo, hi) != (0.0, 0.0) else 1.0
        mix, targets = mix * gain, targets * gain
        peak = max(np.abs(mix).max(initial=0.0), np.abs(targets).max(initial=0.0))
        if peak > 0.99:
            mix, targets = mix * (0.99 / peak), targets * (0.99 / peak)
        return torch.from_numpy(mix.astype(np.float32)), torch.from_numpy(targets.astype(np.float32))

    def _shaped(self, rir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(full, early) responses: cut 1 ms before the direct path (the largest sample), scaled
        to a unit direct path; early: up to ``early_ms`` after it."""
        direct = int(np.argmax(np.abs(rir)))
        start = max(0, direct - int(0.001 * self.sample_rate))
        rir = rir[start:] / abs(rir[direct])
        if self.spec.early_ms is None:
            return rir, rir
        end = direct - start + int(round(self.spec.early_ms * self.sample_rate / 1000)) + 1
        return rir, rir[:end]

    def _measured(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._rir_cache:
            if len(self._rir_cache) >= 256:
                self._rir_cache.pop(next(iter(self._rir_cache)))
            path, _, channels = self.rirs[k]
            rir = _read(path, channels)
            if not np.any(rir):
                raise AudioError(f"{path}: a room impulse response of zeros")
            self._rir_cache[k] = rir
        return self._shaped(self._rir_cache[k])

    def _room(self, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """One image-source shoebox room: a microphone and ``n`` sources, their responses."""
        import pyroomacoustics as pra

        spec = self.spec
        dims = rng.uniform(spec.room_min, spec.room_max)
        rt60 = float(rng.uniform(*spec.rt60_range))
        try:
            absorption, order = _sabine(rt60, dims)
        except ValueError:  # too reverberant a request for this room: its most absorbing walls
            absorption, order = 0.99, 0
        margin = np.minimum(0.5, dims / 4)

        def position():
            return rng.uniform(margin, dims - margin)

        mic = position()
        room = pra.ShoeBox(list(dims), fs=self.sample_rate, materials=pra.Material(float(absorption)),
                           max_order=int(min(order, spec.max_order)))
        for _ in range(n):
            for _ in range(20):  # at least 0.5 m from the microphone
                where = position()
                if np.linalg.norm(where - mic) >= 0.5:
                    break
            room.add_source(list(where))
        room.add_microphone(list(mic))
        room.compute_rir()
        return [self._shaped(np.asarray(room.rir[0][j], dtype=np.float64)) for j in range(n)]

    def _noise(self, k: int, T: int, rng: np.random.Generator) -> np.ndarray:
        path, frames, channels = self.noises[k]
        if frames >= T:
            start = int(rng.integers(0, frames - T + 1))
            return _read(path, channels, start, T)
        noise = _read(path, channels)
        return np.tile(noise, -(-T // len(noise)))[:T]
