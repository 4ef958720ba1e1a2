"""MUSDB18 (Rafii et al., 2017), the wav release, for vocal enhancement: vocals vs the rest.

``ROOT/{train,test}/<track>/{mixture,vocals}.wav`` (stereo, 44.1 kHz). Channels are averaged to
mono and resampled to ``sample_rate`` (16 kHz by default). The "valid" split is the training
tracks named in ``valid_tracks`` (none by default: pass the official validation list to use it).

Items: ``{"mixture": mixture (T,), "sources": vocals (1, T), "id": track}`` float32; the
"noise" is the accompaniment, mixture - vocals.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from sepkit.errors import InputError

from .audio import AudioError, audio_info, crop_window, read_audio, resample

__all__ = ["MUSDB18", "MUSDB_SPLITS"]

MUSDB_SPLITS = ("train", "valid", "test")


class MUSDB18(torch.utils.data.Dataset):
    """MUSDB18 vocal/mixture pairs (see the module docstring).

    Args:
        root: the folder holding ``train`` and ``test``.
        split: "train", "valid" or "test".
        sample_rate: output rate (Hz).
        segment: crop length in seconds or None (whole tracks).
        valid_tracks: training track names forming the "valid" split (left out of "train").
        random_crop, seed: crop offsets as :class:`sepkit.data.VoiceBankDemand`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", sample_rate: int = 16000,
                 segment: float | None = None, valid_tracks=(), random_crop: bool = True, seed: int = 0):
        if split not in MUSDB_SPLITS:
            raise InputError(f"MUSDB18: split must be one of {MUSDB_SPLITS}, got {split!r}")
        if segment is not None and segment <= 0:
            raise InputError(f"MUSDB18: segment must be positive seconds or None, got {segment}")
        base = Path(root) / ("test" if split == "test" else "train")
        if not base.is_dir():
            raise FileNotFoundError(f"MUSDB18: folder not found: {base}")
        tracks = sorted(p.name for p in base.iterdir() if p.is_dir())
        held = set(valid_tracks)
        if split != "test":
            tracks = [t for t in tracks if (t in held) == (split == "valid")]
        if not tracks:
            raise InputError(f"MUSDB18: no {split} tracks under {base}")
        for t in tracks:
            for stem in ("mixture", "vocals"):
                if not (base / t / f"{stem}.wav").is_file():
                    raise FileNotFoundError(f"MUSDB18: missing {base / t / f'{stem}.wav'}")
        self.base, self.tracks, self.split = base, tracks, split
        self.sample_rate, self.segment, self.random_crop, self.seed, self.epoch = sample_rate, segment, random_crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tracks)

    def _read(self, path: Path, start: int, count: int) -> tuple[torch.Tensor, int]:
        wav, rate = read_audio(path, mono=False, start=start, frames=count)
        return wav.mean(dim=0), rate

    def __getitem__(self, index: int) -> dict:
        track = self.tracks[index]
        rate, _, frames = audio_info(self.base / track / "mixture.wav")
        start, count = crop_window(frames, rate, self.segment, self.random_crop, self.seed, self.epoch, index)
        mix, r1 = self._read(self.base / track / "mixture.wav", start, count)
        voc, r2 = self._read(self.base / track / "vocals.wav", start, count)
        if r1 != r2 or len(mix) != len(voc):
            raise AudioError(f"MUSDB18: {track}: mixture and vocals differ in rate or length")
        mix, voc = resample(mix, r1, self.sample_rate), resample(voc, r1, self.sample_rate)
        if self.segment is not None:
            n = int(round(self.segment * self.sample_rate))
            pad = lambda x: x[:n] if len(x) >= n else torch.nn.functional.pad(x, (0, n - len(x)))  # noqa: E731
            mix, voc = pad(mix), pad(voc)
        return {"mixture": mix.contiguous(), "sources": voc[None].contiguous(), "id": track}
