"""Flags shared by the commands that run a trained model (``eval``, ``separate``, ``demo``)."""
from __future__ import annotations


def add_compile_arguments(parser) -> None:
    """``--compile`` (torch.compile's default mode) and ``--compile-mode MODE``, both into
    ``args.compile`` (None when neither is given); see :mod:`sepkit.train.compiling`."""
    from sepkit.train.compiling import MODES

    parser.add_argument("--compile", dest="compile", action="store_const", const="default", default=None,
                        help="run the model under torch.compile (a compile on the first input of each kind; "
                        "eager with a notice where it cannot compile)")
    parser.add_argument("--compile-mode", dest="compile", choices=MODES, default=None,
                        help="torch.compile mode: none, default (what --compile gives) or max-autotune (longer "
                        "compile; an error where it cannot compile)")
