"""Speaker-embedding teacher of the mixture-to-set method: ECAPA-TDNN (Desplanques et al.,
"ECAPA-TDNN: Emphasized Channel Attention, Propagation and Aggregation in TDNN Based Speaker
Verification", Interspeech 2020) and an additive angular margin (AAM-softmax) head to train one.

* :class:`LogMelFilterbank` - 80-bin log-Mel filterbank of 16 kHz speech with sentence mean
  normalisation, the front end of SpeechBrain's speaker-verification recipe (see its docstring).
* :class:`ECAPATDNN` - the embedding network. Its defaults are the public verification model
  (channels 1024 x 4 + 3072, kernels 5,3,3,3,1, dilations 1,2,3,4,1, Res2Net scale 8, SE and
  attention widths 128, 192-d embeddings, 80 Mel bins) and its state-dict keys match SpeechBrain's
  ``embedding_model.ckpt`` (``blocks.0.conv.conv.weight``, ``asp_bn.norm.running_mean``, ...), so
  :meth:`ECAPATDNN.from_speechbrain` loads that file as it is.
* :class:`AAMSoftmax` - cosine classifier with additive angular margin (margin 0.2, scale 30,
  the values of the VoxCeleb recipe), for training a small teacher.

Any callable ``wave (B, T) -> (B, D)`` can stand in for the teacher elsewhere in sepkit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.files import load_state_dict_file

__all__ = ["LogMelFilterbank", "ECAPATDNN", "AAMSoftmax", "TDNNBlock", "SERes2NetBlock",
           "AttentiveStatisticsPooling", "load_state_dict_file", "SpeakerClassifier"]


# --------------------------------------------------------------------------------------------
# Front end


class LogMelFilterbank(nn.Module):
    """Log-Mel filterbank features with sentence mean normalisation: wave (B, T) -> (B, F, n_mels).

    As in SpeechBrain's verification recipe: centred STFT (zero padding of n_fft / 2 each side),
    periodic Hamming window of 25 ms, hop 10 ms, ``n_fft`` = 400 at 16 kHz; power spectrum
    |X|^2; triangular filters whose centres are equally spaced on the Mel scale
    ``2595 log10(1 + f / 700)`` between ``f_min`` = 0 and ``f_max`` = sample_rate / 2, each
    reaching zero one (left) band away from its centre; ``10 log10(max(E, 1e-10))`` floored at
    80 dB under each utterance's maximum; then the mean over the (valid) frames of each Mel bin
    is subtracted (no variance normalisation). F = 1 + T // hop frames.

    Args:
        sample_rate: Hz (16000 for the public model).
        n_mels: Mel bins.
        n_fft: FFT size in samples (400 at 16 kHz; scale it with the rate).
        win_ms, hop_ms: window and hop in milliseconds.
        f_min, f_max: filterbank range in Hz (f_max None: sample_rate / 2).
        top_db: dynamic range kept below each utterance's maximum (None: no floor).
        mean_norm: subtract the per-utterance mean of each bin.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400, win_ms: float = 25.0,
                 hop_ms: float = 10.0, f_min: float = 0.0, f_max: float | None = None,
                 top_db: float | None = 80.0, mean_norm: bool = True):
        super().__init__()
        f_max = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise InputError(f"LogMelFilterbank: need 0 <= f_min < f_max <= sample_rate / 2, got "
                             f"f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.win_length = int(round(sample_rate / 1000.0 * win_ms))
        self.hop_length = int(round(sample_rate / 1000.0 * hop_ms))
        if not 1 <= self.win_length <= n_fft or self.hop_length < 1:
            raise InputError(f"LogMelFilterbank: window {self.win_length} samples must be in [1, n_fft={n_fft}]")
        self.top_db, self.mean_norm = top_db, mean_norm
        self.register_buffer("window", torch.hamming_window(self.win_length), persistent=False)
        self.register_buffer("fbank", self._filters(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    @staticmethod
    def _filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
        """(n_fft // 2 + 1, n_mels) triangular filter matrix."""
        def to_mel(hz):
            return 2595 * math.log10(1 + hz / 700)

        mel = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2)
        hz = 700 * (10 ** (mel / 2595) - 1)
        band = (hz[1:] - hz[:-1])[:-1]
        centre = hz[1:-1]
        freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        slope = (freqs[None, :] - centre[:, None]) / band[:, None]
        return torch.clamp(torch.minimum(1.0 + slope, 1.0 - slope), min=0.0).t().contiguous()

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, T) float at ``sample_rate``; ``lengths`` (B,) valid samples (None: all).
        Returns (B, F, n_mels) features; with ``lengths``, the mean is taken over valid frames."""
        if not isinstance(wave, torch.Tensor) or not wave.is_floating_point() or wave.dim() != 2:
            got = (tuple(wave.shape), wave.dtype) if isinstance(wave, torch.Tensor) else type(wave).__name__
            raise InputError(f"LogMelFilterbank: wave must be a floating-point (B, T) tensor, got {got}")
        if wave.shape[-1] < 2:
            raise InputError(f"LogMelFilterbank: wave needs at least 2 samples, got {wave.shape[-1]}")
        spec = torch.stft(wave.float(), self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, bins, F)
        feats = torch.matmul(power.transpose(1, 2), self.fbank)  # (B, F, n_mels)
        feats = 10.0 * torch.log10(torch.clamp(feats, min=1e-10))
        if self.top_db is not None:
            floor = feats.amax(dim=(-2, -1), keepdim=True) - self.top_db
            feats = torch.maximum(feats, floor)
        if self.mean_norm:
            feats = feats - masked_mean(feats, self._frame_lengths(lengths, wave.shape[0], feats.shape[1]))
        return feats

    def _frame_lengths(self, lengths, batch: int, frames: int) -> torch.Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=self.window.device)
        if lengths.shape != (batch,):
            raise InputError(f"LogMelFilterbank: lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        return torch.clamp(1 + lengths.long() // self.hop_length, 1, frames)


def check_lengths(owner: str, lengths, batch: int, samples: int) -> None:
    """``lengths`` (B,): numbers of valid samples, integers in [1, ``samples``]; an InputError
    naming the convention otherwise (SpeechBrain passes relative lengths in (0, 1]: multiply
    them by T)."""
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if tuple(lengths.shape) != (batch,):
        raise InputError(f"{owner}: lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise InputError(f"{owner}: lengths are numbers of valid samples (an integer tensor, each in [1, {samples}]), "
                         f"got dtype {lengths.dtype}; relative lengths in (0, 1] (SpeechBrain's convention) must be "
                         f"multiplied by T = {samples} and rounded")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > samples:
        raise InputError(f"{owner}: lengths must lie in [1, {samples}] (the input's length in samples), got values "
                         f"from {low} to {high}")


def masked_mean(feats: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of (B, F, C) features, over the first ``lengths[b]`` frames: (B, 1, C)."""
    if lengths is None:
        return feats.mean(dim=1, keepdim=True)
    mask = (torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None])
    mask = mask.to(feats.dtype).unsqueeze(-1)
    return (feats * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# ECAPA-TDNN


class _Conv(nn.Module):
    """1-D convolution with "same" reflect padding (dilation * (k - 1) / 2 each side), weight at
    ``conv.weight`` (the official layout). (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        if (kernel_size - 1) * dilation % 2:
            raise InputError(f"ECAPATDNN: kernel_size {kernel_size} with dilation {dilation} has no symmetric padding")
        self.pad = (kernel_size - 1) * dilation // 2
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        return self.conv(x)


class _BatchNorm(nn.Module):
    """BatchNorm1d over channels at ``norm.*`` (the official layout)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv (reflect "same" padding) -> ReLU -> BatchNorm: (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = _Conv(in_channels, out_channels, kernel_size, dilation)
        self.norm = _BatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x)))


