"""sepkit.kernels: Triton kernels with autograd, their float64-correct references, backend choice.

Every op takes ``backend=`` ("triton", "torch" or None for automatic); see ``_backend``.
"""
from ._alloc import poison_outputs
from ._backend import BACKENDS, HAS_TRITON, INTERPRET, BackendError, resolve_backend
from .snake import snake
from .stft_mask import SGMSE_COMPRESSION, compress_spec, decompress_spec, stft_mask
from .attention import attention
from .mmd import mmd
from .nce import nce

__all__ = ["BACKENDS", "HAS_TRITON", "INTERPRET", "BackendError", "poison_outputs", "resolve_backend", "snake",
           "stft_mask", "compress_spec", "decompress_spec", "SGMSE_COMPRESSION"]
__all__ += ["attention"]
__all__ += ["mmd", "nce"]
