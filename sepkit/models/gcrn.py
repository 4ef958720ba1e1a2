"""Causal gated convolutional recurrent network (GCRN) for single-channel speech enhancement, with
the Wav2Vec2-embedding variants.

GCRN (Tan and Wang, "Learning complex spectral mapping with gated convolutional recurrent networks
for monaural speech enhancement", IEEE/ACM TASLP 2020) on the STFT of 16 kHz speech:

- the noisy STFT's real and imaginary parts, two channels of shape (frames, bins), go through a
  gated convolutional (GLU) encoder: layers ``conv(x) * sigmoid(gate(x))``, kernel (1, 3) over
  (time, frequency), stride (1, 2), each followed by batch norm and ELU;
- a grouped LSTM (``lstm_groups`` unidirectional LSTMs per layer on slices of the flattened
  encoder output, the groups' outputs interleaved between layers) carries the time context;
- two gated transposed-convolution decoders with skip connections from the encoder (concatenated
  along channels), each ending in a linear layer over frequency, estimate the real and imaginary
  parts of a complex ratio mask;
- the mask is applied with :func:`sepkit.kernels.stft_mask` (``kind="complex"``) and the result
  overlap-added back to a waveform.

Every layer but the LSTM works on one frame at a time (time kernel 1) and the LSTM is
unidirectional, so the model is strictly causal: the output sample ``t`` depends on the input up
to sample ``t + win_length - 1``. ``latency_samples`` (= ``win_length``) states it; batch norm is
causal in eval mode. :meth:`GCRN.step` runs one frame with an explicit LSTM state, which is what
:class:`sepkit.models.streaming.StreamingEnhancer` drives.

Configurations:

- ``"tan_wang"``: the paper's GCRN: 20 ms Hamming window, 10 ms hop (320 / 160 samples), 161 bins,
  encoder 16, 32, 64, 128, 256 channels, grouped LSTM of 2 groups x 2 layers with 1024 units in
  all (the 256 x 4 encoder output): 9,767,240 parameters.
- ``"ondevice"``: the on-device GCRN of the Wav2Vec2 study: 25 ms Hann window, 20 ms hop (400 / 320
  samples, the Wav2Vec2 frame rate), 201 bins, encoder 16, 32, 64, 128, 128 channels, grouped
  LSTM of 4 groups x 2 layers with 640 units (the 128 x 5 encoder output): 2,547,896 parameters,
  10.2 MB in float32 (the study's budget is 16 MB; the layer sizes are sepkit's choice within it).

Variants (``variant=``), all on torchaudio's ``Wav2Vec2Model`` architecture (``ssl_config="base"``
is Wav2Vec2 Base; a dict gives :func:`torchaudio.models.wav2vec2_model` arguments), weights from
``ssl_ckpt`` (wav2vec2 or HuBERT weights in torchaudio's, fairseq's or Hugging Face's layout) or,
without it, a random initialisation seeded by
``ssl_seed`` (so a rebuilt model gets the same random SSL model):

- ``"base"``: GCRN alone. Causal.
- ``"concat"``: Wav2Vec2 embeddings of the noisy input (``ssl_layer``'s output), projected to the
  LSTM input size and fused with it by a learned weighted sum (softmax-normalised weights).
  **Not causal**: Wav2Vec2's transformer attends over the whole utterance (and its convolutional
  positional embedding looks ahead), so the output depends on future input; ``causal`` is False
  and streaming refuses the model. It would be causal only with a causal SSL model, which the
  torchaudio Wav2Vec2 architecture is not.
- ``"distill"``: a linear projection of the encoder output (the LSTM input) predicts the Wav2Vec2
  embeddings of the *clean* speech; training adds an L1 loss between the two
  (:meth:`GCRN.predict_embeddings`, :meth:`GCRN.ssl_embeddings`). The SSL model is used only in
  training, so inference is causal.
- ``"pretrain"``: the encoder and that projection are first trained to predict Wav2Vec2
  embeddings from noisy speech, then the whole GCRN is fine-tuned for enhancement. Inference is
  causal, as for ``distill``.

Wav2Vec2 embeddings are computed on the input framed like the STFT (``win_length - hop_length``
zeros in front), so for ``"ondevice"`` (25 ms / 20 ms, Wav2Vec2's own receptive field and stride)
embedding ``k`` covers exactly the samples of STFT frame ``k``; for other framings the embedding
sequence is resampled to the frame count (nearest neighbour).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError, InputTypeError
from sepkit.files import load_strict
from sepkit.kernels import stft_mask

__all__ = ["GCRN", "GCRN_CONFIGS", "VARIANTS", "count_parameters", "macs_per_second", "build_ssl_model"]

#: The named configurations (constructor keyword arguments).
GCRN_CONFIGS: dict[str, dict] = {
    "tan_wang": dict(win_length=320, hop_length=160, window="hamming", channels=(16, 32, 64, 128, 256),
                     lstm_groups=2, lstm_layers=2),
    "ondevice": dict(win_length=400, hop_length=320, window="hann", channels=(16, 32, 64, 128, 128),
                     lstm_groups=4, lstm_layers=2),
}
VARIANTS = ("base", "concat", "distill", "pretrain")
WINDOWS = ("hann", "hamming", "sqrt_hann")
MASK_BOUNDS = ("none", "sigmoid", "tanh")

#: torchaudio ``wav2vec2_base`` architecture (Wav2Vec2 Base: 12 layers, 768 dims), dropouts off
#: because the SSL model is frozen.
WAV2VEC2_BASE = dict(
    extractor_mode="group_norm",
    extractor_conv_layer_config=[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
    extractor_conv_bias=False,
    encoder_embed_dim=768,
    encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=128,
    encoder_pos_conv_groups=16,
    encoder_num_layers=12,
    encoder_num_heads=12,
    encoder_attention_dropout=0.0,
    encoder_ff_interm_features=3072,
    encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0,
    encoder_layer_norm_first=False,
    encoder_layer_drop=0.0,
    aux_num_out=None,
)


def _window(kind: str, n: int) -> torch.Tensor:
    if kind == "hann":
        return torch.hann_window(n, periodic=True, dtype=torch.float64)
    if kind == "hamming":
        return torch.hamming_window(n, periodic=True, dtype=torch.float64)
    return torch.hann_window(n, periodic=True, dtype=torch.float64).sqrt()


def synthesis_window(analysis: torch.Tensor, hop: int) -> torch.Tensor:
    """The window that makes overlap-add invert the analysis exactly in the steady state:
    ``w(n) / sum_k w(n + k hop)^2`` (the least-squares inverse STFT, whose normalisation is
    periodic in the hop, folded into a fixed window so that streaming needs no envelope)."""
    win = analysis.numel()
    env = torch.zeros(hop, dtype=analysis.dtype)
    sq = analysis**2
    for start in range(0, win, hop):
        part = sq[start : start + hop]
        env[: part.numel()] += part
    if float(env.min()) <= 1e-8:
        raise InputError(f"GCRN: the window does not overlap-add to a positive envelope with hop {hop} (NOLA fails)")
    return analysis / env.repeat(math.ceil(win / hop))[:win]


def _conv_out(f: int) -> int:
    return (f - 3) // 2 + 1


class GatedConv(nn.Module):
    """Gated (GLU) convolution over (time, frequency), kernel (1, 3), stride (1, 2):
    ``conv(x) * sigmoid(gate(x))``; ``transpose=True`` for the decoder's upsampling version.

    Input (batch, c_in, frames, F_in); output (batch, c_out, frames, F_out) with
    ``F_out = (F_in - 3) // 2 + 1`` (conv) or ``2 F_in + 1 + output_padding`` (transposed).
    """

    def __init__(self, c_in: int, c_out: int, transpose: bool = False, output_padding: int = 0):
        super().__init__()
        extra = {"output_padding": (0, output_padding)} if transpose else {}
        kind = nn.ConvTranspose2d if transpose else nn.Conv2d
        self.conv = kind(c_in, c_out, (1, 3), (1, 2), **extra)
        self.gate = kind(c_in, c_out, (1, 3), (1, 2), **extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class GatedBlock(nn.Module):
    """:class:`GatedConv`, then batch norm and ELU (``last=True``: the bare gated convolution)."""

    def __init__(self, c_in: int, c_out: int, transpose: bool = False, output_padding: int = 0, last: bool = False):
        super().__init__()
        self.conv = GatedConv(c_in, c_out, transpose, output_padding)
        self.norm = None if last else nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if self.norm is None else F.elu(self.norm(y))


class Decoder(nn.Module):
    """Gated transposed-conv decoder with encoder skips, then a linear layer over frequency.

    ``forward(x (B, C_L, K, F_L), skips [(B, C_i, K, F_i)] encoder outputs, first to last)``
    returns (B, K, F): one real plane (the real or imaginary part of the mask).
    """

    def __init__(self, channels: tuple[int, ...], freqs: list[int]):
        super().__init__()
        outs = list(channels[-2::-1]) + [1]  # e.g. 128, 64, 32, 16, 1
        ins = [2 * c for c in channels[::-1]]  # previous output + skip
        self.blocks = nn.ModuleList()
        for i, (ci, co) in enumerate(zip(ins, outs)):
            f_in, f_out = freqs[-1 - i], freqs[-2 - i]
            self.blocks.append(GatedBlock(ci, co, transpose=True, output_padding=f_out - (2 * f_in + 1),
                                          last=i == len(outs) - 1))
        self.linear = nn.Linear(freqs[0], freqs[0])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for block, skip in zip(self.blocks, reversed(skips)):
            x = block(torch.cat([x, skip], dim=1))
        return self.linear(x[:, 0])


class GroupedLSTM(nn.Module):
    """``layers`` x ``groups`` unidirectional LSTMs: each layer splits its (B, K, D) input into
    ``groups`` slices of D / groups features, runs one LSTM of D / groups units on each, and
    interleaves the groups' outputs (feature ``g * H + h`` goes to ``h * groups + g``) before the
    next layer, so information crosses groups. Output (B, K, D).

    The state is two tensors ``(h, c)`` of shape (layers * groups, B, D / groups).
    """

    def __init__(self, size: int, groups: int, layers: int):
        super().__init__()
        if groups < 1 or layers < 1 or size % groups:
            raise InputError(f"GroupedLSTM: the size {size} must split into lstm_groups={groups} (>= 1) equal "
                             f"parts, with lstm_layers={layers} >= 1")
        self.size, self.groups, self.layers, self.unit = size, groups, layers, size // groups
        self.lstms = nn.ModuleList(nn.LSTM(self.unit, self.unit, batch_first=True) for _ in range(groups * layers))

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.groups * self.layers, batch, self.unit)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, K, D), optional state; returns (y (B, K, D), new state)."""
        hs, cs = [], []
        for layer in range(self.layers):
            if layer:
                B, K, _ = x.shape
                x = x.reshape(B, K, self.groups, self.unit).transpose(2, 3).reshape(B, K, self.size)
            outs = []
            for g, part in enumerate(x.split(self.unit, dim=-1)):
                i = layer * self.groups + g
                hx = None if state is None else (state[0][i : i + 1], state[1][i : i + 1])
                y, (h, c) = self.lstms[i](part, hx)
                outs.append(y)
                hs.append(h)
                cs.append(c)
            x = torch.cat(outs, dim=-1)
        return x, (torch.cat(hs, 0), torch.cat(cs, 0))


