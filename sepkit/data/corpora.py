"""WSJ0-2mix / WSJ0-3mix and REAL-M from their standard folder layouts.

WSJ0-mix: ``ROOT/{tr,cv,tt}/{mix,s1,s2[,s3]}/<name>.wav`` where ROOT is e.g.
``wsj0-mix/2speakers/wav8k/min``. REAL-M: real two-speaker mixtures without references, any
folder of WAV files (searched recursively), e.g. ``REAL-M-v0.1.0/audio_files_converted_8000Hz``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from sepkit.errors import InputError

from .audio import AudioError, CroppedFiles, audio_info, read_audio

WSJ0_SPLITS = ("tr", "cv", "tt")


class WSJ0Mix(CroppedFiles):
    """WSJ0-2mix (or 3mix) items: ``mixture`` (T,), ``sources`` (S, T), ``id``.

    Args:
        root: the folder holding ``tr``, ``cv`` and ``tt``.
        split: ``tr``, ``cv`` or ``tt``.
        n_src: 2 or 3 (folders ``s1``..``s<n>``).
        sample_rate: the rate every file must have (Hz).
        segment: crop length in seconds (shorter utterances dropped) or None.
        random_crop, seed: as :class:`sepkit.data.LibriMix`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "tr", n_src: int = 2, sample_rate: int = 8000,
                 segment: float | None = None, random_crop: bool = True, seed: int = 0):
        if split not in WSJ0_SPLITS:
            raise InputError(f"WSJ0Mix: split must be one of {WSJ0_SPLITS}, got {split!r}")
        base = Path(root) / split
        mix_dir = base / "mix"
        if not mix_dir.is_dir():
            raise FileNotFoundError(f"WSJ0Mix: folder not found: {mix_dir}")
        names = sorted(p.name for p in mix_dir.glob("*.wav"))
        if not names:
            raise InputError(f"WSJ0Mix: no .wav files in {mix_dir}")
        for j in range(1, n_src + 1):
            missing = [n for n in names if not (base / f"s{j}" / n).is_file()]
            if missing:
                raise FileNotFoundError(f"WSJ0Mix: {len(missing)} mixture(s) lack s{j}, e.g. {base / f's{j}' / missing[0]}")
        self.base, self.n_src, self.sample_rate, self.segment = base, n_src, sample_rate, segment
        self.segment_samples = None if segment is None else int(round(segment * sample_rate))
        self.lengths = {}
        if self.segment_samples is not None:
            kept = []
            for n in names:
                rate, _, frames = audio_info(mix_dir / n)
                if rate != sample_rate:
                    raise AudioError(f"{mix_dir / n}: sample rate {rate} Hz, expected {sample_rate} Hz")
                if frames >= self.segment_samples:
                    kept.append(n)
                    self.lengths[n] = frames
            if not kept:
                raise InputError(f"WSJ0Mix: no utterance in {mix_dir} is at least {segment} s long")
            names = kept
        self.names = names
        self.random_crop, self.seed, self.epoch = random_crop, seed, 0

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        start, frames = 0, -1
        if self.segment is not None:  # every rate is sample_rate, every length known
            start, frames = self.crop(index, self.lengths[name], self.sample_rate)
        mixture, _ = read_audio(self.base / "mix" / name, self.sample_rate, start=start, frames=frames)
        sources = [read_audio(self.base / f"s{j}" / name, self.sample_rate, start=start, frames=frames)[0]
                   for j in range(1, self.n_src + 1)]
        if any(len(s) != len(mixture) for s in sources):
            raise AudioError(f"WSJ0Mix: {name}: mixture and sources differ in length")
        return {"mixture": mixture, "sources": torch.stack(sources), "id": Path(name).stem}


class RealM(torch.utils.data.Dataset):
    """REAL-M mixtures (no references): items ``mixture`` (T,) and ``id``.

    Args:
        root: folder searched recursively for ``.wav`` files.
        sample_rate: the rate the files must have, or None to resample each to ``resample_to``.
        resample_to: rate to resample to when ``sample_rate`` is None (Hz).
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int | None = 8000, resample_to: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"RealM: folder not found: {self.root}")
        self.files = sorted(self.root.rglob("*.wav"))
        if not self.files:
            raise InputError(f"RealM: no .wav files under {self.root}")
        self.sample_rate, self.resample_to = sample_rate, resample_to

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        wav, _ = read_audio(path, self.sample_rate, resample_to=self.resample_to)
        return {"mixture": wav, "id": str(path.relative_to(self.root).with_suffix(""))}
