"""Speaker-labelled data sets: single-speaker utterances (speaker embeddings), mixtures of a
varying number of speakers with their labels (mixture-to-set), LibriMix roots read as such, and
target-speaker items with an enrollment utterance (TSE). The synthetic ones are deterministic by
``(seed, split, index)``."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

from sepkit.errors import InputError

from .librimix import LibriMix
from .synth import MixtureSpec, make_speakers, split_code, synth_mixture, synth_utterance


class SpeakerUtterances(torch.utils.data.Dataset):
    """Synthetic single-speaker utterances with speaker labels, deterministic by
    ``(seed, split, index)``.

    Item ``i`` is spoken by speaker ``i % num_speakers`` of the ``pool`` split's speakers (so
    every class appears equally often); ``split`` only changes the utterances drawn. Items:
    ``wave`` (T,) float32, ``speaker`` int64 index into the pool, ``speaker_id`` its name, ``id``.
    """

    def __init__(self, num_examples: int, sample_rate: int, duration: tuple[float, float], num_speakers: int,
                 split: str, pool: str = "train", seed: int = 0, noise: bool = False):
        if num_examples < 1:
            raise InputError(f"SpeakerUtterances: num_examples must be >= 1, got {num_examples}")
        self.num_examples, self.split, self.seed = num_examples, split, seed
        self.speakers = make_speakers(num_speakers, seed, pool)
        self.spec = MixtureSpec(sample_rate=sample_rate, n_src=1, min_duration=duration[0], max_duration=duration[1],
                                noise=noise, snr_range=(5.0, 20.0))

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"SpeakerUtterances: index {index} out of range for {self.num_examples}")
        label = index % len(self.speakers)
        rng = np.random.default_rng([self.seed, split_code(self.split), index, 0x5EED])
        rec = synth_mixture(self.spec, [self.speakers[label]], rng)
        return {"wave": torch.from_numpy(rec["mixture"]), "speaker": torch.tensor(label, dtype=torch.long),
                "speaker_id": rec["speakers"][0], "id": f"{self.split}-{index:06d}"}



class SpeakerSetMixtures(torch.utils.data.Dataset):
    """Synthetic mixtures of 1..S speakers with speaker labels, deterministic by
    ``(seed, split, index)``. The speaker count of each item is drawn from ``speaker_counts``.

    Args:
        num_examples: items.
        spec: :class:`MixtureSpec` (its ``n_src`` is ignored: counts come from ``speaker_counts``).
        speaker_counts: allowed numbers of speakers.
        n_slots: S, sources are zero-padded to it.
        split: "train", "dev" or "test" (disjoint speaker pools).
        num_speakers: size of the split's pool.
        seed: base seed.
    """

    def __init__(self, num_examples: int, spec: MixtureSpec, speaker_counts, n_slots: int, split: str,
                 num_speakers: int = 100, seed: int = 0):
        counts = [int(c) for c in speaker_counts]
        if not counts or min(counts) < 1 or max(counts) > n_slots:
            raise InputError(f"SpeakerSetMixtures: speaker_counts must lie in [1, {n_slots}], got {counts}")
        self.num_examples, self.spec, self.counts, self.n_slots = num_examples, spec, counts, n_slots
        self.split, self.seed, self.sample_rate = split, seed, spec.sample_rate
        self.speakers = make_speakers(max(num_speakers, n_slots), seed, split)
        self.index_of = {s.id: i for i, s in enumerate(self.speakers)}

    def __len__(self) -> int:
        return self.num_examples

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, split_code(self.split), index, 0x5E7])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"SpeakerSetMixtures: index {index} out of range for {self.num_examples}")
        rng = self.rng(index)
        n = self.counts[int(rng.integers(len(self.counts)))]
        rec = synth_mixture(dataclasses.replace(self.spec, n_src=n), self.speakers, rng)
        return pad_item(torch.from_numpy(rec["mixture"]), torch.from_numpy(rec["sources"]),
                        [self.index_of[s] for s in rec["speakers"]], self.n_slots, f"{self.split}-{index:06d}")



def pad_item(mixture: torch.Tensor, sources: torch.Tensor, speakers: list[int], n_slots: int, item_id: str) -> dict:
    n = sources.shape[0]
    padded = torch.zeros(n_slots, mixture.shape[-1])
    padded[:n] = sources
    labels = torch.full((n_slots,), -1, dtype=torch.long)
    labels[:n] = torch.tensor(speakers, dtype=torch.long)
    return {"mixture": mixture, "sources": padded, "n_speakers": torch.tensor(n), "speakers": labels, "id": item_id}



class LibriMixSets(torch.utils.data.Dataset):
    """LibriMix roots (e.g. Libri2Mix and Libri3Mix) as speaker-set items; the speaker of each
    source is the first field of its utterance id (``<speaker>-<chapter>-<utterance>``, joined by
    ``_`` in the mixture id)."""

    def __init__(self, roots: list[str], split: str, n_slots: int, **librimix_args):
        self.parts = [LibriMix(r, split, **librimix_args) for r in roots]
        self.n_slots = n_slots
        names = set()
        for part in self.parts:
            if part.n_src > n_slots:
                raise InputError(f"LibriMixSets: {part.root} has {part.n_src} sources, more than {n_slots} slots")
            for row in part.rows:
                names.update(self.speaker_names(row["mixture_ID"]))
        self.vocab = {name: i for i, name in enumerate(sorted(names))}
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @staticmethod
    def speaker_names(mixture_id: str) -> list[str]:
        return [u.split("-")[0] for u in re.split(r"_(?=\d)", mixture_id)]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        item = self.parts[k][index - int(self.offsets[k])]
        names = self.speaker_names(item["id"])
        if len(names) != item["sources"].shape[0]:
            raise InputError(f"LibriMixSets: cannot read {item['sources'].shape[0]} speaker ids from {item['id']!r}")
        return pad_item(item["mixture"], item["sources"], [self.vocab[n] for n in names], self.n_slots, item["id"])



class TSEMixtures(torch.utils.data.Dataset):
    """Synthetic target-speaker items, deterministic by ``(seed, split, index)``: a mixture of
    ``speaker_counts`` speakers, its first source as ``target`` and an ``enrollment``
    utterance of the same speaker (another draw, ``enroll_samples`` long)."""

    def __init__(self, num_examples: int, spec: MixtureSpec, speaker_counts, split: str, num_speakers: int,
                 enroll_samples: int, seed: int = 0):
        self.num_examples, self.spec, self.counts = num_examples, spec, [int(c) for c in speaker_counts]
        self.split, self.seed, self.enroll_samples = split, seed, enroll_samples
        self.speakers = make_speakers(max(num_speakers, max(self.counts)), seed, split)
        self.by_id = {s.id: s for s in self.speakers}

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"TSEMixtures: index {index} out of range for {self.num_examples}")
        rng = np.random.default_rng([self.seed, split_code(self.split), index, 0x75E])
        n = self.counts[int(rng.integers(len(self.counts)))]
        rec = synth_mixture(dataclasses.replace(self.spec, n_src=n), self.speakers, rng)
        enroll = synth_utterance(self.by_id[rec["speakers"][0]], self.enroll_samples, self.spec.sample_rate, rng)
        return {"mixture": torch.from_numpy(rec["mixture"]), "target": torch.from_numpy(rec["sources"][0]),
                "enrollment": torch.from_numpy(enroll.astype(np.float32)), "id": f"{self.split}-{index:06d}"}



__all__ = ["SpeakerUtterances", "SpeakerSetMixtures", "LibriMixSets", "TSEMixtures", "pad_item"]