def ssl_state_dict(path: str | os.PathLike, kwargs: dict) -> dict:
    """The weights at ``path`` (a file or a transformers model folder; wav2vec2 or HuBERT in
    torchaudio's, fairseq's or Hugging Face's layout, :mod:`sepkit.models.wav2vec2_weights`) as a
    torchaudio ``Wav2Vec2Model`` state dict of the architecture ``kwargs``
    (``wav2vec2_model`` arguments); a dict of no known layout comes back unchanged. Read without
    running code (FileNotFoundError, or CheckpointError for a file that needs code)."""
    from .wav2vec2_weights import torchaudio_layout

    state, _, _ = torchaudio_layout(Path(path), kwargs, "GCRN: ssl_ckpt")
    return state


def build_ssl_model(ssl_config: str | dict = "base", ssl_ckpt: str | os.PathLike | None = None, seed: int = 0) -> nn.Module:
    """A torchaudio ``Wav2Vec2Model`` (``"base"`` or a dict of ``wav2vec2_model`` arguments), with
    weights from ``ssl_ckpt`` (wav2vec2 or HuBERT weights in torchaudio's, fairseq's or Hugging
    Face's layout, :func:`ssl_state_dict`; read with ``weights_only=True`` or safetensors) or
    randomly initialised from ``seed``. Returned frozen, in eval mode."""
    from torchaudio.models import wav2vec2_model

    if ssl_config == "base":
        kwargs = dict(WAV2VEC2_BASE)
    elif isinstance(ssl_config, dict):
        kwargs = dict(WAV2VEC2_BASE)
        unknown = sorted(set(ssl_config) - set(kwargs))
        if unknown:
            raise InputError(f"GCRN: ssl_config has unknown key(s) {unknown}; allowed: {sorted(kwargs)}")
        kwargs.update(ssl_config)
        kwargs["extractor_conv_layer_config"] = [tuple(c) for c in kwargs["extractor_conv_layer_config"]]
    else:
        raise InputError(f"GCRN: ssl_config must be 'base' or a dict of wav2vec2_model arguments, got {ssl_config!r}")
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        model = wav2vec2_model(**kwargs)
    if ssl_ckpt is not None:
        path = Path(ssl_ckpt)
        state = ssl_state_dict(path, kwargs)
        load_strict(model, state, f"GCRN: ssl_ckpt {str(path)!r} is not a torchaudio Wav2Vec2Model state dict of "
                                  "this ssl_config")
    model.eval()
    model.requires_grad_(False)
    return model


