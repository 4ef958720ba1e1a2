"""``python -m perf export``: onnxruntime beside PyTorch eager on the CPU, for the exported separators
and the GCRN's streaming step.

Separators (``build_separator`` at the published sizes, 2 sources, 8 kHz): each is written once by
:func:`sepkit.exporting.export` (ONNX, checked against the model at two batch sizes and two
lengths) in a process of its own, then one call at batch 1 x ``--seconds`` (4 s) is timed in
PyTorch eager (``torch.inference_mode``) and in onnxruntime (CPU execution provider, the file just
written), each implementation in a fresh process, the two in turn (order alternating) for
``--rounds`` rounds. Both get ``--threads`` threads (``torch.set_num_threads``; onnxruntime's
``intra_op_num_threads``, one inter-op thread, sequential execution) and the same allocator
settings (``perf.models.TIMING_MALLOC["steady"]``). A figure is the median over the rounds of each
process's median of ``--reps`` calls after one warm-up call; ratio = PyTorch time / onnxruntime
time (above 1: onnxruntime is faster). Each process also saves its output, and the table gives
the largest difference between the two (relative to the output's largest magnitude), so the two
timed the same computation. A model that does not export gets a row with the reason.

GCRN streaming step (``exportable(model, part="step")``: one STFT frame with the LSTM state as
inputs and outputs), both configurations at 16 kHz: ``"ondevice"`` (the recipe's: 25 ms window,
20 ms hop) and ``"tan_wang"`` (20 ms window, 10 ms hop). ``--seconds`` of audio are fed frame by
frame at batch 1, the state carried from step to step; time per hop = a pass's time / its hops,
real-time factor = time per hop / hop duration (below 1: faster than real time on one stream).

Results in ``perf/results/export_cpu.{json,md}``; ``--readme`` rewrites the README block between
``<!-- export-table:start -->`` and ``<!-- export-table:end -->``. ``--quick`` runs the whole
benchmark on tiny models (a check that it runs, not a measurement; results only into ``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perf.report import load_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
README_START, README_END = "<!-- export-table:start -->", "<!-- export-table:end -->"
SEPARATORS = ("convtasnet", "dprnn", "sepformer", "bilstm", "tfgridnet")
STEPS = ("gcrn-ondevice", "gcrn-tan_wang")
MODELS = SEPARATORS + STEPS
SEPARATOR_RATE, GCRN_RATE = 8000, 16000
IMPLEMENTATIONS = ("torch", "ort")

#: --quick: tiny configurations (an export traces the whole graph whatever the size)
TINY = {
    "convtasnet": {"n_filters": 16, "kernel_size": 16, "stride": 8, "bottleneck": 8, "hidden": 16, "skip": 8,
                   "layers": 2, "repeats": 1},
    "dprnn": {"n_filters": 8, "kernel_size": 4, "stride": 2, "bottleneck": 8, "hidden": 8, "chunk_size": 12,
              "n_blocks": 1},
    "sepformer": {"n_filters": 16, "kernel_size": 16, "stride": 8, "nhead": 2, "dim_feedforward": 32, "n_layers": 1,
                  "n_blocks": 1, "chunk_size": 10},
    "bilstm": {"n_filters": 16, "kernel_size": 16, "stride": 8, "hidden": 8, "n_layers": 1},
    "tfgridnet": {"n_blocks": 1},
    "gcrn": {"win_length": 64, "hop_length": 32, "channels": (4, 8), "lstm_groups": 2, "lstm_layers": 2},
}


# -- the models (in the child processes) ------------------------------------------------------

def build(name: str, quick: bool = False):
    """The eval-mode model ``name`` (a separator, or ``gcrn-<config>``), weights seeded by 0."""
    import torch

    torch.manual_seed(0)
    if name.startswith("gcrn-"):
        from sepkit.models.gcrn import GCRN

        return GCRN(name[len("gcrn-"):], **(TINY["gcrn"] if quick else {})).eval()
    from sepkit.models.separators import build_separator

    return build_separator(name, n_src=2, sample_rate=SEPARATOR_RATE, **(TINY[name] if quick else {})).eval()


def mixture(seconds: float, rate: int) -> np.ndarray:
    """The timed input: (1, T) float32, T = seconds * rate, white noise of std 0.1 (seed 0)."""
    return (np.random.default_rng(0).standard_normal((1, int(seconds * rate)), dtype=np.float32) * 0.1)


def step_frames(seconds: float, win: int, hop: int) -> np.ndarray:
    """The streamed frames: (K, 1, win) float32, frame k = samples [k hop, k hop + win) of a
    :func:`mixture` at 16 kHz; K = hops in ``seconds``."""
    x = mixture(seconds + win / GCRN_RATE, GCRN_RATE)[0]
    k = max(1, int(seconds * GCRN_RATE) // hop)
    return np.stack([x[i * hop:i * hop + win] for i in range(k)])[:, None, :].copy()


# -- the child processes ------------------------------------------------------------------------

def _export_child(spec: dict) -> dict:
    """Write ``spec["name"]``'s ONNX file to ``spec["path"]``: its parameter count, the export's
    time (s) and check, and for a step the window, hop and LSTM state shape; or ``skipped``."""
    import torch

    from sepkit.errors import InputError
    from sepkit.exporting import export, exportable

    torch.set_num_threads(spec["threads"])
    model = build(spec["name"], spec["quick"])
    part = "step" if spec["name"].startswith("gcrn-") else None
    info = {"params": sum(p.numel() for p in model.parameters())}
    try:
        exportable(model, part)
    except InputError as exc:
        return {**info, "skipped": f"does not export: {exc}"}
    t0 = time.perf_counter()
    done = export(model, "onnx", spec["path"], part=part, overwrite=True)
    info.update(export_s=time.perf_counter() - t0, check_error=done.max_error, checks=done.checks,
                onnx_mb=Path(spec["path"]).stat().st_size / 2**20)
    if part == "step":
        h, _ = model.init_state(1)
        info.update(win=model.win_length, hop=model.hop_length, state=list(h.shape))
    return info


def _timed(fn, reps: int) -> tuple[dict, object]:
    """One warm-up call of ``fn``, then ``reps`` timed ones: (median and all times in s, the
    warm-up call's return value)."""
    t0 = time.perf_counter()
    value = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "times_s": times, "warmup_s": first}, value


