"""The GPU check's child processes (a crash or a hang there never takes the check down):

    python -m perf.gpu.workers facts --json PATH
    python -m perf.gpu.workers bench --json PATH --ops snake,mmd --deadline T [--quick] [--dry-run]

``facts`` writes the machine's facts (versions, the device's properties, which of
:data:`DEPENDENCIES` import); ``bench`` runs the benchmark modules ``perf/bench_<op>.py`` one
after the other, each stopped at its share of the time left before ``deadline`` (a wall-clock
``time.time()``), and rewrites ``PATH`` (rows, notes, each module's status) after each.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

#: Imports to look for: (distribution, module, extra) of setup.py's requirements.
DEPENDENCIES = (
    ("torch", "torch", "runtime"), ("triton", "triton", "runtime"), ("torchaudio", "torchaudio", "runtime"),
    ("numpy", "numpy", "runtime"), ("pyyaml", "yaml", "runtime"),
    ("safetensors", "safetensors", "runtime"), ("soundfile", "soundfile", "runtime"), ("scipy", "scipy", "runtime"),
    ("tqdm", "tqdm", "runtime"), ("pytest", "pytest", "dev"), ("hypothesis", "hypothesis", "dev"),
    ("mir_eval", "mir_eval", "dev"), ("nvidia-ml-py", "pynvml", "perf"), ("matplotlib", "matplotlib", "perf"),
    ("xformers", "xformers", "perf"), ("pesq", "pesq", "eval"), ("pystoi", "pystoi", "eval"),
)


def importable(module: str) -> bool:
    """Whether ``module`` can be found (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def facts_worker(path: Path) -> int:
    """Write (and print) the facts as JSON to ``path``: date, Python, CPUs, which of
    :data:`DEPENDENCIES` import, torch / CUDA / triton / sepkit versions and, with a CUDA device,
    its name, compute capability, SM count, memory, L2 and (nvidia-ml-py) driver and SM clock."""
    import datetime as dt
    import platform

    facts = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count(),
             "imports": {d: importable(m) for d, m, _ in DEPENDENCIES}}
    import torch

    facts.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=None)
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    import sepkit

    facts["sepkit"] = sepkit.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                     memory_gib=round(p.total_memory / 2**30, 1),
                     l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
                     device_count=torch.cuda.device_count())
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            facts.update(driver=pynvml.nvmlSystemGetDriverVersion(),
                         max_sm_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM))
            pynvml.nvmlShutdown()
        except Exception as exc:
            facts["nvml"] = f"unavailable ({type(exc).__name__})"
    Path(path).write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1))
    return 0


class _TimeUp(BaseException):
    """Raised by SIGALRM in a benchmark module at its share of the stage (a BaseException, so
    the modules' own ``except Exception`` keeps going past it)."""


def bench_worker(path: Path, ops: list[str], deadline: float, quick: bool, dry: bool) -> int:
    """Run ``perf.bench_<op>.run(ctx)`` for each of ``ops`` in turn, each stopped (SIGALRM) at an
    equal share of the time left before ``deadline``; a module that fails or does not import is
    recorded and the next one runs. ``dry``: import and check the modules only. Writes
    ``{facts, notes, rows, status, imported}`` to ``path`` after every module."""
    import importlib

    out = dict(facts={}, notes=[], rows=[], status={}, imported=[])

    def save():
        Path(path).write_text(json.dumps(out, indent=1, default=str))

    modules = {}
    for op in ops:
        try:
            module = importlib.import_module(f"perf.bench_{op}")
            if not callable(getattr(module, "run", None)):
                raise TypeError(f"perf/bench_{op}.py has no run(ctx)")
            modules[op] = module
            out["imported"].append(op)
        except Exception as exc:
            out["status"][op] = f"failed to import: {type(exc).__name__}: {str(exc)[:200]}"
    if dry:
        for op in modules:
            out["status"][op] = "imported (dry run)"
        save()
        return 0
    import torch

    from perf.harness import Context

    try:
        ctx = Context(quick=quick)
    except Exception as exc:  # no CUDA, or the ceilings could not be measured
        for op in modules:
            out["status"][op] = f"failed: the benchmark context: {type(exc).__name__}: {exc}"
        save()
        return 1
    out["facts"] = ctx.facts
    print(f"device {ctx.facts['gpu']}: copy {ctx.copy_bandwidth:.0f} GB/s, bf16 dot {ctx.matmul_tflops:.0f} TFLOP/s",
          flush=True)

    def alarm(signum, frame):
        raise _TimeUp()

    signal.signal(signal.SIGALRM, alarm)
    names = list(modules)
    for i, op in enumerate(names):
        left = deadline - time.time()
        if left < 5:
            out["status"][op] = "skipped for time"
            continue
        share = left / (len(names) - i)
        before = len(ctx.rows)
        t = time.time()
        signal.setitimer(signal.ITIMER_REAL, share)
        try:
            modules[op].run(ctx)
            out["status"][op] = "done"
        except _TimeUp:
            out["status"][op] = f"stopped for time at its share of {share:.0f} s after {len(ctx.rows) - before} rows"
        except Exception as exc:
            out["status"][op] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(f"bench_{op}: {out['status'][op]} ({time.time() - t:.0f} s)", flush=True)
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception:  # a failed launch can poison the context: the next module will say so
            pass
        out["rows"], out["notes"] = ctx.rows, ctx.notes
        save()
    out["rows"], out["notes"] = ctx.rows, ctx.notes
    save()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.gpu.workers", description=__doc__.splitlines()[0])
    parser.add_argument("worker", choices=("facts", "bench"))
    parser.add_argument("--json", type=Path, required=True, help="where the worker writes its result")
    parser.add_argument("--ops", default="", help="bench: comma-separated ops (perf/bench_<op>.py)")
    parser.add_argument("--deadline", type=float, default=0.0, help="bench: wall-clock time.time() to stop by")
    parser.add_argument("--quick", action="store_true", help="bench: the headline shapes only")
    parser.add_argument("--dry-run", action="store_true", help="bench: import the modules, run nothing")
    args = parser.parse_args(argv)
    if args.worker == "facts":
        return facts_worker(args.json)
    rc = bench_worker(args.json, [o for o in args.ops.split(",") if o], args.deadline, args.quick, args.dry_run)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # the results are saved: never wait on compile workers or CUDA teardown


if __name__ == "__main__":
    sys.exit(main())