class Res2NetBlock(nn.Module):
    """Res2Net: channels split in ``scale`` groups; group 0 passes, group i > 0 goes through a
    TDNN block after adding the previous group's output (from group 2 on)."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        if channels % scale:
            raise InputError(f"ECAPATDNN: channels {channels} must be divisible by res2net_scale {scale}")
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, y = [], None
        for i, xi in enumerate(torch.chunk(x, self.scale, dim=1)):
            if i == 0:
                y = xi
            elif i == 1:
                y = self.blocks[0](xi)
            else:
                y = self.blocks[i - 1](xi + y)
            out.append(y)
        return torch.cat(out, dim=1)


def _frame_mask(lengths: torch.Tensor | None, batch: int, frames: int, device) -> torch.Tensor:
    """(B, 1, L) float mask of valid frames (all ones when ``lengths`` is None)."""
    if lengths is None:
        return torch.ones(batch, 1, frames, device=device)
    return (torch.arange(frames, device=device)[None, :] < lengths[:, None]).float().unsqueeze(1)


class SEBlock(nn.Module):
    """Squeeze-excitation: channel gates from the (masked) time mean. (B, C, L) -> (B, C, L)."""

    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = _Conv(channels, se_channels)
        self.conv2 = _Conv(se_channels, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = (x * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
        return torch.sigmoid(self.conv2(torch.relu(self.conv1(s)))) * x


class SERes2NetBlock(nn.Module):
    """TDNN (1x1) -> Res2Net -> TDNN (1x1) -> SE, plus the residual (a 1x1 ``shortcut`` when the
    widths differ). (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, se_channels: int, kernel_size: int,
                 dilation: int):
        super().__init__()
        self.tdnn1 = TDNNBlock(in_channels, out_channels, 1, 1)
        self.res2net_block = Res2NetBlock(out_channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(out_channels, out_channels, 1, 1)
        self.se_block = SEBlock(out_channels, se_channels)
        self.shortcut = _Conv(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else x
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))), mask) + residual


