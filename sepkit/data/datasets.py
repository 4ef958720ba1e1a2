"""Separation corpora from local paths in their standard layouts: LibriMix, WSJ0-2mix/3mix and
REAL-M, with cropping and dynamic mixing.

Every data set yields dicts ``{"mixture": (T,), "sources": (n_src, T), "id": str}`` of float32
tensors (REAL-M, which has no references, yields no ``"sources"``). With ``segment`` set, items
are cropped to that many samples at a random offset (zero-padded when shorter); the offset is
deterministic in ``(seed, epoch, index)`` (call :meth:`SeparationDataset.set_epoch`), so a
resumed run sees the same crops. Without ``segment`` whole utterances come back (batch size 1 or
a padding collate).

Dynamic mixing (``dynamic_mixing=True``, needs ``segment``) draws, for each ``(epoch, index)``,
``n_src`` single-speaker source files of distinct speakers from the whole split, crops each at
random, sets their levels at random (``sir_range`` dB relative to the first, after RMS
normalization), adds a random noise file at a random SNR when the split is noisy, and sums.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, audio_info, read_audio

__all__ = [
    "DatasetError",
    "Example",
    "SeparationDataset",
    "LibriMix",
    "WSJ0Mix",
    "RealM",
    "LIBRIMIX_SPLITS",
    "WSJ0MIX_SPLITS",
]

LIBRIMIX_SPLITS = ("train-360", "train-100", "dev", "test")
LIBRIMIX_MIX_TYPES = ("mix_clean", "mix_both", "mix_single")
WSJ0MIX_SPLITS = ("tr", "cv", "tt")


class DatasetError(ValueError):
    """A data set that is missing, incomplete or inconsistent; one-line message naming the path."""


@dataclass
class Example:
    """One mixture on disk: ``sources`` are the reference paths (empty for REAL-M), ``length`` in
    samples (None: read from the file when needed), ``speakers`` one id per source where known."""

    id: str
    mixture: Path
    sources: list[Path] = field(default_factory=list)
    noise: Path | None = None
    length: int | None = None
    speakers: list[str] = field(default_factory=list)


class SeparationDataset(torch.utils.data.Dataset):
    """A list of :class:`Example` read with soundfile at a fixed sample rate.

    Args:
        examples: the mixtures.
        sample_rate: every file must have this rate (Hz) unless ``resample`` is true.
        n_src: number of reference sources per example (0: mixtures only).
        segment: crop length in samples (None: whole utterances).
        dynamic_mixing: draw new mixtures from the split's sources every epoch (needs
            ``segment`` and references).
        sir_range, snr_range: level ranges (dB) for dynamic mixing.
        seed: base seed of crops and dynamic mixing.
        resample: resample files whose rate differs instead of raising.
        min_samples: shorter files are an error.
    """

    name = "dataset"

    def __init__(
        self,
        examples: list[Example],
        sample_rate: int,
        n_src: int,
        *,
        segment: int | None = None,
        dynamic_mixing: bool = False,
        sir_range: tuple[float, float] = (-5.0, 5.0),
        snr_range: tuple[float, float] = (0.0, 15.0),
        seed: int = 0,
        resample: bool = False,
        min_samples: int = 1,
    ):
        if not examples:
            raise DatasetError(f"{self.name}: no examples found")
        if segment is not None and segment < 1:
            raise DatasetError(f"{self.name}: segment must be a positive number of samples, got {segment}")
        if dynamic_mixing and segment is None:
            raise DatasetError(f"{self.name}: dynamic mixing needs a segment length")
        if dynamic_mixing and n_src < 1:
            raise DatasetError(f"{self.name}: dynamic mixing needs reference sources")
        self.examples = examples
        self.sample_rate = int(sample_rate)
        self.n_src = n_src
        self.segment = segment
        self.dynamic_mixing = dynamic_mixing
        self.sir_range = tuple(sir_range)
        self.snr_range = tuple(snr_range)
        self.seed = seed
        self.resample = resample
        self.min_samples = min_samples
        self.epoch = 0
        if dynamic_mixing:
            self._build_pool()

    # -- bookkeeping ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Crops and dynamic mixtures depend on the epoch; the trainer calls this."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, 0xDA7A])

    def _read(self, path: Path, start: int = 0, frames: int = -1) -> torch.Tensor:
        wav, _ = read_audio(
            path,
            sample_rate=None if self.resample else self.sample_rate,
            resample_to=self.sample_rate if self.resample else None,
            start=start,
            frames=frames,
            min_samples=self.min_samples if frames < 0 else 1,
        )
        return wav

    def _length(self, ex: Example) -> int:
        if ex.length is None:
            rate, _, frames = audio_info(ex.mixture)
            ex.length = frames if rate == self.sample_rate or not self.resample else int(frames * self.sample_rate / rate)
        return ex.length

    def _crop(self, n: int, rng: np.random.Generator) -> tuple[int, int]:
        """(start, frames) of a segment crop of a file of ``n`` samples."""
        if self.segment is None or n <= self.segment:
            return 0, -1
        return int(rng.integers(0, n - self.segment + 1)), self.segment

    def _fit(self, wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad (or cut) the last axis to ``segment``."""
        if self.segment is None or wav.shape[-1] == self.segment:
            return wav
        if wav.shape[-1] > self.segment:
            return wav[..., : self.segment]
        return torch.nn.functional.pad(wav, (0, self.segment - wav.shape[-1]))

    # -- items ---------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict:
        if self.dynamic_mixing:
            return self._dynamic_item(index)
        ex = self.examples[index]
        rng = self._rng(index)
        start, frames = (0, -1)
        if self.segment is not None and not self.resample:
            start, frames = self._crop(self._length(ex), rng)
        mixture = self._read(ex.mixture, start, frames)
        item = {"id": ex.id}
        if self.n_src:
            sources = [self._read(p, start, frames) for p in ex.sources]
            n = min([mixture.shape[-1]] + [s.shape[-1] for s in sources])
            lengths = {mixture.shape[-1]} | {s.shape[-1] for s in sources}
            if max(lengths) - n > 1:  # tolerate one sample of resampling round-off
                raise DatasetError(f"{self.name}: {ex.id}: mixture and sources differ in length ({sorted(lengths)} samples)")
            mixture = mixture[:n]
            item["sources"] = self._fit(torch.stack([s[:n] for s in sources]))
        if self.resample and self.segment is not None:
            start, frames = self._crop(mixture.shape[-1], rng)
            if frames > 0:
                mixture = mixture[start : start + frames]
                if "sources" in item:
                    item["sources"] = item["sources"][:, start : start + frames]
        item["mixture"] = self._fit(mixture)
        return item

    def _build_pool(self) -> None:
        pool = []
        noises = []
        for row, ex in enumerate(self.examples):
            for j, path in enumerate(ex.sources):
                spk = ex.speakers[j] if j < len(ex.speakers) else f"{row}:{j}"
                pool.append((path, spk))
            if ex.noise is not None:
                noises.append(ex.noise)
        speakers = {s for _, s in pool}
        if len(speakers) < self.n_src:
            raise DatasetError(f"{self.name}: dynamic mixing needs {self.n_src} distinct speakers, found {len(speakers)}")
        self._pool = pool
        self._noises = noises

    def _random_crop(self, path: Path, rng: np.random.Generator) -> torch.Tensor:
        rate, _, n = audio_info(path)
        if rate != self.sample_rate and not self.resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {self.sample_rate} Hz")
        if rate != self.sample_rate:
            wav = self._read(path)
            start, frames = self._crop(wav.shape[-1], rng)
            wav = wav[start : start + frames] if frames > 0 else wav
        else:
            start, frames = self._crop(n, rng)
            wav = self._read(path, start, frames)
        return self._fit(wav)

    def _dynamic_item(self, index: int) -> dict:
        rng = self._rng(index)
        chosen: list[int] = []
        used: set[str] = set()
        while len(chosen) < self.n_src:
            k = int(rng.integers(len(self._pool)))
            if self._pool[k][1] not in used:
                used.add(self._pool[k][1])
                chosen.append(k)
        sources = []
        for j, k in enumerate(chosen):
            wav = self._random_crop(self._pool[k][0], rng)
            rms = wav.pow(2).mean().sqrt().clamp_min(1e-8)
            gain_db = 0.0 if j == 0 else float(rng.uniform(*self.sir_range))
            sources.append(wav * (0.05 / rms) * 10 ** (gain_db / 20))
        sources = torch.stack(sources)
        mixture = sources.sum(0)
        if self._noises:
            noise = self._random_crop(self._noises[int(rng.integers(len(self._noises)))], rng)
            snr = float(rng.uniform(*self.snr_range))
            noise = noise * (mixture.pow(2).mean().sqrt() / noise.pow(2).mean().sqrt().clamp_min(1e-8)) * 10 ** (-snr / 20)
            mixture = mixture + noise
        peak = max(float(mixture.abs().max()), float(sources.abs().max()))
        if peak > 0.9:
            mixture, sources = mixture * (0.9 / peak), sources * (0.9 / peak)
        return {"mixture": mixture, "sources": sources, "id": f"dm-{self.epoch}-{index}"}


