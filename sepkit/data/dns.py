"""DNS-Challenge-style enhancement data: clean speech and noise folders mixed on the fly, and the
synthesized test-set layout.

Training layout (any folder names; every ``.wav``/``.flac`` below the folder, sorted)::

    clean/  *.wav        clean speech
    noise/  *.wav        noise

:class:`DNSMixtures` draws item ``i`` from clean file ``i mod n_clean``: a random segment of it, a
random noise file (looped when shorter, randomly cropped), mixed at an SNR uniform in
``snr_range`` dB (the DNS Challenge's [-5, 5] by default; a fixed SNR with ``(s, s)``). Every draw
is seeded by ``(seed, split, index)`` (and the epoch with ``dynamic_mixing``), so items are
deterministic.

Test layout (the DNS Challenge's synthesized test set)::

    noisy/  <anything>fileid_<N>.wav
    clean/  <anything>fileid_<N>.wav

:class:`DNSTestSet` pairs the two folders by file id. Items of both are dicts with ``mixture``
noisy (T,), ``sources`` clean (1, T) float32 tensors and an ``id``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from sepkit.errors import InputError

from .audio import AudioError, audio_info, read_audio, write_audio
from .synth import SeededDataset, make_speakers, synth_noise, synth_utterance

__all__ = ["DNSMixtures", "DNSTestSet", "mix_at_snr", "write_synthetic_dns"]

_AUDIO = (".wav", ".flac")
_FILEID = re.compile(r"fileid_(\d+)")


def _audio_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _AUDIO and p.is_file())
    if not files:
        raise FileNotFoundError(f"{what} folder {folder} has no .wav or .flac files")
    return files


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: float, peak: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, clean)`` with the noise scaled to ``snr_db`` under the clean speech's power, both
    scaled down together if the noisy peak would exceed ``peak``. Tensors (T,)."""
    p_clean = clean.double().pow(2).mean()
    p_noise = noise.double().pow(2).mean().clamp_min(1e-20)
    gain = torch.sqrt(p_clean.clamp_min(1e-20) / p_noise * 10 ** (-snr_db / 10)).float()
    noisy = clean + gain * noise
    top = float(noisy.abs().max())
    if top > peak:
        noisy, clean = noisy * (peak / top), clean * (peak / top)
    return noisy, clean


