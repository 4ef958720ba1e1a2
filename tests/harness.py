"""Shared kernel-test harness: hypothesis strategies, devices and dtypes, and the assertion.

Every kernel test draws shapes and values from here and checks with :func:`assert_matches_reference`,
which runs the op on the tested backend (outputs poisoned) and on the float64 reference, and
compares the forward output and every gradient under the tolerance table of
``sepkit.kernels.testing.TOLERANCES``.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st

from sepkit.kernels.testing import TOLERANCES, compare_with_reference

CUDA = torch.cuda.is_available()
#: Device the Triton path is tested on: compiled on a GPU, interpreted on the CPU.
DEVICE = torch.device("cuda" if CUDA else "cpu")
#: Storage dtypes for elementwise kernels (bf16 works in the interpreter for them).
ELEMENTWISE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: Storage dtypes for ``tl.dot`` kernels: the interpreter's bf16 dot is broken upstream.
DOT_DTYPES = ELEMENTWISE_DTYPES if CUDA else (torch.float32, torch.float16)
BACKENDS = ("triton", "torch")

# Sizes that stress masking: 1, primes, just under / over powers of two.
EDGE_SIZES = (1, 2, 3, 5, 7, 13, 31, 33, 63, 65, 127, 129)


def sizes(max_size: int) -> st.SearchStrategy[int]:
    """An integer size in [1, max_size], biased to the edge sizes that break masking."""
    edges = [s for s in EDGE_SIZES if s <= max_size]
    return st.one_of(st.sampled_from(edges), st.integers(1, max_size))


def dtypes(dot: bool = False) -> st.SearchStrategy[torch.dtype]:
    return st.sampled_from(DOT_DTYPES if dot else ELEMENTWISE_DTYPES)


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    """Float64 standard normal values (never zeros) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def assert_matches_reference(run, inputs, *, dtype, backend, grad=(), keep_dtype=(), tol=None, seed=0):
    """Assert that ``run`` on ``backend`` in ``dtype`` matches the float64 reference.

    The float64 storage dtype is used with ``backend="torch"`` only (the Triton path stores
    fp32/fp16/bf16): the torch-backend case checks the reference against itself in the dtype a
    user would call it with.
    """
    device = DEVICE if backend == "triton" else torch.device("cpu")
    cmp = compare_with_reference(
        run, inputs, dtype=dtype, backend=backend, device=device, grad=grad,
        keep_dtype=keep_dtype, tol=tol, seed=seed,
    )
    assert cmp.ok, f"{backend}: {cmp.describe()}"
    return cmp


__all__ = [
    "BACKENDS", "CUDA", "DEVICE", "DOT_DTYPES", "ELEMENTWISE_DTYPES", "TOLERANCES",
    "assert_matches_reference", "dtypes", "randn", "seeds", "sizes",
]
