"""Silent gaps cut into the speech of an enhancement data set (the Ex-Diff demo's data: speech
with pauses, so that a speech-activity detector has something to detect)."""
from __future__ import annotations

import numpy as np
import torch

_SPLIT_CODE = {"train": 1, "valid": 2, "test": 3}


class WithPauses(torch.utils.data.Dataset):
    """Cuts ``pauses`` silent gaps (``pause_range`` seconds, 10 ms raised-cosine edges) into the
    clean speech of an enhancement data set and the same speech in its mixture, so that
    ``mixture - sources[0]`` (the noise) is unchanged. Deterministic per (seed, split, index)."""

    def __init__(self, dataset, sample_rate: int, pauses: int, pause_range, seed: int, split: str):
        self.dataset, self.sample_rate, self.pauses = dataset, sample_rate, pauses
        self.pause_range, self.seed, self.split = tuple(pause_range), seed, split

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def gate(self, index: int, length: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, _SPLIT_CODE.get(self.split, 0), index, 7])
        gate = np.ones(length)
        fade = max(1, int(0.01 * self.sample_rate))
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)  # 0 -> 1
        for _ in range(self.pauses):
            n = int(rng.uniform(*self.pause_range) * self.sample_rate)
            if n + 2 * fade >= length:
                continue
            s = int(rng.integers(0, length - n - 2 * fade))
            gate[s:s + fade] = np.minimum(gate[s:s + fade], ramp[::-1])
            gate[s + fade:s + fade + n] = 0.0
            gate[s + fade + n:s + 2 * fade + n] = np.minimum(gate[s + fade + n:s + 2 * fade + n], ramp)
        return torch.from_numpy(gate).float()

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        clean = item["sources"][:1]
        gated = clean * self.gate(index, clean.shape[-1])
        item["mixture"] = item["mixture"] - clean[0] + gated[0]
        item["sources"] = gated
        return item



__all__ = ["WithPauses"]
