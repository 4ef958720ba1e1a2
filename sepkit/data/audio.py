"""Audio files in and out: soundfile for reading and writing (WAV, FLAC), torchaudio's functional
resampler, and the checks every loader and command applies to a waveform.

Waveforms are float32 tensors: ``(time,)`` for mono, ``(channels, time)`` otherwise; amplitudes in
[-1, 1] full scale; sample rates in Hz.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sepkit.files import umask_mode

__all__ = [
    "AudioError",
    "audio_info",
    "read_audio",
    "write_audio",
    "resample",
    "check_waveform",
    "crop_window",
    "CroppedFiles",
]


from sepkit.errors import AudioError  # noqa: E402  (re-exported)

#: the audio files sepkit reads from folders
AUDIO_SUFFIXES = (".wav", ".flac")


def _soundfile():
    import soundfile

    return soundfile


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(sample_rate, channels, frames)`` of an audio file, without reading the samples."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    sf = _soundfile()
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"cannot read audio file {path}: {_one_line(exc)}") from None
    return int(info.samplerate), int(info.channels), int(info.frames)


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    channel: int | None = None,
    resample_to: int | None = None,
    start: int = 0,
    frames: int = -1,
    min_samples: int = 1,
) -> tuple[torch.Tensor, int]:
    """Read an audio file as float32.

    Args:
        path: the file (any format libsndfile reads: WAV, FLAC, ...).
        sample_rate: the rate the file must have; a different rate is an error (use
            ``resample_to`` to convert instead).
        mono: require a single channel and return shape ``(time,)``; a multi-channel file is an
            error unless ``channel`` picks one. With ``mono=False`` the shape is
            ``(channels, time)``.
        channel: index of the channel to keep from a multi-channel file.
        resample_to: resample to this rate (Hz) after reading.
        start, frames: read ``frames`` samples from sample ``start`` (``-1``: to the end).
        min_samples: fewer samples than this (after resampling) is an error; an empty file
            always is.

    Returns:
        ``(waveform, rate)``: waveform ``(time,)`` or ``(channels, time)``; ``rate`` is
        ``resample_to`` when given, else the file's rate.

    Raises:
        AudioError: missing or unreadable file, wrong rate or channel count, empty or too short,
            NaN or Inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    sf = _soundfile()
    try:
        data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"cannot read audio file {path}: {_one_line(exc)}") from None
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (channels, time)
    n_channels = wav.shape[0]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise AudioError(f"{path}: has {n_channels} channel(s), channel {channel} does not exist")
        wav = wav[channel : channel + 1]
    elif mono and n_channels != 1:
        raise AudioError(f"{path}: expected mono audio, got {n_channels} channels (choose one channel)")
    if mono:
        wav = wav[0]
    if resample_to is not None and resample_to != rate:
        wav = resample(wav, rate, resample_to)
        rate = resample_to
    check_waveform(wav, str(path), min_samples=min_samples)
    return wav.contiguous(), int(rate)


def write_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int, *, subtype: str | None = None) -> Path:
    """Write ``wav`` (``(time,)`` or ``(channels, time)``, float in [-1, 1]) atomically.

    The samples go to a temporary file in the same folder which then replaces ``path``
    (``os.replace``), so an interrupted write never leaves a truncated file. The format follows
    the suffix (``.wav``: 16-bit PCM unless ``subtype`` says otherwise, ``.flac``).
    """
    path = Path(path)
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float32).numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.T  # soundfile wants (time, channels)
    elif wav.ndim != 1:
        raise AudioError(f"{path}: cannot write a waveform of shape {tuple(wav.shape)}; expected (time,) or (channels, time)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: refusing to write NaN or Inf samples")
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported audio suffix {path.suffix!r} (use .wav or .flac)")
    if subtype is None:
        subtype = "PCM_16"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf = _soundfile()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, wav, int(sample_rate), subtype=subtype, format=fmt)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def crop_window(frames: int, rate: int, segment: float | None, random_crop: bool, seed: int, epoch: int,
                index: int) -> tuple[int, int]:
    """(start, count) of the crop of item ``index`` for a file of ``frames`` samples at ``rate``:
    the whole file ``(0, -1)`` without a ``segment`` (seconds), else ``segment`` seconds from the
    start, or from a position drawn uniformly, seeded by ``(seed, epoch, index)``, with
    ``random_crop``."""
    if segment is None:
        return 0, -1
    count = int(round(segment * rate))
    extra = frames - count
    if random_crop and extra > 0:
        return int(np.random.default_rng([seed, epoch, index]).integers(0, extra + 1)), count
    return 0, count


class CroppedFiles(torch.utils.data.Dataset):
    """A data set of the files ``names`` (one item each), cut to ``segment`` seconds (None: whole
    files) where :meth:`crop` says: :func:`crop_window`, so a position drawn from ``(seed, epoch,
    index)`` with ``random_crop``, else the start; :meth:`set_epoch` moves the crops. Subclasses
    set ``names``, ``segment``, ``random_crop``, ``seed`` and ``epoch`` (0) and define
    ``__getitem__``.
    """

    names: list[str]
    segment: float | None
    random_crop: bool
    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def crop(self, index: int, frames: int, rate: int) -> tuple[int, int]:
        """(start, count) in samples of item ``index``'s crop of a file of ``frames`` samples at
        ``rate`` Hz; ``(0, -1)`` (the whole file) without a ``segment``."""
        return crop_window(frames, rate, self.segment, self.random_crop, self.seed, self.epoch, index)


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (``torchaudio.functional.resample``, sinc
    interpolation with a Hann window). Returns ``wav`` itself when the rates agree."""
    if orig_rate == new_rate:
        return wav
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(f"cannot resample from {orig_rate} Hz to {new_rate} Hz")
    import torchaudio.functional as AF

    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return _resample_traced(wav, int(orig_rate), int(new_rate))
    return AF.resample(wav, int(orig_rate), int(new_rate))


def _resample_traced(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """:func:`resample` as ``torch.export`` traces it: the same filter and convolution, the
    output length ``ceil(T new / orig)`` in integer arithmetic (torchaudio computes it through a
    float tensor, which fixes the traced length)."""
    import math

    from torchaudio.functional.functional import _get_sinc_resample_kernel

    gcd = math.gcd(orig_rate, new_rate)
    kernel, width = _get_sinc_resample_kernel(orig_rate, new_rate, gcd, device=wav.device, dtype=wav.dtype)
    orig, new = orig_rate // gcd, new_rate // gcd
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1])
    length = flat.shape[-1]
    out = torch.nn.functional.conv1d(torch.nn.functional.pad(flat, (width, width + orig))[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[..., : -(-new * length // orig)]
    return out.reshape(*shape[:-1], out.shape[-1])


def check_waveform(wav: torch.Tensor, name: str = "waveform", *, min_samples: int = 1) -> None:
    """Raise :class:`AudioError` for an empty, too short or non-finite waveform (last axis is
    time)."""
    n = wav.shape[-1] if wav.ndim else 0
    if wav.numel() == 0 or n == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if n < min_samples:
        raise AudioError(f"{name}: audio too short ({n} samples, need at least {min_samples})")
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise AudioError(f"{name}: {bad} NaN or Inf sample(s)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
