"""Neural-network layers of sepkit, each routed through the kernels where one exists."""
from .attention import (
    CrossAttention, LearnedPositionalEncoding, MultiheadAttention, SinusoidalPositionalEncoding, TransformerBlock,
)
from .norm import ChannelLayerNorm, CumulativeLayerNorm, GlobalLayerNorm, make_norm
from .snake import Snake, SnakeBeta

__all__ = [
    "CrossAttention", "LearnedPositionalEncoding", "MultiheadAttention", "SinusoidalPositionalEncoding",
    "TransformerBlock", "GlobalLayerNorm", "CumulativeLayerNorm", "ChannelLayerNorm", "make_norm", "Snake", "SnakeBeta",
]
