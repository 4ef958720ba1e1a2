"""The LibriMix layout: writing synthetic (or spoken) mixtures into it, and loading LibriMix from disk.

Layout (one root per number of speakers, rate and mode, e.g. ``Libri2Mix/wav8k/min``)::

    ROOT/metadata/mixture_<split>_mix_clean.csv    mixture_ID,mixture_path,source_1_path,...,length
    ROOT/metadata/mixture_<split>_mix_both.csv     ... ,noise_path,length
    ROOT/metadata/mixture_<split>_mix_single.csv   mixture_ID,mixture_path,source_1_path,noise_path,length
    ROOT/<split>/mix_clean|mix_both|mix_single|s1|s2|...|noise/<mixture_ID>.wav

Splits are ``train-360``, ``train-100``, ``dev`` and ``test``. Paths in the CSVs may be absolute
(as the official generation scripts write them) or relative to ROOT; an absolute path that does
not exist (a moved corpus) is looked up again under ROOT by its last three components.
"""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sepkit.errors import InputError
from sepkit.files import umask_mode

from .audio import AudioError, read_audio, write_audio
from .synth import MixtureSpec, SyntheticMixtures

MIX_KINDS = ("clean", "both", "single")


def librimix_root(out_dir: str | os.PathLike, n_src: int, sample_rate: int, mode: str) -> Path:
    """``out_dir/Libri<n>Mix/wav<k>k/<mode>``, the root the loader takes."""
    return Path(out_dir) / f"Libri{n_src}Mix" / f"wav{sample_rate // 1000}k" / mode


def _write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_synthetic_librimix(
    out_dir: str | os.PathLike,
    spec: MixtureSpec,
    splits: dict[str, int],
    seed: int = 0,
    num_speakers: int = 100,
    progress: bool = False,
    make_dataset=None,
) -> Path:
    """Write synthetic mixtures in the LibriMix layout and return the root.

    Args:
        out_dir: folder that receives ``Libri<n>Mix/wav<k>k/<mode>``.
        spec: how mixtures are drawn (rate, speakers, mode, noise, reverberation).
        splits: number of mixtures per split, e.g. ``{"train-100": 200, "dev": 20, "test": 20}``.
        seed: base seed; the same seed writes the same files.
        num_speakers: speaker pool per split (splits use disjoint pools).
        make_dataset: ``make_dataset(split, count)`` returns the mixtures of a split (anything with
            ``draw(index)`` returning a :func:`~sepkit.data.synth.synth_mixture` record, e.g. a
            :class:`~sepkit.data.spoken.SpokenMixtures`); default :class:`SyntheticMixtures`.
    Mixture IDs are ``<split>-<index:06d>``. ``mix_both``/``mix_single`` and ``noise/`` are
    written when ``spec.noise`` is on.
    """
    root = librimix_root(out_dir, spec.n_src, spec.sample_rate, spec.mode)
    sr = spec.sample_rate
    for split, count in splits.items():
        if count <= 0:
            continue
        if make_dataset is None:
            ds = SyntheticMixtures(count, spec, split=split, num_speakers=num_speakers, seed=seed)
        else:
            ds = make_dataset(split, count)
        rows = {kind: [] for kind in MIX_KINDS}
        indices = range(count)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"synth {split}", unit="mix")
        for i in indices:
            rec = ds.draw(i)
            mid = f"{split}-{i:06d}"
            src_paths = []
            for j, s in enumerate(rec["sources"]):
                src_paths.append(write_audio(root / split / f"s{j + 1}" / f"{mid}.wav", s, sr))
            length = len(rec["mixture"])
            rel = [str(p.relative_to(root)) for p in src_paths]
            if rec["noise"] is None:
                mix = write_audio(root / split / "mix_clean" / f"{mid}.wav", rec["mixture"], sr)
                rows["clean"].append([mid, str(mix.relative_to(root)), *rel, length])
            else:
                clean = rec["sources"].sum(0)
                noise = write_audio(root / split / "noise" / f"{mid}.wav", rec["noise"], sr)
                mix_clean = write_audio(root / split / "mix_clean" / f"{mid}.wav", clean, sr)
                mix_both = write_audio(root / split / "mix_both" / f"{mid}.wav", rec["mixture"], sr)
                mix_single = write_audio(root / split / "mix_single" / f"{mid}.wav", rec["sources"][0] + rec["noise"], sr)
                nrel = str(noise.relative_to(root))
                rows["clean"].append([mid, str(mix_clean.relative_to(root)), *rel, length])
                rows["both"].append([mid, str(mix_both.relative_to(root)), *rel, nrel, length])
                rows["single"].append([mid, str(mix_single.relative_to(root)), rel[0], nrel, length])
        src_cols = [f"source_{j + 1}_path" for j in range(spec.n_src)]
        _write_csv_atomic(root / "metadata" / f"mixture_{split}_mix_clean.csv",
                          ["mixture_ID", "mixture_path", *src_cols, "length"], rows["clean"])
        if spec.noise:
            _write_csv_atomic(root / "metadata" / f"mixture_{split}_mix_both.csv",
                              ["mixture_ID", "mixture_path", *src_cols, "noise_path", "length"], rows["both"])
            _write_csv_atomic(root / "metadata" / f"mixture_{split}_mix_single.csv",
                              ["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"], rows["single"])
    return root


