"""Streaming inference for frame-causal STFT enhancers (the GCRN of :mod:`sepkit.models.gcrn`).

:class:`StreamingEnhancer` takes audio in chunks of any size, runs the model one STFT frame at a
time with its recurrent state carried over, and returns every output sample that no later input
can change. Concatenated outputs (``process`` calls, then ``flush``) equal the offline
``model(noisy)`` up to float rounding.

:class:`StreamingStep` is the per-frame step as a plain module with explicit tensor state, the
unit to export (:func:`export_step`: ``torch.export``, TorchScript where export cannot).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from sepkit.errors import InputError, InputTypeError

__all__ = ["StreamingEnhancer", "StreamingStep", "export_step"]


class StreamingStep(nn.Module):
    """``forward(frame (B, win), h, c) -> (output frame (B, win), h, c)``: one frame of the model
    (raw input samples in, synthesis-windowed samples out for overlap-add at the model's hop).
    ``h``, ``c``: the LSTM state, each (layers * groups, B, units)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        return self.model.step(frame, h, c)


def export_step(model: nn.Module, batch: int = 1):
    """Export the streaming step of ``model`` (in eval mode) for ``batch`` streams.

    Returns ``(module, kind)``: the ``torch.export`` program's module and ``"export"``, or a
    TorchScript module and ``"torchscript"`` when ``torch.export`` cannot trace it. Call it as
    ``module(frame (batch, win), h, c)``.
    """
    step = StreamingStep(model).eval()
    h, c = model.init_state(batch)
    frame = torch.zeros(batch, model.win_length)
    try:
        with warnings.catch_warnings():
            # nn.LSTM re-assigns its flat weight list while traced; harmless for a frozen step
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            program = torch.export.export(step, (frame, h, c))
        return program.module(), "export"
    except Exception:  # noqa: BLE001 - fall back to the tracer that handles what export cannot
        with torch.no_grad():
            return torch.jit.trace(step, (frame, h, c), check_trace=False), "torchscript"


class StreamingEnhancer:
    """Chunked, stateful inference with a causal frame-wise enhancer.

    Args:
        model: a causal model with ``win_length``, ``hop_length``, ``init_state(batch)`` and
            ``step(frame, h, c)`` (a :class:`~sepkit.models.gcrn.GCRN`); it is put in eval mode.
        step: optional replacement for ``model.step`` with the same signature (an exported
            :func:`export_step` module, for instance).

    ``process(chunk (B, n))`` returns the finished samples (B, m), m >= 0 (latency: the output
    lags the input by up to ``win_length - 1`` samples plus the hop the frame is waiting for);
    ``flush()`` returns the rest, so that the total output length equals the total input length,
    and starts a new stream; ``reset()`` drops the current stream. The batch size is fixed by the
    first chunk of a stream.
    """

    def __init__(self, model: nn.Module, step=None):
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"StreamingEnhancer: model must be a GCRN module (an nn.Module with step(), win_length "
                                 f"and hop_length), got {type(model).__name__}")
        if step is None and not callable(getattr(model, "step", None)):
            raise InputTypeError(f"StreamingEnhancer: {type(model).__name__} has no step() method; pass step= or a "
                                 "causal GCRN")
        for attr in ("win_length", "hop_length"):
            if not isinstance(getattr(model, attr, None), int):
                raise InputTypeError(f"StreamingEnhancer: {type(model).__name__} has no integer {attr}")
        if not getattr(model, "causal", True):
            raise InputError(f"StreamingEnhancer: the model ({getattr(model, 'variant', type(model).__name__)}) is "
                             f"not causal and cannot stream")
        self.model = model.eval()
        self.step_fn = step if step is not None else model.step
        self.win, self.hop = int(model.win_length), int(model.hop_length)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: empty buffers, zero recurrent state."""
        self._batch: int | None = None
        self._inbuf: torch.Tensor | None = None   # samples not yet consumed by a frame (padded coords)
        self._acc: torch.Tensor | None = None     # overlap-add accumulator, length win
        self._state = None
        self._skip = self.win - self.hop          # leading output samples that belong to the padding
        self._received = 0
        self._emitted = 0

    def _check(self, chunk: torch.Tensor) -> torch.Tensor:
        if not isinstance(chunk, torch.Tensor):
            raise InputTypeError(f"StreamingEnhancer.process: chunk must be a torch.Tensor, got {type(chunk).__name__}")
        if chunk.dim() != 2:
            raise InputError(f"StreamingEnhancer.process: chunk must have shape (batch, samples), got {tuple(chunk.shape)}")
        if not chunk.is_floating_point():
            raise InputTypeError(f"StreamingEnhancer.process: chunk must be a float tensor, got {chunk.dtype}")
        if self._batch is not None and chunk.shape[0] != self._batch:
            raise InputError(f"StreamingEnhancer.process: this stream has batch size {self._batch}, got a chunk of "
                             f"{chunk.shape[0]} (call reset() to start a new stream)")
        if not torch.isfinite(chunk).all():
            bad = int((~torch.isfinite(chunk)).sum())
            raise InputError(f"StreamingEnhancer.process: chunk has {bad} NaN or Inf sample(s); the stream's state "
                             f"is unchanged, pass a finite chunk to continue")
        return chunk.detach().float()

    def _start(self, batch: int, device) -> None:
        self._batch = batch
        self._inbuf = torch.zeros(batch, self.win - self.hop, device=device)
        self._acc = torch.zeros(batch, self.win, device=device)
        self._state = self.model.init_state(batch, device=device)

    @torch.no_grad()
    def _run_frames(self) -> torch.Tensor:
        """Consume every complete frame of the input buffer; return the finished samples."""
        outs = []
        h, c = self._state
        while self._inbuf.shape[1] >= self.win:
            frame = self._inbuf[:, : self.win]
            y, h, c = self.step_fn(frame, h, c)
            acc = self._acc + y
            outs.append(acc[:, : self.hop])
            self._acc = torch.cat([acc[:, self.hop :], acc.new_zeros(acc.shape[0], self.hop)], dim=1)
            self._inbuf = self._inbuf[:, self.hop :]
        self._state = (h, c)
        out = torch.cat(outs, dim=1) if outs else self._acc.new_zeros(self._batch, 0)
        if self._skip:
            drop = min(self._skip, out.shape[1])
            out = out[:, drop:]
            self._skip -= drop
        return out

    def process(self, chunk: torch.Tensor) -> torch.Tensor:
        """Feed ``chunk`` (B, n) of 16 kHz samples; returns the output samples now final (B, m)."""
        chunk = self._check(chunk)
        if self._batch is None:
            self._start(chunk.shape[0], chunk.device)
        self._inbuf = torch.cat([self._inbuf, chunk], dim=1)
        self._received += chunk.shape[1]
        out = self._run_frames()
        self._emitted += out.shape[1]
        return out

    def flush(self) -> torch.Tensor:
        """Pad the stream's end with zeros as the offline forward does, return the remaining
        output (so that all outputs together are as long as all inputs), and reset."""
        if self._batch is None:
            self.reset()
            return torch.zeros(0, 0)
        n_frames = self.model.num_frames(self._received)
        total = (n_frames - 1) * self.hop + self.win  # padded length the offline forward frames
        consumed = self._received + (self.win - self.hop) - self._inbuf.shape[1]
        pad = total - consumed - self._inbuf.shape[1]
        self._inbuf = torch.cat([self._inbuf, self._inbuf.new_zeros(self._batch, pad)], dim=1)
        out = self._run_frames()
        tail = torch.cat([out, self._acc], dim=1)
        out = tail[:, : self._received - self._emitted]
        self.reset()
        return out
