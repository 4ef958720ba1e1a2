"""``sepkit perf``: run the benchmarks of the source checkout's perf/ folder (``python -m perf``).

The benchmarks live beside the library in the repository, not in the installed package, so this
command needs a source checkout (an editable install) and a CUDA GPU.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--op", action="append", help="benchmark only this op (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--out", help="results folder (default: perf/results in the checkout)")


def run(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("sepkit perf: no CUDA device here; the benchmarks time Triton kernels on a GPU only", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    if not (root / "perf" / "__main__.py").is_file():
        print(f"sepkit perf: no perf/ folder beside the installed sepkit ({root}); run it from a source checkout "
              "installed with `pip install -e .`", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "perf"]
    for op in args.op or []:
        argv += ["--op", op]
    if args.quick:
        argv.append("--quick")
    if args.out:
        argv += ["--out", args.out]
    return subprocess.call(argv, cwd=root)
