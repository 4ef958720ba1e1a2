"""``python -m perf separate-long``: peak memory and time of separating long recordings file to file.

For each length (``--minutes``, default 10 and 60) an 8 kHz mono 16-bit WAV is written into a
temporary folder: two-speaker mixtures of the built-in synthetic speech (``sepkit.data.synth``: a
pool of distinct mixtures of 3-6 s, concatenated at random gains until the length is reached),
so the model sees speech-like content, not silence. The checkpoint is the ``convtasnet`` recipe's
``demo`` preset with random weights (seed 0), written as a weights-only checkpoint folder
(``write_model_checkpoint``, as a converted release is). Each separation runs in a fresh process:
``sepkit.Separator.from_checkpoint(CKPT).separate_file(WAV, OUT)``, the blockwise path of
``sepkit separate`` (chunks of 8 s with 1 s overlap, read and written block by block), and, for
comparison, at the lengths up to ``--in-memory-minutes`` (default 60; 0: none), ``.separate(WAV)``,
which reads the whole file and returns the sources as one tensor (nothing written).

Memory: the process's resident set after loading the model, then its peak during the separation
(``VmHWM`` reset just before it through ``/proc/self/clear_refs``, so the peak of imports and of
the launching process does not count; ``ru_maxrss`` is recorded beside it); the table gives the
growth (peak minus the resident set after loading) and the absolute peak. glibc's allocator runs
with its defaults (what a user's process gets). Time: wall seconds of the call, and seconds of
audio per second. Results in ``perf/results/separate_long_cpu.{json,md}``; ``--readme`` rewrites
the README block between ``<!-- separate-long-table:start -->`` and ``<!-- separate-long-table:end -->``.
``--quick`` uses a tiny model (a check that it runs, not a measurement; results only into ``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perf.report import load_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
README_START, README_END = "<!-- separate-long-table:start -->", "<!-- separate-long-table:end -->"
RATE = 8000
MODES = ("blockwise", "in-memory")
#: --quick: a tiny Conv-TasNet in place of the demo preset's
TINY = ["model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
        "model.args.layers=2", "model.args.repeats=1"]


# -- inputs -------------------------------------------------------------------------------------

def write_checkpoint(out: Path, quick: bool = False) -> tuple[Path, int]:
    """The ``convtasnet`` demo preset with random weights (seed 0) as a checkpoint folder ``out``;
    returns the folder and the parameter count."""
    import torch

    from sepkit.train import load_recipe, make_task
    from sepkit.train.checkpoint import write_model_checkpoint

    cfg = load_recipe("convtasnet", preset="demo", overrides=TINY if quick else [])
    task = make_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    params = sum(p.numel() for p in model.parameters())
    return write_model_checkpoint(out, model, cfg.to_dict(), task.model_meta()), params


def mixture_pool(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct two-speaker synthetic mixtures (T_i,) float32 at 8 kHz, 3-6 s each."""
    from sepkit.data.synth import MixtureSpec, make_speakers, synth_mixture

    spec = MixtureSpec(sample_rate=RATE, n_src=2, min_duration=3.0, max_duration=6.0)
    speakers = make_speakers(8, seed)
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        pair = rng.choice(len(speakers), size=2, replace=False)
        pool.append(synth_mixture(spec, [speakers[i] for i in pair], rng)["mixture"].astype(np.float32))
    return pool


def write_long_wav(path: Path, seconds: float, pool: list[np.ndarray], seed: int = 1) -> int:
    """Write ``seconds`` of audio to ``path`` (8 kHz mono 16-bit WAV) block by block: mixtures of
    ``pool`` in random order at random gains (-6 to 0 dB); returns the number of samples."""
    import soundfile as sf

    total = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    written = 0
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16", format="WAV") as f:
        while written < total:
            piece = pool[int(rng.integers(len(pool)))] * np.float32(10 ** (rng.uniform(-6, 0) / 20))
            piece = piece[:total - written]
            f.write(piece)
            written += len(piece)
    return written


