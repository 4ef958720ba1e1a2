"""Conv-TasNet (Luo and Mesgarani, "Conv-TasNet: Surpassing ideal time-frequency magnitude masking
for speech separation", IEEE/ACM TASLP 2019).

Defaults are the paper's best non-causal configuration: N=512 filters of L=16 samples (stride 8),
bottleneck B=128, skip Sc=128, H=512 hidden channels, kernel P=3, X=8 blocks per repeat, R=3
repeats, gLN, ReLU masks: about 5.05 M parameters for two sources. ``causal=True`` gives the
causal variant: cLN, causal (left-padded) depthwise convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.nn.checkpoint import check_checkpointing, run_block
from sepkit.nn.conv import depthwise_conv1d
from sepkit.nn.fused import prelu_global_norm
from sepkit.nn.norm import make_norm

from .base import Decoder, Encoder, MaskSeparator, check_choice, mask_activation


def _prelu_(y: torch.Tensor, prelu: nn.PReLU) -> torch.Tensor:
    """``prelu(y)`` written into ``y`` when the PReLU has one parameter (inference on the CPU
    only: reading the slope would synchronise a GPU; not under torch.compile, which fuses the
    PReLU itself, nor while exporting, where the slope is not a number yet): the same values
    (``y if y > 0 else a * y``) without a new tensor."""
    if (prelu.weight.numel() == 1 and y.device.type == "cpu" and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()):
        return F.leaky_relu_(y, float(prelu.weight))
    return prelu(y)


class TemporalBlock(nn.Module):
    """One 1-D convolutional block of the TCN.

    1x1 conv B -> H, PReLU, norm, depthwise conv (kernel P, dilation d), PReLU, norm, then a
    residual 1x1 conv H -> B (absent in the last block, whose residual would go unused) and a
    skip 1x1 conv H -> Sc (absent when Sc = 0). Input (batch, B, F); returns (residual, skip).
    """

    def __init__(self, channels: int, hidden: int, skip: int, kernel_size: int, dilation: int, norm: str,
                 causal: bool, residual: bool = True):
        super().__init__()
        self.causal = causal
        self.pad = dilation * (kernel_size - 1)
        self.conv_in = nn.Conv1d(channels, hidden, 1)
        self.prelu1 = nn.PReLU()
        self.norm1 = make_norm(norm, hidden)
        self.dconv = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation, groups=hidden,
                               padding=0 if causal else self.pad // 2)
        self.prelu2 = nn.PReLU()
        self.norm2 = make_norm(norm, hidden)
        self.res_conv = nn.Conv1d(hidden, channels, 1) if residual else None
        self.skip_conv = nn.Conv1d(hidden, skip, 1) if skip > 0 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not torch.is_grad_enabled():
            return self._infer(x)
        # each PReLU + norm pair stores only the PReLU's input for the backward (sepkit.nn.fused)
        y = prelu_global_norm(self.conv_in(x), self.prelu1, self.norm1)
        if self.causal:
            y = F.pad(y, (self.pad, 0))
        y = prelu_global_norm(self._dconv(y), self.prelu2, self.norm2)
        if self.res_conv is not None and self.skip_conv is not None:
            # both 1x1 convolutions as one product: y is read once, one GEMM forward and backward
            weight = torch.cat([self.res_conv.weight, self.skip_conv.weight])
            bias = torch.cat([self.res_conv.bias, self.skip_conv.bias])
            both = F.conv1d(y, weight, bias)
            split = self.res_conv.out_channels
            return both[:, :split], both[:, split:]
        return self._outputs(y)

    def _dconv(self, y: torch.Tensor) -> torch.Tensor:
        c = self.dconv  # its parameters; the product on the device's fastest exact path
        return depthwise_conv1d(y, c.weight, c.bias, c.dilation[0], c.padding[0])

    def _infer(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        # Without gradients each hidden-width tensor is released as soon as the next one exists:
        # at most two (B, H, F) activations live at once. Holding a third and a fourth (as nested
        # calls do) grows glibc's heap by that much in every block and trims it at the block's
        # end, and the re-grown pages fault again: about 200 k page faults per 4-s inference and
        # half the speed (perf/NOTES.md).
        y = self.conv_in(x)
        y = self.norm1(_prelu_(y, self.prelu1))
        if self.causal:
            y = F.pad(y, (self.pad, 0))
        y = self._dconv(y)  # the norm's output is released here, not after the next norm
        y = self.norm2(_prelu_(y, self.prelu2))
        return self._outputs(y)

    def _outputs(self, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        res = self.res_conv(y) if self.res_conv is not None else None
        skip = self.skip_conv(y) if self.skip_conv is not None else None
        return res, skip


class TCNMasker(nn.Module):
    """Temporal convolutional network estimating masks: (batch, N, F) -> (batch, S, N, F).

    norm(N), 1x1 conv N -> B, R x X :class:`TemporalBlock` with dilations 1, 2, ..., 2^(X-1),
    PReLU on the sum of skips (or the last residual output when Sc = 0), 1x1 conv -> S*N, mask
    activation. ``checkpointing="blocks"`` recomputes each block in the backward pass.
    """

    def __init__(self, in_channels: int, n_src: int, bottleneck: int = 128, hidden: int = 512, skip: int = 128,
                 kernel_size: int = 3, layers: int = 8, repeats: int = 3, norm: str = "gLN",
                 causal: bool = False, mask_act: str = "relu", checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("TCNMasker", checkpointing)
        check_choice("TCNMasker", "mask_act", mask_act, ("relu", "sigmoid", "softmax", "linear"))
        if not causal and kernel_size % 2 == 0:
            raise InputError(f"TCNMasker: the non-causal TCN needs an odd kernel_size, got {kernel_size}")
        self.n_src, self.in_channels, self.mask_act, self.use_skip = n_src, in_channels, mask_act, skip > 0
        self.input = nn.Sequential(make_norm(norm, in_channels), nn.Conv1d(in_channels, bottleneck, 1))
        total = layers * repeats
        self.blocks = nn.ModuleList(
            TemporalBlock(bottleneck, hidden, skip, kernel_size, 2 ** (i % layers), norm, causal,
                          residual=not (self.use_skip and i == total - 1))
            for i in range(total)
        )
        out_in = skip if self.use_skip else bottleneck
        self.output = nn.Sequential(nn.PReLU(), nn.Conv1d(out_in, n_src * in_channels, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        B, N, frames = w.shape
        x = self.input(w)
        skip_sum = 0.0
        for block in self.blocks:
            res, skip = run_block(block, x, checkpointing=self.checkpointing)
            if res is not None:
                x = x + res
            if skip is not None:
                skip_sum = skip_sum + skip
        y = self.output(skip_sum if self.use_skip else x)
        return mask_activation(self.mask_act, y.reshape(B, self.n_src, N, frames))


class ConvTasNet(MaskSeparator):
    """Conv-TasNet separator: (B, T) or (B, 1, T) mixture -> (B, S, T) sources.

    Args:
        n_src: number of sources S.
        n_filters: N, encoder / decoder filters.
        kernel_size: L, filter length in samples.
        stride: encoder hop in samples (L / 2 in the paper).
        bottleneck: B, TCN bottleneck channels.
        hidden: H, channels inside each block.
        skip: Sc, skip-connection channels (0: no skip path, the residual output feeds the masks).
        conv_kernel: P, depthwise kernel size.
        layers: X, blocks per repeat (dilations 1 .. 2^(X-1)).
        repeats: R.
        norm: "gLN" (default), "cLN" or "chanLN"; ``causal=True`` defaults it to "cLN".
        causal: causal TCN (left-padded convolutions) with cumulative layer norm.
        mask_act: "relu" (paper), "sigmoid", "softmax" (across sources) or "linear".
        encoder_activation: "linear" (default), "relu" or "gated".
        sample_rate: rate the model is meant for, in Hz (metadata).
        frontend, frontend_dim: the frontend hook (see :mod:`sepkit.models.separators.base`).
        checkpointing: "none" (default) or "blocks": recompute each TCN block in the backward
            pass (see :mod:`sepkit.nn.checkpoint`).
        encoder_padding: "cover" (default) or "none", the framing of the waveform (see
            :mod:`sepkit.models.separators.base`).
    """

    def __init__(self, n_src: int = 2, n_filters: int = 512, kernel_size: int = 16, stride: int = 8,
                 bottleneck: int = 128, hidden: int = 512, skip: int = 128, conv_kernel: int = 3, layers: int = 8,
                 repeats: int = 3, norm: str | None = None, causal: bool = False, mask_act: str = "relu",
                 encoder_activation: str = "linear", sample_rate: int = 8000,
                 frontend: nn.Module | None = None, frontend_dim: int | None = None, encoder_padding: str = "cover",
                 checkpointing: str = "none"):
        super().__init__()
        self.n_src = self._check_n_src("ConvTasNet", n_src)
        check_checkpointing("ConvTasNet", checkpointing)
        self.sample_rate, self.causal = sample_rate, causal
        norm = norm or ("cLN" if causal else "gLN")
        if causal and norm == "gLN":
            raise InputError("ConvTasNet: gLN looks at the whole utterance; use norm='cLN' or 'chanLN' when causal")
        self.encoder = Encoder(n_filters, kernel_size, stride, encoder_activation, encoder_padding)
        self.masker = TCNMasker(n_filters, n_src, bottleneck, hidden, skip, conv_kernel, layers, repeats, norm,
                                causal, mask_act, checkpointing)
        self.decoder = Decoder(n_filters, kernel_size, stride)
        self._init_frontend(frontend, frontend_dim)

    @classmethod
    def from_torchaudio(cls, path, **options) -> "ConvTasNet":
        """The weights of torchaudio's ``CONVTASNET_BASE_LIBRI2MIX`` bundle (a local state-dict file)
        as a ConvTasNet in eval mode; see :func:`sepkit.models.separators.published.load_torchaudio_convtasnet`."""
        from .published import load_torchaudio_convtasnet

        return load_torchaudio_convtasnet(path, **options)

    @classmethod
    def from_asteroid(cls, path) -> "ConvTasNet":
        """An Asteroid ConvTasNet model file (local) as a ConvTasNet in eval mode; see
        :func:`sepkit.models.separators.published.load_asteroid`."""
        from .published import load_asteroid

        return load_asteroid(path, expect="convtasnet")


__all__ = ["ConvTasNet", "TCNMasker", "TemporalBlock"]
