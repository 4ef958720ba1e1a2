"""Plain-PyTorch references of every kernel op: the readable spec, correct in float64, the CPU
path of the public ops and a baseline for the benchmarks."""
from .attention import attention_reference
from .mmd import heuristic_bandwidths, mmd_reference
from .nce import nce_reference
from .snake import snake_reference
from .stft_mask import compress_reference, decompress_reference, stft_mask_reference

__all__ = [
    "attention_reference", "mmd_reference", "heuristic_bandwidths", "nce_reference", "snake_reference",
    "stft_mask_reference", "compress_reference", "decompress_reference",
]
