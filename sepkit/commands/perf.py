"""``sepkit perf``: run the benchmarks of the source checkout's perf/ folder (``python -m perf``).

The benchmarks live beside the library in the repository, not in the installed package, so this
command needs a source checkout (an editable install). It times on a CUDA GPU; without one it
refuses (exit 2) unless ``--smoke``, which runs every benchmark end to end on the CPU with tiny
shapes and writes results marked "smoke, not a measurement" into ``--out`` (a temporary folder
by default, never perf/results/).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

NO_CUDA = "sepkit perf: no CUDA device here; the benchmarks time Triton kernels on a GPU only"


def add_arguments(parser) -> None:
    parser.add_argument("--op", action="append", help="benchmark only this op (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--smoke", action="store_true",
                        help="run every benchmark end to end on the CPU with tiny shapes (smoke, not a measurement)")
    parser.add_argument("--compile-backend", choices=("inductor", "aot_eager"), default=None,
                        help="with --smoke: torch.compile backend of the compiled providers (default inductor)")
    parser.add_argument("--out", help="results folder (default: perf/results in the checkout; with --smoke a "
                                      "new temporary folder)")


def run(args) -> int:
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.compile_backend and not args.smoke:
        print("sepkit perf: --compile-backend is for --smoke runs only", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    if not (root / "perf" / "__main__.py").is_file():
        print(f"sepkit perf: no perf/ folder beside the installed sepkit ({root}); run it from a source checkout "
              "installed with `pip install -e .`", file=sys.stderr)
        return 2
    from sepkit.errors import ConfigError
    from sepkit.train.checks import check_output_dir

    known = sorted(p.stem[len("bench_"):] for p in (root / "perf").glob("bench_*.py"))
    unknown = [op for op in args.op or [] if op not in known]
    if unknown:
        raise ConfigError(f"--op={unknown[0]!r}: no such benchmark; choose from {', '.join(known)}")
    if args.out:
        check_output_dir(args.out)  # an existing file, or a folder that cannot be made, is refused here
    argv = [sys.executable, "-m", "perf"]
    for op in args.op or []:
        argv += ["--op", op]
    if args.quick:
        argv.append("--quick")
    if args.smoke:
        argv.append("--smoke")
    if args.compile_backend:
        argv += ["--compile-backend", args.compile_backend]
    if args.out:
        argv += ["--out", str(Path(args.out).resolve())]  # the child runs in the checkout's root
    return subprocess.call(argv, cwd=root)
