"""The ``sepkit`` command line: ``sepkit <command> ...``.

Each command lives in ``sepkit/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``sepkit check``
can switch Triton's interpreter on before any kernel is defined.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "check": "run a short correctness self-test of every kernel on this machine",
    "perf": "benchmark the kernels on a CUDA GPU and write results to perf/results/",
    "data": "make data sets (synthetic speech-like mixtures in the LibriMix layout)",
    "train": "train a recipe",
    "eval": "evaluate a checkpoint on a recipe's test set",
    "separate": "separate audio files with a trained checkpoint",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all are listed in the help)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="sepkit", description="sepkit: speech separation and enhancement")
    parser.add_argument("--version", action="version", version=f"sepkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(f"sepkit.commands.{name}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    # key=value overrides may stand anywhere after the command, between options too
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"sepkit.commands.{args.command}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("sepkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
