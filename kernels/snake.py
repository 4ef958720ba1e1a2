"""Snake activation: Triton forward/backward kernels, the autograd op and the public function.

    y = x + sin(a x)^2 / (b + 1e-9),  a = alpha, b = beta (or alpha), per channel along ``dim``;
    a = exp(alpha), b = exp(beta) under ``logscale``.

Layout: ``x`` is made contiguous (a strided input is copied once; the output is contiguous) and
viewed as (P, C, Q) around the channel axis. When Q > 1 (channels-first, e.g. (B, C, T)) the
kernels tile rows of the (P*C, Q) matrix, one channel per row; when Q == 1 (channels-last, e.g.
(B, T, C)) they tile the (P, C) matrix with channels along columns. Maths is fp32 whatever the
storage dtype; the output has x's dtype, parameter gradients their parameter's dtype.

Parameter gradients are reduced deterministically in two stages: each program writes the partial
sum of its tile per channel into a small fp32 buffer, which one ``torch.sum`` then reduces.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from sepkit.errors import InputError

from . import _tmath as tm
from ._alloc import empty, empty_like
from ._backend import HAS_TRITON, INTERPRET, is_automatic, resolve_backend
from ._checks import FLOAT_DTYPES, check_same_device, check_tensor
from .reference.snake import EPS, param_view, snake_reference

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _snake_params(A, B, ch, ch_mask, HAS_BETA: tl.constexpr, LOGSCALE: tl.constexpr):
        a = tl.load(A + ch, mask=ch_mask, other=1.0).to(tl.float32)
        if HAS_BETA:
            b = tl.load(B + ch, mask=ch_mask, other=1.0).to(tl.float32)
        else:
            b = a
        if LOGSCALE:
            a = tl.exp(a)
            b = tl.exp(b)
        return a, b

    @triton.jit
    def _snake_tile(pid_r, pid_k, R, K, C, CH_ON_ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
        cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
        mask = (rows < R)[:, None] & (cols < K)[None, :]
        offs = rows[:, None] * K + cols[None, :]
        if CH_ON_ROWS:
            ch = rows % C
            ch_mask = rows < R
        else:
            ch = cols
            ch_mask = cols < K
        return offs, mask, ch, ch_mask

    @triton.jit
    def _on_tile(v, CH_ON_ROWS: tl.constexpr):
        """Broadcast a per-channel vector over the tile: a column when channels run along rows."""
        if CH_ON_ROWS:
            return v[:, None]
        else:
            return v[None, :]

    @triton.jit
    def _snake_fwd_kernel(
        X, A, B, Y, R, K, C,
        HAS_BETA: tl.constexpr, LOGSCALE: tl.constexpr, CH_ON_ROWS: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_r = tl.program_id(0).to(tl.int64)
        pid_k = tl.program_id(1).to(tl.int64)
        offs, mask, ch, ch_mask = _snake_tile(pid_r, pid_k, R, K, C, CH_ON_ROWS, BLOCK_R, BLOCK_K)
        a, b = _snake_params(A, B, ch, ch_mask, HAS_BETA, LOGSCALE)
        a = _on_tile(a, CH_ON_ROWS)
        b = _on_tile(b, CH_ON_ROWS)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        s2, _ = tm.sin_sq_sin2(a * x)
        y = x + s2 / (b + 1e-9)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _snake_bwd_kernel(
        G, X, A, B, DX, PA, PB, R, K, C, n_kblocks,
        HAS_BETA: tl.constexpr, LOGSCALE: tl.constexpr, CH_ON_ROWS: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_r = tl.program_id(0).to(tl.int64)
        pid_k = tl.program_id(1).to(tl.int64)
        offs, mask, ch, ch_mask = _snake_tile(pid_r, pid_k, R, K, C, CH_ON_ROWS, BLOCK_R, BLOCK_K)
        a1, b1 = _snake_params(A, B, ch, ch_mask, HAS_BETA, LOGSCALE)
        a = _on_tile(a1, CH_ON_ROWS)
        b = _on_tile(b1, CH_ON_ROWS)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        s2, s2c = tm.sin_sq_sin2(a * x)  # sin(a x)^2, sin(2 a x)
        inv = 1.0 / (b + 1e-9)
        dx = g * (1.0 + a * s2c * inv)
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        ga = g * x * s2c * inv          # d y / d a
        gb = -g * s2 * inv * inv        # d y / d b
        if not HAS_BETA:
            ga = ga + gb                # b is a
        if CH_ON_ROWS:
            pa = tl.sum(ga, axis=1)
            if LOGSCALE:
                pa = pa * a1
            part_offs = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)) * n_kblocks + pid_k
            tl.store(PA + part_offs, pa, mask=ch_mask)
            if HAS_BETA:
                pb = tl.sum(gb, axis=1)
                if LOGSCALE:
                    pb = pb * b1
                tl.store(PB + part_offs, pb, mask=ch_mask)
        else:
            pa = tl.sum(ga, axis=0)
            if LOGSCALE:
                pa = pa * a1
            part_offs = pid_r * K + ch
            tl.store(PA + part_offs, pa, mask=ch_mask)
            if HAS_BETA:
                pb = tl.sum(gb, axis=0)
                if LOGSCALE:
                    pb = pb * b1
                tl.store(PB + part_offs, pb, mask=ch_mask)


_TILE_ELEMENTS = 4096  # elements per program: enough bytes in flight for a memory-bound op
#: The backward keeps x, g, sin, cos and three products live per element: half the tile keeps
#: it under 128 registers per thread without spills (``python -m perf static``).
_TILE_ELEMENTS_BWD = 2048


def _layout(shape: torch.Size, dim: int):
    """(P, C, Q) around the channel axis, and the 2-D problem (R, K, channels-on-rows)."""
    P = math.prod(shape[:dim])
    C = shape[dim]
    Q = math.prod(shape[dim + 1:])
    if Q > 1:
        return P, C, Q, P * C, Q, True
    return P, C, Q, P, C, False


def _blocks(R: int, K: int, ch_on_rows: bool, tile: int = _TILE_ELEMENTS):
    cap = 1024 if ch_on_rows else 256
    block_k = min(triton.next_power_of_2(K), cap)
    block_r = max(1, min(tile // block_k, triton.next_power_of_2(R)))
    return block_r, block_k


def _launch_kwargs(block_r: int, block_k: int) -> dict:
    if INTERPRET:
        return {}
    return {"num_warps": 8 if block_r * block_k >= 2048 else 4}


@torch.library.custom_op("sepkit::snake_fwd", mutates_args=())
def _snake_fwd(x: torch.Tensor, alpha: torch.Tensor, beta: Optional[torch.Tensor], dim: int, logscale: bool) -> torch.Tensor:
    x = x.contiguous()
    y = empty_like(x)
    if x.numel() == 0:
        return y
    _, C, _, R, K, ch_on_rows = _layout(x.shape, dim)
    block_r, block_k = _blocks(R, K, ch_on_rows)
    grid = (triton.cdiv(R, block_r), triton.cdiv(K, block_k))
    _snake_fwd_kernel[grid](
        x, alpha.contiguous(), alpha if beta is None else beta.contiguous(), y, R, K, C,
        HAS_BETA=beta is not None, LOGSCALE=logscale, CH_ON_ROWS=ch_on_rows,
        BLOCK_R=block_r, BLOCK_K=block_k, **_launch_kwargs(block_r, block_k),
    )
    return y


@_snake_fwd.register_fake
def _(x, alpha, beta, dim, logscale):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("sepkit::snake_bwd", mutates_args=())
def _snake_bwd(
    grad: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, beta: Optional[torch.Tensor], dim: int, logscale: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    grad = grad.contiguous()
    dx = empty_like(x)
    P, C, Q, R, K, ch_on_rows = _layout(x.shape, dim)
    has_beta = beta is not None
    if x.numel() == 0:
        zeros = torch.zeros_like(alpha)
        return dx, zeros, torch.zeros_like(beta) if has_beta else alpha.new_empty(0)
    block_r, block_k = _blocks(R, K, ch_on_rows, _TILE_ELEMENTS_BWD)
    grid = (triton.cdiv(R, block_r), triton.cdiv(K, block_k))
    part_shape = (R, grid[1]) if ch_on_rows else (grid[0], C)
    pa = empty(*part_shape, dtype=torch.float32, device=x.device)
    pb = empty(*part_shape, dtype=torch.float32, device=x.device) if has_beta else pa
    _snake_bwd_kernel[grid](
        grad, x, alpha.contiguous(), alpha if beta is None else beta.contiguous(), dx, pa, pb, R, K, C, grid[1],
        HAS_BETA=has_beta, LOGSCALE=logscale, CH_ON_ROWS=ch_on_rows,
        BLOCK_R=block_r, BLOCK_K=block_k, **_launch_kwargs(block_r, block_k),
    )

    def reduce(part):
        if ch_on_rows:
            return part.view(P, C, grid[1]).sum(dim=(0, 2))
        return part.sum(dim=0)

    dalpha = reduce(pa).to(alpha.dtype)
    dbeta = reduce(pb).to(beta.dtype) if has_beta else alpha.new_empty(0)
    return dx, dalpha, dbeta


@_snake_bwd.register_fake
def _(grad, x, alpha, beta, dim, logscale):
    dbeta = torch.empty_like(beta) if beta is not None else alpha.new_empty(0)
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(alpha), dbeta


def _snake_setup_context(ctx, inputs, output):
    x, alpha, beta, dim, logscale = inputs
    ctx.save_for_backward(x, alpha, beta)
    ctx.dim, ctx.logscale = dim, logscale


def _snake_backward(ctx, grad):
    x, alpha, beta = ctx.saved_tensors
    dx, dalpha, dbeta = _snake_bwd(grad, x, alpha, beta, ctx.dim, ctx.logscale)
    return dx, dalpha, (dbeta if beta is not None else None), None, None


_snake_fwd.register_autograd(_snake_backward, setup_context=_snake_setup_context)


def snake(
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor | None = None,
    dim: int = 1,
    logscale: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Snake activation ``x + sin(a x)^2 / (b + 1e-9)`` with per-channel a (alpha) and b (beta).

    Args:
        x: input of any rank >= 1, fp32/fp16/bf16 (float64 on the torch backend), channels
            along ``dim``: (B, C, T) with ``dim=1`` or (B, T, C) with ``dim=-1``. Non-contiguous
            inputs are copied to contiguous memory once.
        alpha: (C,) frequencies (any float dtype; fp32 is the usual choice under mixed precision).
        beta: optional (C,) magnitudes (SnakeBeta); ``None`` uses alpha (Snake).
        dim: channel dimension of ``x``.
        logscale: alpha and beta are log-values.
        backend: "triton", "torch" (reference) or None (automatic, see ``sepkit.kernels``).
    Returns:
        Tensor shaped like ``x`` with x's dtype (contiguous).
    """
    op = "snake"
    check_tensor(op, "x", x, min_ndim=1, dtypes=FLOAT_DTYPES)
    if not -x.dim() <= dim < x.dim():
        raise InputError(f"{op}: dim={dim} is out of range for x with shape {tuple(x.shape)}")
    dim = dim % x.dim()
    channels = x.shape[dim]
    for name, p in (("alpha", alpha), ("beta", beta)):
        if p is None:
            continue
        check_tensor(op, name, p, ndim=1, dtypes=FLOAT_DTYPES)
        if p.numel() != channels:
            raise InputError(
                f"{op}: {name} has {p.numel()} values but x has {channels} channels along dim {dim} "
                f"(shape {tuple(x.shape)})"
            )
    check_same_device(op, x=x, alpha=alpha, beta=beta)
    params = [alpha] + ([beta] if beta is not None else [])
    if resolve_backend(op, backend, [x, *params]) == "torch":
        # fp32 maths for low-precision storage, as the kernel does; float64 stays float64
        math_dtype = torch.float64 if torch.float64 in {t.dtype for t in (x, *params)} else torch.float32
        cast = [t.to(math_dtype) for t in (x, *params)]
        if is_automatic(backend) and not torch.jit.is_tracing():  # the eager path that stores only its inputs
            # for the backward (TorchScript records no autograd.Function: the reference there)
            return _SnakeEager.apply(cast[0], cast[1], cast[2] if beta is not None else None, dim,
                                     logscale).to(x.dtype)
        return snake_reference(cast[0], cast[1], cast[2] if beta is not None else None, dim, logscale).to(x.dtype)
    return _snake_fwd(x, alpha, beta, dim, logscale)


