"""TF-GridNet (Wang, Cornell, Choi, Lee, Kim and Watanabe, "TF-GridNet: Integrating Full- and
Sub-Band Modeling for Speech Separation", IEEE/ACM TASLP 2023; ICASSP 2023), the vectorised
"v2" formulation of ESPnet's ``TFGridNetV2``.

Complex spectral mapping in the time-frequency domain: the network reads the real and imaginary
parts of the mixture's STFT and writes those of every source, which the inverse STFT turns back
into waveforms::

    mixture (B, T) / std(mixture)                               (variance normalisation)
      -> STFT (n_fft, hop, Hann, centred)    -> RI (B, 2, T', F)  T' = T // hop + 1, F = n_fft // 2 + 1
      -> Conv2d 3x3 (2 -> D), GroupNorm(1, D) -> embedding (B, D, T', F)  [+ frontend adapter]
      -> n_blocks x GridNet block             -> (B, D, T', F)
      -> ConvTranspose2d 3x3 (D -> 2 S)        -> RI of S sources (B, S, 2, T', F)
      -> inverse STFT, crop to T, * std(mixture) -> (B, S, T)

A GridNet block is three residual paths on the (T', F) grid of D-dimensional embeddings:

1. *intra-frame full-band*: per frame, LayerNorm over D, unfold ``emb_ks`` neighbouring bins
   (hop ``emb_hs``) into D * emb_ks features, a BLSTM of ``hidden`` units per direction along
   frequency, and a transposed 1-D convolution (kernel emb_ks, stride emb_hs) back to D; the grid
   is zero-padded by ``emb_ks - emb_hs`` on both sides in time and frequency first (and cropped
   after the second path);
2. *sub-band temporal*: the same along time, per frequency bin;
3. *cross-frame full-band self-attention*: ``nhead`` heads whose queries and keys are E channels
   per bin (E = ceil(attn_qk_dim / F)) and values D / nhead channels per bin, each a 1x1
   convolution, PReLU and a LayerNorm over (channels, frequency), so that a frame's query is an
   E * F vector; softmax(q k^T / sqrt(E F)) over all frames, the heads concatenated, then a 1x1
   convolution, PReLU and LayerNorm over (D, F).

The attention runs through :func:`sepkit.nn.attention.attend` (the Triton kernel where it takes
the shape, SDPA on the CPU). Its head widths are whole spectra (E * F = 520 for queries and keys,
(D / nhead) * F = 780 for values at the defaults), wider than the Triton kernels' limit of 128,
so on a GPU the automatic choice is PyTorch's fused SDPA at these sizes too; the queries and keys
are zero-padded to the value width (which leaves every score unchanged) since the op takes one
head width. The STFT and its inverse are ``torch.stft`` / ``torch.istft``: the model maps the
spectrum to the sources' spectra directly, with neither a mask nor a compression, so
:func:`sepkit.kernels.stft_mask` has nothing to apply here.

Configurations (``config=``; keyword arguments override single values):

- ``"espnet"`` (default): ESPnet's ``TFGridNetV2`` defaults, which are its WSJ0-2mix recipe
  (``train_enh_tfgridnetv2_tf_lr-patience3_patience5``): STFT 128 / hop 64 at 8 kHz (16 ms / 8 ms),
  D = 48, emb_ks 4, emb_hs 1, BLSTMs of 192 units, 6 blocks, 4 heads, attn_qk_dim 512 (E = 8):
  8,175,874 parameters for two sources. ESPnet reports 22.8-23.1 dB SI-SNRi on WSJ0-2mix.
- ``"paper"``: the paper's larger setting, D = 64 and BLSTMs of 256 units (the rest as above):
  14,435,602 parameters for two sources, the "14.4 M" of the paper's table, for its 23.4-23.5 dB.

Differences from ESPnet's module: single-channel input only (``n_imics = 1``); inputs shorter
than ``n_fft // 2 + 1`` samples (which the centred STFT's reflection padding cannot take) are
zero-padded to that length and the output cropped back; the mixture's standard deviation is
floored at 1e-8 so that an all-zero input gives zeros rather than NaN. State-dict keys and shapes
are ESPnet's (the separator's keys without the ``separator.`` prefix), so
:meth:`TFGridNet.from_espnet` loads a release as it is.

Memory: the inner LSTMs dominate (each block runs two BLSTMs over every bin of every frame);
``checkpointing="blocks"`` recomputes each of a block's three paths in the backward pass.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import CheckpointError, InputError, InputTypeError
from sepkit.nn.attention import attend
from sepkit.nn.checkpoint import check_checkpointing, run_block

from .base import FrontendAdapter, as_waveform_batch, check_choice

TFGRIDNET_CONFIGS: dict[str, dict] = {
    "espnet": dict(n_fft=128, hop_length=64, window="hann", emb_dim=48, emb_ks=4, emb_hs=1, hidden=192,
                   n_blocks=6, nhead=4, attn_qk_dim=512, eps=1e-5),
    "paper": dict(n_fft=128, hop_length=64, window="hann", emb_dim=64, emb_ks=4, emb_hs=1, hidden=256,
                  n_blocks=6, nhead=4, attn_qk_dim=512, eps=1e-5),
}
"""The two size presets (see the module docstring): ESPnet's defaults / WSJ0-2mix recipe, and the
paper's 14.4 M setting."""

