"""Evaluation on a data set: per-utterance rows of metrics, their summary, the CSV they go to."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch

from sepkit.data.loading import iterate
from sepkit.errors import InputError
from sepkit.losses import PITLoss, SISDRLoss, reorder_sources
from sepkit.metrics import sdr, sdri, si_sdr, si_sdri

METRICS = ("si_sdr", "si_sdri", "sdr", "sdri")


def items(dataset, max_items: int | None = None, progress: bool = False, desc: str = "eval"):
    """Iterate over the first ``max_items`` items of ``dataset`` (all when None) in order, with
    a progress bar when asked; a :class:`~sepkit.data.loading.Loaded` data set is read by its
    DataLoader workers (:func:`sepkit.data.loading.iterate`)."""
    n = len(dataset) if max_items is None else min(max_items, len(dataset))
    stream = iterate(dataset, n)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=n, desc=desc, unit="utt", leave=False)
    yield from stream


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, device: torch.device | str = "cpu", metrics=METRICS,
             max_items: int | None = None, progress: bool = False, separate=None) -> list[dict]:
    """Separate every item (batch 1, whole utterances), align sources by PIT on SI-SDR, measure.

    ``separate(model, mixture (1, T)) -> (1, S, T)`` (default: ``model(mixture)``).
    Returns one row per utterance: ``id`` and each metric averaged over its sources (dB).
    """
    model.eval()
    pit = PITLoss(SISDRLoss(reduction="none"))
    rows = []
    for item in items(dataset, max_items, progress):
        mix = item["mixture"].to(device).unsqueeze(0)
        ref = item["sources"].to(device).unsqueeze(0)
        est = (model(mix) if separate is None else separate(model, mix)).float()
        _, perm = pit(est, ref)
        est = reorder_sources(est, perm)
        row = {"id": item["id"]}
        est64, ref64, mix64 = est.double().cpu(), ref.double().cpu(), mix.double().cpu()
        for m in metrics:
            if m == "si_sdr":
                v = si_sdr(est64, ref64)
            elif m == "si_sdri":
                v = si_sdri(est64, ref64, mix64)
            elif m == "sdr":
                v = sdr(est64, ref64)
            elif m == "sdri":
                v = sdri(est64, ref64, mix64)
            else:
                raise InputError(f"evaluate: unknown metric {m!r}; choose from {METRICS}")
            row[m] = float(v.mean())
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean and standard deviation of each metric over utterances."""
    out = {}
    if not rows:
        return out
    for key in rows[0]:
        if key == "id":
            continue
        vals = [r[key] for r in rows]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1))
        out[key] = (mean, std)
    return out


def format_summary(summary: dict, n: int) -> str:
    width = max([8] + [len(k) for k in summary])
    lines = [f"{'metric':{width}s} {'mean':>9s} {'std':>7s}   ({n} utterances)"]
    for k, (mean, std) in summary.items():
        lines.append(f"{k:{width}s} {mean:9.2f} {std:7.2f}")
    return "\n".join(lines)


def write_rows(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts with the same keys) to the CSV ``path`` atomically."""
    if not rows:
        raise InputError(f"write_rows: no rows to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
