"""Neural-network layers of sepkit, each routed through the kernels where one exists."""
from .norm import ChannelLayerNorm, CumulativeLayerNorm, GlobalLayerNorm, make_norm
from .snake import Snake, SnakeBeta
from .attention import (
    CrossAttention, LearnedPositionalEncoding, MultiheadAttention, SinusoidalPositionalEncoding, TransformerBlock,
)

__all__ = [
    "GlobalLayerNorm", "CumulativeLayerNorm", "ChannelLayerNorm", "make_norm",
    "Snake", "SnakeBeta"]
__all__ += ["CrossAttention", "LearnedPositionalEncoding", "MultiheadAttention", "SinusoidalPositionalEncoding",
            "TransformerBlock"]