def _torch_child(spec: dict) -> dict:
    """Time PyTorch eager: one separator call on (1, T), or a streamed pass of GCRN steps."""
    import torch

    torch.set_num_threads(spec["threads"])
    model = build(spec["name"], spec["quick"])
    with torch.inference_mode():
        if "win" not in spec:
            x = torch.from_numpy(mixture(spec["seconds"], SEPARATOR_RATE))
            result, y = _timed(lambda: model(x), spec["reps"])
        else:
            frames = torch.from_numpy(step_frames(spec["seconds"], spec["win"], spec["hop"]))

            def stream():
                h, c = model.init_state(1)
                ys = []
                for frame in frames:
                    out, h, c = model.step(frame, h, c)
                    ys.append(out)
                return torch.cat(ys)
            result, y = _timed(stream, spec["reps"])
    np.save(spec["output"], y.numpy())
    return result


def _ort_child(spec: dict) -> dict:
    """Time onnxruntime (CPU execution provider) on the exported file, as :func:`_torch_child`
    (this process imports neither torch nor sepkit)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    t0 = time.perf_counter()
    session = ort.InferenceSession(spec["path"], options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    if "win" not in spec:
        feed = {session.get_inputs()[0].name: mixture(spec["seconds"], SEPARATOR_RATE)}
        result, y = _timed(lambda: session.run(None, feed)[0], spec["reps"])
    else:
        frames = step_frames(spec["seconds"], spec["win"], spec["hop"])
        names = [i.name for i in session.get_inputs()]

        def stream():
            h = np.zeros(spec["state"], np.float32)
            c = np.zeros(spec["state"], np.float32)
            ys = []
            for frame in frames:
                out, h, c = session.run(None, {names[0]: frame, names[1]: h, names[2]: c})
                ys.append(out)
            return np.concatenate(ys)
        result, y = _timed(stream, spec["reps"])
    np.save(spec["output"], y)
    return {**result, "session_s": load_s}


CHILDREN = {"export": _export_child, "torch": _torch_child, "ort": _ort_child}


def child(spec_json: str) -> int:
    """Entry point of a child process: run ``CHILDREN[spec["kind"]]`` and print its JSON."""
    spec = json.loads(spec_json)
    print(json.dumps(CHILDREN[spec["kind"]](spec)))
    return 0


def in_process(spec: dict, timeout: float = 7200) -> dict:
    """Run one child (:func:`child`) in a fresh interpreter; its JSON result."""
    from perf.models import TIMING_MALLOC

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(TIMING_MALLOC["steady"], OMP_NUM_THREADS=str(spec["threads"]))
    code = "import sys, perf.export as e; sys.exit(e.child(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec['kind']} run of {spec['name']} failed: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------

def difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (inf when the shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-30))


def measure(name: str, folder: Path, seconds: float, threads: int, reps: int, rounds: int, quick: bool) -> dict:
    """One row: export ``name`` in a fresh process, then ``rounds`` rounds of a PyTorch and an
    onnxruntime process (order alternating); medians over the rounds, the ratio PyTorch /
    onnxruntime with its lowest and highest round, and the two outputs' difference."""
    path = folder / f"{name}.onnx"
    base = {"name": name, "threads": threads, "quick": quick, "path": str(path)}
    row = {"model": name, **in_process({**base, "kind": "export"})}
    if "skipped" in row:
        return row
    spec = {**base, "seconds": seconds, "reps": reps}
    if "win" in row:
        spec.update(win=row["win"], hop=row["hop"], state=row["state"])
    runs = {k: [] for k in IMPLEMENTATIONS}
    for r in range(rounds):
        for kind in IMPLEMENTATIONS if r % 2 == 0 else IMPLEMENTATIONS[::-1]:
            runs[kind].append(in_process({**spec, "kind": kind, "output": str(folder / f"{name}-{kind}.npy")}))
    for kind in IMPLEMENTATIONS:
        row[f"{kind}_s"] = statistics.median(p["median_s"] for p in runs[kind])
    per_round = [t["median_s"] / o["median_s"] for t, o in zip(runs["torch"], runs["ort"])]
    row.update(ratio=row["torch_s"] / row["ort_s"], ratio_range=[min(per_round), max(per_round)],
               difference=difference(np.load(folder / f"{name}-ort.npy"), np.load(folder / f"{name}-torch.npy")),
               session_s=statistics.median(p["session_s"] for p in runs["ort"]), processes=runs)
    if "win" in row:
        hops = step_frames(seconds, row["win"], row["hop"]).shape[0]
        hop_s = row["hop"] / GCRN_RATE
        row.update(hops=hops, hop_ms=hop_s * 1e3)
        for kind in IMPLEMENTATIONS:
            row[f"{kind}_per_hop_s"] = row[f"{kind}_s"] / hops
            row[f"{kind}_rtf"] = row[f"{kind}_per_hop_s"] / hop_s
    return row


