"""Plain-PyTorch references of every kernel op: the readable spec, correct in float64, the CPU
path of the public ops and a baseline for the benchmarks."""
from .snake import snake_reference

__all__ = ["snake_reference"]
