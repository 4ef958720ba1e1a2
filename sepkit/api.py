"""The Python API for a user's own code: a trained checkpoint as an object that separates or
enhances tensors and files.

    import sepkit
    sources = sepkit.Separator.from_checkpoint("ckpt/sepformer-wsj02mix").separate("mix.wav")  # (S, T)

:class:`Separator` (separators, Codecformer, target speaker extraction) and :class:`Enhancer`
(the enhancement tasks: GCRN, SGMSE+ / Ex-Diff, ...) rebuild the task and model from any run
folder or converted release (:func:`sepkit.train.load_trained`) and run the task's own inference:
the same code as ``sepkit separate`` (:func:`sepkit.train.inference.infer_file` for files: long
recordings chunk by chunk, read and written block by block, memory bounded by the chunk).
Audio is resampled to the model's rate and back, with a notice, when the rates differ; outputs
come at the input's rate.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from sepkit.errors import InputError, InputTypeError

__all__ = ["Separator", "Enhancer"]


class _Trained:
    """What :class:`Separator` and :class:`Enhancer` share: the task, the model, the chunking."""

    def __init__(self, task, model: torch.nn.Module, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, chunk: float = 8.0, overlap: float = 1.0):
        from sepkit.train.checks import resolve_device

        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise InputTypeError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
        if not chunk > 0 or not 0 < overlap < chunk:
            raise InputError(f"chunk={chunk}, overlap={overlap}: need chunk > 0 and 0 < overlap < chunk (seconds; "
                             "consecutive chunks are aligned and cross-faded on their overlap)")
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.task, self.model = task, model.to(self.device).eval()
        self.dtype, self.chunk, self.overlap = dtype, float(chunk), float(overlap)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, ema: bool = True, chunk: float = 8.0,
                        overlap: float = 1.0):
        """Rebuild from a checkpoint folder, a run folder (its newest checkpoint) or a converted
        release. ``device``: "cpu", "cuda", "cuda:1", ...; ``dtype``: float32, or bfloat16 /
        float16 to compute under autocast; ``ema``: the weights' moving average when the run
        kept one; ``chunk``, ``overlap``: seconds (0 < overlap < chunk), for long inputs."""
        from sepkit.train import load_trained
        from sepkit.train.checks import resolve_device

        dev = device if isinstance(device, torch.device) else resolve_device(str(device))
        task, model = load_trained(path, dev, ema=ema)
        cls._check_task(task, path)
        return cls(task, model, device=dev, dtype=dtype, chunk=chunk, overlap=overlap)

    @classmethod
    def _check_task(cls, task, path) -> None:
        raise NotImplementedError

    # -- facts -----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The model's rate in Hz (inputs at other rates are resampled, outputs come back)."""
        return self.task.sample_rate

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in order (``s1``, ``s2``, ... for a separator)."""
        return list(self.task.output_names())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, task={self.task.name}, "
                f"{self.sample_rate} Hz, outputs={self.output_names}, device={self.device})")

    # -- running ---------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _waveform(self, audio, sample_rate: int | None, channel: int | None) -> tuple[torch.Tensor, int]:
        from sepkit.data import check_waveform, read_audio

        if isinstance(audio, (str, os.PathLike)):
            wav, rate = read_audio(audio, channel=channel)
            if sample_rate is not None and int(sample_rate) != rate:
                raise InputError(f"{audio}: the file is at {rate} Hz, sample_rate={sample_rate} says otherwise "
                                 "(leave sample_rate out for a file)")
            return wav, rate
        if not isinstance(audio, torch.Tensor):
            raise InputTypeError(f"audio must be a tensor (T,) or a path to an audio file, got {type(audio).__name__}")
        if not audio.is_floating_point():
            raise InputTypeError(f"audio must be a float tensor, got {audio.dtype}")
        wav = audio[0] if audio.dim() == 2 and audio.shape[0] == 1 else audio
        if wav.dim() != 1:
            raise InputError(f"audio must be a mono waveform (T,) or (1, T), got shape {tuple(audio.shape)}")
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate <= 0:
            raise InputError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        check_waveform(wav, "audio")
        if wav.shape[-1] * self.sample_rate / rate < max(1, int(0.05 * self.sample_rate)):
            raise InputError(f"audio too short ({wav.shape[-1]} samples at {rate} Hz; need 50 ms)")
        return wav.detach().to("cpu", torch.float32), rate

    def _infer(self, audio, sample_rate, channel, options) -> dict:
        wav, rate = self._waveform(audio, sample_rate, channel)
        options = {k: v for k, v in options.items() if v is not None}
        self.task.check_options(self.model, options)
        with torch.no_grad(), self._autocast():
            outputs = self.task.infer(self.model, wav, rate, chunk=self.chunk, overlap=self.overlap, **options)
        return {name: outputs[name].float() for name in self.output_names}

    def _infer_file(self, path, out_dir, overwrite: bool, channel, progress: bool, options) -> list[Path]:
        from sepkit.train.inference import infer_file, plan_files

        options = {k: v for k, v in options.items() if v is not None}
        self.task.check_options(self.model, options)
        [(path, targets)] = plan_files(self.task, [path], out_dir, channel=channel, overwrite=overwrite)
        with self._autocast():
            return infer_file(self.task, self.model, path, targets, chunk=self.chunk, overlap=self.overlap,
                              channel=channel, options=options, progress=progress)


class Separator(_Trained):
    """A trained separator: ``Separator.from_checkpoint(DIR).separate(audio) -> (S, T)``.

    Any task whose outputs are sources (separation, Codecformer, DIP-frontend separators, target
    speaker extraction with ``target_slot=``); an enhancement checkpoint is refused (use
    :class:`Enhancer`).
    """

    @classmethod
    def _check_task(cls, task, path) -> None:
        names = list(task.output_names())
        if names == ["enhanced"]:
            raise InputError(f"{path}: a checkpoint of the {task.name} task enhances; use sepkit.Enhancer")
        if not names:
            raise InputError(f"{path}: the {task.name} task has no audio outputs (it trains a "
                             f"{'frontend' if 'dip' in task.name else 'model without sources'}); nothing to separate")

    def separate(self, audio, sample_rate: int | None = None, *, channel: int | None = None,
                 target_slot: int | None = None) -> torch.Tensor:
        """Sources (S, T) of ``audio``: a mono tensor (T,) or (1, T) at ``sample_rate`` Hz (the
        model's rate when None), or a path to an audio file (its own rate; ``channel`` picks one
        of several). The output is at the input's rate, on the CPU, float32; long inputs go in
        chunks of ``chunk`` seconds with ``overlap`` (sources aligned across chunks).
        ``target_slot``: which predicted speaker a target-speaker-extraction model extracts."""
        outputs = self._infer(audio, sample_rate, channel, {"target_slot": target_slot})
        return torch.stack(list(outputs.values()))

    def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                      channel: int | None = None, progress: bool = True,
                      target_slot: int | None = None) -> list[Path]:
        """Separate the audio file ``path`` into ``out_dir/<stem>_s<k>.wav`` (one file per source,
        16-bit PCM at the file's rate, scaled together below full scale); returns the paths.
        Block by block (memory bounded by the chunk), with a progress bar;
        exactly what ``sepkit separate`` does."""
        return self._infer_file(path, out_dir, overwrite, channel, progress, {"target_slot": target_slot})


class Enhancer(_Trained):
    """A trained enhancer: ``Enhancer.from_checkpoint(DIR).enhance(audio) -> (T,)``.

    Enhancement checkpoints (GCRN, SGMSE+ / Ex-Diff with ``steps=``, a separator trained to
    enhance); :meth:`stream` for a causal model (the GCRN).
    """

    @classmethod
    def _check_task(cls, task, path) -> None:
        if list(task.output_names()) != ["enhanced"]:
            raise InputError(f"{path}: a checkpoint of the {task.name} task does not enhance (outputs "
                             f"{list(task.output_names())}); use sepkit.Separator")

    def enhance(self, audio, sample_rate: int | None = None, *, channel: int | None = None,
                steps: int | None = None) -> torch.Tensor:
        """The enhanced waveform (T,) of ``audio`` (a tensor (T,) at ``sample_rate`` Hz, the
        model's rate when None, or a file), at the input's rate. ``steps``: sampler steps of a
        diffusion model (its recipe's when None)."""
        return self._infer(audio, sample_rate, channel, {"steps": steps})["enhanced"]

    def enhance_file(self, path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                     channel: int | None = None, progress: bool = True, steps: int | None = None) -> list[Path]:
        """Write ``out_dir/<stem>_enhanced.wav`` for the audio file ``path``; returns the path in a
        list (as :meth:`Separator.separate_file`). What ``sepkit separate`` does."""
        return self._infer_file(path, out_dir, overwrite, channel, progress, {"steps": steps})

    def stream(self):
        """A :class:`~sepkit.models.streaming.StreamingEnhancer` of a causal model: feed chunks of
        any size at the model's rate, ``process(chunk (B, n)) -> (B, m)`` returns the samples now
        final, ``flush()`` the rest; the outputs together equal :meth:`enhance` at that rate."""
        from sepkit.models.streaming import StreamingEnhancer

        if not hasattr(self.model, "step") or not getattr(self.model, "causal", False):
            raise InputError(f"{type(self.model).__name__} ({self.task.name} task) does not stream: only a causal "
                             "frame-wise model (the GCRN, base / distill / pretrain variants) has a streaming step")
        return StreamingEnhancer(self.model)