def read_metadata(path: Path, required: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """Rows of a LibriMix metadata CSV, checked: the required columns exist, every row has every
    column, ``length`` (when present) is a whole number of samples. A problem raises AudioError
    naming the file, the line and the column."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise AudioError(f"{path}: empty file (expected a header line with {', '.join(required)})")
            missing = [c for c in required if c not in header]
            if missing:
                raise AudioError(f"{path}: line 1: missing column(s) {', '.join(missing)} (has {', '.join(header)})")
            rows = []
            for line, values in enumerate(reader, start=2):
                if not values:
                    continue
                if len(values) != len(header):
                    raise AudioError(f"{path}: line {line}: {len(values)} fields where the header has {len(header)}")
                row = dict(zip(header, values))
                if "length" in row:
                    try:
                        row["length"] = int(float(row["length"]))
                    except ValueError:
                        raise AudioError(f"{path}: line {line}, column length: {row['length']!r} is not a number "
                                         "of samples") from None
                    if row["length"] < 0:
                        raise AudioError(f"{path}: line {line}, column length: {row['length']} is negative")
                rows.append(row)
    except UnicodeDecodeError:
        raise AudioError(f"{path}: not a text CSV file (binary content)") from None
    except csv.Error as exc:
        raise AudioError(f"{path}: not a valid CSV file ({exc})") from None
    if not rows:
        raise AudioError(f"{path}: no rows after the header")
    return rows, header


class LibriMix(torch.utils.data.Dataset):
    """LibriMix (or the same layout written by :func:`write_synthetic_librimix`) from its CSVs.

    Items: ``mixture`` (T,), ``sources`` (S, T) float32 and ``id``; with ``segment`` every item
    is a crop of ``segment`` seconds (random in training, seeded by ``(seed, epoch, index)``;
    utterances shorter than the segment are dropped, as is usual for LibriMix training).

    Args:
        root: e.g. ``.../Libri2Mix/wav8k/min`` (the folder holding ``metadata/``).
        split: ``train-360``, ``train-100``, ``dev`` or ``test``.
        mix: ``clean`` (separation), ``both`` (noisy separation: sources are the clean speech)
            or ``single`` (enhancement: one source).
        sample_rate: the rate the files must have (Hz); a file at another rate is an error.
        segment: crop length in seconds, or None for whole utterances.
        random_crop: random crops (training) or the first ``segment`` seconds (evaluation).
        seed: seed of the random crops.
    """

    def __init__(self, root: str | os.PathLike, split: str, mix: str = "clean", sample_rate: int = 8000,
                 segment: float | None = None, random_crop: bool = True, seed: int = 0):
        if mix not in MIX_KINDS:
            raise InputError(f"LibriMix: mix must be one of {MIX_KINDS}, got {mix!r}")
        self.root = Path(root)
        csv_path = self.root / "metadata" / f"mixture_{split}_mix_{mix}.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"LibriMix: metadata file not found: {csv_path}")
        rows, fields = read_metadata(csv_path, ("mixture_ID", "mixture_path", "source_1_path"))
        self.source_cols = sorted((c for c in fields if c.startswith("source_") and c.endswith("_path")),
                                  key=lambda c: int(c.split("_")[1]))
        self.n_src = len(self.source_cols)
        self.sample_rate = sample_rate
        self.segment_samples = None if segment is None else int(round(segment * sample_rate))
        if self.segment_samples is not None and "length" in fields:
            rows = [r for r in rows if r["length"] >= self.segment_samples]
        if not rows:
            raise AudioError(f"LibriMix: no usable utterances in {csv_path}"
                             + (f" (none is at least {segment} s long)" if segment else ""))
        self.rows = rows
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _path(self, value: str) -> Path:
        p = Path(value)
        if not p.is_absolute():
            return self.root / p
        if p.exists():
            return p
        moved = self.root.joinpath(*p.parts[-3:])
        return moved if moved.exists() else p

    def _crop_start(self, index: int, length: int) -> int:
        if self.segment_samples is None or length <= self.segment_samples:
            return 0
        if not self.random_crop:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(0, length - self.segment_samples + 1))

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        mix_path = self._path(row["mixture_path"])
        length = row.get("length")
        frames = -1 if self.segment_samples is None else self.segment_samples
        start = self._crop_start(index, length) if length is not None else 0
        mixture, _ = read_audio(mix_path, self.sample_rate, start=start, frames=frames)
        sources = []
        for col in self.source_cols:
            s, _ = read_audio(self._path(row[col]), self.sample_rate, start=start, frames=frames)
            sources.append(s)
        lengths = {len(mixture), *(len(s) for s in sources)}
        if len(lengths) != 1:
            raise AudioError(f"LibriMix: {row['mixture_ID']}: mixture and sources differ in length ({sorted(lengths)})")
        return {"mixture": mixture, "sources": torch.stack(sources), "id": row["mixture_ID"]}
