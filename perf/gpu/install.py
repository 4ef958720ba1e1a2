"""What a bare copy of the source tree needs before the check runs sepkit from it: the packages
the GPU machine lacks, as wheels in ``.whl/`` (git-ignored; the download command is in
``perf/gpu_check.py``'s header), installed into a folder put on PYTHONPATH, and the
``sepkit/kernels`` link that ``pip install`` would have made."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import ROOT

#: Wheels that travel with the tree for a machine without network.
WHEELS = ROOT / ".whl"


def install_wheels(chk) -> str:
    """Install every wheel in :data:`WHEELS` (no index, no dependencies) into ``site/`` in the
    check's work folder and put it on the check's PYTHONPATH, after the source tree. A dry run
    installs nothing. Returns the line the facts stage reports."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        return "no .whl folder: dependencies as installed"
    if chk.dry:
        return f"dry run: {len(wheels)} wheels in .whl not installed"
    site = chk.work / "site"
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
    rc, _ = chk.call(argv, 60, chk.logs / "wheels.log")
    if rc != 0:
        return f"installing {len(wheels)} wheels FAILED (logs/wheels.log)"
    chk.env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(site), *filter(None, [os.environ.get("PYTHONPATH")])))
    return f"installed {len(wheels)} wheels from .whl: " + ", ".join(w.name.split("-")[0] for w in wheels)


def ensure_kernels_link() -> str:
    """``import sepkit.kernels`` from a source tree needs sepkit/kernels -> ../kernels (setup.py
    maps it on install; a bare copy of the repository has no link): make it when missing."""
    link = ROOT / "sepkit" / "kernels"
    if (link / "__init__.py").exists():
        return "sepkit/kernels resolves"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path("..") / "kernels")
    return "linked sepkit/kernels -> ../kernels"
