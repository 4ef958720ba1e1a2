"""wav2vec2-style contrastive loss: Triton forward/backward kernels, the autograd op and the public function.

The maths is specified in ``reference/nce.py``. The kernels never gather the (N, K + 1, D)
candidates:

- forward: one program per selected step i loads c_i once, walks its K + 1 candidate rows of
  ``targets`` by index in blocks (the gather happens in registers), computes the cosines with
  precomputed target norms, flags negatives whose vector equals the positive's, and keeps an
  online log-sum-exp (base 2, log2(e) / temperature folded into one scale). Saved for backward:
  the per-step log-sum-exp only; the target norms are recomputed (O(T D)).
- backward, stage 1: one program per step recomputes its logits, writes grad c_i and the two
  per-candidate coefficients the target gradient needs, a = G / temperature and
  b = G cos / temperature with G = g_i (softmax - onehot) ((N, K + 1) floats each: no D).
- backward, stage 2: the (step, candidate) pairs are sorted by target row (stable sort, CSR
  offsets by ``searchsorted``); one program per target row sums its own pairs in that fixed
  order: grad t_r = (sum a c_i / |c_i|) / |t_r| - (sum b) t_r / |t_r|^2. No atomics, so the
  result is deterministic and exact however many steps share a target row.

Norms are floored at ``EPS`` as in the reference (the gradient through a floored norm is 0).
"""
from __future__ import annotations

import math

import torch

from sepkit.errors import InputError

from ._alloc import empty
from ._backend import HAS_TRITON, INTERPRET, resolve_backend
from ._checks import check_finite, check_row_sets, check_same_device, check_tensor
from .reference.nce import EPS, REDUCTIONS, nce_reference

