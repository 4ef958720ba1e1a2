"""``python -m perf data``: how fast the training data comes, beside how fast training eats it.

Loader rows: items per second delivered by the trainer's own loader (``EpochBatchSampler`` +
``Batches`` + ``make_loader``, exactly as ``sepkit train`` builds it) at 0, 1 and 2 workers, on

- the built-in synthetic mixtures of the ``convtasnet`` demo preset (1-second crops drawn
  on the fly, batch 4), and
- a LibriMix-layout folder written by ``sepkit data synth`` (``write_synthetic_librimix``;
  3-6 s utterances, 8 kHz) read with the ``convtasnet`` recipe (3-second random crops, batch 4),

each without and with augmentation (``--augment``: the ``reverb`` preset's settings: image-source
rooms when pyroomacoustics is installed, else measured-style responses from a folder, plus a
noise folder, speed and gain). Each rate: batches after the first (which includes the workers'
start) and those the workers read ahead meanwhile, over ``--batches`` batches, median of
``--rounds`` rounds in one process.

Training rows: training steps per second (forward, backward and optimizer step of the task's
loss; batch prepared in advance) of the demo Conv-TasNet (batch 4 x 1 s) and of the full-size
Sepformer (the recipe's batch 1 x 4 s), converted to items per second, so a loader row above the
training row means the data keeps up. Results in ``perf/results/data_cpu.{json,md}``;
``--readme`` writes the README table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
README_START, README_END = "<!-- data-table:start -->", "<!-- data-table:end -->"


def _have_pra() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyroomacoustics") is not None


def write_noise_folder(folder: Path, sample_rate: int = 8000, files: int = 8, seconds: float = 10.0) -> Path:
    """A noise folder of the generator's coloured noises (what ``data.augment.noise_dir`` takes)."""
    from sepkit.data import write_audio
    from sepkit.data.synth import synth_noise

    for k in range(files):
        rng = np.random.default_rng([7, k])
        write_audio(folder / f"noise{k:02d}.wav", 0.1 * synth_noise(int(seconds * sample_rate), sample_rate, rng),
                    sample_rate)
    return folder


def write_rir_folder(folder: Path, sample_rate: int = 8000, files: int = 8) -> Path:
    """Room impulse responses of the generator (``synth_rir``), a stand-in for measured ones."""
    from sepkit.data import write_audio
    from sepkit.data.synth import synth_rir

    for k in range(files):
        rng = np.random.default_rng([11, k])
        write_audio(folder / f"rir{k:02d}.wav", 0.5 * synth_rir(sample_rate, float(rng.uniform(0.2, 0.8)), rng),
                    sample_rate, subtype="FLOAT")
    return folder


def augment_overrides(noise_dir: Path, rir_dir: Path) -> tuple[list[str], str]:
    """The ``reverb`` preset's augmentation plus a noise folder, and how its rooms are made."""
    from sepkit.train import load_recipe

    spec = dict(load_recipe("convtasnet", "reverb").data.augment)
    spec["noise_dir"] = str(noise_dir)
    how = "image-source rooms (pyroomacoustics)"
    if not _have_pra():
        spec.update(reverb="rirs", rir_dir=str(rir_dir))
        how = "generator RIR files (pyroomacoustics not installed)"
    return [f"data.augment.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in spec.items()], how


def loader_rate(cfg, workers: int, batches: int, rounds: int) -> dict:
    """Items per second of the trainer's loader for ``cfg``'s training set at ``workers``."""
    from sepkit.data.loading import Batches, EpochBatchSampler, LoaderOptions, close_loader, make_loader
    from sepkit.train.tasks import make_task

    task = make_task(cfg)
    dataset = task.dataset("train")
    bs = cfg.data.batch_size
    # skip what the workers read ahead while the first batch was awaited: the rate is the steady one
    skip = 1 + workers * cfg.data.prefetch_factor
    rates, starts = [], []
    for r in range(rounds):
        first = r * (skip + batches)
        sampler = EpochBatchSampler(len(dataset), bs, cfg.train.seed, start=first, stop=first + skip + batches)
        options = LoaderOptions(num_workers=workers, prefetch_factor=cfg.data.prefetch_factor, seed=cfg.train.seed)
        it = iter(make_loader(Batches(dataset, task.collate, cfg.train.seed, "train item"), sampler, options))
        t0 = time.perf_counter()
        next(it)
        starts.append(time.perf_counter() - t0)
        for _ in range(skip - 1):
            next(it)
        t1 = time.perf_counter()
        for _ in range(batches):
            next(it)
        t2 = time.perf_counter()
        close_loader(it)
        rates.append(batches * bs / (t2 - t1))
    return {"items_per_s": statistics.median(rates), "rounds": rates, "first_batch_s": statistics.median(starts)}


def step_rate(cfg, steps: int, warmup: int = 1) -> dict:
    """Training steps per second of ``cfg``'s model on one prepared batch of its data."""
    from sepkit.train.tasks import make_task
    from sepkit.train.trainer import build_optimizer

    task = make_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    batch = task.collate([task.dataset("train")[i] for i in range(cfg.data.batch_size)])
    model.train()
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = task.training_step(model, batch)
        loss.backward()
        optimizer.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"step_s": step, "steps": times, "items_per_s": cfg.data.batch_size / step,
            "params": sum(p.numel() for p in model.parameters())}