WINDOWS = ("hann", "hamming", "blackman", "bartlett")
INITS = ("xavier_uniform", "default")
MIN_STD = 1e-8


def espnet_xavier_init(modules) -> None:
    """ESPnet's ``init: xavier_uniform`` (its TF-GridNet recipes): every parameter of two or more
    dimensions Xavier-uniform (the norms' per-bin scales and shifts included), every 1-D
    ``*.bias*`` zero, LayerNorm and GroupNorm back to ones / zeros; PReLU slopes stay 0.25."""
    for module in modules:
        for name, p in module.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
            elif "bias" in name.rsplit(".", 1)[-1]:
                nn.init.zeros_(p)
        for m in module.modules():
            if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                m.reset_parameters()


class _OverlapAdd(torch.autograd.Function):
    """Overlap-add of per-position taps: frames (N, L', D, k) -> y (N, (L' - 1) hop + k, D) with
    ``y[:, l hop + i] += frames[:, l, :, i]`` (a transposed convolution after its matrix product).
    The backward is the unfolding of the output gradient, a view: nothing is saved."""

    @staticmethod
    def forward(ctx, frames: torch.Tensor, hop: int) -> torch.Tensor:
        N, Lp, D, k = frames.shape
        ctx.hop, ctx.k = hop, k
        y = frames.new_zeros(N, (Lp - 1) * hop + k, D)
        span = (Lp - 1) * hop + 1
        for i in range(k):
            y[:, i:i + span:hop] += frames[..., i]
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.unfold(1, ctx.k, ctx.hop), None


class HeadNorm(nn.Module):
    """PReLU per head, then LayerNorm over (channels, frequency) per head and frame with a scale
    and shift per head, channel and bin (ESPnet's ``AllHeadPReLULayerNormalization4DCF``).

    ``forward(x (B, H, T, E, F)) -> (B, H, T, E * F)``. Parameters as ESPnet's: ``gamma`` and
    ``beta`` (1, H, E, 1, F), ``act.weight`` (H,).
    """

    def __init__(self, heads: int, channels: int, n_freqs: int, eps: float = 1e-5):
        super().__init__()
        self.heads, self.channels, self.n_freqs, self.eps = heads, channels, n_freqs, eps
        self.gamma = nn.Parameter(torch.ones(1, heads, channels, 1, n_freqs))
        self.beta = nn.Parameter(torch.zeros(1, heads, channels, 1, n_freqs))
        self.act = nn.PReLU(num_parameters=heads, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, T, E, Fq = x.shape
        x = F.layer_norm(self.act(x), (E, Fq), eps=self.eps)
        x = torch.addcmul(self.beta[0].transpose(1, 2), x, self.gamma[0].transpose(1, 2))  # (H, 1, E, F) each
        return x.view(B, H, T, E * Fq)


class FrameNorm(nn.Module):
    """LayerNorm over (channels, frequency) per frame with a scale and shift per channel and bin
    (ESPnet's ``LayerNormalization4DCF``), on channels-last input: (..., F, C) -> (..., F, C).
    Parameters as ESPnet's: ``gamma``, ``beta`` (1, C, 1, F)."""

    def __init__(self, channels: int, n_freqs: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, n_freqs))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, n_freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-2:], eps=self.eps)
        return torch.addcmul(self.beta[0, :, 0].t(), x, self.gamma[0, :, 0].t())


