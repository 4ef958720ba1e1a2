"""Accurate fp32 transcendentals for the Triton kernels.

Compiled kernels call libdevice (``tl.sin``/``tl.cos`` may lower to fast approximations whose
error grows with the argument); Triton's interpreter does not emulate libdevice, so under it the
same helpers use ``tl`` (NumPy, exact to fp32 there).
"""
from ._backend import HAS_TRITON, INTERPRET

if HAS_TRITON:
    import triton
    import triton.language as tl

    if INTERPRET:

        @triton.jit
        def sin(x):
            return tl.sin(x)

        @triton.jit
        def cos(x):
            return tl.cos(x)

    else:
        from triton.language.extra import libdevice

        @triton.jit
        def sin(x):
            return libdevice.sin(x)

        @triton.jit
        def cos(x):
            return libdevice.cos(x)
