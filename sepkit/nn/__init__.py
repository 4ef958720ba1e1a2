"""Neural-network layers of sepkit, each routed through the kernels where one exists.

As for the kernel ops (:mod:`sepkit.kernels`), a plain reference is the specification and the
tests' oracle, and the automatic path on a CPU is the fastest exact eager one: native
``group_norm`` / ``layer_norm`` for gLN and channel LN, torch's fused SDPA for attention, shifted
multiply-adds for depthwise convolutions (:mod:`sepkit.nn.conv`). Layers
store for the backward pass only what cannot be recomputed cheaply: attention keeps no L x L
matrix, gLN its statistics, Snake its input, and the pairs in :mod:`sepkit.nn.fused` (LayerNorm +
linear, PReLU + gLN) not the tensor between them; :mod:`sepkit.nn.checkpoint` recomputes whole
blocks on request (``checkpointing="blocks"``).
"""
from .attention import (
    CrossAttention, LearnedPositionalEncoding, MultiheadAttention, SinusoidalPositionalEncoding, TransformerBlock,
)
from .conv import depthwise_conv1d
from .norm import ChannelLayerNorm, CumulativeLayerNorm, GlobalLayerNorm, make_norm
from .snake import Snake, SnakeBeta

__all__ = [
    "CrossAttention", "LearnedPositionalEncoding", "MultiheadAttention", "SinusoidalPositionalEncoding",
    "TransformerBlock", "GlobalLayerNorm", "CumulativeLayerNorm", "ChannelLayerNorm", "make_norm", "Snake", "SnakeBeta",
    "depthwise_conv1d",
]