class GCRN(nn.Module):
    """Causal GCRN enhancing 16 kHz speech with a complex ratio mask (see the module docstring).

    Args:
        config: ``"tan_wang"`` or ``"ondevice"``; the keyword arguments below override its values.
        variant: ``"base"``, ``"concat"``, ``"distill"`` or ``"pretrain"``.
        win_length, hop_length: STFT window and hop in samples (the FFT size is the window).
        window: analysis window, ``"hann"``, ``"hamming"`` or ``"sqrt_hann"``; the synthesis window
            is derived from it (:func:`synthesis_window`).
        channels: encoder channels per layer; the decoders mirror them.
        lstm_groups, lstm_layers: the grouped LSTM; its size is the flattened encoder output.
        mask_bound: bound of the complex mask in ``stft_mask``: ``"none"`` (the default),
            ``"sigmoid"`` or ``"tanh"``.
        ssl_config, ssl_ckpt, ssl_seed, ssl_layer: the Wav2Vec2 model of the variants
            (``ssl_layer``: number of transformer layers to run, None for all).
        backend: the ``stft_mask`` backend (None: automatic).

    Shapes: ``forward(noisy (B, T))`` -> enhanced (B, T), float32 waveforms at 16 kHz.
    """

    sample_rate = 16000

    def __init__(self, config: str = "tan_wang", variant: str = "base", *, win_length: int | None = None,
                 hop_length: int | None = None, window: str | None = None, channels=None,
                 lstm_groups: int | None = None, lstm_layers: int | None = None, mask_bound: str = "none",
                 ssl_config: str | dict = "base", ssl_ckpt: str | None = None, ssl_seed: int = 0,
                 ssl_layer: int | None = None, backend: str | None = None):
        super().__init__()
        if config not in GCRN_CONFIGS:
            raise InputError(f"GCRN: config must be one of {tuple(GCRN_CONFIGS)}, got {config!r}")
        if variant not in VARIANTS:
            raise InputError(f"GCRN: variant must be one of {VARIANTS}, got {variant!r}")
        cfg = dict(GCRN_CONFIGS[config])
        for key, value in dict(win_length=win_length, hop_length=hop_length, window=window, channels=channels,
                               lstm_groups=lstm_groups, lstm_layers=lstm_layers).items():
            if value is not None:
                cfg[key] = value
        win, hop = int(cfg["win_length"]), int(cfg["hop_length"])
        if not 0 < hop <= win:
            raise InputError(f"GCRN: need 0 < hop_length <= win_length, got hop_length={hop}, win_length={win}")
        if cfg["window"] not in WINDOWS:
            raise InputError(f"GCRN: window must be one of {WINDOWS}, got {cfg['window']!r}")
        if mask_bound not in MASK_BOUNDS:
            raise InputError(f"GCRN: mask_bound must be one of {MASK_BOUNDS}, got {mask_bound!r}")
        chans = tuple(int(c) for c in cfg["channels"])
        if not chans or min(chans) < 1:
            raise InputError(f"GCRN: channels must be a non-empty list of positive ints, got {cfg['channels']!r}")
        freqs = [win // 2 + 1]
        for _ in chans:
            freqs.append(_conv_out(freqs[-1]))
        if freqs[-1] < 1:
            raise InputError(f"GCRN: {len(chans)} encoder layers halve {win // 2 + 1} bins below 1; use fewer channels "
                             f"or a longer win_length")
        self.config, self.variant, self.mask_bound, self.backend = config, variant, mask_bound, backend
        self.win_length, self.hop_length, self.window_kind = win, hop, cfg["window"]
        self.channels, self.freqs = chans, freqs
        self.n_bins = freqs[0]
        analysis = _window(cfg["window"], win)
        self.register_buffer("analysis_window", analysis.float(), persistent=False)
        self.register_buffer("synthesis_window", synthesis_window(analysis, hop).float(), persistent=False)

        ins = (2,) + chans[:-1]
        self.encoder = nn.ModuleList(GatedBlock(ci, co) for ci, co in zip(ins, chans))
        self.feature_size = chans[-1] * freqs[-1]
        self.lstm = GroupedLSTM(self.feature_size, int(cfg["lstm_groups"]), int(cfg["lstm_layers"]))
        self.decoder_real = Decoder(chans, freqs)
        self.decoder_imag = Decoder(chans, freqs)

        self.ssl_layer = ssl_layer
        self.ssl = None
        if variant != "base":
            self.ssl = build_ssl_model(ssl_config, ssl_ckpt, ssl_seed)
            dim = self.ssl.encoder.feature_projection.projection.out_features
            self.ssl_dim = dim
            if variant == "concat":
                self.ssl_proj = nn.Linear(dim, self.feature_size)
                self.fusion_logits = nn.Parameter(torch.zeros(2))
            else:
                self.embed_proj = nn.Linear(self.feature_size, dim)

    # ----------------------------------------------------------------- properties

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples: the window (output sample t needs input to t + win - 1)."""
        return self.win_length

    @property
    def causal(self) -> bool:
        """False only for ``concat``, whose Wav2Vec2 transformer sees the whole utterance."""
        return self.variant != "concat"

    # ----------------------------------------------------------------- framing

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` input samples: enough that every sample gets all its frames."""
        return (self.win_length - self.hop_length + num_samples - 1) // self.hop_length + 1

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, (K-1) hop + win): ``win - hop`` zeros in front, zeros behind."""
        T = x.shape[-1]
        total = (self.num_frames(T) - 1) * self.hop_length + self.win_length
        front = self.win_length - self.hop_length
        return F.pad(x, (front, total - front - T))

    def analyze(self, frames: torch.Tensor) -> torch.Tensor:
        """Windowed frames (B, K, win) -> complex spectrum as a real view (B, K, F, 2)."""
        return torch.view_as_real(torch.fft.rfft(frames * self.analysis_window, dim=-1))

    def synthesize_frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Real view (B, K, F, 2) -> synthesis-windowed frames (B, K, win), ready to overlap-add."""
        return torch.fft.irfft(torch.view_as_complex(spec), n=self.win_length, dim=-1) * self.synthesis_window

    # ----------------------------------------------------------------- network

    def _check_input(self, noisy: torch.Tensor) -> None:
        if not isinstance(noisy, torch.Tensor):
            raise InputTypeError(f"GCRN: noisy must be a torch.Tensor, got {type(noisy).__name__}")
        if noisy.dim() != 2:
            raise InputError(f"GCRN: noisy must have shape (batch, time), got {tuple(noisy.shape)}")
        if not noisy.is_floating_point():
            raise InputTypeError(f"GCRN: noisy must be a float tensor, got {noisy.dtype}")
        if noisy.shape[-1] < 1:
            raise InputError("GCRN: noisy is empty (0 samples)")
        if not torch.compiler.is_exporting() and not torch.isfinite(noisy).all():  # a value: unknown while traced
            raise InputError("GCRN: noisy contains NaN or Inf")

    def encode(self, spec: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Real view (B, K, F, 2) -> (features (B, K, C_L * F_L), encoder outputs for the skips)."""
        x = spec.permute(0, 3, 1, 2)  # (B, 2, K, F)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        B, C, K, Fl = x.shape
        return x.permute(0, 2, 1, 3).reshape(B, K, C * Fl), skips

    def decode(self, features: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """LSTM output (B, K, D) -> complex mask as a real view (B, K, F, 2)."""
        B, K, _ = features.shape
        x = features.reshape(B, K, self.channels[-1], self.freqs[-1]).permute(0, 2, 1, 3)
        return torch.stack([self.decoder_real(x, skips), self.decoder_imag(x, skips)], dim=-1)

    def fuse(self, features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """concat: softmax-weighted sum of the encoder features and the projected embeddings (B, K, D)."""
        w = torch.softmax(self.fusion_logits, 0)
        return w[0] * features + w[1] * self.ssl_proj(embeddings)

    def apply_mask(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Complex ratio mask through ``stft_mask`` (complex kind, ``mask_bound``); real views (..., 2)."""
        return stft_mask(spec.contiguous(), mask.contiguous(), kind="complex", bound=self.mask_bound, backend=self.backend)

    def _network(self, spec: torch.Tensor, state=None, embeddings: torch.Tensor | None = None):
        feats, skips = self.encode(spec)
        lstm_in = feats if embeddings is None else self.fuse(feats, embeddings)
        out, state = self.lstm(lstm_in, state)
        return self.apply_mask(spec, self.decode(out, skips)), feats, state

    def forward_features(self, noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """noisy (B, T) -> (enhanced (B, T), encoder features (B, K, D) = the LSTM input before fusion)."""
        self._check_input(noisy)
        x = noisy.float()
        T = x.shape[-1]
        frames = self._padded(x).unfold(-1, self.win_length, self.hop_length)  # (B, K, win)
        spec = self.analyze(frames)
        emb = self.ssl_embeddings(x) if self.variant == "concat" else None
        enhanced, feats, _ = self._network(spec, None, emb)
        y = self.synthesize_frames(enhanced)  # (B, K, win)
        K = y.shape[1]
        length = (K - 1) * self.hop_length + self.win_length
        y = F.fold(y.transpose(1, 2), (1, length), (1, self.win_length), stride=(1, self.hop_length))[:, 0, 0]
        front = self.win_length - self.hop_length
        return y[:, front : front + T], feats

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """noisy (B, T) at 16 kHz -> enhanced (B, T)."""
        return self.forward_features(noisy)[0]

    # ----------------------------------------------------------------- streaming

    def init_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero LSTM state ``(h, c)``, each (lstm_layers * lstm_groups, batch, units)."""
        return self.lstm.init_state(batch, device=device)

    def step(self, frame: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """One frame: raw input samples (B, win) and the LSTM state -> (synthesis-windowed output
        frame (B, win) to overlap-add at a hop of ``hop_length``, new h, new c). Causal variants only."""
        if not self.causal:
            raise InputError("GCRN.step: the concat variant is not causal (its Wav2Vec2 sees the whole "
                             "utterance) and cannot stream")
        spec = self.analyze(frame.unsqueeze(1))
        enhanced, _, (h, c) = self._network(spec, (h, c))
        return self.synthesize_frames(enhanced)[:, 0], h, c

    # ----------------------------------------------------------------- Wav2Vec2

    @torch.no_grad()
    def ssl_embeddings(self, wav: torch.Tensor) -> torch.Tensor:
        """Wav2Vec2 embeddings of ``wav`` (B, T) aligned to the STFT frames: (B, K, ssl_dim)."""
        if self.ssl is None:
            raise InputError("GCRN.ssl_embeddings: the base variant has no Wav2Vec2 model")
        self.ssl.eval()
        K = self.num_frames(wav.shape[-1])
        feats, _ = self.ssl.extract_features(self._padded(wav.float()), num_layers=self.ssl_layer)
        emb = feats[-1]  # (B, K', D)
        if emb.shape[1] != K:
            emb = F.interpolate(emb.transpose(1, 2), size=K, mode="nearest").transpose(1, 2)
        return emb

    def predict_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """distill / pretrain: encoder features (B, K, D) -> predicted Wav2Vec2 embeddings (B, K, ssl_dim)."""
        if self.variant not in ("distill", "pretrain"):
            raise InputError(f"GCRN.predict_embeddings: only the distill and pretrain variants have the "
                             f"projection, this is {self.variant!r}")
        return self.embed_proj(features)

    def encoder_features(self, noisy: torch.Tensor) -> torch.Tensor:
        """The encoder alone: noisy (B, T) -> features (B, K, D) (the pretraining stage's input)."""
        self._check_input(noisy)
        frames = self._padded(noisy.float()).unfold(-1, self.win_length, self.hop_length)
        return self.encode(self.analyze(frames))[0]

    def embedding_loss(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """distill / pretrain: mean L1 between the projected encoder ``features`` (B, K, D) (from
        :meth:`forward_features` or :meth:`encoder_features` of the noisy input) and the Wav2Vec2
        embeddings of ``target`` (B, T): the clean speech for distillation, the noisy speech for
        pretraining. Returns a scalar."""
        return (self.predict_embeddings(features) - self.ssl_embeddings(target)).abs().mean()

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the encoder and the embedding projection (what pretraining produces)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("encoder.", "embed_proj."))}


def count_parameters(model: nn.Module, trainable_only: bool = False, exclude: tuple[str, ...] = ("ssl.",)) -> int:
    """Number of parameters, leaving out the submodules named in ``exclude`` (the frozen SSL model)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if not n.startswith(exclude) and (p.requires_grad or not trainable_only))


def macs_per_second(model: GCRN, seconds: float = 1.0) -> float:
    """Multiply-accumulates per second of 16 kHz audio, measured on ``seconds`` of input.

    Convolutions and linear layers are counted by ``torch.utils.flop_counter`` (FLOPs / 2); the
    LSTMs, whose fused kernel the counter does not see, by the formula ``4 H (I + H)`` per frame
    and LSTM (gates only; the element-wise cell update is left out, as the counter does for
    activations). The frozen Wav2Vec2 model of ``concat`` is counted like the rest.
    """
    from torch.utils.flop_counter import FlopCounterMode

    n = int(seconds * model.sample_rate)
    x = torch.zeros(1, n)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    lstm = sum(4 * m.hidden_size * (m.input_size + m.hidden_size) for m in model.lstm.lstms)
    return (counter.get_total_flops() / 2 + lstm * model.num_frames(n)) / seconds