class _SnakeEager(torch.autograd.Function):
    """Snake by eager torch ops that saves x and the parameters only (the reference's autograd
    keeps sin(a x), its square and the products) and recomputes the rest in the backward pass:

        dy/dx = 1 + a / (b + eps) sin(2 a x),
        dy/da = x sin(2 a x) / (b + eps)       (+ the b term when b is a, i.e. without beta),
        dy/db = -sin(a x)^2 / (b + eps)^2,

    times a (or b) under ``logscale``; the parameter gradients are summed over all but ``dim``.
    """

    @staticmethod
    def forward(ctx, x, alpha, beta, dim, logscale):
        ctx.save_for_backward(x, alpha, beta)
        ctx.dim, ctx.logscale = dim, logscale
        return snake_reference(x, alpha, beta, dim, logscale)

    @staticmethod
    def backward(ctx, grad):
        x, alpha, beta = ctx.saved_tensors
        dim, logscale = ctx.dim, ctx.logscale
        a = param_view(alpha, x.dim(), dim)
        b = a if beta is None else param_view(beta, x.dim(), dim)
        if logscale:
            a = torch.exp(a)
            b = a if beta is None else torch.exp(b)
        inv = (b + EPS).reciprocal()
        ax = a * x
        sin, cos = torch.sin(ax), torch.cos(ax)
        sin2 = 2 * sin * cos  # sin(2 a x)
        dx = grad + grad * sin2 * (a * inv)
        need_a, need_b = ctx.needs_input_grad[1], beta is not None and ctx.needs_input_grad[2]
        dalpha = dbeta = None
        if need_a or need_b:
            others = [d for d in range(x.dim()) if d != dim]
            db_elem = -grad * (sin * sin) * (inv * inv)
            da_elem = grad * x * sin2 * inv
            if beta is None:
                da_elem = da_elem + db_elem
            if need_a:
                dalpha = da_elem.sum(dim=others)
                dalpha = (dalpha * a.reshape(-1) if logscale else dalpha).reshape(alpha.shape)
            if need_b:
                dbeta = db_elem.sum(dim=others)
                dbeta = (dbeta * b.reshape(-1) if logscale else dbeta).reshape(beta.shape)
        return dx, dalpha, dbeta, None, None


__all__ = ["snake", "EPS"]