class GridNetBlock(nn.Module):
    """One TF-GridNet block (intra-frame BLSTM, sub-band temporal BLSTM, full-band self-attention,
    each residual) on channels-last embeddings: (B, T, F, D) -> (B, T, F, D).

    Submodules and parameters are named and shaped as ESPnet's ``GridNetV2Block``:
    ``intra_norm`` / ``inter_norm`` (LayerNorm D), ``intra_rnn`` / ``inter_rnn`` (BLSTM, input
    D * emb_ks), ``intra_linear`` / ``inter_linear`` (ConvTranspose1d 2 hidden -> D, kernel emb_ks,
    stride emb_hs; a Linear 2 hidden -> emb_ks * D when emb_ks == emb_hs), ``attn_conv_{Q,K,V}``
    (1x1 Conv2d), ``attn_norm_{Q,K,V}`` (:class:`HeadNorm`), ``attn_concat_proj`` (1x1 Conv2d,
    PReLU, :class:`FrameNorm`). The 1x1 convolutions run as matrix products on channels-last
    tensors (the three input projections as one).

    ``checkpointing="blocks"`` recomputes each of the three paths in the backward pass.
    """

    def __init__(self, emb_dim: int, emb_ks: int, emb_hs: int, n_freqs: int, hidden: int, nhead: int = 4,
                 attn_qk_dim: int = 512, eps: float = 1e-5, attention_backend: str | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("GridNetBlock", checkpointing)
        self.emb_dim, self.emb_ks, self.emb_hs, self.nhead = emb_dim, emb_ks, emb_hs, nhead
        self.attention_backend = attention_backend
        unfolded = emb_dim * emb_ks
        for path in ("intra", "inter"):
            self.add_module(f"{path}_norm", nn.LayerNorm(emb_dim, eps=eps))
            self.add_module(f"{path}_rnn", nn.LSTM(unfolded, hidden, 1, batch_first=True, bidirectional=True))
            self.add_module(f"{path}_linear", nn.Linear(2 * hidden, unfolded) if emb_ks == emb_hs
                            else nn.ConvTranspose1d(2 * hidden, emb_dim, emb_ks, stride=emb_hs))
        E = math.ceil(attn_qk_dim / n_freqs)
        self.qk_channels, self.v_channels = E, emb_dim // nhead
        self.attn_conv_Q = nn.Conv2d(emb_dim, nhead * E, 1)
        self.attn_norm_Q = HeadNorm(nhead, E, n_freqs, eps)
        self.attn_conv_K = nn.Conv2d(emb_dim, nhead * E, 1)
        self.attn_norm_K = HeadNorm(nhead, E, n_freqs, eps)
        self.attn_conv_V = nn.Conv2d(emb_dim, emb_dim, 1)
        self.attn_norm_V = HeadNorm(nhead, emb_dim // nhead, n_freqs, eps)
        self.attn_concat_proj = nn.Sequential(nn.Conv2d(emb_dim, emb_dim, 1), nn.PReLU(),
                                              FrameNorm(emb_dim, n_freqs, eps))

    # -- the recurrent paths --------------------------------------------------------------

    def _overlap(self) -> int:
        return self.emb_ks - self.emb_hs

    def _padded_size(self, n: int) -> int:
        olp, ks, hs = self._overlap(), self.emb_ks, self.emb_hs
        return math.ceil((n + 2 * olp - ks) / hs) * hs + ks

    def _rnn_path(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """The BLSTM along the third axis of x (B, A, L, D): (B, A, L, D) (the residual not added)."""
        norm, rnn, linear = (getattr(self, f"{which}_{part}") for part in ("norm", "rnn", "linear"))
        B, A, L, D = x.shape
        ks, hs = self.emb_ks, self.emb_hs
        h = norm(x).view(B * A, L, D)
        if ks == hs:  # whole groups of ks positions: (position-in-group, channel) features
            out = linear(rnn(h.reshape(B * A, L // ks, ks * D))[0])
            return out.view(B, A, L, D)
        seq = h.unfold(1, ks, hs).reshape(B * A, -1, D * ks)  # (channel, position) features, as F.unfold
        out = rnn(seq)[0]  # (BA, L', 2 hidden)
        # the transposed convolution: one matrix product for all ks taps, then their overlap-add
        frames = F.linear(out, linear.weight.flatten(1).t()).view(B * A, -1, D, ks)
        return (_OverlapAdd.apply(frames, hs) + linear.bias).view(B, A, L, D)

    def _intra(self, x: torch.Tensor) -> torch.Tensor:
        return self._rnn_path(x, "intra")

    def _inter(self, x: torch.Tensor) -> torch.Tensor:
        return self._rnn_path(x, "inter")

    # -- the attention path ---------------------------------------------------------------

    def _attention(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, F, T, D) -> (B, T, F, D), the attention branch (the residual not added)."""
        B, Fq, T, D = z.shape
        H, E, Cv = self.nhead, self.qk_channels, self.v_channels
        convs = (self.attn_conv_Q, self.attn_conv_K, self.attn_conv_V)
        weight = torch.cat([c.weight.flatten(1) for c in convs])
        bias = torch.cat([c.bias for c in convs])
        q, k, v = F.linear(z, weight, bias).split([H * E, H * E, H * Cv], dim=-1)  # (B, F, T, .)

        def heads(t, channels, norm):  # (B, F, T, H * c) -> (B, H, T, c * F)
            t = t.reshape(B, Fq, T, H, channels).permute(0, 3, 2, 4, 1).contiguous()
            return norm(t)

        q, k, v = heads(q, E, self.attn_norm_Q), heads(k, E, self.attn_norm_K), heads(v, Cv, self.attn_norm_V)
        width = max(E, Cv) * Fq
        # One head width for the op: zero-pad q and k (scores unchanged) and fold the
        # 1 / sqrt(E F) scale into q, since the op scales by 1 / sqrt(width).
        q = F.pad(q * math.sqrt(width / (E * Fq)), (0, width - E * Fq))
        k = F.pad(k, (0, width - E * Fq))
        v = F.pad(v, (0, width - Cv * Fq))
        out = attend(q, k, v, backend=self.attention_backend)[..., :Cv * Fq]  # (B, H, T, Cv F)
        out = out.reshape(B, H, T, Cv, Fq).permute(0, 2, 4, 1, 3).reshape(B, T, Fq, D)
        proj, act, norm = self.attn_concat_proj
        return norm(act(F.linear(out, proj.weight.flatten(1), proj.bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T0, Q0, D = x.shape
        olp = self._overlap()
        T, Q = self._padded_size(T0), self._padded_size(Q0)
        ck = self.checkpointing
        x = F.pad(x, (0, 0, olp, Q - Q0 - olp, olp, T - T0 - olp))  # (B, T, Q, D)
        x = x + run_block(self._intra, x, checkpointing=ck)
        x = x.transpose(1, 2).contiguous()  # (B, Q, T, D)
        x = x + run_block(self._inter, x, checkpointing=ck)
        z = x[:, olp:olp + Q0, olp:olp + T0]  # (B, Q0, T0, D)
        return run_block(self._attention, z, checkpointing=ck) + z.transpose(1, 2)


class TFGridNet(nn.Module):
    """TF-GridNet separator: (B, T) or (B, 1, T) mixture -> (B, S, T) sources.

    Args:
        n_src: number of sources S.
        config: "espnet" (default; ESPnet's TFGridNetV2 defaults and WSJ0-2mix recipe, 8,175,874
            parameters for two sources) or "paper" (the paper's 14.4 M setting); see the module
            docstring. The arguments below left at None take the configuration's value.
        n_fft: STFT size (even; window length too); F = n_fft // 2 + 1 bins.
        hop_length: STFT hop in samples.
        window: "hann" (default), "hamming", "blackman" or "bartlett" (torch's periodic windows).
        emb_dim: D, the embedding width of each time-frequency bin.
        emb_ks, emb_hs: kernel and hop of the unfolding before the BLSTMs (ESPnet's I and J).
        hidden: BLSTM units per direction (ESPnet's ``lstm_hidden_units``).
        n_blocks: GridNet blocks (``n_layers``).
        nhead: attention heads (``attn_n_head``); D must be divisible by it.
        attn_qk_dim: approximate query / key width per head (``attn_approx_qk_dim``): E =
            ceil(attn_qk_dim / F) channels per bin.
        eps: epsilon of every norm.
        init: "xavier_uniform" (default: ESPnet's recipe initialisation, :func:`espnet_xavier_init`)
            or "default" (PyTorch's module defaults).
        attention_backend: backend of the attention op (None: automatic).
        sample_rate: rate the model is meant for, in Hz (metadata; the STFT sizes are in samples).
        frontend, frontend_dim: the frontend hook: features (B, F_fe, T'') at any frame rate are
            resampled linearly to the STFT frames, projected by a 1x1 convolution to D (initialised
            at zero) and added to the embedding at every frequency bin
            (:class:`~sepkit.models.separators.base.FrontendAdapter`).
        checkpointing: "none" (default) or "blocks": recompute each block's three paths in the
            backward pass (see :mod:`sepkit.nn.checkpoint`).

    ESPnet's argument names: ``hop_length`` is ``stride``, ``hidden`` ``lstm_hidden_units``,
    ``n_blocks`` ``n_layers``, ``nhead`` ``attn_n_head``, ``attn_qk_dim`` ``attn_approx_qk_dim``,
    ``n_src`` ``n_srcs``.
    """

    causal = False

    def __init__(self, n_src: int = 2, config: str = "espnet", *, n_fft: int | None = None,
                 hop_length: int | None = None, window: str | None = None, emb_dim: int | None = None,
                 emb_ks: int | None = None, emb_hs: int | None = None, hidden: int | None = None,
                 n_blocks: int | None = None, nhead: int | None = None, attn_qk_dim: int | None = None,
                 eps: float | None = None, init: str = "xavier_uniform", attention_backend: str | None = None,
                 sample_rate: int = 8000, frontend: nn.Module | None = None, frontend_dim: int | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        check_choice("TFGridNet", "config", config, tuple(TFGRIDNET_CONFIGS))
        given = dict(n_fft=n_fft, hop_length=hop_length, window=window, emb_dim=emb_dim, emb_ks=emb_ks,
                     emb_hs=emb_hs, hidden=hidden, n_blocks=n_blocks, nhead=nhead, attn_qk_dim=attn_qk_dim, eps=eps)
        cfg = dict(TFGRIDNET_CONFIGS[config], **{k: v for k, v in given.items() if v is not None})
        self._check_args(n_src, cfg)
        check_choice("TFGridNet", "init", init, INITS)
        check_checkpointing("TFGridNet", checkpointing)
        self.n_src, self.sample_rate, self.config = n_src, sample_rate, config
        self.n_fft, self.hop_length, self.window_name = cfg["n_fft"], cfg["hop_length"], cfg["window"]
        self.emb_dim, self.n_freqs = cfg["emb_dim"], cfg["n_fft"] // 2 + 1
        self.register_buffer("window", getattr(torch, f"{cfg['window']}_window")(cfg["n_fft"]), persistent=False)
        eps, D = cfg["eps"], cfg["emb_dim"]
        self.conv = nn.Sequential(nn.Conv2d(2, D, (3, 3), padding=(1, 1)), nn.GroupNorm(1, D, eps=eps))
        self.blocks = nn.ModuleList(
            GridNetBlock(D, cfg["emb_ks"], cfg["emb_hs"], self.n_freqs, cfg["hidden"], cfg["nhead"],
                         cfg["attn_qk_dim"], eps, attention_backend, checkpointing)
            for _ in range(cfg["n_blocks"]))
        self.deconv = nn.ConvTranspose2d(D, 2 * n_src, (3, 3), padding=(1, 1))
        if init == "xavier_uniform":
            espnet_xavier_init([self.conv, self.blocks, self.deconv])
        self._init_frontend(frontend, frontend_dim)

    @staticmethod
    def _check_args(n_src, cfg: dict) -> None:
        if not isinstance(n_src, int) or isinstance(n_src, bool) or n_src < 1:
            raise InputError(f"TFGridNet: n_src must be a positive int, got {n_src!r}")
        for key in ("n_fft", "hop_length", "emb_dim", "emb_ks", "emb_hs", "hidden", "n_blocks", "nhead", "attn_qk_dim"):
            value = cfg[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"TFGridNet: {key} must be a positive int, got {value!r}")
        if cfg["n_fft"] % 2 or cfg["n_fft"] < 4:
            raise InputError(f"TFGridNet: n_fft must be even and >= 4, got {cfg['n_fft']}")
        if cfg["hop_length"] > cfg["n_fft"]:
            raise InputError(f"TFGridNet: hop_length={cfg['hop_length']} must not exceed n_fft={cfg['n_fft']}")
        if cfg["emb_hs"] > cfg["emb_ks"]:
            raise InputError(f"TFGridNet: emb_hs={cfg['emb_hs']} must not exceed emb_ks={cfg['emb_ks']}")
        if cfg["emb_dim"] % cfg["nhead"]:
            raise InputError(f"TFGridNet: emb_dim={cfg['emb_dim']} must be divisible by nhead={cfg['nhead']}")
        check_choice("TFGridNet", "window", cfg["window"], WINDOWS)
        if not isinstance(cfg["eps"], (int, float)) or not cfg["eps"] > 0:
            raise InputError(f"TFGridNet: eps must be a positive number, got {cfg['eps']!r}")

    # -- frontend hook --------------------------------------------------------------------

    def _init_frontend(self, frontend: nn.Module | None, frontend_dim: int | None) -> None:
        if frontend is not None and not isinstance(frontend, nn.Module):
            raise InputTypeError(f"TFGridNet: frontend must be an nn.Module, got {type(frontend).__name__}")
        if frontend is not None and frontend_dim is None:
            frontend_dim = getattr(frontend, "output_dim", None)
            if frontend_dim is None:
                raise InputError("TFGridNet: give frontend_dim (the frontend's feature size) or a frontend "
                                 "with an `output_dim` attribute")
        rate = getattr(frontend, "sample_rate", None)
        if rate is not None and rate != self.sample_rate:
            raise InputError(f"TFGridNet: the frontend runs at {rate} Hz but the separator at {self.sample_rate} Hz; "
                             "build both at one sample rate")
        self.frontend = frontend
        self.adapter = FrontendAdapter(frontend_dim, self.emb_dim) if frontend_dim is not None else None

    def _add_frontend(self, wave: torch.Tensor, emb: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if features is None and self.frontend is not None:
            features = self.frontend(wave)
        if features is None:
            return emb
        if self.adapter is None:
            raise InputError("TFGridNet: frontend_features given, but the model was built without frontend_dim")
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise InputError(f"TFGridNet: frontend features must be a (B, F, T') tensor, got {got}")
        if features.shape[0] != emb.shape[0] or features.shape[1] != self.adapter.frontend_dim:
            raise InputError(f"TFGridNet: frontend features have shape {tuple(features.shape)}; expected "
                             f"({emb.shape[0]}, {self.adapter.frontend_dim}, T') for this batch")
        return emb + self.adapter(features.to(emb.dtype), emb.shape[2]).unsqueeze(-1)

    # -- forward --------------------------------------------------------------------------

    def num_frames(self, length: int) -> int:
        """STFT frames T' of an input of ``length`` samples (centred frames: length // hop + 1)."""
        return max(length, self.n_fft // 2 + 1) // self.hop_length + 1

    def _prepare(self, mixture: torch.Tensor):
        wave = as_waveform_batch("TFGridNet", mixture)
        length = wave.shape[-1]
        if length > 1:
            std = wave.std(dim=-1, keepdim=True).clamp_min(MIN_STD)
        else:
            std = wave.abs().clamp_min(MIN_STD)
        x = wave / std
        shortest = self.n_fft // 2 + 1  # the centred STFT reflects n_fft // 2 samples at each end
        if length < shortest:
            x = F.pad(x, (0, shortest - length))
        return wave, x, std, length

    def embed(self, mixture: torch.Tensor, frontend_features: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding before the blocks (with the frontend's contribution): (B, D, T', F)."""
        wave, x, _, _ = self._prepare(mixture)
        return self._embed(wave, x, frontend_features)

    def _embed(self, wave, x, frontend_features):
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        spec = torch.stft(x.to(compute), self.n_fft, self.hop_length, window=self.window.to(compute),
                          center=True, return_complex=True)  # (B, F, T')
        ri = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, T', F)
        return self._add_frontend(wave, self.conv(ri), frontend_features)

    def forward(self, mixture: torch.Tensor, frontend_features: torch.Tensor | None = None) -> torch.Tensor:
        """Separate ``mixture`` (B, T) or (B, 1, T) into (B, S, T) sources (the mixture's scale).

        ``frontend_features``: optional (B, F_fe, T'') features added through the adapter (see the
        class docstring); requires ``frontend_dim`` at construction.
        """
        wave, x, std, length = self._prepare(mixture)
        emb = self._embed(wave, x, frontend_features)  # (B, D, T', F)
        h = emb.permute(0, 2, 3, 1).contiguous()  # (B, T', F, D)
        for block in self.blocks:
            h = block(h)
        out = self.deconv(h.permute(0, 3, 1, 2))  # (B, 2 S, T', F)
        B, _, frames, n_freqs = out.shape
        out = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
        est = torch.complex(out[:, 0::2], out[:, 1::2]).transpose(-1, -2)  # (B, S, F, T')
        wav = torch.istft(est.reshape(B * self.n_src, n_freqs, frames), self.n_fft, self.hop_length,
                          window=self.window.to(out.dtype), center=True, length=x.shape[-1])
        return wav[:, :length].reshape(B, self.n_src, length) * std.unsqueeze(1).to(wav.dtype)

    # -- ESPnet releases ------------------------------------------------------------------

    @classmethod
    def from_espnet(cls, path_or_state, config=None, sample_rate: int | None = None) -> "TFGridNet":
        """An ESPnet ``TFGridNetV2`` (a local checkpoint file or a state dict) as a TFGridNet in
        eval mode; see :func:`load_espnet`."""
        return load_espnet(path_or_state, config, sample_rate).model


# -- loading ESPnet's state dicts ---------------------------------------------------------

ESPNET_ARGS = {"n_srcs": "n_src", "n_fft": "n_fft", "stride": "hop_length", "window": "window", "n_layers": "n_blocks",
               "lstm_hidden_units": "hidden", "attn_n_head": "nhead", "attn_approx_qk_dim": "attn_qk_dim",
               "emb_dim": "emb_dim", "emb_ks": "emb_ks", "emb_hs": "emb_hs", "eps": "eps"}
"""ESPnet's ``separator_conf`` key -> TFGridNet argument."""
_ESPNET_IGNORED_CONF = {"input_dim", "activation", "use_builtin_complex", "n_imics"}


def _espnet_config(config, path: Path | None) -> tuple[dict, str]:
    """(ESPnet ``separator_conf`` or {}, where it came from) from ``config`` (a dict: a whole
    config or its ``separator_conf``; a path: ESPnet's config.yaml) or, when None, the
    ``config.yaml`` beside the checkpoint file."""
    import yaml

    where = "config"
    if config is None and path is not None and (path.parent / "config.yaml").is_file():
        config = path.parent / "config.yaml"
    if config is None:
        return {}, "no config"
    if isinstance(config, (str, os.PathLike)):
        where = str(config)
        try:
            config = yaml.safe_load(Path(config).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise CheckpointError(f"ESPnet config {where!r} cannot be read as YAML: {err}") from None
    if not isinstance(config, Mapping):
        raise CheckpointError(f"ESPnet config ({where}) must be a mapping, got {type(config).__name__}")
    if "separator_conf" in config or "separator" in config:
        separator = config.get("separator")
        if separator is not None and str(separator).lower() != "tfgridnetv2":
            raise CheckpointError(f"ESPnet config ({where}): separator is {separator!r}; sepkit loads "
                                  "'tfgridnetv2' (TFGridNetV2) only")
        config = config.get("separator_conf") or {}
    return dict(config), where


def _espnet_state(path_or_state) -> tuple[dict, Path | None]:
    from sepkit.files import load_state_dict_file

    if isinstance(path_or_state, Mapping):
        return dict(path_or_state), None
    if not isinstance(path_or_state, (str, os.PathLike)):
        raise InputTypeError(f"from_espnet: expected a checkpoint path or a state dict, got "
                             f"{type(path_or_state).__name__}")
    path = Path(path_or_state)
    return load_state_dict_file(path, "ESPnet checkpoint"), path


def _separator_keys(state: dict, what: str) -> dict:
    """The TFGridNetV2 keys of a whole ESPnet enhancement model (``separator.*``, the STFT encoder
    and decoder have no parameters) or of the bare separator."""
    if any(k.startswith("separator.") for k in state):
        rest = [k for k in state if not k.startswith("separator.")]
        if rest:
            raise CheckpointError(f"{what}: keys outside the separator ({len(rest)}, the first {rest[0]!r}); "
                                  "a TFGridNetV2 enhancement model has parameters in its separator only")
        state = {k[len("separator."):]: v for k, v in state.items()}
    if any(k.startswith("blocks.0.attn_conv_Q_0") for k in state):
        raise CheckpointError(f"{what}: this is ESPnet's TFGridNet (v1, per-head attention modules); sepkit "
                              "loads TFGridNetV2 checkpoints only")
    for key in ("conv.0.weight", "deconv.weight", "blocks.0.intra_rnn.weight_hh_l0", "blocks.0.attn_norm_Q.gamma",
                "blocks.0.intra_rnn.weight_ih_l0"):
        if key not in state or not isinstance(state[key], torch.Tensor):
            raise CheckpointError(f"{what}: not an ESPnet TFGridNetV2 state dict (no tensor {key!r})")
    return state


def _infer_args(state: dict, what: str) -> dict:
    """TFGridNet arguments read off the tensor shapes (emb_hs, hop_length, window and eps are not
    visible there)."""
    conv, deconv = state["conv.0.weight"], state["deconv.weight"]
    if conv.shape[1] != 2:
        raise CheckpointError(f"{what}: a {conv.shape[1] // 2}-microphone model (conv.0.weight {tuple(conv.shape)}); "
                              "sepkit's TFGridNet is single-channel")
    D = conv.shape[0]
    hidden = state["blocks.0.intra_rnn.weight_hh_l0"].shape[1]
    emb_ks = state["blocks.0.intra_rnn.weight_ih_l0"].shape[1] // D
    gamma = state["blocks.0.attn_norm_Q.gamma"]  # (1, H, E, 1, F)
    nhead, E, n_freqs = gamma.shape[1], gamma.shape[2], gamma.shape[-1]
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    args = dict(n_src=deconv.shape[1] // 2, n_fft=2 * (n_freqs - 1), emb_dim=D, emb_ks=emb_ks, hidden=hidden,
                n_blocks=n_blocks, nhead=nhead, attn_qk_dim=E * n_freqs)
    if state["blocks.0.intra_linear.weight"].dim() == 2:
        args["emb_hs"] = emb_ks
    return args


def load_espnet(path_or_state, config=None, sample_rate: int | None = None):
    """Load an ESPnet TFGridNetV2 release into a :class:`TFGridNet` (eval mode).

    Args:
        path_or_state: a local checkpoint file (a state dict saved by ESPnet, e.g.
            ``valid.loss.best.pth``: the enhancement model's keys, ``separator.*``; loaded with
            ``weights_only=True``) or such a state dict (the separator's own keys work too).
        config: ESPnet's training config (a path to its ``config.yaml``, or a dict: the whole
            config or its ``separator_conf``). Default: the ``config.yaml`` beside the checkpoint
            when there is one. It gives what the weights do not show (the STFT hop, window,
            emb_hs, eps); without it ESPnet's defaults are assumed (hop n_fft // 2, Hann,
            emb_hs 1 unless the weights say emb_ks, eps 1e-5), and every value it gives is checked
            against the tensor shapes.
        sample_rate: the model's rate in Hz (default: ``fs`` of the config, else 8000).

    Returns a :class:`~sepkit.models.separators.published.Loaded` (model, name "tfgridnet", args,
    sample rate, source). Raises CheckpointError naming the problem: not a TFGridNetV2 state dict,
    ESPnet's v1 TFGridNet, a multi-microphone model, a config that contradicts the weights, or a
    key missing, unexpected or misshapen (in ESPnet's names).
    """
    from sepkit.files import load_strict

    from .published import Loaded

    state, path = _espnet_state(path_or_state)
    what = f"ESPnet checkpoint {str(path)!r}" if path is not None else "ESPnet state dict"
    state = _separator_keys(state, what)
    conf, where = _espnet_config(config, path)
    full = config if isinstance(config, Mapping) else None
    args = _infer_args(state, what)
    hop = args["n_fft"] // 2
    given = {}
    for key, value in conf.items():
        if key in _ESPNET_IGNORED_CONF:
            if key == "n_imics" and value != 1:
                raise CheckpointError(f"ESPnet config ({where}): n_imics={value}; sepkit's TFGridNet is single-channel")
            if key == "activation" and str(value).lower() != "prelu":
                raise CheckpointError(f"ESPnet config ({where}): activation={value!r}; TFGridNetV2 uses prelu")
            continue
        if key not in ESPNET_ARGS:
            raise CheckpointError(f"ESPnet config ({where}): unknown separator_conf key {key!r}")
        given[ESPNET_ARGS[key]] = value
    if given.get("attn_qk_dim") is not None:  # only E = ceil(qk / F) is visible in the weights
        n_freqs = args["n_fft"] // 2 + 1
        if math.ceil(given["attn_qk_dim"] / n_freqs) * n_freqs != args["attn_qk_dim"]:
            raise CheckpointError(f"ESPnet config ({where}): attn_approx_qk_dim={given['attn_qk_dim']} contradicts "
                                  f"the weights (E * F = {args['attn_qk_dim']})")
        given["attn_qk_dim"] = args["attn_qk_dim"]
    for key, value in given.items():
        if key in args and args[key] != value:
            raise CheckpointError(f"ESPnet config ({where}): {key}={value!r} contradicts the weights ({key}={args[key]})")
    args = {**dict(hop_length=hop, window="hann", emb_hs=1, eps=1e-5), **args, **given}
    if sample_rate is None:
        fs = (full or {}).get("fs")
        sample_rate = int(fs) if isinstance(fs, (int, float)) and fs > 0 else 8000
    n_src = args.pop("n_src")
    try:
        model = TFGridNet(n_src, init="default", sample_rate=sample_rate, **args)
    except InputError as err:
        raise CheckpointError(f"{what}: its configuration is not a valid TFGridNet ({err})") from None
    load_strict(model, state, what)
    source = {"source": "espnet", "file": path.name if path is not None else None, "config": where}
    return Loaded(model.eval(), "tfgridnet", dict(args, n_src=n_src), sample_rate, source)


__all__ = ["TFGridNet", "GridNetBlock", "HeadNorm", "FrameNorm", "TFGRIDNET_CONFIGS", "ESPNET_ARGS",
           "espnet_xavier_init", "load_espnet"]
