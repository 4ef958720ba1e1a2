"""Dynamic mixing and batching for separation data sets."""
from __future__ import annotations

import numpy as np
import torch

from sepkit.errors import InputError


class DynamicMixing(torch.utils.data.Dataset):
    """New mixtures every epoch from the sources of a separation data set.

    Item ``i`` of epoch ``e`` takes source ``j`` from a random item of ``dataset`` (seeded by
    ``(seed, e, i)``), gives it a random gain (uniform in ``gain_db`` dB), crops every source to
    the shortest and sums them. Sources of one mixture come from distinct items.

    Args:
        dataset: items with ``sources`` (S, T); at least S items.
        gain_db: (low, high) gain range in dB.
        seed: base seed.
    """

    def __init__(self, dataset, gain_db: tuple[float, float] = (-2.5, 2.5), seed: int = 0):
        self.dataset, self.gain_db, self.seed, self.epoch = dataset, gain_db, seed, 0
        self.n_src = dataset.n_src
        self.sample_rate = dataset.sample_rate
        if len(dataset) < self.n_src:
            raise InputError(f"DynamicMixing: need at least {self.n_src} items, the data set has {len(dataset)}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        donors = rng.choice(len(self.dataset), size=self.n_src, replace=False)
        sources = []
        for j, d in enumerate(donors):
            donor = self.dataset[int(d)]["sources"]
            s = donor[j % donor.shape[0]]
            sources.append(s * float(10 ** (rng.uniform(*self.gain_db) / 20)))
        T = min(len(s) for s in sources)
        sources = torch.stack([s[:T] for s in sources])
        peak = float(sources.sum(0).abs().max())
        if peak > 0.9:
            sources = sources * (0.9 / peak)
        return {"mixture": sources.sum(0), "sources": sources, "id": f"dm-{self.epoch}-{index}"}


def collate(items: list[dict]) -> dict:
    """Stack items of equal length: ``mixture`` (B, T), ``sources`` (B, S, T), ``id`` list."""
    lengths = {it["mixture"].shape[-1] for it in items}
    if len(lengths) != 1:
        raise InputError(f"collate: items differ in length {sorted(lengths)}; crop them (segment=...) or use batch size 1")
    out = {"mixture": torch.stack([it["mixture"] for it in items]), "id": [it["id"] for it in items]}
    if "sources" in items[0]:
        out["sources"] = torch.stack([it["sources"] for it in items])
    return out


def collate_tensors(items: list[dict]) -> dict:
    """Stack every tensor field of equal-shape items; other fields become lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise InputError(f"collate: field {key!r} differs in shape across items {sorted(shapes)}; "
                                 "crop the items (data.segment) or use batch size 1")
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out