def run(models: list[str], seconds: float, threads: int, reps: int, rounds: int, quick: bool = False) -> dict:
    """Every row of :func:`measure`, with the configuration and the machine."""
    import onnxruntime
    import torch

    import sepkit

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sepkit-perf-export-") as tmp:
        for name in models:
            row = measure(name, Path(tmp), seconds, threads, reps, rounds, quick)
            rows.append(row)
            print(format_row(row), flush=True)
    return {"rows": rows,
            "config": {"batch": 1, "seconds": seconds, "separator_rate": SEPARATOR_RATE, "gcrn_rate": GCRN_RATE,
                       "threads": threads, "reps": reps, "warmup": 1, "rounds": rounds, "dtype": "fp32",
                       "timing_malloc": "steady", "quick": quick},
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                        "sepkit": sepkit.__version__, "python": platform.python_version(),
                        "load_average": [load_before, os.getloadavg()[0]],
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}  # noqa: UP017 (3.10)


# -- the tables ---------------------------------------------------------------------------------

def _ratio(row: dict) -> str:
    lo, hi = row["ratio_range"]
    return f"{row['ratio']:.2f}x" + (f" (rounds {lo:.2f} to {hi:.2f})" if lo != hi else "")


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def format_row(r: dict) -> str:
    """One Markdown row: a separator's, or a step's (per hop and real-time factor)."""
    if "skipped" in r:
        return f"| {r['model']} | {r['params']:,} | {r['skipped']} | | | |"
    if "win" in r:
        return (f"| {r['model']} | {r['params']:,} | {r['hop_ms']:g} ms | {_time(r['torch_per_hop_s'])} "
                f"(RTF {r['torch_rtf']:.3f}) | {_time(r['ort_per_hop_s'])} (RTF {r['ort_rtf']:.3f}) | {_ratio(r)} | "
                f"{r['difference']:.1e} |")
    return (f"| {r['model']} | {r['params']:,} | {_time(r['torch_s'])} | {_time(r['ort_s'])} | {_ratio(r)} | "
            f"{r['difference']:.1e} |")


