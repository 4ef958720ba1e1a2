"""Neural-network layers of sepkit, each routed through the kernels where one exists."""
from .snake import Snake, SnakeBeta

__all__ = ["Snake", "SnakeBeta"]
