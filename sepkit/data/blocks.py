"""Writing a set of audio files block by block, with one level for the set and nothing half written.

:class:`BlockWriters` receives blocks of samples for several outputs (the sources separated from
one recording), appends them to temporary float32 files, and on a clean exit writes the final
files (16-bit PCM WAV, or FLAC, by the suffix), scaled together by ``0.99 / peak`` when the peak
of the set exceeds 0.99 (so nothing clips and the relative levels stay), then renames them into
place. Memory is one block, whatever the files' length. On an error, or if a block holds NaN or
Inf, every temporary file is removed, no final file is written and a folder the writers created
is removed again.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sepkit.errors import AudioError
from sepkit.files import umask_mode

#: samples per block when the temporary files are copied into the final ones
COPY_BLOCK = 1 << 18
_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


class BlockWriters:
    """``with BlockWriters({name: path}, sample_rate) as w: w.write({name: block (n,)}) ...``.

    Args:
        targets: output name -> final path (``.wav`` or ``.flac``; the folder is created).
        sample_rate: of every output, Hz.
        peak: the level the set is scaled down to when it would exceed it (0.99).
    """

    def __init__(self, targets: dict, sample_rate: int, peak: float = 0.99):
        self.targets = {name: Path(p) for name, p in targets.items()}
        for path in self.targets.values():
            if path.suffix.lower() not in _FORMATS:
                raise AudioError(f"{path}: unsupported audio suffix {path.suffix!r} (use .wav or .flac)")
        self.rate, self.limit = int(sample_rate), float(peak)
        self.peak = 0.0
        self.frames = 0
        self._files: dict = {}
        self._tmp: dict[str, Path] = {}
        self._made: list[Path] = []  # folders created here, removed again on failure

    def __enter__(self) -> "BlockWriters":
        import soundfile as sf

        try:
            for name, path in self.targets.items():
                self._mkdir(path.parent)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part.wav", dir=path.parent)
                os.close(fd)
                self._tmp[name] = Path(tmp)
                self._files[name] = sf.SoundFile(tmp, "w", samplerate=self.rate, channels=1, subtype="FLOAT",
                                                 format="WAV")
        except BaseException:
            self._cleanup()
            raise
        return self

    def _mkdir(self, folder: Path) -> None:
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self._made.extend(missing)  # deepest first

    def write(self, blocks: dict) -> None:
        """Append ``blocks[name]`` (n,) to each output; every output gets a block of one length."""
        arrays = {}
        for name in self.targets:
            b = blocks[name]
            b = b.detach().to("cpu", torch.float32).numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float32)
            b = b.reshape(-1)
            if not np.isfinite(b).all():
                raise AudioError(f"{self.targets[name]}: refusing to write NaN or Inf samples")
            arrays[name] = b
        lengths = {len(b) for b in arrays.values()}
        if len(lengths) != 1:
            raise AudioError(f"BlockWriters.write: blocks of different lengths {sorted(lengths)}")
        for name, b in arrays.items():
            self._files[name].write(b)
            if b.size:
                self.peak = max(self.peak, float(np.abs(b).max()))
        self.frames += lengths.pop()

    def __exit__(self, kind, value, tb) -> None:
        ok = False
        try:
            for f in self._files.values():
                f.close()
            if kind is None:
                self._finish()
            ok = True
        finally:
            self._cleanup()
            if not ok:
                for folder in self._made:
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only when empty

    @property
    def scale(self) -> float:
        """The factor applied to every output: ``limit / peak`` above the limit, else 1."""
        return self.limit / self.peak if self.peak > self.limit else 1.0

    def _finish(self) -> None:

        finals = {}
        try:
            for name, path in self.targets.items():
                fmt, subtype = _FORMATS[path.suffix.lower()]
                fd, out = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                finals[name] = Path(out)
                copy_scaled(self._tmp[name], finals[name], self.rate, fmt, subtype, self.scale)
                umask_mode(out)
            for name, path in self.targets.items():
                os.replace(finals.pop(name), path)
        finally:
            for p in finals.values():
                p.unlink(missing_ok=True)

    def _cleanup(self) -> None:
        for f in self._files.values():
            if not f.closed:
                f.close()
        for p in self._tmp.values():
            p.unlink(missing_ok=True)
        for folder in self._made:  # deepest first; only folders this writer made, and only when empty
            try:
                folder.rmdir()
            except OSError:
                break


def copy_scaled(src: Path, dst: Path, rate: int, fmt: str, subtype: str, scale: float) -> None:
    """Copy the float file ``src`` into ``dst`` (``fmt``, ``subtype``) times ``scale``, block by block."""
    import soundfile as sf

    with sf.SoundFile(str(src)) as fin, sf.SoundFile(str(dst), "w", samplerate=rate, channels=1, subtype=subtype,
                                                      format=fmt) as fout:
        while True:
            block = fin.read(COPY_BLOCK, dtype="float32")
            if not len(block):
                break
            fout.write(block * scale)
