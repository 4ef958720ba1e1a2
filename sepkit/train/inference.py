"""Separating recordings of any length: chunks with overlap-add and source alignment, in memory or
blockwise from file to file.

One code path for every caller (``sepkit separate``, :class:`sepkit.Separator`, a task's
``infer``): :func:`chunk_starts` cuts a recording of T samples into chunks of ``chunk`` samples
overlapping by ``overlap``; each chunk is separated on its own; :class:`ChunkJoiner` reorders each
chunk's sources to match the previous chunk on their overlap and cross-fades them (linear ramps),
returning the samples no later chunk changes as soon as they are final. :func:`join_chunks` runs
that over a recording in memory, :func:`infer_file` over a file, read and written block by block
(memory bounded by the chunk, not the file).
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Iterator

import torch

from sepkit.errors import InputError
from sepkit.losses import best_permutation_hungarian


def _align(prev: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Order of ``new``'s sources (S, L) that best matches ``prev`` (S, L) on their overlap
    (largest summed normalised correlation)."""
    S = prev.shape[0]
    p = prev / (prev.norm(dim=-1, keepdim=True) + 1e-8)
    n = new / (new.norm(dim=-1, keepdim=True) + 1e-8)
    corr = n @ p.T  # [new source, prev source]
    if S <= 4:
        best = max(itertools.permutations(range(S)), key=lambda perm: sum(float(corr[perm[j], j]) for j in range(S)))
        return torch.tensor(best)
    return best_permutation_hungarian(-corr.unsqueeze(0))[0]


def chunk_starts(total: int, chunk: int | None, overlap: int) -> list[int]:
    """First samples of the chunks of a recording of ``total`` samples: ``[0]`` when it fits in
    one chunk (or ``chunk`` is None), else every ``chunk - overlap`` samples while a chunk still
    reaches past the previous one's overlap. Chunk ``i`` covers ``[s_i, min(s_i + chunk, total))``."""
    if chunk is None or total <= chunk:
        return [0]
    if not 0 < overlap < chunk:
        raise InputError(f"need 0 < overlap < chunk, got overlap={overlap}, chunk={chunk} samples")
    return list(range(0, total - overlap, chunk - overlap))


class ChunkJoiner:
    """Joins per-chunk estimates (S, L) of consecutive chunks (:func:`chunk_starts`) into S signals.

    :meth:`add` takes the next chunk's estimate and returns the samples now final (S, n): those
    before the next chunk's start. Each chunk after the first is reordered (:func:`_align`) to
    match what is already there on its first ``overlap`` samples and cross-faded into it with a
    linear ramp; past the overlap it replaces it. :meth:`finish` returns the rest. The output,
    concatenated, has the recording's length.
    """

    def __init__(self, starts: list[int], overlap: int):
        self.starts, self.overlap = list(starts), int(overlap)
        self._i = 0
        self._pos = 0          # absolute index of self._buf's first sample
        self._buf = None       # samples not yet final (S, n)
        self._fade = None

    def add(self, est: torch.Tensor) -> torch.Tensor:
        if self._i >= len(self.starts):
            raise InputError(f"ChunkJoiner: {len(self.starts)} chunks were planned, got another")
        s = self.starts[self._i]
        est = est.float()
        if self._buf is None:
            buf = est
            self._pos = s
        else:
            off = s - self._pos
            ov = min(self.overlap, est.shape[1])
            prev = self._buf[:, off:off + ov]
            est = est[_align(prev, est[:, :ov]).to(est.device)]
            if self._fade is None:
                self._fade = torch.linspace(0, 1, self.overlap + 2, device=est.device)[1:-1]
            ramp = self._fade[:ov]
            buf = torch.cat([self._buf[:, :off], prev * (1 - ramp) + est[:, :ov] * ramp, est[:, ov:]], dim=1)
        self._i += 1
        if self._i < len(self.starts):
            cut = self.starts[self._i] - self._pos
            done, self._buf, self._pos = buf[:, :cut], buf[:, cut:], self.starts[self._i]
            return done
        self._buf = buf
        return buf[:, :0]

    def finish(self) -> torch.Tensor:
        if self._i != len(self.starts):
            raise InputError(f"ChunkJoiner: {len(self.starts)} chunks were planned, {self._i} came")
        out, self._buf = self._buf, None
        return out


def join_chunks(run: Callable[[torch.Tensor], torch.Tensor], read: Callable[[int, int], torch.Tensor], total: int,
                chunk: int | None, overlap: int, progress: bool = False) -> Iterator[torch.Tensor]:
    """Yield the separation of a recording of ``total`` samples, block by block (S, n).

    ``read(start, count)`` returns samples ``[start, start + count)`` of the recording (T,);
    ``run(piece (L,))`` returns the piece's estimate (S, L). Chunks of ``chunk`` samples with
    ``overlap`` (``chunk=None``: one call), joined by :class:`ChunkJoiner`; ``progress`` shows a
    bar over the chunks."""
    starts = chunk_starts(total, chunk, overlap)
    joiner = ChunkJoiner(starts, overlap)
    size = total if chunk is None else chunk
    steps = starts
    if progress and len(starts) > 1:
        from tqdm import tqdm

        steps = tqdm(starts, desc="separating", unit="chunk", leave=False)
    for s in steps:
        done = joiner.add(run(read(s, min(size, total - s))))
        if done.shape[1]:
            yield done
    yield joiner.finish()


