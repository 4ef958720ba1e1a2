"""VoiceBank-DEMAND (Valentini-Botinhao et al., 2016) from its standard folder layout.

``ROOT/{clean,noisy}_trainset_28spk_wav/<speaker>_<utt>.wav`` (or ``..._56spk_wav``) and
``ROOT/{clean,noisy}_testset_wav/<name>.wav``, 48 kHz mono; items are resampled to
``sample_rate`` (16 kHz by default). The "valid" split holds the training utterances of
``valid_speakers`` (p226 and p287, as SGMSE+ does); "train" the rest.

Items: ``{"mixture": noisy (T,), "sources": clean (1, T), "id": name}`` float32.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from sepkit.errors import InputError

from .audio import AudioError, CroppedFiles, audio_info, read_audio, resample

__all__ = ["VoiceBankDemand", "VOICEBANK_SPLITS"]

VOICEBANK_SPLITS = ("train", "valid", "test")


class VoiceBankDemand(CroppedFiles):
    """VoiceBank-DEMAND pairs (see the module docstring).

    Args:
        root: the folder holding the ``clean_*`` / ``noisy_*`` folders.
        split: "train", "valid" or "test".
        sample_rate: output rate in Hz (files are read at their own rate and resampled).
        segment: crop length in seconds (shorter utterances are zero-padded at the end) or None
            for whole utterances.
        speakers: "28spk" or "56spk" training set.
        valid_speakers: training speakers held out as the "valid" split.
        random_crop: random crop offsets (seeded by ``seed``, the epoch and the index) or the start.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", sample_rate: int = 16000,
                 segment: float | None = None, speakers: str = "28spk", valid_speakers=("p226", "p287"),
                 random_crop: bool = True, seed: int = 0):
        if split not in VOICEBANK_SPLITS:
            raise InputError(f"VoiceBankDemand: split must be one of {VOICEBANK_SPLITS}, got {split!r}")
        if speakers not in ("28spk", "56spk"):
            raise InputError(f"VoiceBankDemand: speakers must be '28spk' or '56spk', got {speakers!r}")
        if segment is not None and segment <= 0:
            raise InputError(f"VoiceBankDemand: segment must be positive seconds or None, got {segment}")
        root = Path(root)
        kind = "testset" if split == "test" else f"trainset_{speakers}"
        self.clean_dir, self.noisy_dir = root / f"clean_{kind}_wav", root / f"noisy_{kind}_wav"
        for d in (self.clean_dir, self.noisy_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"VoiceBankDemand: folder not found: {d}")
        names = sorted(p.name for p in self.noisy_dir.glob("*.wav"))
        if split != "test":
            held = tuple(valid_speakers)
            names = [n for n in names if (n.split("_")[0] in held) == (split == "valid")]
        if not names:
            raise InputError(f"VoiceBankDemand: no {split} utterances in {self.noisy_dir}")
        missing = [n for n in names if not (self.clean_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"VoiceBankDemand: {len(missing)} noisy file(s) lack a clean reference, "
                                    f"e.g. {self.clean_dir / missing[0]}")
        self.names, self.split, self.sample_rate, self.segment = names, split, sample_rate, segment
        self.random_crop, self.seed, self.epoch = random_crop, seed, 0

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        rate, _, frames = audio_info(self.noisy_dir / name)
        start, count = self.crop(index, frames, rate)
        noisy, r1 = read_audio(self.noisy_dir / name, start=start, frames=count)
        clean, r2 = read_audio(self.clean_dir / name, start=start, frames=count)
        if r1 != r2 or len(noisy) != len(clean):
            raise AudioError(f"VoiceBankDemand: {name}: noisy and clean differ in rate or length")
        noisy, clean = resample(noisy, r1, self.sample_rate), resample(clean, r1, self.sample_rate)
        if self.segment is not None:
            n = int(round(self.segment * self.sample_rate))
            noisy, clean = _fit(noisy, n), _fit(clean, n)
        return {"mixture": noisy.contiguous(), "sources": clean[None].contiguous(), "id": Path(name).stem}


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[:n] if x.shape[-1] >= n else torch.nn.functional.pad(x, (0, n - x.shape[-1]))