def run(batches: int, rounds: int, workers: list[int], steps: int, threads: int, quick: bool = False) -> dict:
    from sepkit.data import MixtureSpec, write_synthetic_librimix
    from sepkit.train import load_recipe

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the trainer does on a CPU
    tmp = Path(tempfile.mkdtemp(prefix="sepkit-perf-data-"))
    n_train = 16 if quick else 200
    spec = MixtureSpec(sample_rate=8000, n_src=2, min_duration=3.0, max_duration=6.0)
    root = write_synthetic_librimix(tmp / "librimix", spec, {"train-100": n_train, "dev": 2, "test": 2})
    aug, how = augment_overrides(write_noise_folder(tmp / "noise"), write_rir_folder(tmp / "rirs"))
    sources = {
        "synthetic (demo: 1 s crops, batch 4)": ("convtasnet", "demo", []),
        "LibriMix layout (3 s crops, batch 4)": ("convtasnet", None, ["data.dataset=librimix", f"data.root={root}",
                                                                      "data.train_split=train-100"]),
    }
    rows = []
    for name, (recipe, preset, extra) in sources.items():
        for augmented in (False, True):
            cfg = load_recipe(recipe, preset, extra + (aug if augmented else []))
            for w in workers:
                r = loader_rate(cfg, w, batches, rounds)
                rows.append({"data": name, "augment": augmented, "workers": w, **r})
                print(f"{name:40s} augment={augmented!s:5s} workers={w}: {r['items_per_s']:8.1f} items/s", flush=True)
    training = []
    models = {"convtasnet demo (batch 4 x 1 s)": ("convtasnet", "demo", []),
              "sepformer full size (batch 1 x 4 s)": ("sepformer", None, [
                  "data.dataset=librimix", f"data.root={root}", "data.train_split=train-100", "train.precision=fp32",
                  "data.dynamic_mixing=false"])}
    for name, (recipe, preset, extra) in models.items():
        if quick and "sepformer" in name:
            extra = extra + ["model.args.n_layers=1", "model.args.n_blocks=1"]
        cfg = load_recipe(recipe, preset, extra)
        r = step_rate(cfg, steps)
        training.append({"model": name, **r})
        print(f"{name:40s} training: {r['step_s'] * 1000:8.0f} ms/step = {r['items_per_s']:6.2f} items/s", flush=True)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "config": {"batches": batches, "rounds": rounds, "workers": workers, "steps": steps, "threads": threads,
                   "augment": aug, "rooms": how, "librimix_train_items": n_train, "quick": quick},
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "rows": rows,
        "training": training,
    }


def markdown(result: dict) -> str:
    c, m = result["config"], result["machine"]
    workers = c["workers"]
    lines = [f"Data loading and training on the CPU ({m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['date']}"
             f"{', QUICK: not a measurement' if c['quick'] else ''}): items per second of the trainer's loader "
             f"(median of {c['rounds']} rounds of {c['batches']} batches after the first and those read ahead meanwhile; augmentation: the `reverb` "
             f"preset with {c['rooms']}, a noise folder, speed and gain), and of training (median of {c['steps']} "
             f"steps, {c['threads']} threads, the batch prepared in advance).", "",
             "| data | augmentation | " + " | ".join(f"{w} worker{'s' if w != 1 else ''}" for w in workers) + " |",
             "|---|---|" + "---:|" * len(workers)]
    by = {}
    for r in result["rows"]:
        by.setdefault((r["data"], r["augment"]), {})[r["workers"]] = r["items_per_s"]
    for (data, augmented), rates in by.items():
        lines.append(f"| {data} | {'on' if augmented else 'off'} | "
                     + " | ".join(f"{rates[w]:.1f}" if w in rates else "" for w in workers) + " |")
    lines += ["", "| training | ms per step | items per second |", "|---|---:|---:|"]
    for t in result["training"]:
        lines.append(f"| {t['model']} | {t['step_s'] * 1000:.0f} | {t['items_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: Path) -> bool:
    """Replace the README block between the data-table markers with ``text``."""
    from perf.report import replace_block

    return replace_block(readme, README_START, README_END, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs, measures nothing")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default perf/results; --quick: none)")
    parser.add_argument("--readme", action="store_true", help="also rewrite the README's data table")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.rounds < 1 or args.steps < 1 or args.threads < 1 or min(args.workers) < 0:
        parser.error("need --batches, --rounds, --steps, --threads >= 1 and --workers >= 0")
    if args.quick and (args.readme or (args.out is not None and args.out.resolve() == RESULTS.resolve())):
        parser.error("--quick results never go to perf/results or the README")
    result = run(args.batches, args.rounds, args.workers, args.steps, args.threads, quick=args.quick)
    text = markdown(result)
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "data_cpu.json").write_text(json.dumps(result, indent=1))
        (out / "data_cpu.md").write_text(text)
        print(f"wrote {out / 'data_cpu.json'} and {out / 'data_cpu.md'}")
    if args.readme:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        if not update_readme(text, readme):
            print(f"{readme} has no {README_START} ... {README_END} markers; not updated", file=sys.stderr)
            return 2
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
