"""sepkit.kernels: Triton kernels with autograd, their float64-correct references, backend choice.

Ops: :func:`snake`, :func:`stft_mask` (with :func:`compress_spec` / :func:`decompress_spec`),
:func:`attention`, :func:`mmd`, :func:`nce`. Every op takes ``backend=`` ("triton", "torch" or
None for automatic; see ``_backend``); references live in ``sepkit.kernels.reference``.

The rule: the reference implementation is the specification, for the tests and as the float64
oracle. The automatic choice is Triton on a GPU and, on a CPU, the fastest exact eager path
(torch's fused SDPA for attention, a Snake that stores only its inputs), not the reference.
"""
from ._alloc import poison_outputs
from ._backend import BACKENDS, HAS_TRITON, INTERPRET, BackendError, resolve_backend
from .attention import attention
from .mmd import mmd
from .nce import nce
from .snake import snake
from .stft_mask import SGMSE_COMPRESSION, compress_spec, decompress_spec, stft_mask

__all__ = [
    "BACKENDS", "HAS_TRITON", "INTERPRET", "BackendError", "poison_outputs", "resolve_backend",
    "attention", "mmd", "nce", "snake", "stft_mask", "compress_spec", "decompress_spec", "SGMSE_COMPRESSION",
]
