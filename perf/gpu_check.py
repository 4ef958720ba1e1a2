"""``python -m perf.gpu_check [--out DIR] [--dry-run] [--budget-s 480]``: validate sepkit on a GPU.

One prepared command for any machine with a CUDA GPU, no network needed (torch, triton,
torchaudio already there): copy the working tree onto it, run this from the repository root
(``bash perf/gpu_check.sh`` does), and bring the output folder back. sepkit runs from the source
tree through PYTHONPATH (no ``pip install``). Stages, in order, each with its own time cap, all
inside ``--budget-s`` seconds of wall time (the caps shrink to what is left; a stage with too
little left is skipped for time):

1. ``facts``: ``nvidia-smi``, the device's properties, the versions, which of sepkit's
   dependencies import;
2. ``check``: ``python -m sepkit check`` (every kernel compiled, against float64);
3. ``kernel-tests``: the kernel tests (``tests/test_<op>.py`` per op and
   :data:`perf.gpu.stages.EXTRA_KERNEL_TESTS`) under the ``gpu`` hypothesis profile with a bounded
   example count (``--max-examples``) and a fixed hypothesis seed; bf16 is among the dtypes on a
   GPU;
4. ``model-tests``: every other test file except the CPU-only ones
   (:data:`perf.gpu.stages.CPU_ONLY_TESTS`);
5. ``kernel-bench``: every kernel benchmark at its headline shapes (``perf/bench_<op>.py``,
   ``quick``);
6. ``model-bench``: every other ``perf/bench_*.py`` found (model-level training step and
   inference, kernels vs the reference backend, peak memory);
7. ``sweep``: the kernel benchmarks at all their sizes, with whatever time is left.

Benchmarks run in a child process (:mod:`perf.gpu.workers`) that shares its stage's time among
the modules and stops one at its share; pytest runs with a plugin (``-p perf.gpu.plugin``) that
bounds the examples, skips what is left at the stage's cap and logs each outcome as it comes.
The parts: :mod:`perf.gpu` (runner, stages, workers, plugin, install).

Output (``--out``, default ``$OUT``, else ``gpu-check-out``), rewritten after every stage so an
interrupted run still returns something, and kept inside what the way back from the machine
allows: at most ``--max-files`` files (default 8), none over ``--max-file-mib`` MiB (default 16)
(:func:`perf.gpu.runner.enforce_limits`: a text file over the size is cut to its head and tail,
anything else left out is named in ``dropped.txt``). The files: ``summary.md`` (the final table,
also printed), ``gpu_check.json`` (stages, targets, facts), ``results.json`` and ``results.md``
(benchmark rows in perf's format: ``python -m perf.report --from DIR`` merges them),
``pytest.txt`` (summaries and failures), ``logs.tar.gz`` (every stage's full log) and
``plots.tar``.

``--only kernel-tests,kernel-bench`` reruns chosen stages (after the facts) inside a smaller
``--budget-s``, for the minutes left on the machine after the first run.

``--dry-run`` (CPU, CI): every stage runs through the same code with the interpreter and tiny
work (``sepkit check --op snake``, the first test of the first file of each test stage, one
example; the benchmark workers import every module and check its ``run``) or is skipped with its
reason.

Wheels: what the GPU machine lacks among sepkit's dependencies travels in ``.whl/`` (git-ignored)
and is installed into a temporary folder put on PYTHONPATH (:mod:`perf.gpu.install`). Download
them here (with network):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \\
        -d .whl soundfile==0.13.1 cffi==2.0.0 pycparser==2.23 mir_eval==0.8.2 decorator==5.2.1 pystoi==0.4.1

(soundfile is the one runtime dependency such a machine usually lacks, cffi and pycparser its
needs; mir_eval with decorator, and pystoi, are the dev and eval extras' peers, small, for a run
that adds the metric tests. Not carried: pesq, whose tests skip without it, and xformers, whose
wheels are built for one torch version: the attention benchmark notes it as skipped.) Copy
``.whl/`` along with the working tree and give the command about a minute more than
``--budget-s`` (540 s for the default 480) before it is stopped.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from perf.gpu.runner import DEFAULT_BUDGET_S, MAX_FILE_BYTES, MAX_FILES, Limits, enforce_limits
from perf.gpu.stages import STAGES, run_check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else gpu-check-out)")
    parser.add_argument("--dry-run", action="store_true", help="CPU plumbing check: tiny work, nothing timed")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall-time budget in seconds (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--max-examples", type=int, default=20, help="hypothesis examples per kernel test (default 20)")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers for the test stages (default 0)")
    parser.add_argument("--only", default="", help="comma-separated stages to run after the facts (a rerun), "
                        f"from: {', '.join(STAGES[1:])}")
    parser.add_argument("--max-files", type=int, default=MAX_FILES,
                        help=f"most files the output folder may hold (default {MAX_FILES})")
    parser.add_argument("--max-file-mib", type=float, default=MAX_FILE_BYTES / 2**20,
                        help=f"largest size of one output file in MiB (default {MAX_FILE_BYTES // 2**20})")
    args = parser.parse_args(argv)

    if args.budget_s < 60:
        parser.error(f"--budget-s must be >= 60 seconds, got {args.budget_s:g}")
    if args.max_examples < 1:
        parser.error(f"--max-examples must be >= 1, got {args.max_examples}")
    if args.max_files < 2:
        parser.error(f"--max-files must be >= 2 (summary.md and dropped.txt), got {args.max_files}")
    if not args.max_file_mib >= 0.01:
        parser.error(f"--max-file-mib must be >= 0.01, got {args.max_file_mib:g}")
    only = tuple(x for x in args.only.split(",") if x)
    unknown = [x for x in only if x not in STAGES[1:]]
    if unknown:
        parser.error(f"--only: unknown stage {unknown[0]!r}; choose from {', '.join(STAGES[1:])}")
    limits = Limits(args.max_files, int(args.max_file_mib * 2**20))
    out = args.out or Path(os.environ.get("OUT") or "gpu-check-out")
    chk = run_check(out, args.budget_s, args.dry_run, args.max_examples, args.workers, only, limits)
    print(chk.summary())
    print("output:", ", ".join(f"{n} ({s} B)" for n, s in enforce_limits(out, limits)))
    return 1 if any(st.status == "FAIL" for st in chk.stages) else 0


if __name__ == "__main__":
    sys.exit(main())