# -- the child process --------------------------------------------------------------------------

def _status_mb(key: str) -> float:
    """``key`` (VmRSS, VmHWM) of /proc/self/status in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _separate_child(spec: dict) -> dict:
    """Load the checkpoint, reset the peak resident set, separate ``spec["wav"]`` (mode
    ``blockwise``: to files in ``spec["out"]``; ``in-memory``: to a tensor); memory in MB, time in s."""
    import gc
    import resource

    import soundfile as sf
    import torch

    import sepkit

    torch.set_num_threads(spec["threads"])
    sep = sepkit.Separator.from_checkpoint(spec["ckpt"])
    gc.collect()
    loaded = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
        f.write("5")
    if _status_mb("VmHWM") > loaded + 1:
        raise RuntimeError("cannot reset the peak resident set (/proc/self/clear_refs)")
    t0 = time.perf_counter()
    if spec["mode"] == "blockwise":
        paths = sep.separate_file(spec["wav"], spec["out"], progress=False)
        wall, peak = time.perf_counter() - t0, _status_mb("VmHWM")
        frames = [sf.info(str(p)).frames for p in paths]
        peak_out = max(float(np.abs(sf.read(str(p), frames=RATE * 60, dtype="float32")[0]).max()) for p in paths)
    else:
        sources = sep.separate(spec["wav"])
        wall, peak = time.perf_counter() - t0, _status_mb("VmHWM")
        frames = [sources.shape[-1]] * sources.shape[0]
        peak_out = float(sources[:, :RATE * 60].abs().max())
    return {"loaded_mb": loaded, "peak_mb": peak, "growth_mb": peak - loaded,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall,
            "output_frames": frames, "output_peak_first_minute": peak_out}


def child(spec_json: str) -> int:
    """Entry point of a child process: :func:`_separate_child` on the JSON spec, its JSON printed."""
    print(json.dumps(_separate_child(json.loads(spec_json))))
    return 0


def in_process(spec: dict, timeout: float = 3 * 3600) -> dict:
    """:func:`child` in a fresh interpreter (glibc's default allocator settings); its result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    code = "import sys, perf.separate_long as s; sys.exit(s.child(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec['mode']} separation of {spec['wav']} failed: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------

def run(minutes: list[float], threads: int, in_memory: float, quick: bool = False) -> dict:
    """Per length and mode, one fresh process's memory and time; with the configuration and machine."""
    import torch

    import sepkit

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sepkit-perf-long-") as tmp:
        tmp = Path(tmp)
        ckpt, params = write_checkpoint(tmp / "ckpt", quick)
        pool = mixture_pool(4 if quick else 24)
        for m in minutes:
            wav = tmp / f"long-{m:g}min.wav"
            samples = write_long_wav(wav, m * 60, pool)
            for mode in MODES if m <= in_memory else MODES[:1]:
                out = tmp / f"out-{m:g}-{mode}"
                r = in_process({"ckpt": str(ckpt), "wav": str(wav), "out": str(out), "mode": mode,
                                "threads": threads})
                if r["output_frames"] != [samples, samples] or not r["output_peak_first_minute"] > 0:
                    raise RuntimeError(f"{mode} separation of {wav.name}: outputs of {r['output_frames']} samples "
                                       f"(peak {r['output_peak_first_minute']:.3g}), expected two of {samples}")
                row = {"minutes": m, "mode": mode, "samples": samples, "input_mb": wav.stat().st_size / 2**20, **r,
                       "audio_s_per_s": samples / RATE / r["wall_s"]}
                rows.append(row)
                print(format_row(row), flush=True)
                if mode == "blockwise":
                    for p in out.iterdir():
                        p.unlink()
            wav.unlink()
    return {"rows": rows,
            "config": {"sample_rate": RATE, "minutes": minutes, "threads": threads, "chunk_s": 8.0, "overlap_s": 1.0,
                       "model": "convtasnet demo preset, random weights" + (" (QUICK: tiny)" if quick else ""),
                       "params": params, "in_memory_minutes": in_memory, "malloc": "glibc defaults", "quick": quick},
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "torch": torch.__version__, "sepkit": sepkit.__version__,
                        "python": platform.python_version(),
                        "load_average": [load_before, os.getloadavg()[0]],
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}  # noqa: UP017 (3.10)


def format_row(r: dict) -> str:
    """One Markdown row of the table."""
    what = "`separate_file` (blockwise)" if r["mode"] == "blockwise" else "`separate` (whole file in memory)"
    return (f"| {r['minutes']:g} min ({r['input_mb']:.1f} MB WAV) | {what} | {r['growth_mb']:.0f} MB | "
            f"{r['peak_mb']:.0f} MB | {r['wall_s']:.1f} s | {r['audio_s_per_s']:.0f} |")


def markdown(result: dict) -> str:
    """The README block: how it was measured and the table."""
    c, m = result["config"], result["machine"]
    head = (f"Separating long 8 kHz recordings on the CPU ({m['cpu']}, {m['cores']} cores, "
            f"load average {load_text(m)}, {c['threads']} thread{'s' if c['threads'] != 1 else ''}, "
            f"torch {m['torch']}, {m['date']}{'; QUICK: not a measurement' if c['quick'] else ''}): "
            f"{c['model']} ({c['params']:,} parameters), chunks of {c['chunk_s']:g} s with {c['overlap_s']:g} s "
            "overlap, one fresh process per row; memory growth = peak resident set during the call minus the "
            "resident set after loading the model, peak = the process's absolute peak during the call "
            f"(allocator: {c['malloc']}).")
    lines = [head, "",
             "| recording | call | memory growth | peak resident set | wall time | audio s per s |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [format_row(r) for r in result["rows"]]
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: Path) -> bool:
    """Replace the README block between the separate-long markers with ``text``."""
    from perf.report import replace_block

    return replace_block(readme, README_START, README_END, text)


def _fail(message: str) -> int:
    print(f"python -m perf separate-long: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    from perf.report import is_inside

    parser = argparse.ArgumentParser(prog="python -m perf separate-long", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0], help="recording lengths")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--in-memory-minutes", type=float, default=60.0,
                        help="also time the whole-file-in-memory call at lengths up to this (0: never)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default perf/results)")
    parser.add_argument("--readme", action="store_true", help="also rewrite the README's long-file table")
    parser.add_argument("--quick", action="store_true", help="a tiny model: checks the benchmark runs, measures "
                        "nothing (results only into --out)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        return _fail(f"--threads must be >= 1, got {args.threads}")
    bad = [m for m in args.minutes if not 0 < m <= 600]
    if bad:
        return _fail(f"--minutes must be in (0, 600], got {bad[0]:g}")
    if args.quick and (args.readme or args.out is None or is_inside(args.out, RESULTS)):
        return _fail("--quick results go only to an --out folder outside perf/results, never to the README")
    if not Path("/proc/self/clear_refs").exists():
        return _fail("needs Linux's /proc/self/clear_refs to reset the peak resident set")
    if args.in_memory_minutes < 0:
        return _fail(f"--in-memory-minutes must be >= 0, got {args.in_memory_minutes:g}")
    result = run(args.minutes, args.threads, args.in_memory_minutes, args.quick)
    text = markdown(result)
    print(text)
    out = args.out if args.out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "separate_long_cpu.json").write_text(json.dumps(result, indent=1))
    (out / "separate_long_cpu.md").write_text(text)
    print(f"wrote {out / 'separate_long_cpu.json'} and {out / 'separate_long_cpu.md'}")
    if args.readme:
        readme = ROOT / "README.md"
        if not update_readme(text, readme):
            return _fail(f"{readme} has no {README_START} ... {README_END} markers; not updated")
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
