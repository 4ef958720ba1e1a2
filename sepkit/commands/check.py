"""``sepkit check``: a short correctness self-test of every kernel on this machine.

On a GPU the kernels run compiled; without one they run in Triton's interpreter on the CPU, which
must be switched on before any kernel is defined, so the command re-runs itself in a child
process with TRITON_INTERPRET=1 when needed.
"""
from __future__ import annotations

import os
import subprocess
import sys

#: the ops the self-test covers (kept here so that the arguments are checked before any kernel is
#: defined; a test checks it against sepkit.kernels.selftest)
OPS = ("snake", "stft_mask", "mmd", "nce", "attention")


def add_arguments(parser) -> None:
    parser.add_argument("--op", action="append", help="check only this op (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def _table(rows) -> str:
    header = ("op", "backend", "device", "dtype", "max rel error", "tolerance", "result")
    body = [
        (r.op, r.backend, r.device, r.dtype, f"{r.max_rel_error:.2e}", f"{r.tol:.1e}", "pass" if r.passed else "FAIL")
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_arguments(args) -> None:
    """--op names a known op, --seed fits a 64-bit generator seed (ConfigError otherwise)."""
    from sepkit.errors import ConfigError

    unknown = [op for op in args.op or [] if op not in OPS]
    if unknown:
        raise ConfigError(f"--op={unknown[0]!r}: not an op of the self-test; choose from {', '.join(OPS)}")
    if not 0 <= args.seed < 2 ** 63:
        raise ConfigError(f"--seed={args.seed}: must be an integer in [0, 2**63 - 1]")


def run(args) -> int:
    import torch

    check_arguments(args)
    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0") and "sepkit.kernels" not in sys.modules:
        env = dict(os.environ, TRITON_INTERPRET="1")
        argv = [sys.executable, "-m", "sepkit", "check", "--seed", str(args.seed)]
        for op in args.op or []:
            argv += ["--op", op]
        return subprocess.call(argv, env=env)

    from sepkit.kernels import HAS_TRITON, INTERPRET
    from sepkit.kernels.selftest import run_selftest

    if not HAS_TRITON:
        print("sepkit check: triton is not installed, so there are no kernels to check", file=sys.stderr)
        return 1
    device = torch.device("cuda" if cuda and not INTERPRET else "cpu")
    mode = "interpreted (TRITON_INTERPRET=1)" if INTERPRET else f"compiled on {torch.cuda.get_device_name()}"
    print(f"sepkit check: Triton kernels {mode}; errors are normwise, against the float64 reference")
    rows = run_selftest(device, ops=args.op, seed=args.seed)
    if not rows:
        print("sepkit check: no case matched", file=sys.stderr)
        return 1
    print(_table(rows))
    failed = [r for r in rows if not r.passed]
    for r in failed:
        print(f"FAIL {r.op} {r.dtype}: {r.detail}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} checks passed")
    return 1 if failed else 0