@torch.no_grad()
def separate_waveform(model: torch.nn.Module, wav: torch.Tensor, chunk: int | None = None, overlap: int | None = None,
                      separate=None) -> torch.Tensor:
    """Separate a mono waveform (T,) into (S, T) with a separator taking (B, T).

    ``separate(model, mixture (B, T)) -> (B, S, T)`` replaces ``model(mixture)`` when given.

    Inputs longer than ``chunk`` samples are cut into chunks overlapping by ``overlap`` samples
    (default ``chunk // 4``); each chunk's sources are reordered to match the previous chunk on
    the overlap, then cross-faded (linear ramps) into one signal per source
    (:func:`join_chunks`). ``chunk=None`` separates in one call.
    """
    if wav.dim() != 1:
        raise InputError(f"separate_waveform: expected a mono waveform (T,), got shape {tuple(wav.shape)}")
    model.eval()
    run = model if separate is None else (lambda x: separate(model, x))
    overlap = (chunk // 4 if chunk else 0) if overlap is None else overlap
    parts = join_chunks(lambda piece: run(piece.unsqueeze(0))[0], lambda s, n: wav[s:s + n], wav.shape[0], chunk,
                        overlap)
    return torch.cat(list(parts), dim=1)


# ------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------

def infer_file(task, model: torch.nn.Module, path: str | os.PathLike, targets: dict, *, chunk: float = 8.0,
               overlap: float = 1.0, channel: int | None = None, options: dict | None = None,
               progress: bool = False) -> list[Path]:
    """What ``task`` makes of the audio file ``path``, written to ``targets`` (``{output name:
    path}``, :meth:`~sepkit.train.tasks.Task.output_names`) at the file's rate; returns the paths.

    A task that infers chunk by chunk (``task.infer_in_chunks(options)``: the separators and the
    enhancers offline) reads and writes the file block by block: memory is bounded by the chunk
    (``chunk`` and ``overlap`` in seconds), whatever the file's length. Other tasks read the whole file and run ``task.infer`` once.
    Outputs whose peak exceeds 0.99 are scaled together to 0.99 (the relative levels kept); each
    output is written to a temporary file and renamed when all are complete, so a failure leaves
    none of this input's files.
    """
    from sepkit.data import audio_info, read_audio
    from sepkit.data.blocks import BlockWriters

    options = dict(options or {})
    rate, _, frames = audio_info(path)
    with BlockWriters(targets, rate) as writers:
        if task.infer_in_chunks(options):
            def read(start, count):
                return read_audio(path, channel=channel, start=start, frames=count, min_samples=1)[0]

            task.note_rate(rate)
            model.eval()
            run = lambda piece: task.infer_chunk(model, piece, rate, **options)  # noqa: E731
            for block in join_chunks(run, read, frames, int(chunk * rate), int(overlap * rate), progress):
                writers.write(dict(zip(targets, block)))
        else:
            wav, _ = read_audio(path, channel=channel, min_samples=1)
            with torch.no_grad():
                outputs = task.infer(model, wav.to(torch.float32), rate, chunk=chunk, overlap=overlap, **options)
            writers.write({name: outputs[name] for name in targets})
    return list(targets.values())


def plan_files(task, inputs, out_dir: str | os.PathLike, *, channel: int | None = None,
               overwrite: bool = False) -> list[tuple[Path, dict]]:
    """Check every input file and output path before any work: ``[(input, {output name: path})]``
    with outputs ``out_dir/<input stem>_<name>.wav``.

    Raises AudioError for a missing or unreadable file, a multi-channel file without ``channel``
    (or a channel it lacks), audio shorter than 50 ms at the model's rate; FileExistsError for an
    existing output without ``overwrite`` and for two inputs that would write the same file."""
    from sepkit.data import AudioError, audio_info

    out_dir = Path(out_dir)
    rate = task.sample_rate
    plans = []
    for path in inputs:
        path = Path(path)
        in_rate, channels, frames = audio_info(path)
        if channel is not None and not 0 <= channel < channels:
            raise AudioError(f"{path}: has {channels} channel(s), channel {channel} does not exist")
        if channel is None and channels != 1:
            raise AudioError(f"{path}: expected mono audio, got {channels} channels (choose one channel)")
        if frames == 0:
            raise AudioError(f"{path}: empty audio (0 samples)")
        if int(frames * rate / in_rate) < max(1, int(0.05 * rate)):
            raise AudioError(f"{path}: audio too short ({frames} samples at {in_rate} Hz; need 50 ms)")
        targets = {name: out_dir / f"{path.stem}_{name}.wav" for name in task.output_names()}
        existing = [t for t in targets.values() if t.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it (nothing was written)")
        plans.append((path, targets))
    seen = [t for _, targets in plans for t in targets.values()]
    if len(set(seen)) != len(seen):
        dup = next(t for t in seen if seen.count(t) > 1)
        raise FileExistsError(f"two inputs would both write {dup} (inputs with the same name); separate them "
                              "into different --out folders (nothing was written)")
    return plans