class AttentiveStatisticsPooling(nn.Module):
    """Channel-wise attentive mean and standard deviation with global context: (B, C, L) -> (B, 2C).

    Attention logits ``conv(tanh(tdnn([x, mean(x), std(x)])))`` per channel and frame, softmax
    over the valid frames; weighted mean and ``sqrt(max(var, 1e-12))``.
    """

    EPS = 1e-12

    def __init__(self, channels: int, attention_channels: int = 128):
        super().__init__()
        self.tdnn = TDNNBlock(3 * channels, attention_channels, 1, 1)
        self.conv = _Conv(attention_channels, channels)

    def _stats(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (w * x).sum(dim=2)
        std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp(self.EPS))
        return mean, std

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = x.shape[-1]
        mean, std = self._stats(x, mask / mask.sum(dim=2, keepdim=True))
        context = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, L), std.unsqueeze(2).expand(-1, -1, L)], dim=1)
        attn = self.conv(torch.tanh(self.tdnn(context)))
        attn = torch.softmax(attn.masked_fill(mask == 0, float("-inf")), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat([mean, std], dim=1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN speaker embedding: 16 kHz wave (B, T) or features (B, F, n_mels) -> (B, D).

    Layout: TDNN block (kernel 5) -> 3 SE-Res2Net blocks (kernel 3, dilations 2, 3, 4) ->
    multi-layer feature aggregation (the three blocks' outputs concatenated, TDNN to
    ``channels[-1]``) -> attentive statistics pooling -> BatchNorm -> 1x1 conv to ``lin_neurons``.

    Args:
        n_mels: input feature size (80).
        channels: widths of the 5 stages ([1024, 1024, 1024, 1024, 3072]; the SpeechBrain
            class's own default is 512 x 4 + 1536).
        kernel_sizes, dilations: per stage.
        attention_channels: width of the pooling attention.
        res2net_scale: Res2Net groups.
        se_channels: squeeze width.
        lin_neurons: embedding size D (192).
        sample_rate, n_fft: front end of :meth:`forward` (:class:`LogMelFilterbank`); use
            ``sample_rate=8000, n_fft=200`` for a teacher of 8 kHz data.

    The embeddings are not normalised (cosine scoring normalises them). State-dict keys match
    the official ``embedding_model.ckpt``; the front end has no parameters.
    """

    def __init__(self, n_mels: int = 80, channels: Sequence[int] = (1024, 1024, 1024, 1024, 3072),
                 kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1), dilations: Sequence[int] = (1, 2, 3, 4, 1),
                 attention_channels: int = 128, res2net_scale: int = 8, se_channels: int = 128,
                 lin_neurons: int = 192, sample_rate: int = 16000, n_fft: int = 400):
        super().__init__()
        channels, kernel_sizes, dilations = list(channels), list(kernel_sizes), list(dilations)
        if not len(channels) == len(kernel_sizes) == len(dilations) or len(channels) < 3:
            raise InputError(f"ECAPATDNN: channels, kernel_sizes and dilations need the same length >= 3, got "
                             f"{len(channels)}, {len(kernel_sizes)}, {len(dilations)}")
        self.n_mels, self.embed_dim, self.sample_rate = n_mels, lin_neurons, sample_rate
        self.config = {"n_mels": n_mels, "channels": channels, "kernel_sizes": kernel_sizes, "dilations": dilations,
                       "attention_channels": attention_channels, "res2net_scale": res2net_scale,
                       "se_channels": se_channels, "lin_neurons": lin_neurons, "sample_rate": sample_rate,
                       "n_fft": n_fft}
        self.features = LogMelFilterbank(sample_rate, n_mels, n_fft)
        self.blocks = nn.ModuleList([TDNNBlock(n_mels, channels[0], kernel_sizes[0], dilations[0])])
        for i in range(1, len(channels) - 1):
            self.blocks.append(SERes2NetBlock(channels[i - 1], channels[i], res2net_scale, se_channels,
                                              kernel_sizes[i], dilations[i]))
        self.mfa = TDNNBlock(sum(channels[1:-1]), channels[-1], kernel_sizes[-1], dilations[-1])
        self.asp = AttentiveStatisticsPooling(channels[-1], attention_channels)
        self.asp_bn = _BatchNorm(2 * channels[-1])
        self.fc = _Conv(2 * channels[-1], lin_neurons)

    @property
    def min_samples(self) -> int:
        """The shortest input in samples: every "same" reflect padding needs more frames than
        it pads (frames = 1 + T // hop_length)."""
        pad = max((m.pad for m in self.modules() if isinstance(m, _Conv)), default=0)
        return max(2, pad * self.features.hop_length)

    # -- loading ------------------------------------------------------------------------------

    @staticmethod
    def config_from_state_dict(state: dict) -> dict:
        """Constructor arguments read off an official-layout state dict (any widths)."""
        try:
            first = state["blocks.0.conv.conv.weight"]
            n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
            channels = [first.shape[0]] + [state[f"blocks.{i}.tdnn1.conv.conv.weight"].shape[0]
                                           for i in range(1, n_blocks)] + [state["mfa.conv.conv.weight"].shape[0]]
            kernels = [first.shape[2]] + [state[f"blocks.{i}.res2net_block.blocks.0.conv.conv.weight"].shape[2]
                                          for i in range(1, n_blocks)] + [state["mfa.conv.conv.weight"].shape[2]]
            scale = 1 + len({k.split(".")[4] for k in state if k.startswith("blocks.1.res2net_block.blocks.")})
            return {
                "n_mels": first.shape[1], "channels": channels, "kernel_sizes": kernels,
                "dilations": [1] + list(range(2, n_blocks + 1)) + [1],
                "attention_channels": state["asp.tdnn.conv.conv.weight"].shape[0],
                "res2net_scale": scale, "se_channels": state["blocks.1.se_block.conv1.conv.weight"].shape[0],
                "lin_neurons": state["fc.conv.weight"].shape[0],
            }
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            raise InputError(f"ECAPATDNN: the state dict does not have the ECAPA-TDNN layout "
                             f"(missing or malformed {err}); expected keys like 'blocks.0.conv.conv.weight', "
                             "'mfa.conv.conv.weight', 'fc.conv.weight'") from err

    @classmethod
    def from_state_dict(cls, state: dict, **kwargs) -> ECAPATDNN:
        """Build with the widths the state dict implies (``kwargs`` override, e.g. the
        dilations or ``sample_rate``) and load it strictly."""
        config = cls.config_from_state_dict(state)
        config.update(kwargs)
        model = cls(**config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(f"ECAPATDNN: state dict does not match the architecture: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return model.eval()

    @classmethod
    def from_speechbrain(cls, path, **kwargs) -> ECAPATDNN:
        """Load SpeechBrain's ``embedding_model.ckpt`` (a plain state dict) from a local ``path``
        with ``weights_only=True``; returns the model in eval mode."""
        return cls.from_state_dict(load_state_dict_file(path, "ECAPATDNN.from_speechbrain"), **kwargs)

    # -- forward ------------------------------------------------------------------------------

    def embed_features(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """feats (B, F, n_mels) (normalised log-Mel), ``lengths`` (B,) valid frames (None: all).
        Returns (B, lin_neurons) embeddings."""
        if not isinstance(feats, torch.Tensor) or not feats.is_floating_point() or feats.dim() != 3 \
                or feats.shape[-1] != self.n_mels:
            got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise InputError(f"ECAPATDNN: feats must be a floating-point (B, F, {self.n_mels}) tensor, got {got}")
        B, L, _ = feats.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=feats.device)
            if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > L).any()):
                raise InputError(f"ECAPATDNN: lengths must be (B,) = ({B},) frame counts in [1, {L}], got {lengths.tolist()}")
        x = feats.transpose(1, 2)
        mask = _frame_mask(lengths, B, L, x.device).to(x.dtype)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x) if i == 0 else block(x, mask)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.asp_bn(self.asp(x, mask).unsqueeze(2))
        return self.fc(x).squeeze(2)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, T) or (B, 1, T) at ``sample_rate`` Hz, ``lengths`` (B,) valid samples.
        Returns (B, lin_neurons): log-Mel features, sentence mean normalisation, embedding."""
        if isinstance(wave, torch.Tensor) and wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        if isinstance(wave, torch.Tensor) and wave.dim() == 2 and wave.is_floating_point():
            check_lengths("ECAPATDNN", lengths, wave.shape[0], wave.shape[-1])
            if wave.shape[-1] < self.min_samples:
                raise InputError(f"ECAPATDNN: the input must be at least {self.min_samples} samples long "
                                 f"({1000 * self.min_samples / self.features.sample_rate:g} ms at "
                                 f"{self.features.sample_rate} Hz), got {wave.shape[-1]}")
        feats = self.features(wave, lengths)
        frames = self.features._frame_lengths(lengths, feats.shape[0], feats.shape[1])
        return self.embed_features(feats, frames)


# --------------------------------------------------------------------------------------------
# Training head


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): embeddings (B, D), labels (B,) -> loss.

    logits = scale * cos(theta_y + margin) for the true class and scale * cos(theta_j) for the
    others, theta from the cosine between the embedding and the class weight; where
    theta_y + margin would pass pi, ``cos(theta) - margin * sin(margin)`` keeps the target
    logit monotonic. Cross-entropy averaged over the batch.

    Args:
        embed_dim: D.
        n_classes: number of speakers.
        margin: angular margin in radians (0.2).
        scale: logit scale (30).

    Parameter ``weight`` (n_classes, D).
    """

    def __init__(self, embed_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if embed_dim < 1 or n_classes < 2:
            raise InputError(f"AAMSoftmax: need embed_dim >= 1 and n_classes >= 2, got {embed_dim}, {n_classes}")
        if not 0 <= margin < math.pi / 2 or scale <= 0:
            raise InputError(f"AAMSoftmax: need 0 <= margin < pi/2 and scale > 0, got {margin}, {scale}")
        self.embed_dim, self.n_classes, self.margin, self.scale = embed_dim, n_classes, margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, n_classes) cosine similarities to the class weights."""
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            got = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise InputError(f"AAMSoftmax: embeddings must have shape (B, {self.embed_dim}), got {got}")
        return F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        if not isinstance(labels, torch.Tensor) or labels.shape != (cos.shape[0],) or labels.dtype != torch.long:
            raise InputError(f"AAMSoftmax: labels must be an int64 tensor of shape ({cos.shape[0]},)")
        if bool((labels < 0).any()) or bool((labels >= self.n_classes).any()):
            raise InputError(f"AAMSoftmax: labels must lie in [0, {self.n_classes}), got {labels.tolist()}")
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        phi = torch.where(cos > math.cos(math.pi - self.margin), phi, cos - math.sin(math.pi - self.margin) * self.margin)
        onehot = F.one_hot(labels, self.n_classes).to(cos.dtype)
        logits = self.scale * (onehot * phi + (1 - onehot) * cos)
        return F.cross_entropy(logits, labels)


class SpeakerClassifier(nn.Module):
    """ECAPA-TDNN ``embedder`` plus an AAM-softmax ``head``: ``forward(wave (B, T)) -> (B, D)``
    embeddings; ``loss(wave, labels)`` the AAM-softmax loss."""

    def __init__(self, n_classes: int, margin: float = 0.2, scale: float = 30.0, **ecapa_args):
        super().__init__()
        self.embedder = ECAPATDNN(**ecapa_args)
        self.head = AAMSoftmax(self.embedder.embed_dim, n_classes, margin, scale)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedder(wave, lengths)

