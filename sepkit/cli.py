"""The ``sepkit`` command line: ``sepkit <command> ...``.

Each command lives in ``sepkit/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``sepkit check``
can switch Triton's interpreter on before any kernel is defined.

Failures end in one line on stderr, ``sepkit <command>: <what went wrong>``, never a traceback:
a bad argument, config value, file or checkpoint (sepkit's checks raise the classes of
:mod:`sepkit.errors`, naming it) or a missing or unwritable path exits with 2, an interrupt (Ctrl-C, SIGTERM) with 130 (checkpoints and
outputs written atomically stay whole), anything else, a bug, with 1.
``SEPKIT_DEBUG=1`` re-raises, showing the traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys

COMMANDS = {
    "check": "run a short correctness self-test of every kernel on this machine",
    "perf": "benchmark the kernels on a CUDA GPU (or --smoke: end to end on the CPU, nothing measured)",
    "data": "make data sets (synthetic or spoken mixtures in the LibriMix layout)",
    "train": "train a recipe",
    "eval": "evaluate a checkpoint on a recipe's test set",
    "separate": "separate audio files with a trained checkpoint",
    "demo": "train, evaluate and run a recipe's demo end to end; writes a report and a picture",
    "convert": "convert a published separator (torchaudio, SpeechBrain, Asteroid) or SGMSE+ checkpoint to a sepkit checkpoint",
    "export": "export a checkpoint's model to ONNX, torch.export or TorchScript (dynamic batch and time, checked)",
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
    debug = os.environ.get("SEPKIT_DEBUG", "0") not in ("", "0")
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"sepkit {args.command}: interrupted (finished checkpoints and outputs are intact)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into one line
        if debug:
            raise
        code, message = describe(exc)
        print(f"sepkit {args.command}: {message}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _terminate(signum, frame):
    """SIGTERM as an interrupt, so that temporary files are cleaned up on the way out."""
    raise KeyboardInterrupt


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception reaching the command line."""
    from .errors import SepkitError

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or "the output folder"
        return 2, f"no space left on the device writing {where}; partial outputs were removed"
    if isinstance(exc, PermissionError):
        return 2, f"permission denied: {exc.filename or exc}"
    # sepkit's own checks raise the classes of sepkit.errors, naming the argument (docs/DESIGN.md,
    # "Failures"); a bare ValueError or TypeError is a bug like any other exception
    if isinstance(exc, (SepkitError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)):
        return 2, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first = str(exc).splitlines()[0] if str(exc) else ""
    return 1, (f"internal error ({type(exc).__name__}: {first[:300]}); SEPKIT_DEBUG=1 shows the traceback; "
               "please report it")


if __name__ == "__main__":
    sys.exit(main())