OP = "nce"
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
#: Widest feature dimension the Triton path holds in registers (one row per program).
MAX_DIM = 4096
_TILE = 4096  # elements of the (candidates, D) tile a program holds at once

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _row_setup(C, T, TN, POS, i, D, sc, st, eps, scale, BLOCK_D: tl.constexpr):
        """c_i (fp32), its floored norm, the positive row (storage dtype), its base-2 logit."""
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        c = tl.load(C + i * sc + d, mask=dmask, other=0.0).to(tl.float32)
        c_len = tl.sqrt(tl.sum(c * c, axis=0))
        c_norm = tl.maximum(c_len, eps)
        pos = tl.load(POS + i)
        tp = tl.load(T + pos * st + d, mask=dmask, other=0.0)
        tp_norm = tl.maximum(tl.load(TN + pos), eps)
        pos_cos = tl.sum(c * tp.to(tl.float32), axis=0) / (c_norm * tp_norm)
        return c, c_len, c_norm, pos, tp, tp_norm, pos_cos * scale

    @triton.jit
    def _cand_block(C, T, TN, NEG, i, j0, K, D, st, sneg, c, c_norm, tp, eps, scale,
                    BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        """Negatives j0 .. j0 + BLOCK_J of step i: rows (fp32), norms, cosines, base-2 logits."""
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        js = j0 + tl.arange(0, BLOCK_J)
        jmask = js < K
        idx = tl.load(NEG + i * sneg + js, mask=jmask, other=0)
        t = tl.load(T + idx[:, None] * st + d[None, :], mask=jmask[:, None] & dmask[None, :], other=0.0)
        # identical to the positive in every element (padding columns are 0 on both sides)
        differs = tl.sum((t != tp[None, :]).to(tl.int32), axis=1)
        t = t.to(tl.float32)
        t_norm = tl.maximum(tl.load(TN + idx, mask=jmask, other=1.0), eps)
        cos = tl.sum(t * c[None, :], axis=1) / (c_norm * t_norm)
        live = jmask & (differs > 0)
        logit2 = tl.where(live, cos * scale, float("-inf"))
        return js, jmask, idx, t, t_norm, cos, live, logit2

    @triton.jit
    def _nce_fwd_kernel(
        C, T, TN, POS, NEG, LOSS, LSE, K, D, sc, st, sneg, eps, scale,
        BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        i = tl.program_id(0).to(tl.int64)
        c, c_len, c_norm, pos, tp, tp_norm, pos2 = _row_setup(C, T, TN, POS, i, D, sc, st, eps, scale, BLOCK_D)
        m = pos2
        s = pos2 * 0.0 + 1.0
        for j0 in range(0, K, BLOCK_J):
            js, jmask, idx, t, t_norm, cos, live, logit2 = _cand_block(
                C, T, TN, NEG, i, j0, K, D, st, sneg, c, c_norm, tp, eps, scale, BLOCK_J, BLOCK_D)
            m_new = tl.maximum(m, tl.max(logit2, axis=0))
            s = s * tl.exp2(m - m_new) + tl.sum(tl.exp2(logit2 - m_new), axis=0)
            m = m_new
        lse2 = m + tl.log2(s)
        tl.store(LSE + i, lse2)
        tl.store(LOSS + i, (lse2 - pos2) * 0.6931471805599453)

    @triton.jit
    def _nce_bwd_context_kernel(
        C, T, TN, POS, NEG, LSE, GROW, DC, CN, COEF_A, COEF_B, K, D, sc, st, sneg, sdc,
        eps, scale, inv_temp,
        BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        i = tl.program_id(0).to(tl.int64)
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        c, c_len, c_norm, pos, tp, tp_norm, pos2 = _row_setup(C, T, TN, POS, i, D, sc, st, eps, scale, BLOCK_D)
        lse2 = tl.load(LSE + i)
        g = tl.load(GROW + i).to(tl.float32)
        kp1 = K + 1
        # positive: d loss / d logit_0 = softmax_0 - 1
        g0 = g * (tl.exp2(pos2 - lse2) - 1.0)
        cos0 = pos2 / scale
        u = g0 * tp.to(tl.float32) / tp_norm
        wsum = g0 * cos0
        tl.store(COEF_A + i * kp1, g0 * inv_temp)
        tl.store(COEF_B + i * kp1, g0 * cos0 * inv_temp)
        for j0 in range(0, K, BLOCK_J):
            js, jmask, idx, t, t_norm, cos, live, logit2 = _cand_block(
                C, T, TN, NEG, i, j0, K, D, st, sneg, c, c_norm, tp, eps, scale, BLOCK_J, BLOCK_D)
            gj = tl.where(live, g * tl.exp2(logit2 - lse2), 0.0)
            u += tl.sum(gj[:, None] * t / t_norm[:, None], axis=0)
            wsum += tl.sum(gj * cos, axis=0)
            tl.store(COEF_A + i * kp1 + 1 + js, gj * inv_temp, mask=jmask)
            tl.store(COEF_B + i * kp1 + 1 + js, gj * cos * inv_temp, mask=jmask)
        # d cos / d c = t / (|c|' |t|') - cos c / |c|^2 (second term only where |c| > eps)
        r_c = tl.where(c_len > eps, 1.0 / (c_norm * c_norm), 0.0)
        dc = inv_temp * (u / c_norm - r_c * wsum * c)
        tl.store(DC + i * sdc + d, dc.to(DC.dtype.element_ty), mask=dmask)
        tl.store(CN + i, c_norm)

    @triton.jit
    def _nce_bwd_targets_kernel(
        C, T, TN, CN, COEF_A, COEF_B, ORDER, OFFS, DT, K, D, sc, st, sdt, eps,
        BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        r = tl.program_id(0).to(tl.int64)
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        start = tl.load(OFFS + r)
        end = tl.load(OFFS + r + 1)
        v = tl.zeros((BLOCK_D,), dtype=tl.float32)
        w = tl.zeros((BLOCK_E,), dtype=tl.float32)
        kp1 = K + 1
        for e0 in range(start, end, BLOCK_E):
            es = e0 + tl.arange(0, BLOCK_E)
            emask = es < end
            flat = tl.load(ORDER + es, mask=emask, other=0)
            row = flat // kp1
            a = tl.load(COEF_A + flat, mask=emask, other=0.0)
            w += tl.load(COEF_B + flat, mask=emask, other=0.0)
            cn = tl.load(CN + row, mask=emask, other=1.0)
            cv = tl.load(C + row[:, None] * sc + d[None, :], mask=emask[:, None] & dmask[None, :], other=0.0)
            v += tl.sum((a / cn)[:, None] * cv.to(tl.float32), axis=0)
        t = tl.load(T + r * st + d, mask=dmask, other=0.0).to(tl.float32)
        t_len = tl.load(TN + r)
        t_norm = tl.maximum(t_len, eps)
        r_t = tl.where(t_len > eps, 1.0 / (t_norm * t_norm), 0.0)
        dt = v / t_norm - r_t * tl.sum(w, axis=0) * t
        tl.store(DT + r * sdt + d, dt.to(DT.dtype.element_ty), mask=dmask)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _block_j(k: int, block_d: int) -> int:
    cap = 8 if INTERPRET else max(1, _TILE // block_d)
    return max(1, min(triton.next_power_of_2(max(k, 1)), cap))


def _warps(block_d: int) -> dict:
    if INTERPRET:
        return {}
    return {"num_warps": 8 if block_d >= 512 else 4}


def _target_norms(targets: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(targets, dim=1, dtype=torch.float32).contiguous()


def _last_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("sepkit::nce_fwd", mutates_args=())
def _nce_fwd(
    context: torch.Tensor, targets: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    context, targets = _last_contiguous(context), _last_contiguous(targets)
    pos_idx, neg_idx = pos_idx.contiguous(), neg_idx.contiguous()
    n, d = context.shape
    k = neg_idx.shape[1]
    loss = empty(n, dtype=torch.float32, device=context.device)
    lse = empty(n, dtype=torch.float32, device=context.device)
    if n == 0:
        return loss, lse
    block_d = _block_d(d)
    _nce_fwd_kernel[(n,)](
        context, targets, _target_norms(targets), pos_idx, neg_idx, loss, lse, k, d,
        context.stride(0), targets.stride(0), max(neg_idx.stride(0), 1), EPS, _LOG2E / temperature,
        BLOCK_J=_block_j(k, block_d), BLOCK_D=block_d, **_warps(block_d),
    )
    return loss, lse


@_nce_fwd.register_fake
def _(context, targets, pos_idx, neg_idx, temperature):
    n = context.shape[0]
    return context.new_empty(n, dtype=torch.float32), context.new_empty(n, dtype=torch.float32)


@torch.library.custom_op("sepkit::nce_bwd", mutates_args=())
def _nce_bwd(
    grad: torch.Tensor, context: torch.Tensor, targets: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor,
    lse: torch.Tensor, temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    context, targets = _last_contiguous(context), _last_contiguous(targets)
    pos_idx, neg_idx, grad = pos_idx.contiguous(), neg_idx.contiguous(), grad.contiguous()
    n, d = context.shape
    k = neg_idx.shape[1]
    t_total = targets.shape[0]
    dc = empty(n, d, dtype=context.dtype, device=context.device)
    dt = empty(t_total, d, dtype=targets.dtype, device=targets.device)
    if n == 0:
        return dc, dt.zero_()
    if t_total == 0:
        return dc, dt
    block_d = _block_d(d)
    tn = _target_norms(targets)
    cn = empty(n, dtype=torch.float32, device=context.device)
    coef_a = empty(n, k + 1, dtype=torch.float32, device=context.device)
    coef_b = empty(n, k + 1, dtype=torch.float32, device=context.device)
    _nce_bwd_context_kernel[(n,)](
        context, targets, tn, pos_idx, neg_idx, lse, grad, dc, cn, coef_a, coef_b, k, d,
        context.stride(0), targets.stride(0), max(neg_idx.stride(0), 1), dc.stride(0),
        EPS, _LOG2E / temperature, 1.0 / temperature,
        BLOCK_J=_block_j(k, block_d), BLOCK_D=block_d, **_warps(block_d),
    )
    # stage 2: (step, candidate) pairs grouped by target row in a fixed order
    flat = torch.cat([pos_idx[:, None], neg_idx], dim=1).reshape(-1)
    sorted_rows, order = torch.sort(flat, stable=True)
    offs = torch.searchsorted(sorted_rows, torch.arange(t_total + 1, device=flat.device, dtype=flat.dtype))
    _nce_bwd_targets_kernel[(t_total,)](
        context, targets, tn, cn, coef_a, coef_b, order, offs, dt, k, d,
        context.stride(0), targets.stride(0), dt.stride(0), EPS,
        BLOCK_E=_block_j(32, block_d) if not INTERPRET else 8, BLOCK_D=block_d, **_warps(block_d),
    )
    return dc, dt


@_nce_bwd.register_fake
def _(grad, context, targets, pos_idx, neg_idx, lse, temperature):
    return (torch.empty_like(context, memory_format=torch.contiguous_format),
            torch.empty_like(targets, memory_format=torch.contiguous_format))


def _nce_setup_context(ctx, inputs, output):
    context, targets, pos_idx, neg_idx, temperature = inputs
    _, lse = output
    ctx.save_for_backward(context, targets, pos_idx, neg_idx, lse)
    ctx.temperature = temperature
    ctx.mark_non_differentiable(lse)


def _nce_backward(ctx, grad_loss, grad_lse):
    context, targets, pos_idx, neg_idx, lse = ctx.saved_tensors
    dc, dt = _nce_bwd(grad_loss, context, targets, pos_idx, neg_idx, lse, ctx.temperature)
    return dc, dt, None, None, None


_nce_fwd.register_autograd(_nce_backward, setup_context=_nce_setup_context)


def _check_indices(name: str, idx, ndim: int, t_total: int) -> torch.Tensor:
    check_tensor(OP, name, idx, ndim=ndim, dtypes=(torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8))
    idx = idx.to(torch.int64)
    if idx.numel() and not torch.compiler.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= t_total:
            raise InputError(f"{OP}: {name} holds indices outside [0, {t_total}) (min {lo}, max {hi})")
    return idx


def nce(
    context: torch.Tensor,
    targets: torch.Tensor,
    pos_idx: torch.Tensor,
    neg_idx: torch.Tensor,
    temperature: float = 0.1,
    reduction: str = "sum",
    backend: str | None = None,
) -> torch.Tensor:
    """wav2vec2 contrastive (InfoNCE) loss with negatives given as indices into ``targets``.

    logits = cos(c_i, [t_pos(i), t_neg(i, 1..K)]) / temperature, -inf for a negative whose
    vector equals the positive's, loss = cross-entropy with the positive as class 0
    (see :mod:`sepkit.kernels.reference.nce`). Sample the indices with
    :func:`sepkit.losses.sample_negatives`.

    Args:
        context: (N, D) context vectors of the N selected (masked) steps, fp32/fp16/bf16
            (float64 on the torch backend).
        targets: (T_total, D) target vectors of all steps (e.g. quantized features of a batch
            flattened to B * T rows), same dtype and device.
        pos_idx: (N,) integer row of ``targets`` holding each step's positive.
        neg_idx: (N, K) integer rows of ``targets`` holding each step's negatives (duplicates
            allowed; K = 0 gives loss 0).
        temperature: softmax temperature > 0 (wav2vec2: 0.1); 0.01 .. 1 is the tested range.
        reduction: "sum" (wav2vec2), "mean" or "none" ((N,) per-step losses).
        backend: "triton", "torch" (reference) or None (automatic, see ``sepkit.kernels``).
    Returns:
        float32 loss (float64 for float64 inputs): 0-d, or (N,) for "none". Gradients flow to
        context and targets.
    """
    d = check_row_sets(OP, "context", context, "targets", targets)
    check_same_device(OP, context=context, pos_idx=pos_idx, neg_idx=neg_idx)  # TypeError for non-tensors
    n, t_total = context.shape[0], targets.shape[0]
    pos_idx = _check_indices("pos_idx", pos_idx, 1, t_total)
    neg_idx = _check_indices("neg_idx", neg_idx, 2, t_total)
    if pos_idx.shape[0] != n:
        raise InputError(f"{OP}: pos_idx has {pos_idx.shape[0]} entries but context has {n} rows")
    if neg_idx.shape[0] != n:
        raise InputError(f"{OP}: neg_idx has {neg_idx.shape[0]} rows but context has {n} rows")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise InputError(f"{OP}: temperature must be a finite number > 0, got {temperature!r}")
    if reduction not in REDUCTIONS:
        raise InputError(f"{OP}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not torch.compiler.is_compiling():
        check_finite(OP, "context", context)
        check_finite(OP, "targets", targets)
    reasons = [f"D = {d} > {MAX_DIM} (one row per program in registers)"] if d > MAX_DIM else []
    if resolve_backend(OP, backend, [context, targets], reasons) == "torch":
        math_dtype = torch.float64 if context.dtype == torch.float64 else torch.float32
        return nce_reference(context.to(math_dtype), targets.to(math_dtype), pos_idx, neg_idx, float(temperature),
                             reduction)
    loss, _ = _nce_fwd(context, targets, pos_idx, neg_idx, float(temperature))
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


__all__ = ["nce", "MAX_DIM"]
