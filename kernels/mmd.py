"""Multi-kernel MMD: Triton forward/backward kernels, the autograd op and the public function.

The maths (estimators, the bandwidth heuristic) is specified in ``reference/mmd.py``. The kernels
never hold an N x M matrix, forward or backward:

- forward: three launches of one tile kernel, for sum k(x, x), sum k(y, y) and sum k(x, y). A
  program owns one block of rows and a strided share of the column blocks; per tile the squared
  distances come from one ``tl.dot`` (||a||^2 + ||b||^2 - 2 a.b, fp32 accumulation, row norms
  precomputed), every bandwidth is evaluated on them in the same pass, and the tile-row sum is
  accumulated in registers. The self terms use symmetry: only column blocks j >= i are visited,
  off-diagonal blocks counted twice; self pairs (i == i) are set to distance exactly 0. Each
  program writes one fp32 partial sum; ``torch.sum`` over the (splits, row blocks) partials is the
  second, deterministic stage (no atomics).
- backward: d MMD / d x_i = g * sum_j alpha W(x_i, z_j) (x_i - z_j) over z = x (alpha = -4 w_xx)
  and z = y (alpha = 4 / (N M)), W = sum_k gamma_k exp(-gamma_k d^2). One program owns a block of
  rows and a chunk of D, re-computes the distance tiles, and accumulates W @ Z (``tl.dot``) and
  the row sums of W in registers: grad = g alpha (x rowsum(W) - W @ Z). Each output element is
  written by exactly one program: deterministic. The same kernel gives the gradient of y.

When the gammas form a chain of ratio 2 (the default multipliers 0.25 .. 4 do), the kernel
computes one ``exp2`` per pair and gets the others by squaring (exp(-2 g d) = exp(-g d)^2): the
special-function unit, not the tensor cores, bounds MMD at small D.

Heuristic and explicit bandwidths are constants: the custom op returns no gradient for them.

Precision: both sets are shifted by their pooled mean (``pooled_centre``, a detached constant)
before the kernels see them, in the forward and again, identically, in the backward (the centre
is recomputed from nothing but x and y, so both passes work on bitwise the same centred rows).
Distances from ||a||^2 + ||b||^2 - 2 a.b in fp32 are then exact to about 1e-7 of the squared
norms of the *centred* rows, i.e. of the data's spread, wherever the data sit; the backward's
x rowsum(W) - W @ Z subtracts terms of the size of the spread times the weights, not of the
offset times the weights (without centring, a collapsed batch at 0.7 with the floored heuristic
bandwidth gave gradients of 3e4 where the exact value is 0). Identical rows centre to exactly 0,
so a collapsed batch gives exactly 0 distances and gradients. The mean's gradient contribution
is zero by translation invariance and is left out (see ``reference/mmd.py``, "Centring", which
also states the resolution that remains for bandwidths far above every distance). float16
inputs must keep |x - centre| below 65504 (|x|, |y| < 32752 suffice; checked).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from sepkit.errors import InputError, InputTypeError

from ._alloc import empty, empty_like
from ._backend import HAS_TRITON, INTERPRET, resolve_backend
from ._checks import FLOAT_DTYPES, check_finite, check_row_sets, check_same_device, check_tensor
from .attention import dot_precision
from .reference.mmd import DEFAULT_MULTIPLIERS, ESTIMATORS, heuristic_base, mmd_reference, pooled_centre

OP = "mmd"
_LOG2E = 1.4426950408889634
#: gammas = 1 / (2 s^2) are clamped at this on the Triton path (s < ~7e-16 in fp32 would overflow).
_GAMMA_MAX = 1e30
#: float16 inputs at or above this magnitude could overflow once centred (2 * 32752 > 65504).
_FP16_CENTRED_MAX = 32752.0
#: Most bandwidths one call evaluates (each is unrolled in the kernel).
MAX_BANDWIDTHS = 32

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _sq_dist_tile(A, B, na, nb, rows, cols, rmask, cmask, D, sa, sb,
                      PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr):
        """(BLOCK_M, BLOCK_N) squared distances between rows of A and rows of B, clamped at 0."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < D
            a = tl.load(A + rows[:, None] * sa + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(B + cols[:, None] * sb + ks[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)
            acc += tl.dot(a, tl.trans(b), input_precision=PRECISION)
        d2 = na[:, None] + nb[None, :] - 2.0 * acc
        return tl.maximum(d2, 0.0)

    @triton.jit
    def _kernel_values(d2, G, NK: tl.constexpr, SQUARING: tl.constexpr):
        """sum_k exp(-gamma_k d2); G holds gamma_k log2(e) (ascending when SQUARING)."""
        if SQUARING:
            e = tl.exp2(-d2 * tl.load(G))
            kv = e
            for _ in tl.static_range(NK - 1):
                e = e * e
                kv += e
        else:
            kv = tl.zeros_like(d2)
            for k in tl.static_range(NK):
                kv += tl.exp2(-d2 * tl.load(G + k))
        return kv

    @triton.jit
    def _weight_values(d2, G, NK: tl.constexpr, SQUARING: tl.constexpr):
        """sum_k (gamma_k / gamma_max) exp(-gamma_k d2); G[NK + k] holds gamma_k / gamma_max."""
        if SQUARING:
            e = tl.exp2(-d2 * tl.load(G))
            w = e * tl.load(G + NK)
            for k in tl.static_range(1, NK):
                e = e * e
                w += e * tl.load(G + NK + k)
        else:
            w = tl.zeros_like(d2)
            for k in tl.static_range(NK):
                w += tl.exp2(-d2 * tl.load(G + k)) * tl.load(G + NK + k)
        return w

    @triton.jit
    def _mmd_fwd_kernel(
        A, B, NA, NB, G, PART, N, M, D, sa, sb, n_split, n_rowblocks, diag_value,
        SYMMETRIC: tl.constexpr, NK: tl.constexpr, SQUARING: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        split = tl.program_id(1)
        rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        rmask = rows < N
        na = tl.load(NA + rows, mask=rmask, other=0.0)
        acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
        n_col = tl.cdiv(M, BLOCK_N)
        if SYMMETRIC:
            start = pid + split
        else:
            start = split
        for j in range(start, n_col, n_split):
            cols = j * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
            cmask = cols < M
            nb = tl.load(NB + cols, mask=cmask, other=0.0)
            d2 = _sq_dist_tile(A, B, na, nb, rows, cols, rmask, cmask, D, sa, sb,
                               PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
            kv = _kernel_values(d2, G, NK, SQUARING)
            if SYMMETRIC:
                kv = tl.where(rows[:, None] == cols[None, :], diag_value, kv)
                if j != pid:
                    kv = kv * 2.0
            kv = tl.where(rmask[:, None] & cmask[None, :], kv, 0.0)
            acc += tl.sum(kv, axis=1)
        tl.store(PART + split.to(tl.int64) * n_rowblocks + pid, tl.sum(acc, axis=0))

    @triton.jit
    def _bwd_pass(acc, rs, scale, A, B, na, rows, rmask, dcols, dmask, NB, G, M, D, sa, sb,
                  SELF: tl.constexpr, LOWP: tl.constexpr, RESCALE: tl.constexpr, NK: tl.constexpr,
                  SQUARING: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        """acc += scale W @ B[:, dchunk], rs += scale rowsum(W), over every column block of B."""
        for j in range(0, tl.cdiv(M, BLOCK_N)):
            cols = j * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
            cmask = cols < M
            nb = tl.load(NB + cols, mask=cmask, other=0.0)
            d2 = _sq_dist_tile(A, B, na, nb, rows, cols, rmask, cmask, D, sa, sb,
                               PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
            w = _weight_values(d2, G, NK, SQUARING)
            keep = rmask[:, None] & cmask[None, :]
            if SELF:
                keep = keep & (rows[:, None] != cols[None, :])
            w = tl.where(keep, w, 0.0)
            b = tl.load(B + cols[:, None] * sb + dcols[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0)
            if LOWP:
                # tensor-core product in the storage dtype: W = W_hi + W_lo, both rounded, keeps
                # W to ~2^-16 (the gradient's terms cancel, so one rounding of W would show)
                if RESCALE:
                    # fp16 has no range for small weights: scale each tile row to max 1 first,
                    # undo after the dot (diag(r) W B = diag(r) (W B))
                    r = tl.max(w, axis=1)
                    r = tl.where(r > 0.0, r, 1.0)
                    w = w / r[:, None]
                    r = r * scale
                else:
                    r = tl.zeros((BLOCK_M,), dtype=tl.float32) + scale
                w_hi = w.to(B.dtype.element_ty)
                w_lo = (w - w_hi.to(tl.float32)).to(B.dtype.element_ty)
                prod = tl.dot(w_hi, b) + tl.dot(w_lo, b)
                rs += tl.sum(w, axis=1) * r
                acc += prod * r[:, None]
            else:
                rs += tl.sum(w, axis=1) * scale
                acc += tl.dot(w, b, input_precision=PRECISION) * scale
        return acc, rs

    @triton.jit
    def _mmd_bwd_kernel(
        A, B, NA, NB, G, S, OUT, N, M, D, sa, sb, so,
        LOWP: tl.constexpr, RESCALE: tl.constexpr, NK: tl.constexpr, SQUARING: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        """grad_A = S[0] (A rowsum(W_AA) - W_AA A) + S[1] (A rowsum(W_AB) - W_AB B), one D chunk."""
        pid = tl.program_id(0)
        pid_d = tl.program_id(1)
        rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        rmask = rows < N
        dcols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = dcols < D
        na = tl.load(NA + rows, mask=rmask, other=0.0)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        rs = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc, rs = _bwd_pass(acc, rs, tl.load(S), A, A, na, rows, rmask, dcols, dmask, NA, G, N, D, sa, sa,
                            True, LOWP, RESCALE, NK, SQUARING, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_D)
        acc, rs = _bwd_pass(acc, rs, tl.load(S + 1), A, B, na, rows, rmask, dcols, dmask, NB, G, M, D, sa, sb,
                            False, LOWP, RESCALE, NK, SQUARING, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_D)
        a = tl.load(A + rows[:, None] * sa + dcols[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
        grad = a.to(tl.float32) * rs[:, None] - acc
        tl.store(OUT + rows[:, None] * so + dcols[None, :], grad.to(OUT.dtype.element_ty),
                 mask=rmask[:, None] & dmask[None, :])


def _blocks(d: int, exact: bool = False) -> dict:
    """Tile sizes; ``exact`` (fp32 with IEEE dots: FMA loops whose operands live in registers)
    halves the depth and quarters the D chunk so nothing spills (sm_80, ``python -m perf static``)."""
    if INTERPRET:  # small tiles so tests cross block boundaries at small sizes
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, BLOCK_D=32)
    block_k = min(32 if exact else 64, max(16, triton.next_power_of_2(d)))
    block_d = min(32 if exact else 128, max(16, triton.next_power_of_2(d)))
    return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=block_k, BLOCK_D=block_d)


def _warps(meta: dict, backward: bool) -> dict:
    if INTERPRET:
        return {}
    # 64 x 64 tiles on 8 warps: no spills on sm_90a or sm_80 at any BLOCK_D (``python -m perf
    # static``, perf/results/static-*); the fp16/bf16 backward at BLOCK_D 128 uses up to ~220
    # registers per thread (one block per SM)
    return {"num_warps": 8, "num_stages": 2 if backward else 3}


def _precision(t: torch.Tensor):
    """fp32 dots follow ``torch.get_float32_matmul_precision()`` (see ``attention.dot_precision``)."""
    return dot_precision(t.dtype)


def _is_squaring_chain(gammas: torch.Tensor) -> bool:
    """Whether sorted gammas double at each step exactly (host check on a CPU copy)."""
    g = gammas.detach().double().cpu()
    return g.numel() > 1 and bool(torch.all(g[1:] == 2.0 * g[:-1]))


def _gamma_table(gammas: torch.Tensor) -> torch.Tensor:
    """(2 NK,) fp32: gamma_k log2(e) then gamma_k / gamma_max (gammas ascending)."""
    g = gammas.to(torch.float64)
    return torch.cat([g * _LOG2E, g / g.max()]).to(torch.float32).contiguous()


def _row_sq_norms(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dim=1, dtype=torch.float32).square().contiguous()


def _weights(n: int, m: int, unbiased: bool) -> tuple[float, float, float]:
    if unbiased:
        return 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m)
    return 1.0 / (n * n), 1.0 / (m * m), -2.0 / (n * m)


def _pair_sum(a, b, na, nb, table, nk, squaring, symmetric, diag_value) -> torch.Tensor:
    """sum over row/column pairs of the kernel values (float64 0-d), by tiles."""
    n, d = a.shape
    m = b.shape[0]
    meta = _blocks(d, _precision(a) == "ieee")
    n_rb = triton.cdiv(n, meta["BLOCK_M"])
    n_cb = triton.cdiv(m, meta["BLOCK_N"])
    if INTERPRET:
        n_split = min(2, n_cb)
    else:
        sms = torch.cuda.get_device_properties(a.device).multi_processor_count
        n_split = max(1, min(n_cb, triton.cdiv(4 * sms, n_rb)))
    part = empty(n_split, n_rb, dtype=torch.float32, device=a.device)
    _mmd_fwd_kernel[(n_rb, n_split)](
        a, b, na, nb, table, part, n, m, d, a.stride(0), b.stride(0), n_split, n_rb, float(diag_value),
        SYMMETRIC=symmetric, NK=nk, SQUARING=squaring, PRECISION=_precision(a),
        BLOCK_M=meta["BLOCK_M"], BLOCK_N=meta["BLOCK_N"], BLOCK_K=meta["BLOCK_K"], **_warps(meta, False),
    )
    return part.sum(dtype=torch.float64)


def _centred(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x - c and y - c (contiguous, storage dtype), c the pooled mean: a deterministic function
    of x and y alone, so the forward and the backward see bitwise the same centred rows."""
    centre = pooled_centre(x, y)
    return (x - centre).contiguous(), (y - centre).contiguous()


@torch.library.custom_op("sepkit::mmd_fwd", mutates_args=())
def _mmd_fwd(x: torch.Tensor, y: torch.Tensor, gammas: torch.Tensor, unbiased: bool, squaring: bool) -> torch.Tensor:
    x, y = _centred(x, y)
    n, m = x.shape[0], y.shape[0]
    nk = gammas.numel()
    table = _gamma_table(gammas)
    nx, ny = _row_sq_norms(x), _row_sq_norms(y)
    diag = 0.0 if unbiased else float(nk)
    sxx = _pair_sum(x, x, nx, nx, table, nk, squaring, True, diag)
    syy = _pair_sum(y, y, ny, ny, table, nk, squaring, True, diag)
    sxy = _pair_sum(x, y, nx, ny, table, nk, squaring, False, 0.0)
    wxx, wyy, wxy = _weights(n, m, unbiased)
    return (wxx * sxx + wyy * syy + wxy * sxy).to(torch.float32)


@_mmd_fwd.register_fake
def _(x, y, gammas, unbiased, squaring):
    return x.new_empty((), dtype=torch.float32)


def _grad_rows(a, b, na, nb, table, scales, nk, squaring) -> torch.Tensor:
    n, d = a.shape
    out = empty_like(a)
    meta = _blocks(d, _precision(a) == "ieee")
    grid = (triton.cdiv(n, meta["BLOCK_M"]), triton.cdiv(d, meta["BLOCK_D"]))
    _mmd_bwd_kernel[grid](
        a, b, na, nb, table, scales, out, n, b.shape[0], d, a.stride(0), b.stride(0), out.stride(0),
        LOWP=a.dtype != torch.float32, RESCALE=a.dtype == torch.float16, NK=nk, SQUARING=squaring, PRECISION=_precision(a),
        **meta, **_warps(meta, True),
    )
    return out


@torch.library.custom_op("sepkit::mmd_bwd", mutates_args=())
def _mmd_bwd(
    grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, gammas: torch.Tensor, unbiased: bool, squaring: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _centred(x, y)  # d(x - c)/dx = I: the gradients of the centred rows are those of x, y
    n, m = x.shape[0], y.shape[0]
    nk = gammas.numel()
    table = _gamma_table(gammas)
    nx, ny = _row_sq_norms(x), _row_sq_norms(y)
    wxx, wyy, wxy = _weights(n, m, unbiased)
    # d/dx_i of w k(x_i, z_j) = -2 w W (x_i - z_j); self terms count twice (both arguments)
    gmax = gammas.to(torch.float64).max()
    g = grad.to(torch.float64) * gmax
    sx = torch.stack([-4.0 * wxx * g, -2.0 * wxy * g]).to(torch.float32)
    sy = torch.stack([-4.0 * wyy * g, -2.0 * wxy * g]).to(torch.float32)
    gx = _grad_rows(x, y, nx, ny, table, sx, nk, squaring)
    gy = _grad_rows(y, x, ny, nx, table, sy, nk, squaring)
    return gx, gy


@_mmd_bwd.register_fake
def _(grad, x, y, gammas, unbiased, squaring):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(y, memory_format=torch.contiguous_format))


def _mmd_setup_context(ctx, inputs, output):
    x, y, gammas, unbiased, squaring = inputs
    ctx.save_for_backward(x, y, gammas)
    ctx.unbiased, ctx.squaring = unbiased, squaring


def _mmd_backward(ctx, grad):
    x, y, gammas = ctx.saved_tensors
    gx, gy = _mmd_bwd(grad, x, y, gammas, ctx.unbiased, ctx.squaring)
    return gx, gy, None, None, None


_mmd_fwd.register_autograd(_mmd_backward, setup_context=_mmd_setup_context)


def _check_multipliers(multipliers) -> tuple[float, ...]:
    try:
        mult = tuple(float(v) for v in multipliers)
    except (TypeError, ValueError):
        raise InputTypeError(f"{OP}: multipliers must be a sequence of numbers, got {multipliers!r}") from None
    if not mult:
        raise InputError(f"{OP}: multipliers must not be empty")
    if not all(math.isfinite(v) and v > 0 for v in mult):
        raise InputError(f"{OP}: multipliers must be finite and > 0, got {mult}")
    return mult


def _check_bandwidths(bandwidths, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(bandwidths, torch.Tensor):
        try:
            bandwidths = torch.as_tensor([float(v) for v in bandwidths], dtype=torch.float64, device=x.device)
        except (TypeError, ValueError):
            raise InputTypeError(f"{OP}: bandwidths must be a 1-d tensor or a sequence of numbers, got {bandwidths!r}") from None
    check_tensor(OP, "bandwidths", bandwidths, ndim=1, dtypes=FLOAT_DTYPES)
    if bandwidths.numel() == 0:
        raise InputError(f"{OP}: bandwidths must not be empty")
    check_same_device(OP, x=x, bandwidths=bandwidths)
    if not torch.compiler.is_compiling() and not bool(((bandwidths > 0) & torch.isfinite(bandwidths)).all()):
        raise InputError(f"{OP}: bandwidths must be finite and > 0, got {bandwidths.tolist()}")
    return bandwidths


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: torch.Tensor | Sequence[float] | None = None,
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    estimator: str = "unbiased",
    backend: str | None = None,
) -> torch.Tensor:
    """Squared maximum mean discrepancy between x and y under a sum of Gaussian RBF kernels.

    ``k(a, b) = sum_k exp(-||a - b||^2 / (2 s_k^2))``; estimators and the bandwidth heuristic
    (``s_k^2 = multipliers[k] * mean pairwise squared distance of [x; y]``) are specified in
    :mod:`sepkit.kernels.reference.mmd`.

    Args:
        x: (N, D) samples, fp32/fp16/bf16 (float64 on the torch backend).
        y: (M, D) samples, same dtype and device; M may differ from N.
        bandwidths: (K,) kernel widths s_k > 0 (tensor or numbers, units of x), or None for the
            heuristic. Either way the bandwidths are constants (no gradient).
        multipliers: the heuristic's multipliers of the base squared width (used when
            ``bandwidths`` is None); default (0.25, 0.5, 1, 2, 4).
        estimator: "unbiased" (U-statistic, needs N, M >= 2) or "biased" (V-statistic, >= 0).
        backend: "triton", "torch" (reference) or None (automatic, see ``sepkit.kernels``).
    Returns:
        0-d tensor, float32 (float64 for float64 inputs); gradients flow to x and y.
    """
    check_row_sets(OP, "x", x, "y", y)
    n, m = x.shape[0], y.shape[0]
    if estimator not in ESTIMATORS:
        raise InputError(f"{OP}: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if n == 0 or m == 0:
        raise InputError(f"{OP}: x and y need at least one row each, got N={n}, M={m}")
    if estimator == "unbiased" and (n < 2 or m < 2):
        raise InputError(
            f"{OP}: the unbiased estimator needs at least 2 rows in x and in y, got N={n}, M={m}; "
            "use estimator='biased'"
        )
    mult = _check_multipliers(multipliers) if bandwidths is None else None
    if bandwidths is not None:
        bandwidths = _check_bandwidths(bandwidths, x)
    if not torch.compiler.is_compiling():
        check_finite(OP, "x", x)
        check_finite(OP, "y", y)
        if x.dtype == torch.float16:
            peak = float(torch.maximum(x.detach().abs().amax(), y.detach().abs().amax()))
            if peak >= _FP16_CENTRED_MAX:
                raise InputError(
                    f"{OP}: float16 x and y must stay below {_FP16_CENTRED_MAX:g} in magnitude (the centred rows "
                    f"x - mean must fit float16), got max |value| {peak:g}; pass float32"
                )
    nk = len(mult) if mult is not None else bandwidths.numel()
    reasons = [f"{nk} bandwidths (the kernel unrolls at most {MAX_BANDWIDTHS})"] if nk > MAX_BANDWIDTHS else []
    if resolve_backend(OP, backend, [x, y], reasons) == "torch":
        math_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        bw = bandwidths.to(math_dtype) if bandwidths is not None else None
        return mmd_reference(x.to(math_dtype), y.to(math_dtype), bw, mult or DEFAULT_MULTIPLIERS, estimator)
    if bandwidths is None:
        # gammas = 1 / (2 m_k base), ascending (largest multiplier first); the ratios are known
        # on the host, so the squaring chain is decided without reading the device
        order = sorted(mult, reverse=True)
        base = heuristic_base(x, y).to(torch.float64)
        gammas = (1.0 / (2.0 * base * torch.tensor(order, dtype=torch.float64, device=x.device)))
        squaring = len(order) > 1 and all(order[i] == 2.0 * order[i + 1] for i in range(len(order) - 1))
    else:
        s = bandwidths.detach().to(torch.float64)
        gammas = torch.sort(1.0 / (2.0 * s * s)).values
        squaring = False if torch.compiler.is_compiling() else _is_squaring_chain(gammas)
    gammas = gammas.clamp_max(_GAMMA_MAX).to(torch.float32)
    return _mmd_fwd(x, y, gammas, estimator == "unbiased", squaring)


__all__ = ["mmd", "MAX_BANDWIDTHS"]
