"""Files sepkit writes: temporary names renamed into place, with the user's umask.

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders whatever the umask; a
result renamed from one would stay private. :func:`umask_mode` gives it the mode a plain
``open``/``mkdir`` would have.
"""
from __future__ import annotations

import os


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """chmod ``path`` to 0666 (files) or 0777 (folders) less the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())