def _check_choice(name: str, what: str, value, choices) -> None:
    if value not in choices:
        raise DatasetError(f"{name}: unknown {what} {value!r} (choose from {', '.join(map(str, choices))})")


def _speakers_from_id(mixture_id: str, n: int, field_of) -> list[str]:
    parts = mixture_id.split("_")
    try:
        spk = [field_of(parts, j) for j in range(n)]
    except (IndexError, ValueError):
        return []
    return spk if all(spk) else []


class LibriMix(SeparationDataset):
    """LibriMix (Libri2Mix / Libri3Mix) from its metadata CSVs.

    Layout: ``<root>/Libri{n}Mix/wav{8|16}k/{min|max}/metadata/mixture_{split}_{mix_type}.csv``
    with columns ``mixture_ID, mixture_path, source_1_path, ..., [noise_path], length``; ``root``
    may also be the ``Libri{n}Mix`` folder or the ``wav8k/min`` folder itself. Paths in the CSVs
    may be absolute (as the official generator writes them) or relative to the ``wav8k/min``
    folder; when an absolute path no longer exists (the corpus was moved) the file is looked for
    at ``<wav8k/min>/<split>/<subfolder>/<file name>``.

    Args:
        root: see above.
        split: ``train-360``, ``train-100``, ``dev`` or ``test`` (any name with a metadata CSV).
        n_src: 2 or 3 speakers (1 with ``mix_single``: speech enhancement).
        sample_rate: 8000 or 16000 (selects ``wav8k`` / ``wav16k``).
        mode: ``min`` or ``max``.
        mix_type: ``mix_clean`` (speech only), ``mix_both`` (speech + noise, targets the
            speakers) or ``mix_single`` (one speaker + noise).
        **kwargs: cropping and dynamic mixing, see :class:`SeparationDataset`.
    """

    name = "LibriMix"

    def __init__(self, root, split: str = "train-360", n_src: int = 2, sample_rate: int = 8000, mode: str = "min", mix_type: str = "mix_clean", **kwargs):
        _check_choice(self.name, "mode", mode, ("min", "max"))
        _check_choice(self.name, "mix_type", mix_type, LIBRIMIX_MIX_TYPES)
        n_csv_src = 1 if mix_type == "mix_single" else n_src
        if mix_type == "mix_single" and n_src != 1:
            raise DatasetError(f"{self.name}: mix_single has one target source, got n_src={n_src}")
        base = self.find_base(root, n_src if mix_type != "mix_single" else None, sample_rate, mode)
        csv_path = base / "metadata" / f"mixture_{split}_{mix_type}.csv"
        if not csv_path.is_file():
            have = sorted(p.name for p in (base / "metadata").glob("mixture_*.csv"))
            raise DatasetError(f"{self.name}: metadata file not found: {csv_path} (available: {', '.join(have) or 'none'})")
        examples = self.read_metadata(csv_path, base, split, n_csv_src, noisy=mix_type != "mix_clean")
        self.base = base
        self.split = split
        self.mix_type = mix_type
        super().__init__(examples, sample_rate, n_csv_src, **kwargs)

    @staticmethod
    def find_base(root, n_src: int | None, sample_rate: int, mode: str) -> Path:
        """The ``wav{k}k/{mode}`` folder (the one holding ``metadata/``) under ``root``."""
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"LibriMix: root folder not found: {root}")
        if sample_rate % 1000:
            raise DatasetError(f"LibriMix: sample rate must be 8000 or 16000, got {sample_rate}")
        sub = Path(f"wav{sample_rate // 1000}k") / mode
        names = [f"Libri{n_src}Mix"] if n_src else ["Libri2Mix", "Libri3Mix"]
        candidates = [root, root / sub] + [root / n / sub for n in names]
        for c in candidates:
            if (c / "metadata").is_dir():
                if c == root and root.parent.name.startswith("wav") and root.parent.name != sub.parts[0]:
                    raise DatasetError(f"LibriMix: {root} holds {root.parent.name} data, expected {sub.parts[0]} ({sample_rate} Hz)")
                return c
        raise DatasetError(f"LibriMix: no metadata folder under {root} (looked in {', '.join(str(c) for c in candidates)})")

    @classmethod
    def read_metadata(cls, csv_path: Path, base: Path, split: str, n_src: int, noisy: bool) -> list[Example]:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise DatasetError(f"{cls.name}: {csv_path} has no rows")
        need = ["mixture_ID", "mixture_path"] + [f"source_{j + 1}_path" for j in range(n_src)] + (["noise_path"] if noisy else [])
        missing = [c for c in need if c not in rows[0]]
        if missing:
            raise DatasetError(f"{cls.name}: {csv_path} lacks column(s) {', '.join(missing)} (is it a {n_src}-speaker file?)")
        examples = []
        for i, row in enumerate(rows):
            def resolve(p: str) -> Path:
                return _resolve(p, base, split, csv_path, i + 2)

            length = row.get("length")
            speakers = [row[f"speaker_{j + 1}_ID"] for j in range(n_src) if f"speaker_{j + 1}_ID" in row]
            if len(speakers) != n_src:
                speakers = _speakers_from_id(row["mixture_ID"], n_src, lambda parts, j: parts[j].split("-")[0])
            examples.append(
                Example(
                    id=row["mixture_ID"],
                    mixture=resolve(row["mixture_path"]),
                    sources=[resolve(row[f"source_{j + 1}_path"]) for j in range(n_src)],
                    noise=resolve(row["noise_path"]) if noisy else None,
                    length=int(float(length)) if length not in (None, "") else None,
                    speakers=speakers,
                )
            )
        return examples


