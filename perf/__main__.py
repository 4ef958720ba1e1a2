"""``python -m perf [--op OP ...] [--quick]``: run the benchmarks on a CUDA GPU and write results.

Without CUDA it exits with status 2 and a one-line explanation. Three subcommands need no GPU:
``python -m perf static [...]`` compiles every kernel for sm_90a / sm_80 (``perf/static.py``),
``python -m perf traffic [...]`` compares fused and eager memory traffic (``perf/traffic.py``) and
``python -m perf models [...]`` times the separators beside their peers on the CPU
(``perf/models.py``).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import perf

from .report import RESULTS, write_results


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(perf.__path__) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("static", "traffic", "models"):
        module = importlib.import_module(f"perf.{argv[0]}")
        return module.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__)
    parser.add_argument("--op", action="append", choices=available(), help="benchmark only this op (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: perf/results)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("sepkit perf: no CUDA device here; the benchmarks time Triton kernels on a GPU only", file=sys.stderr)
        return 2
    from .harness import Context

    ctx = Context(quick=args.quick)
    print(f"device {ctx.facts['gpu']}: copy {ctx.copy_bandwidth:.0f} GB/s, bf16 dot {ctx.matmul_tflops:.0f} TFLOP/s")
    failed = []
    for op in args.op or available():
        module = importlib.import_module(f"perf.bench_{op}")
        try:
            module.run(ctx)
        except Exception as exc:  # keep the other benchmarks' results
            failed.append(op)
            ctx.note(f"bench_{op} failed: {type(exc).__name__}: {exc}")
        torch.cuda.empty_cache()
    for path in write_results(ctx, args.out):
        print("wrote", path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
