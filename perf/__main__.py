"""``python -m perf [--op OP ...] [--quick] [--smoke] [--out DIR]``: run the benchmarks and write results.

On a CUDA GPU it times the kernels and models and writes into perf/results/ (or ``--out``).
Without CUDA it exits with status 2 and a one-line explanation, unless ``--smoke``: then every
benchmark runs its whole body on the CPU with tiny shapes (Triton kernels in the interpreter, a
CPU timer in place of ``do_bench``, see ``perf/harness.py``) and writes its results, marked
"smoke, not a measurement", into ``--out`` (a new temporary folder by default, never
perf/results/). Seven subcommands need no GPU: ``python -m perf static [...]`` compiles every
kernel for sm_90a / sm_80 (``perf/static.py``), ``python -m perf traffic [...]`` compares fused
and eager memory traffic (``perf/traffic.py``), ``python -m perf models [...]`` times the
separators beside their peers on the CPU and measures their training memory (``perf/models.py``)
``python -m perf saved --model M`` lists what a training step stores for the backward pass
(``perf/saved.py``), ``python -m perf data`` measures the training data loader beside the
training-step rate (``perf/data.py``), ``python -m perf export`` times the ONNX exports in
onnxruntime beside PyTorch eager (``perf/export.py``) and ``python -m perf separate-long``
measures the memory and time of separating 10- and 60-minute files (``perf/separate_long.py``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import perf

# perf.harness imports torch, not sepkit.kernels: TRITON_INTERPRET can still be switched on below.
from .harness import COMPILE_BACKENDS
from .report import RESULTS, ROOT, is_inside, write_results

NO_CUDA = "sepkit perf: no CUDA device here; the benchmarks time Triton kernels on a GPU only"


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(perf.__path__) if m.name.startswith("bench_"))


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("static", "traffic", "models", "saved", "data", "export", "separate-long"):
        module = importlib.import_module(f"perf.{argv[0].replace('-', '_')}")
        return module.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", action="append", choices=available(), help="benchmark only this op (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--smoke", action="store_true",
                        help="run every benchmark end to end on the CPU with tiny shapes (smoke, not a measurement)")
    parser.add_argument("--compile-backend", choices=COMPILE_BACKENDS, default="inductor",
                        help="with --smoke: torch.compile backend of the compiled providers (default inductor; "
                             "aot_eager traces and splits the graphs without building C++)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: perf/results; with --smoke a new temporary folder)")
    args = parser.parse_args(argv)
    if args.compile_backend != "inductor" and not args.smoke:
        parser.error("--compile-backend is for --smoke runs only")

    if args.smoke:
        if args.out is not None and is_inside(args.out, RESULTS):
            print(f"sepkit perf --smoke: --out {args.out} is inside perf/results/; smoke results never go there",
                  file=sys.stderr)
            return 2
        if not _interpreter_on():
            if "sepkit.kernels" in sys.modules:  # kernels already defined compiled: a fresh process
                child = ["--smoke", "--compile-backend", args.compile_backend]
                child += [x for op in args.op or [] for x in ("--op", op)] + (["--quick"] if args.quick else [])
                child += ["--out", str(args.out.resolve())] if args.out is not None else []
                env = dict(os.environ, TRITON_INTERPRET="1")
                return subprocess.call([sys.executable, "-m", "perf", *child], env=env, cwd=ROOT)
            os.environ["TRITON_INTERPRET"] = "1"  # before any Triton kernel is defined
        out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="sepkit-perf-smoke-"))
    else:
        out = RESULTS if args.out is None else args.out

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    from .harness import SMOKE_MARK, Context

    if args.smoke:
        torch.set_num_threads(1)  # tiny shapes: more threads only contend (and the CPU may be shared)
    ctx = Context(quick=args.quick, smoke=args.smoke, compile_backend=args.compile_backend)
    if args.smoke:
        print(f"{SMOKE_MARK}: CPU {ctx.facts['cpu']} ({ctx.facts['cpu_threads']} threads), Triton interpreter "
              f"{'on' if ctx.facts['triton_interpret'] else 'OFF'}, torch.compile backend {args.compile_backend}, "
              f"results into {out}")
    else:
        print(f"device {ctx.facts['gpu']}: copy {ctx.copy_bandwidth:.0f} GB/s, bf16 dot {ctx.matmul_tflops:.0f} TFLOP/s")
    failed = []
    for op in args.op or available():
        t0 = time.perf_counter()
        module = importlib.import_module(f"perf.bench_{op}")
        try:
            module.run(ctx)
        except Exception as exc:  # keep the other benchmarks' results
            failed.append(op)
            ctx.note(f"bench_{op} failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        ctx.empty_cache()
        if args.smoke:
            print(f"bench_{op}: {time.perf_counter() - t0:.1f} s ({SMOKE_MARK})")
    for path in write_results(ctx, out):
        print("wrote", path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
