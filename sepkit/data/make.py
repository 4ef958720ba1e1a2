"""Write synthetic mixtures to disk in the LibriMix layout, so that the LibriMix loader (and any
tool that reads LibriMix) runs on them unchanged.

Layout written under ``root``::

    Libri{n}Mix/wav{8|16}k/{min|max}/
        synth.json                         generation settings (checked before reuse)
        metadata/mixture_{split}_mix_clean.csv   mixture_ID,mixture_path,source_1_path,...,length
        metadata/mixture_{split}_mix_both.csv    (with noise) ... noise_path,length
        metadata/mixture_{split}_mix_single.csv  (with noise) one speaker + noise
        metadata/libri{n}mix_{split}.csv   speakers, gains (dB), SNR, RT60 of every mixture
        {split}/{mix_clean,mix_both,mix_single,s1,s2,...,noise}/{mixture_ID}.wav

Paths in the CSVs are relative to the ``wav{k}k/{mode}`` folder, so the tree can be moved.
The folder is built under a temporary name and renamed into place when complete: an interrupted
run never leaves a half-written data set that looks finished.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .audio import write_audio
from .datasets import DatasetError
from .synth import MixtureSpec, make_speakers, split_code, synth_mixture

__all__ = ["synth_librimix", "librimix_base"]

_FORMAT = 1


def librimix_base(root, spec: MixtureSpec) -> Path:
    """``root/Libri{n}Mix/wav{k}k/{mode}``."""
    return Path(root) / f"Libri{spec.n_src}Mix" / f"wav{spec.sample_rate // 1000}k" / spec.mode


def _manifest(spec: MixtureSpec, splits: dict[str, int], num_speakers: dict[str, int], seed: int) -> dict:
    return {
        "format": _FORMAT,
        "generator": "sepkit synthetic speech-like mixtures",
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()},
        "splits": dict(splits),
        "num_speakers": dict(num_speakers),
        "seed": seed,
    }


def _write_chunk(args) -> list[dict]:
    """Generate and write mixtures ``indices`` of one split (runs in a worker process)."""
    tmp_base, split, indices, spec, n_speakers, seed = args
    speakers = make_speakers(max(n_speakers, spec.n_src), seed, split)
    rows = []
    for i in indices:
        rec = synth_mixture(spec, speakers, np.random.default_rng([seed, split_code(split), i]))
        mid = "_".join(f"{spk}-{i:06d}-{j}" for j, spk in enumerate(rec["speakers"]))
        rel = {}

        def put(sub: str, wav) -> None:
            path = Path(split) / sub / f"{mid}.wav"
            write_audio(tmp_base / path, wav, spec.sample_rate)
            rel[sub] = path.as_posix()

        for j in range(spec.n_src):
            put(f"s{j + 1}", rec["sources"][j])
        clean = rec["sources"].sum(0)
        put("mix_clean", clean)
        if rec["noise"] is not None:
            put("noise", rec["noise"])
            put("mix_both", rec["mixture"])
            put("mix_single", rec["sources"][0] + rec["noise"])
        rows.append({"id": mid, "paths": rel, "length": int(clean.shape[0]), "rec": {k: rec[k] for k in ("speakers", "gains_db", "snr_db", "rt60")}})
    return rows


def synth_librimix(
    root,
    spec: MixtureSpec,
    splits: dict[str, int],
    *,
    num_speakers: dict[str, int] | None = None,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Generate synthetic mixtures in the LibriMix layout (see the module docstring).

    Args:
        root: output folder (``Libri{n}Mix`` is created inside it).
        spec: what to draw (:class:`~sepkit.data.synth.MixtureSpec`).
        splits: mixtures per split, e.g. ``{"train-360": 2000, "dev": 200, "test": 200}``.
        num_speakers: speaker-pool size per split (default 100 for splits whose name starts with
            ``train``, 20 otherwise); splits use disjoint speakers.
        seed: everything is a function of the seed: the same call writes identical files.
        workers: processes generating in parallel.
        overwrite: replace an existing folder made with other settings (otherwise an error).

    Returns:
        The ``wav{k}k/{mode}`` folder. If it already holds exactly this data (same
        ``synth.json``), nothing is written.
    """
    if not splits:
        raise DatasetError("synth_librimix: no splits requested")
    for name, n in splits.items():
        if n < 1:
            raise DatasetError(f"synth_librimix: split {name!r} needs at least one mixture, got {n}")
    num_speakers = {s: (num_speakers or {}).get(s, 100 if s.startswith("train") else 20) for s in splits}
    base = librimix_base(root, spec)
    manifest = _manifest(spec, splits, num_speakers, seed)
    if base.exists():
        existing = base / "synth.json"
        if existing.is_file():
            try:
                same = json.loads(existing.read_text()) == manifest
            except json.JSONDecodeError:
                same = False
            if same:
                return base
        if not overwrite:
            what = "was generated with other settings" if existing.is_file() else "exists and is not a sepkit synthetic data set"
            raise DatasetError(f"synthetic data folder {base} {what}; choose another folder or pass overwrite")
    tmp = base.with_name(f".{base.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        jobs = []
        chunk = 64
        for split, n in splits.items():
            for a in range(0, n, chunk):
                jobs.append((tmp, split, range(a, min(n, a + chunk)), spec, num_speakers[split], seed))
        if workers > 1:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(_progress(pool.map(_write_chunk, jobs), len(jobs), progress))
        else:
            results = list(_progress(map(_write_chunk, jobs), len(jobs), progress))
        by_split: dict[str, list[dict]] = {s: [] for s in splits}
        for job, rows in zip(jobs, results):
            by_split[job[1]].extend(rows)
        (tmp / "metadata").mkdir()
        for split, rows in by_split.items():
            _write_metadata(tmp / "metadata", split, rows, spec)
        (tmp / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if base.exists():
            shutil.rmtree(base)
        os.replace(tmp, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return base


def _progress(it, total: int, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="synthesizing", unit="chunk")


def _write_metadata(folder: Path, split: str, rows: list[dict], spec: MixtureSpec) -> None:
    n = spec.n_src
    src_cols = [f"source_{j + 1}_path" for j in range(n)]
    tables = {"mix_clean": (["mixture_ID", "mixture_path", *src_cols, "length"], lambda r: [r["id"], r["paths"]["mix_clean"], *(r["paths"][f"s{j + 1}"] for j in range(n)), r["length"]])}
    if spec.noise:
        tables["mix_both"] = (["mixture_ID", "mixture_path", *src_cols, "noise_path", "length"], lambda r: [r["id"], r["paths"]["mix_both"], *(r["paths"][f"s{j + 1}"] for j in range(n)), r["paths"]["noise"], r["length"]])
        tables["mix_single"] = (["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"], lambda r: [r["id"], r["paths"]["mix_single"], r["paths"]["s1"], r["paths"]["noise"], r["length"]])
    for mix_type, (header, make) in tables.items():
        with open(folder / f"mixture_{split}_{mix_type}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow(make(r))
    with open(folder / f"libri{n}mix_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mixture_ID", *(f"speaker_{j + 1}_ID" for j in range(n)), *(f"source_{j + 1}_gain_db" for j in range(n)), "snr_db", "rt60"])
        for r in rows:
            rec = r["rec"]
            w.writerow([r["id"], *rec["speakers"], *(f"{g:.3f}" for g in rec["gains_db"]), "" if rec["snr_db"] is None else f"{rec['snr_db']:.3f}", "" if rec["rt60"] is None else f"{rec['rt60']:.3f}"])