def markdown(result: dict) -> str:
    """The README block: how it was measured, the separators' table and the step's."""
    c, m = result["config"], result["machine"]
    seps = [r for r in result["rows"] if "win" not in r]
    steps = [r for r in result["rows"] if "win" in r]
    how = (f"on the CPU ({m['cpu']}, {m['cores']} cores, load average {load_text(m)}, {c['threads']} threads each, "
           f"torch {m['torch']}, onnxruntime {m['onnxruntime']} CPU execution provider, {m['date']}"
           f"{'; QUICK, tiny models: not a measurement' if c['quick'] else ''}): each figure the median over "
           f"{c['rounds']} rounds of fresh processes (PyTorch and onnxruntime in turn) of each process's median of "
           f"{c['reps']} calls after {c['warmup']} warm-up; ratio = PyTorch time / onnxruntime time (above 1: "
           "onnxruntime is faster), with its lowest and highest round; difference = max |onnxruntime - PyTorch| / "
           "max |PyTorch| of the timed outputs.")
    lines = []
    if seps:
        lines += [(f"ONNX export in onnxruntime vs PyTorch eager, separators at batch 1 x {c['seconds']:g} s, "
                   f"{c['separator_rate']} Hz, fp32, {how}"), "",
                  "| model | parameters | PyTorch eager | onnxruntime | ratio | difference |",
                  "|---|---:|---:|---:|---|---:|"]
        lines += [format_row(r) for r in seps]
    if steps:
        lines += ([""] if lines else []) + [
            (f"GCRN streaming step (the exported step: one frame and the LSTM state in and out) at batch 1, "
             f"{c['gcrn_rate']} Hz, {c['seconds']:g} s of audio fed frame by frame per call: time per hop and "
             "real-time factor (RTF = time per hop / hop; below 1: faster than real time), same method."), "",
            "| model | parameters | hop | PyTorch eager per hop | onnxruntime per hop | ratio | difference |",
            "|---|---:|---:|---:|---:|---|---:|"]
        lines += [format_row(r) for r in steps]
    return "\n".join(lines) + "\n"


def update_readme(text: str, readme: Path) -> bool:
    """Replace the README block between the export-table markers with ``text``."""
    from perf.report import replace_block

    return replace_block(readme, README_START, README_END, text)


def _fail(message: str) -> int:
    print(f"python -m perf export: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    from perf.report import is_inside

    parser = argparse.ArgumentParser(prog="python -m perf export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=MODELS, help="only this model (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="threads of both runtimes (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per process after one warm-up")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per implementation")
    parser.add_argument("--seconds", type=float, default=4.0, help="input length (separators), audio streamed (step)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default perf/results)")
    parser.add_argument("--readme", action="store_true", help="also rewrite the README's export table")
    parser.add_argument("--quick", action="store_true", help="tiny models: checks the benchmark runs, measures "
                        "nothing (results only into --out)")
    args = parser.parse_args(argv)
    for key in ("threads", "reps", "rounds"):
        if getattr(args, key) < 1:
            return _fail(f"--{key} must be >= 1, got {getattr(args, key)}")
    if not 0 < args.seconds <= 600:
        return _fail(f"--seconds must be in (0, 600], got {args.seconds:g}")
    if args.quick and (args.readme or args.out is None or is_inside(args.out, RESULTS)):
        return _fail("--quick results go only to an --out folder outside perf/results, never to the README")
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return _fail(f"needs the export extra ({exc.name} is missing): pip install 'sepkit[export]'")
    result = run(args.model or list(MODELS), args.seconds, args.threads, args.reps, args.rounds, args.quick)
    text = markdown(result)
    print(text)
    out = args.out if args.out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_cpu.json").write_text(json.dumps(result, indent=1))
    (out / "export_cpu.md").write_text(text)
    print(f"wrote {out / 'export_cpu.json'} and {out / 'export_cpu.md'}")
    if args.readme:
        readme = ROOT / "README.md"
        if not update_readme(text, readme):
            return _fail(f"{readme} has no {README_START} ... {README_END} markers; not updated")
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
