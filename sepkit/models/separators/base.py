"""Shared parts of the mask-based time-domain separators: encoder, decoder, frontend adapter and
the encoder / masker / decoder skeleton.

Waveform in, one waveform per source out:

    mixture (B, T) or (B, 1, T)
      -> pad to whole frames -> encoder: Conv1d(1, N, L, stride) [+ activation]   w (B, N, F)
      -> [+ adapter(frontend features)]                                           w (B, N, F)
      -> masker(w) -> masks (B, S, N, F)
      -> decoder: ConvTranspose1d(N, 1, L, stride) of masks * w -> crop          (B, S, T)

Padding (the encoder's ``padding`` mode):

- ``"cover"`` (default): ``L - stride`` zeros on the left (so the first sample is covered by as
  many frames as the others) and enough on the right for whole frames; the output is cropped
  back, so its length equals the input length for any T >= 1.
- ``"none"``: no padding; ``F = (T - L) // stride + 1`` frames lie wholly inside the signal (T >= L
  is needed), and the samples after the last frame, which no frame covers, come out as zeros.
  The output length still equals the input length. Checkpoints trained this way (the published
  SpeechBrain and Asteroid separators) need it to reproduce their outputs.

Frontend hook (the DIP frontend of the pretrained-frontend paper plugs in here): construct the
separator with ``frontend_dim=F_fe`` (and optionally ``frontend=module``), then call
``model(mixture, frontend_features=feats)`` with ``feats`` (B, F_fe, T') at any frame rate T'.
The :class:`FrontendAdapter` resamples ``feats`` linearly in time to the encoder's F frames and
projects them with a 1x1 convolution to N channels; the result is *added to the encoder output*
``w``, and everything downstream (masker and the masked representation) sees the sum. The
projection starts at zero, so a freshly attached frontend leaves the separator unchanged. With a
``frontend`` module and no ``frontend_features``, the module is called on the (B, T) mixture.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.nn.graph import relu

ENCODER_ACTIVATIONS = ("linear", "relu", "gated")
ENCODER_PADDINGS = ("cover", "none")
MASK_ACTIVATIONS = ("relu", "sigmoid", "softmax", "linear")


def as_waveform_batch(name: str, mixture: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
    """Validate a (B, T) or (B, 1, T) floating-point waveform batch and return it as (B, T).

    With ``model``: the batch must be on the device of the model's weights and, outside
    autocast, of their dtype (an InputTypeError naming both otherwise, not an error from inside
    a convolution)."""
    if not isinstance(mixture, torch.Tensor):
        raise InputTypeError(f"{name}: mixture must be a torch.Tensor, got {type(mixture).__name__}")
    if not mixture.is_floating_point():
        raise InputTypeError(f"{name}: mixture must be a floating-point waveform, got dtype {mixture.dtype}")
    weight = next(model.parameters(), None) if model is not None else None
    if weight is not None:
        if mixture.device != weight.device:
            raise InputTypeError(f"{name}: mixture is on {mixture.device} but the model's weights are on "
                                 f"{weight.device}; move one of them (tensor.to(device) or model.to(device))")
        if mixture.dtype != weight.dtype and not torch.is_autocast_enabled(mixture.device.type):
            raise InputTypeError(f"{name}: mixture has dtype {mixture.dtype} but the model's weights are "
                                 f"{weight.dtype}; pass mixture.to({weight.dtype}) (or convert the model, or use "
                                 "torch.autocast)")
    if mixture.dim() == 3 and mixture.shape[1] == 1:
        mixture = mixture[:, 0]
    if mixture.dim() != 2:
        raise InputError(
            f"{name}: mixture must have shape (B, T) or (B, 1, T) (single channel), got {tuple(mixture.shape)}"
        )
    if mixture.shape[-1] < 1:
        raise InputError(f"{name}: mixture has no samples")
    return mixture


def mask_activation(name: str, masks: torch.Tensor, source_dim: int = 1) -> torch.Tensor:
    """Apply a mask nonlinearity; ``softmax`` normalises across the sources (``source_dim``)."""
    if name == "relu":
        return relu(masks)
    if name == "sigmoid":
        return torch.sigmoid(masks)
    if name == "softmax":
        return torch.softmax(masks, dim=source_dim)
    return masks


def check_choice(owner: str, arg: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{owner}: {arg} must be one of {tuple(choices)}, got {value!r}")


class Encoder(nn.Module):
    """Learned analysis filterbank: (B, T_padded) -> (B, N, F).

    ``Conv1d(1, N, kernel_size, stride, bias=False)`` followed by ``activation``: "linear" (none),
    "relu", or "gated" (TasNet: ``relu(U x) * sigmoid(V x)``, a second filterbank ``gate``).
    ``padding``: how the separator pads the waveform into frames, "cover" (default) or "none"
    (see :func:`frame_padding` and the module docstring); the forward pass here takes the
    already padded waveform.
    """

    def __init__(self, n_filters: int, kernel_size: int, stride: int, activation: str = "linear",
                 padding: str = "cover"):
        super().__init__()
        check_choice("Encoder", "activation", activation, ENCODER_ACTIVATIONS)
        check_choice("Encoder", "padding", padding, ENCODER_PADDINGS)
        if n_filters < 1 or kernel_size < 1 or not 1 <= stride <= kernel_size:
            raise InputError(
                f"Encoder: need n_filters >= 1 and 1 <= stride <= kernel_size, got n_filters={n_filters}, "
                f"kernel_size={kernel_size}, stride={stride}"
            )
        self.n_filters, self.kernel_size, self.stride, self.activation = n_filters, kernel_size, stride, activation
        self.padding = padding
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)
        self.gate = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False) if activation == "gated" else None

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)
        w = self.conv(x)
        if self.activation == "relu":
            w = torch.relu(w)
        elif self.activation == "gated":
            w = torch.relu(w) * torch.sigmoid(self.gate(x))
        return w


class Decoder(nn.Module):
    """Learned synthesis filterbank: (B, N, F) -> (B, (F - 1) * stride + kernel_size)."""

    def __init__(self, n_filters: int, kernel_size: int, stride: int):
        super().__init__()
        self.deconv = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.deconv(w).squeeze(1)


def frame_padding(length: int, kernel_size: int, stride: int, mode: str = "cover") -> tuple[int, int, int]:
    """(left, right, frames) for a signal of ``length`` samples.

    ``mode="cover"``: zero padding that gives whole frames with ``kernel_size - stride`` zeros (at
    least) on each side. ``mode="none"``: no padding, the ``(length - kernel_size) // stride + 1``
    whole frames inside the signal (ValueError when ``length < kernel_size``)."""
    if mode == "none":
        if length < kernel_size:
            raise InputError(f"frame_padding: padding='none' needs at least kernel_size={kernel_size} samples, "
                             f"got {length}")
        return 0, 0, (length - kernel_size) // stride + 1
    check_choice("frame_padding", "mode", mode, ENCODER_PADDINGS)
    left = kernel_size - stride
    frames = -(-(length + kernel_size - 2 * stride) // stride) + 1
    right = (frames - 1) * stride + kernel_size - length - left
    return left, right, frames


class FrontendAdapter(nn.Module):
    """Adaptation layer from frontend features to the encoder's resolution.

    ``forward(features (B, F_fe, T'), frames) -> (B, N, frames)``: linear interpolation in time
    to ``frames`` (identity when T' == frames), then a 1x1 convolution F_fe -> N initialised at
    zero (weight and bias).
    """

    def __init__(self, frontend_dim: int, n_filters: int, mode: str = "linear"):
        super().__init__()
        if frontend_dim < 1:
            raise InputError(f"FrontendAdapter: frontend_dim must be >= 1, got {frontend_dim}")
        check_choice("FrontendAdapter", "mode", mode, ("linear", "nearest"))
        self.frontend_dim, self.mode = frontend_dim, mode
        self.proj = nn.Conv1d(frontend_dim, n_filters, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor, frames: int) -> torch.Tensor:
        if features.shape[-1] != frames:
            kwargs = {"align_corners": False} if self.mode == "linear" else {}
            features = F.interpolate(features, size=frames, mode=self.mode, **kwargs)
        return self.proj(features)


class MaskSeparator(nn.Module):
    """Encoder / masker / decoder skeleton shared by every separator here.

    Subclasses build ``self.encoder`` (:class:`Encoder`), ``self.masker`` (a module mapping
    encoder features (B, N, F) to masks (B, S, N, F)) and ``self.decoder`` (:class:`Decoder`) and
    call :meth:`_init_frontend`.

    Attributes: ``n_src``, ``sample_rate`` (the rate the model is meant for, in Hz: metadata for
    callers that resample; the forward pass itself is rate-agnostic), ``causal``.
    """

    n_src: int
    sample_rate: int
    causal: bool

    def _init_frontend(self, frontend: nn.Module | None, frontend_dim: int | None) -> None:
        if frontend is not None and not isinstance(frontend, nn.Module):
            raise InputTypeError(f"{type(self).__name__}: frontend must be an nn.Module, got {type(frontend).__name__}")
        if frontend is not None and frontend_dim is None:
            frontend_dim = getattr(frontend, "output_dim", None)
            if frontend_dim is None:
                raise InputError(
                    f"{type(self).__name__}: give frontend_dim (the frontend's feature size) or a frontend "
                    "with an `output_dim` attribute"
                )
        rates = getattr(frontend, "sample_rate", None), getattr(self, "sample_rate", None)
        if None not in rates and rates[0] != rates[1]:
            raise InputError(f"{type(self).__name__}: the frontend runs at {rates[0]} Hz but the separator at "
                             f"{rates[1]} Hz; build both at one sample rate")
        self.frontend = frontend
        self.adapter = (
            FrontendAdapter(frontend_dim, self.encoder.n_filters, mode="nearest" if self.causal else "linear")
            if frontend_dim is not None else None
        )

    @staticmethod
    def _check_n_src(owner: str, n_src: int) -> int:
        if not isinstance(n_src, int) or n_src < 1:
            raise InputError(f"{owner}: n_src must be a positive int, got {n_src!r}")
        return n_src

    def num_frames(self, length: int) -> int:
        """Encoder frames F for an input of ``length`` samples."""
        return self._frame_padding(length)[2]

    def _frame_padding(self, length: int) -> tuple[int, int, int]:
        enc = self.encoder
        return frame_padding(length, enc.kernel_size, enc.stride, getattr(enc, "padding", "cover"))

    def encode(self, mixture: torch.Tensor, frontend_features: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output (with the frontend's contribution when present): (B, N, F)."""
        wave = as_waveform_batch(type(self).__name__, mixture, self)
        left, right, _ = self._frame_padding(wave.shape[-1])
        w = self.encoder(F.pad(wave, (left, right)))
        return self._add_frontend(wave, w, frontend_features)

    def _add_frontend(self, wave: torch.Tensor, w: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        name = type(self).__name__
        if features is None and self.frontend is not None:
            features = self.frontend(wave)
        if features is None:
            return w
        if self.adapter is None:
            raise InputError(f"{name}: frontend_features given, but the model was built without frontend_dim")
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise InputError(f"{name}: frontend features must be a (B, F, T') tensor, got {got}")
        if features.shape[0] != w.shape[0] or features.shape[1] != self.adapter.frontend_dim:
            raise InputError(
                f"{name}: frontend features have shape {tuple(features.shape)}; expected "
                f"({w.shape[0]}, {self.adapter.frontend_dim}, T') for this batch"
            )
        return w + self.adapter(features.to(w.dtype), w.shape[-1])

    def forward(self, mixture: torch.Tensor, frontend_features: torch.Tensor | None = None) -> torch.Tensor:
        """Separate ``mixture`` (B, T) or (B, 1, T) into (B, S, T) sources.

        ``frontend_features``: optional (B, F_fe, T') features added through the adapter (see the
        module docstring); requires ``frontend_dim`` at construction.
        """
        length = as_waveform_batch(type(self).__name__, mixture, self).shape[-1]
        left = self._frame_padding(length)[0]
        w = self.encode(mixture, frontend_features)
        masks = self.masker(w)  # (B, S, N, F)
        B, S, N, frames = masks.shape
        out = self.decoder((masks * w.unsqueeze(1)).reshape(B * S, N, frames))
        if out.shape[-1] < left + length:  # padding="none": no frame covers the last samples
            out = F.pad(out, (0, left + length - out.shape[-1]))
        return out[:, left: left + length].reshape(B, S, length)


__all__ = [
    "Encoder", "Decoder", "FrontendAdapter", "MaskSeparator", "frame_padding", "as_waveform_batch",
    "mask_activation", "ENCODER_ACTIVATIONS", "ENCODER_PADDINGS", "MASK_ACTIVATIONS",
]
