"""fp32 transcendentals for the Triton kernels, written in plain ``tl`` arithmetic.

No libdevice call: the same code runs compiled and in Triton's interpreter (which does not
emulate libdevice), and none of libdevice's slow paths (their local arrays keep a stack frame in
every kernel that calls them) reaches a kernel.
"""
from ._backend import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def sin_sq_sin2(t):
        """``(sin(t)^2, sin(2 t))`` of fp32 ``t``, the two terms of Snake and its derivative.

        Both have period pi, so only the parity of the quadrant matters: ``t = k pi/2 + r`` with
        ``k = round(2 t / pi)`` and ``|r| <= pi/4``, then ``sin(t)^2`` is ``sin(r)^2`` (``k``
        even) or ``cos(r)^2`` (odd) and ``sin(2 t) = +-2 sin(r) cos(r)``. The reduction runs in
        float64 with pi/2 as the sum of two fp32 constants (1.6e-15 relative error), so ``r`` is
        right to fp32 rounding for every ``|t|`` below 1e9; ``sin(r)`` and ``cos(r)`` are
        degree-7 and degree-8 minimax polynomials on ``[-pi/4, pi/4]`` (the Cephes
        single-precision coefficients). Absolute error of either term about 2e-7 (measured in
        ``tests/test_snake.py``). Unlike libdevice's ``sin``/``cos`` there is no Payne-Hanek slow
        path, whose local array kept a stack frame in every snake kernel (and spilled at 16-bit
        storage): a dozen FMAs, two of them in float64, and no branches.
        """
        t64 = t.to(tl.float64)
        k = tl.floor(t64 * 0.636619746685028076171875 + t64 * 2.5682552973194106e-08 + 0.5)
        r = (t64 - k * 1.57079637050628662109375 + k * 4.371138828673793e-08).to(tl.float32)
        z = r * r
        sr = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4))
        cr = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5))
        odd = (k - 2.0 * tl.floor(0.5 * k)) != 0.0
        s2 = tl.where(odd, cr * cr, sr * sr)
        d = 2.0 * sr * cr
        return s2, tl.where(odd, -d, d)