class DNSMixtures(SeededDataset):
    """Clean speech mixed with noise on the fly (see the module docstring).

    Args:
        clean_dir, noise_dir: folders of clean speech and noise files.
        segment: seconds per item (a random crop; shorter files are zero-padded), None for whole
            clean files.
        snr_range: (low, high) dB, uniform; (-5, 5) as in the DNS Challenge recipe.
        sample_rate: Hz; files at other rates are resampled.
        num_examples: items per epoch (default: one per clean file).
        split, seed: seed the draws; ``dynamic_mixing`` draws anew every epoch (``set_epoch``).
    """

    def __init__(self, clean_dir: str | os.PathLike, noise_dir: str | os.PathLike, segment: float | None = 4.0,
                 snr_range: tuple[float, float] = (-5.0, 5.0), sample_rate: int = 16000,
                 num_examples: int | None = None, split: str = "train", seed: int = 0, dynamic_mixing: bool = False):
        lo, hi = (float(v) for v in snr_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise InputError(f"DNSMixtures: snr_range must be finite (low, high) with low <= high, got {snr_range!r}")
        if segment is not None and not segment > 0:
            raise InputError(f"DNSMixtures: segment must be positive seconds or None, got {segment!r}")
        if sample_rate <= 0:
            raise InputError(f"DNSMixtures: sample_rate must be positive, got {sample_rate!r}")
        self.clean = _audio_files(Path(clean_dir), "clean speech")
        self.noise = _audio_files(Path(noise_dir), "noise")
        if num_examples is not None and num_examples < 1:
            raise InputError(f"DNSMixtures: num_examples must be positive, got {num_examples}")
        self.num_examples = num_examples or len(self.clean)
        self.segment, self.snr_range, self.sample_rate = segment, (lo, hi), int(sample_rate)
        self.split, self.seed, self.dynamic_mixing, self.epoch = split, int(seed), dynamic_mixing, 0
        self.n_src = 1

    def _crop(self, path: Path, length: int | None, rng: np.random.Generator, loop: bool) -> torch.Tensor:
        rate, _, frames = audio_info(path)
        if length is None:
            wav, _ = read_audio(path, resample_to=self.sample_rate)
            return wav
        want = int(np.ceil(length * rate / self.sample_rate))  # samples at the file's rate
        start = int(rng.integers(0, frames - want + 1)) if frames > want else 0
        wav, _ = read_audio(path, start=start, frames=min(want, frames), resample_to=self.sample_rate)
        if wav.shape[0] < length:
            if loop:
                wav = wav.repeat(length // wav.shape[0] + 1)
            else:
                wav = torch.nn.functional.pad(wav, (0, length - wav.shape[0]))
        return wav[:length]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"DNSMixtures: index {index} out of range for {self.num_examples} items")
        rng = self.rng(index)
        clean_path = self.clean[index % len(self.clean)]
        length = None if self.segment is None else round(self.segment * self.sample_rate)
        clean = self._crop(clean_path, length, rng, loop=False)
        noise_path = self.noise[int(rng.integers(len(self.noise)))]
        noise = self._crop(noise_path, clean.shape[0], rng, loop=True)
        snr = float(rng.uniform(*self.snr_range))
        noisy, clean = mix_at_snr(clean, noise, snr)
        return {"mixture": noisy.contiguous(), "sources": clean[None].contiguous(),
                "id": f"{self.split}-{index:06d}-{clean_path.stem}"}


class DNSTestSet(torch.utils.data.Dataset):
    """The synthesized test-set layout: ``root/noisy`` and ``root/clean`` paired by ``fileid_<N>``.

    Args:
        root: folder holding ``noisy/`` and ``clean/``.
        sample_rate: Hz; files at other rates are resampled.
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int = 16000):
        root = Path(root)
        noisy = self._by_id(_audio_files(root / "noisy", "noisy test"), "noisy")
        clean = self._by_id(_audio_files(root / "clean", "clean test"), "clean")
        only_noisy = sorted(set(noisy) - set(clean), key=int)
        only_clean = sorted(set(clean) - set(noisy), key=int)
        if only_noisy or only_clean:
            raise InputError(f"DNSTestSet: {root}: noisy/ and clean/ must hold the same file ids; only in noisy: "
                             f"{only_noisy[:5]}, only in clean: {only_clean[:5]}")
        self.ids = sorted(noisy, key=int)
        self.noisy, self.clean = noisy, clean
        self.sample_rate, self.n_src = int(sample_rate), 1

    @staticmethod
    def _by_id(files: list[Path], which: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for path in files:
            match = _FILEID.search(path.stem)
            if match is None:
                raise InputError(f"DNSTestSet: {path} has no 'fileid_<N>' in its name ({which}/ files must carry one)")
            if match.group(1) in out:
                raise InputError(f"DNSTestSet: fileid_{match.group(1)} appears twice in {which}/: {out[match.group(1)]}, {path}")
            out[match.group(1)] = path
        return out

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        fid = self.ids[index]
        noisy, _ = read_audio(self.noisy[fid], resample_to=self.sample_rate)
        clean, _ = read_audio(self.clean[fid], resample_to=self.sample_rate)
        if noisy.shape != clean.shape:
            raise AudioError(f"DNSTestSet: fileid_{fid}: noisy has {noisy.shape[0]} samples, clean {clean.shape[0]}")
        return {"mixture": noisy, "sources": clean[None], "id": f"fileid_{fid}"}


def write_synthetic_dns(root: str | os.PathLike, num_train: int = 8, num_noise: int = 4, num_valid: int = 2,
                        num_test: int = 4, duration: float = 2.0, test_snr: float = -5.0, sample_rate: int = 16000,
                        seed: int = 0) -> Path:
    """Write a small corpus in the layouts above from the built-in speech-like generator:
    ``root/train/{clean,noise}`` and ``root/valid/{clean,noise}`` (mixed on the fly) and
    ``root/test/{noisy,clean}`` (pairs at ``test_snr`` dB); speakers of the three splits are
    disjoint. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng([seed, 7])
    n = int(duration * sample_rate)

    def utterances(split: str, count: int) -> list[torch.Tensor]:
        speakers = make_speakers(max(count, 2), seed, split)
        out = []
        for i in range(count):
            wav = synth_utterance(speakers[i % len(speakers)], n, sample_rate, rng)
            out.append(torch.from_numpy(0.5 * wav / max(np.abs(wav).max(), 1e-9)).float())
        return out

    def noises(count: int) -> list[torch.Tensor]:
        return [torch.from_numpy(synth_noise(n, sample_rate, rng)).float() * 0.1 for _ in range(count)]

    for split, count in (("train", num_train), ("valid", num_valid)):
        for i, wav in enumerate(utterances(split, count)):
            write_audio(root / split / "clean" / f"clean_fileid_{i}.wav", wav, sample_rate, subtype="FLOAT")
        for i, wav in enumerate(noises(num_noise)):
            write_audio(root / split / "noise" / f"noise_fileid_{i}.wav", wav, sample_rate, subtype="FLOAT")
    for i, (clean, noise) in enumerate(zip(utterances("test", num_test), noises(num_test))):
        noisy, clean = mix_at_snr(clean, noise, test_snr)
        write_audio(root / "test" / "noisy" / f"book_snr{test_snr:g}_fileid_{i}.wav", noisy, sample_rate, subtype="FLOAT")
        write_audio(root / "test" / "clean" / f"clean_fileid_{i}.wav", clean, sample_rate, subtype="FLOAT")
    return root
