"""Unlabelled audio from folders and combinations of data sets: :class:`AudioFolder` (mixtures
without references), :class:`TwoDomains` (paired items of a real and a synthetic domain, as DIP
pretraining reads them, with :func:`collate_domains`) and :class:`PrefixedSets` (data sets one
after another, ids prefixed by their names)."""
from __future__ import annotations

from pathlib import Path

import torch

from sepkit.errors import InputError

from .audio import AUDIO_SUFFIXES, read_audio


class AudioFolder(torch.utils.data.Dataset):
    """Unlabelled mixtures from a folder: items ``{"mixture": (T,), "length": int, "id"}``.

    Args:
        root: folder searched recursively for .wav / .flac files.
        which: "train" (all but the last ``held_out`` files), "valid" / "test" (the last ones) or
            "all".
        sample_rate: rate to resample to (Hz).
        segment: crop length in seconds for training (None: whole files).
        held_out: files kept out of training (None: 5 %, at least one).
        seed: crop seed (with the epoch and the index).
    """

    def __init__(self, root, which: str, sample_rate: int, segment: float | None = None,
                 held_out: int | None = None, seed: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"AudioFolder: folder not found: {self.root}")
        if which not in ("train", "valid", "test", "all"):
            raise InputError(f"AudioFolder: which must be train, valid, test or all, got {which!r}")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        need = 1 if which == "all" else 2
        if len(files) < need:
            raise InputError(f"AudioFolder: {self.root} holds {len(files)} audio file(s) ({'/'.join(AUDIO_SUFFIXES)}); "
                             f"need at least {need}" + ("" if which == "all" else " (training and held-out)"))
        if which == "all":
            self.files = files
        else:
            n_out = max(1, len(files) // 20) if held_out is None else int(held_out)
            if not 1 <= n_out < len(files):
                raise InputError(f"AudioFolder: held_out={held_out} must lie in [1, {len(files) - 1}] for {self.root}")
            self.files = files[:-n_out] if which == "train" else files[-n_out:]
        self.sample_rate, self.seed, self.epoch = int(sample_rate), int(seed), 0
        self.segment = int(round(segment * sample_rate)) if (segment and which == "train") else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        wav, _ = read_audio(path, resample_to=self.sample_rate)
        length = wav.shape[-1]
        if self.segment is not None:
            if length > self.segment:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
                start = int(torch.randint(0, length - self.segment + 1, (), generator=g))
                wav, length = wav[start:start + self.segment], self.segment
            else:
                wav = torch.nn.functional.pad(wav, (0, self.segment - length))
        return {"mixture": wav, "length": length, "id": str(path.relative_to(self.root).with_suffix(""))}



class TwoDomains(torch.utils.data.Dataset):
    """Pairs item i of ``synthetic`` with item i mod len(real) of ``real``: items ``{"real",
    "real_length", "synthetic", "synthetic_length", "id"}`` (length of the synthetic set).
    ``cache``: keep each pair once drawn (the same every epoch: only for fixed data sets)."""

    def __init__(self, real, synthetic, cache: bool = False):
        self.real, self.synthetic = real, synthetic
        self._cache = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        for ds in (self.real, self.synthetic):
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.synthetic)

    def __getitem__(self, index: int) -> dict:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        r, s = self.real[index % len(self.real)], self.synthetic[index]
        out = {"id": f"{r['id']}|{s['id']}"}
        for name, item in (("real", r), ("synthetic", s)):
            out[name] = item["mixture"]
            out[f"{name}_length"] = int(item.get("length", item["mixture"].shape[-1]))
        if self._cache is not None:
            self._cache[index] = out
        return out



def collate_domains(items_: list[dict]) -> dict:
    """Right-pad each domain's mixtures to the longest in the batch: ``real`` (B, T_r),
    ``real_lengths`` (B,), ``synthetic`` (B, T_s), ``synthetic_lengths`` (B,), ``id`` list."""
    out = {"id": [it["id"] for it in items_]}
    for name in ("real", "synthetic"):
        lengths = torch.tensor([it[f"{name}_length"] for it in items_], dtype=torch.int64)
        width = max(it[name].shape[-1] for it in items_)
        out[name] = torch.stack([torch.nn.functional.pad(it[name], (0, width - it[name].shape[-1])) for it in items_])
        out[f"{name}_lengths"] = lengths
    return out



class PrefixedSets(torch.utils.data.Dataset):
    """The synthetic test set then the real one, ids prefixed "synthetic/" and "real/"."""

    def __init__(self, parts: list[tuple[str, object]]):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(ds) for _, ds in self.parts)

    def __getitem__(self, index: int) -> dict:
        for name, ds in self.parts:
            if index < len(ds):
                item = dict(ds[index])
                item["id"] = f"{name}/{item['id']}"
                return item
            index -= len(ds)
        raise IndexError(index)



__all__ = ["AudioFolder", "TwoDomains", "PrefixedSets", "collate_domains"]