def _resolve(p: str, base: Path, split: str, csv_path: Path, line: int) -> Path:
    path = Path(p)
    tries = [path] if path.is_absolute() else [base / path]
    if path.is_absolute() or len(path.parts) >= 2:
        tries.append(base / split / path.parent.name / path.name)
    for t in tries:
        if t.is_file():
            return t
    raise DatasetError(f"LibriMix: file listed in {csv_path.name} line {line} not found: {tries[0]}")


class WSJ0Mix(SeparationDataset):
    """WSJ0-2mix / WSJ0-3mix: ``<root>/{tr,cv,tt}/{mix,s1,s2[,s3]}/*.wav`` with the same file
    names in every folder. ``root`` may also be a folder above it that holds
    ``[{n}speakers/]wav{8|16}k/{min|max}/``.

    Args:
        root: see above.
        split: ``tr`` (training), ``cv`` (validation) or ``tt`` (test).
        n_src: 2 or 3.
        sample_rate: 8000 or 16000.
        mode: ``min`` or ``max``.
        **kwargs: cropping and dynamic mixing, see :class:`SeparationDataset`.
    """

    name = "WSJ0-mix"

    def __init__(self, root, split: str = "tr", n_src: int = 2, sample_rate: int = 8000, mode: str = "min", **kwargs):
        _check_choice(self.name, "split", split, WSJ0MIX_SPLITS)
        _check_choice(self.name, "mode", mode, ("min", "max"))
        folder = self.find_split(root, split, n_src, sample_rate, mode)
        mixes = sorted((folder / "mix").glob("*.wav"))
        if not mixes:
            raise DatasetError(f"{self.name}: no .wav files in {folder / 'mix'}")
        examples = []
        for m in mixes:
            srcs = [folder / f"s{j + 1}" / m.name for j in range(n_src)]
            for s in srcs:
                if not s.is_file():
                    raise DatasetError(f"{self.name}: reference file not found: {s}")
            # names are utt1_gain1_utt2_gain2[...]; a WSJ0 speaker is the first 3 characters.
            speakers = _speakers_from_id(m.stem, n_src, lambda parts, j: parts[2 * j][:3])
            examples.append(Example(id=m.stem, mixture=m, sources=srcs, speakers=speakers))
        self.split = split
        super().__init__(examples, sample_rate, n_src, **kwargs)

    @staticmethod
    def find_split(root, split: str, n_src: int, sample_rate: int, mode: str) -> Path:
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"WSJ0-mix: root folder not found: {root}")
        sub = Path(f"wav{sample_rate // 1000}k") / mode / split
        candidates = [root / split, root / sub, root / f"{n_src}speakers" / sub, root / f"wsj0-{n_src}mix" / sub]
        for c in candidates:
            if (c / "mix").is_dir():
                return c
        raise DatasetError(f"WSJ0-mix: no '{split}/mix' folder under {root} (looked in {', '.join(str(c) for c in candidates)})")


class RealM(SeparationDataset):
    """REAL-M: real-life two-speaker mixtures recorded by crowd workers, without references.

    Layout: ``<root>/audio_files_converted_8000Hz/<session>/*.wav`` (used at 8 kHz) or
    ``<root>/audio_files/<session>/*.wav``; any folder of .wav files works. Items have
    ``mixture`` and ``id`` only; files at another rate are resampled when ``resample`` (default
    true here, the original recordings have varied rates).
    """

    name = "REAL-M"

    def __init__(self, root, sample_rate: int = 8000, resample: bool = True, **kwargs):
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{self.name}: root folder not found: {root}")
        folder = root
        for name in ([f"audio_files_converted_{sample_rate}Hz"] if sample_rate else []) + ["audio_files"]:
            if (root / name).is_dir():
                folder = root / name
                break
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac") and not p.name.startswith("."))
        if not files:
            raise DatasetError(f"{self.name}: no .wav or .flac files under {folder}")
        examples = [Example(id=str(p.relative_to(folder).with_suffix("")).replace(os.sep, "__"), mixture=p) for p in files]
        super().__init__(examples, sample_rate, 0, resample=resample, **kwargs)
