"""``python -m perf.real_speech --ckpt RUN [--data DIR] [--out DIR]``: a trained separator or
enhancer on real recordings.

``DIR`` (default ``$SEPKIT_REAL_DATA``, else ``../shared/data`` beside the checkout) is a folder of
real 16 kHz recordings: ``speech/`` (clean utterances named ``libri_<speaker>-*``,
``cmu_arctic_us_<speaker>_*``, ``vctk_<speaker>_*``) and ``noisy/`` (``<name>_noisy.wav``,
sample-aligned with ``speech/<name>.wav``). Nothing of it is shipped with sepkit; without the
folder the script says so and exits 0.

- A separator (``n_src`` 2): ``--pairs`` mixtures of two utterances of different speakers
  (seeded), cropped to the shorter one (at most ``--max-seconds``), the second at a level
  uniform in ``--sir`` dB relative to the first, at the model's rate; the task's metrics
  (SI-SDRi, SDRi) per mixture.
- An enhancer (``n_src`` 1): the real noisy/clean pairs at the model's rate; the task's metrics
  (SI-SDR, SI-SDRi, PESQ, STOI where installed) beside the noisy input's own.

Prints one table; ``--out`` also keeps the mixtures (``mix/``, ``s1/``, ``s2/``) and the metrics
CSV there. This is a look at real speech, not a benchmark of speed and not a test.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_SPEAKER = (re.compile(r"^libri_(\d+)-"), re.compile(r"^cmu_arctic_us_([a-z]+)_"), re.compile(r"^vctk_(p\d+)_"))


def speaker_of(name: str) -> str | None:
    for pattern in _SPEAKER:
        m = pattern.match(name)
        if m:
            return m.group(1)
    return None


def load_speech(folder: Path, rate: int) -> list[tuple[str, str, torch.Tensor]]:
    """(file stem, speaker, waveform at ``rate``) of every clean utterance in ``folder``."""
    from sepkit.data import read_audio, resample

    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".wav", ".flac", ".ogg") or speaker_of(path.stem) is None:
            continue
        wav, sr = read_audio(path)
        out.append((path.stem, speaker_of(path.stem), resample(wav.float(), sr, rate)))
    return out


def two_speaker_mixtures(speech, pairs: int, sir: tuple[float, float], max_samples: int, seed: int) -> list[dict]:
    """``pairs`` items ``{"mixture", "sources", "id"}`` of two different speakers' utterances."""
    rng = np.random.default_rng(seed)
    items = []
    while len(items) < pairs:
        i, j = rng.choice(len(speech), size=2, replace=False)
        (ni, si, a), (nj, sj, b) = speech[i], speech[j]
        if si == sj:
            continue
        n = min(len(a), len(b), max_samples)
        a, b = a[:n] / a[:n].std(), b[:n] / b[:n].std()
        b = b * float(10 ** (rng.uniform(*sir) / 20))
        sources = torch.stack([a, b])
        scale = 0.9 / float(sources.sum(0).abs().max())
        sources = sources * scale
        items.append({"mixture": sources.sum(0), "sources": sources, "id": f"{ni}+{nj}"})
    return items


def noisy_pairs(folder: Path, rate: int) -> list[dict]:
    """Items ``{"mixture": noisy, "sources": clean (1, T), "id"}`` of the real noisy/clean pairs."""
    from sepkit.data import read_audio, resample

    items = []
    for noisy_path in sorted((folder / "noisy").glob("*_noisy.wav")):
        clean_path = folder / "speech" / (noisy_path.stem[: -len("_noisy")] + ".wav")
        if not clean_path.is_file():
            continue
        noisy, sr = read_audio(noisy_path)
        clean, sr2 = read_audio(clean_path)
        n = min(len(noisy), len(clean))
        noisy, clean = resample(noisy[:n].float(), sr, rate), resample(clean[:n].float(), sr2, rate)
        items.append({"mixture": noisy, "sources": clean[None], "id": clean_path.stem})
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.real_speech", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a run folder or checkpoint of a separator or enhancer")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SEPKIT_REAL_DATA", DEFAULT_DATA)))
    parser.add_argument("--out", type=Path, default=None, help="keep the mixtures and metrics here")
    parser.add_argument("--pairs", type=int, default=60, help="two-speaker mixtures (default 60)")
    parser.add_argument("--sir", type=float, nargs=2, default=(-5.0, 5.0), help="level range of the second speaker, dB")
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not (args.data / "speech").is_dir():
        print(f"perf.real_speech: skipped: no real recordings at {args.data} (set --data or SEPKIT_REAL_DATA)")
        return 0

    from sepkit.data import write_audio
    from sepkit.metrics import pesq, si_sdr
    from sepkit.train import load_trained
    from sepkit.train.evaluate import format_summary, summarize, write_rows

    task, model = load_trained(args.ckpt, torch.device(args.device))
    rate, n_src = task.sample_rate, task.cfg.data.n_src
    if n_src == 2:
        speech = load_speech(args.data / "speech", rate)
        items = two_speaker_mixtures(speech, args.pairs, tuple(args.sir), int(args.max_seconds * rate), args.seed)
        what = f"{len(items)} real two-speaker mixtures ({len({s for _, s, _ in speech})} speakers, SIR {args.sir} dB)"
    elif n_src == 1:
        items = noisy_pairs(args.data, rate)
        what = f"{len(items)} real noisy/clean pairs"
    else:
        print(f"perf.real_speech: a model of {n_src} sources; only 1 (enhancement) and 2 are built here",
              file=sys.stderr)
        return 2
    if not items:
        print(f"perf.real_speech: skipped: no usable recordings in {args.data}")
        return 0
    with torch.no_grad():
        rows = task.evaluate(model, items)
    if n_src == 1:  # the noisy input's own scores
        for row, item in zip(rows, items):
            noisy, clean = item["mixture"].double()[None], item["sources"][:1].double()
            row["input_si_sdr"] = float(si_sdr(noisy, clean))
            if rate in (8000, 16000):
                try:
                    mode = "wb" if rate == 16000 else "nb"
                    row["input_pesq"] = float(pesq(noisy.float(), clean.float(), rate, mode=mode))
                except ImportError:
                    pass
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for item in items:
            write_audio(args.out / "mix" / f"{item['id']}.wav", item["mixture"], rate)
            for k, s in enumerate(item["sources"]):
                write_audio(args.out / f"s{k + 1}" / f"{item['id']}.wav", s, rate)
        write_rows(args.out / "metrics.csv", rows)
    print(f"{args.ckpt}: {what} at {rate} Hz")
    print(format_summary(summarize(rows), len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
