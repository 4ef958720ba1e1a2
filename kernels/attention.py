"""Multi-head scaled dot-product attention, flash-style: Triton kernels, autograd op, public function.

``attention(q, k, v, kv_lengths=None, causal=False, scale=None, backend=None)`` computes
softmax(q k^T * scale + mask) v for q (B, H, Lq, Dh) and k, v (B, H, Lk, Dh) without ever holding
the (Lq, Lk) matrix. Masking rules (``sepkit.kernels.reference.attention``): keys past
``kv_lengths[b]`` are ignored (never even read), the causal mask is bottom-right aligned
(query i sees keys j <= i + Lk - Lq), a row with no valid key has zero output and zero gradient.

Kernels (fp32 arithmetic whatever the storage dtype; fp32 storage uses exact IEEE fp32 dots unless
``torch.get_float32_matmul_precision()`` is "high" or "medium" (then TF32 tensor cores);
offsets in int64; inputs with any strides whose last dimension is contiguous):

* forward: one program per (query block, batch x head) streams key blocks with the online
  softmax in base 2 (log2(e) folded into the scale), and stores O and the row log-sum-exp
  (base 2, +inf for rows without a key). Key blocks that every row of the query block sees run
  without masks; only boundary blocks (padding, the causal diagonal) are masked.
* split keys (flash-decoding): when the query blocks cannot fill the device (few queries over a
  long memory, e.g. Lq = 4 over Lk = 8192), the keys are cut into chunks processed in parallel;
  a combine kernel merges the fp32 partial outputs by their log-sum-exp.
* backward: Delta = rowsum(O * dO) first, then a dK/dV kernel (one program per key block, looping
  over the query blocks that see it) and a dQ kernel (one per query block and key split, the
  splits summed in order): P is recomputed from the stored log-sum-exp, no atomics, so results
  are deterministic run to run.
* block sizes: autotuned on CUDA (short Hopper-oriented lists, pruned to the problem, keyed on
  lengths bucketed to powers of two); a fixed 16 x 16 tile under the interpreter.

Registered as the custom ops ``sepkit::attention_fwd`` / ``sepkit::attention_bwd`` with fake
implementations and an autograd formula, so ``torch.compile(fullgraph=True)`` traces through.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from sepkit.errors import InputError, InputTypeError

from . import _checks
from ._alloc import empty
from ._backend import HAS_TRITON, INTERPRET, is_automatic, resolve_backend
from ._checks import check_finite, check_same_device, check_same_dtype, check_tensor
from .reference.attention import attention_reference

OP = "attention"

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _load_tile(base, rows, stride, cols, row_limit, d_mask, CHECK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
        """A (rows, head dim) tile; rows >= ``row_limit`` and padded head-dim columns read as 0."""
        ptrs = base + rows[:, None] * stride + cols[None, :]
        if CHECK_ROWS:
            if EVEN_D:
                tile = tl.load(ptrs, mask=(rows < row_limit)[:, None], other=0.0)
            else:
                tile = tl.load(ptrs, mask=(rows < row_limit)[:, None] & d_mask[None, :], other=0.0)
        else:
            if EVEN_D:
                tile = tl.load(ptrs)
            else:
                tile = tl.load(ptrs, mask=d_mask[None, :], other=0.0)
        return tile

    @triton.jit
    def _key_range(start_m, kv_len, diag, split, SPLITS, LK,
                   CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Key blocks of the query block at ``start_m`` within key split ``split``:
        [lo, full) need no mask, [full, hi) do."""
        hi = kv_len
        full = kv_len
        if CAUSAL:
            hi = tl.minimum(hi, start_m + BLOCK_M + diag)   # past the last row's diagonal
            full = tl.minimum(full, start_m + diag + 1)      # seen by every row of the block
        full = tl.maximum(full, 0) // BLOCK_N * BLOCK_N
        chunk = tl.cdiv(tl.cdiv(LK, SPLITS), BLOCK_N) * BLOCK_N  # keys per split, whole blocks
        lo = split * chunk
        top = lo + chunk
        full = tl.minimum(tl.maximum(full, lo), top)
        hi = tl.minimum(tl.maximum(hi, lo), top)
        return lo, full, hi

    @triton.jit
    def _fwd_block(
        acc, l_i, m_i, q, k_base, v_base, skn, svn, offs_m, offs_d, d_mask, kv_len, diag, start_n, qk_scale,
        MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        """One key block of the online softmax (base 2): returns the updated (acc, l_i, m_i)."""
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        k = _load_tile(k_base, offs_n, skn, offs_d, kv_len, d_mask, MASKED, EVEN_D)
        v = _load_tile(v_base, offs_n, svn, offs_d, kv_len, d_mask, MASKED, EVEN_D)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASKED:
            valid = (offs_n < kv_len)[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None] + diag)
            qk = tl.where(valid, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        return acc, l_i, m_new

    @triton.jit
    def _attn_fwd_kernel(
        Q, K, V, O, LSE, LENS,
        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, so_split, sl_split,
        H, LQ, LK, qk_scale, SPLITS, LQ_KEY, LK_KEY,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
        HAS_LENS: tl.constexpr, PARTIAL: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """O and the base-2 row LSE of one query block over one key split (all keys if SPLITS = 1).

        PARTIAL (SPLITS > 1): O is a float32 partial result per split and a split without a valid
        key stores LSE = -inf; otherwise a row without a valid key stores O = 0, LSE = +inf.
        """
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        b = pid_bh // H
        h = pid_bh % H
        start_m = pid_m * BLOCK_M
        offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        m_mask = offs_m < LQ
        if HAS_LENS:
            kv_len = tl.minimum(tl.maximum(tl.load(LENS + b), 0), LK)  # memory-safe even unchecked (compiled)
        else:
            kv_len = LK
        diag = LK - LQ
        q = _load_tile(Q + b * sqb + h * sqh, offs_m, sqm, offs_d, LQ, d_mask, True, EVEN_D)
        k_base = K + b * skb + h * skh
        v_base = V + b * svb + h * svh
        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)  # finite: fully masked blocks give p = 0, not NaN
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        lo, full, hi = _key_range(start_m, kv_len, diag, split, SPLITS, LK, CAUSAL, BLOCK_M, BLOCK_N)
        for start_n in range(lo, full, BLOCK_N):
            acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, skn, svn, offs_m, offs_d, d_mask,
                                       kv_len, diag, start_n, qk_scale, False, CAUSAL, EVEN_D, PRECISION, BLOCK_N)
        for start_n in range(full, hi, BLOCK_N):
            acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, skn, svn, offs_m, offs_d, d_mask,
                                       kv_len, diag, start_n, qk_scale, True, CAUSAL, EVEN_D, PRECISION, BLOCK_N)
        has_key = l_i > 0.0
        l_safe = tl.where(has_key, l_i, 1.0)
        out = acc / l_safe[:, None]  # rows without a valid key: acc = 0, out = 0
        if PARTIAL:
            lse = tl.where(has_key, m_i + tl.math.log2(l_safe), float("-inf"))
        else:
            lse = tl.where(has_key, m_i + tl.math.log2(l_safe), float("inf"))
        split64 = split.to(tl.int64)
        o_ptrs = O + split64 * so_split + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
        tl.store(LSE + split64 * sl_split + pid_bh * LQ + offs_m, lse, mask=m_mask)

    @triton.jit
    def _attn_fwd_combine_kernel(
        OP, LSEP, O, LSE, SPLITS, so_split, sl_split, sob, soh, som, H, LQ,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """Merges the per-split partial outputs (float32, contiguous) by their LSE, in split order."""
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < LQ
        mask = m_mask[:, None] & (offs_d < HEAD_DIM)[None, :]
        part = pid_bh * LQ * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
        m = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        den = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        lse_ptrs = LSEP + pid_bh * LQ + offs_m
        o_ptrs = OP + part
        for _ in range(0, SPLITS):
            ls = tl.load(lse_ptrs, mask=m_mask, other=float("-inf"))
            os = tl.load(o_ptrs, mask=mask, other=0.0)
            lse_ptrs += sl_split
            o_ptrs += so_split
            m_new = tl.maximum(m, ls)
            a = tl.math.exp2(m - m_new)
            w = tl.math.exp2(ls - m_new)
            acc = acc * a[:, None] + w[:, None] * os
            den = den * a + w
            m = m_new
        has_key = den > 0.0
        den_safe = tl.where(has_key, den, 1.0)
        tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :],
                 (acc / den_safe[:, None]).to(O.dtype.element_ty), mask=mask)
        tl.store(LSE + pid_bh * LQ + offs_m, tl.where(has_key, m + tl.math.log2(den_safe), float("inf")), mask=m_mask)

    @triton.jit
    def _attn_bwd_delta_kernel(
        O, DO, DELTA, sob, soh, som, sdb, sdh, sdm, H, LQ,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    ):
        """Delta = rowsum(O * dO) in fp32, (B*H, LQ)."""
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        mask = (offs_m < LQ)[:, None] & (offs_d < HEAD_DIM)[None, :]
        o = tl.load(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DELTA + pid_bh * LQ + offs_m, tl.sum(o * do, 1), mask=offs_m < LQ)

    @triton.jit
    def _dkdv_block(
        dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqm, sdm, offs_n, offs_d, d_mask, kv_len, diag,
        start_m, LQ, qk_scale,
        MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr,
    ):
        offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        m_mask = offs_m < LQ
        q = _load_tile(q_base, offs_m, sqm, offs_d, LQ, d_mask, True, EVEN_D)
        do = _load_tile(do_base, offs_m, sdm, offs_d, LQ, d_mask, True, EVEN_D)
        lse = tl.load(lse_base + offs_m, mask=m_mask, other=float("inf"))  # +inf: p = 0 (no row / no key)
        delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
        qkt = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(qkt - lse[None, :])
        if MASKED:
            valid = (offs_n < kv_len)[:, None]
            if CAUSAL:
                valid = valid & (offs_n[:, None] <= offs_m[None, :] + diag)
            pt = tl.where(valid, pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        Q, K, V, DO, LSE, DELTA, DK, DV, LENS,
        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, sg_split,
        H, LQ, LK, qk_scale, scale, SPLITS, LQ_KEY, LK_KEY,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
        HAS_LENS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """dK, dV of one key block, looping over the query blocks that see it (no atomics).

        dK and dV are written contiguous (B, H, LK, HEAD_DIM); padded keys get zeros.
        """
        pid_n = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // H
        h = pid_bh % H
        start_n = pid_n * BLOCK_N
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        if HAS_LENS:
            kv_len = tl.minimum(tl.maximum(tl.load(LENS + b), 0), LK)  # memory-safe even unchecked (compiled)
        else:
            kv_len = LK
        diag = LK - LQ
        k = _load_tile(K + b * skb + h * skh, offs_n, skn, offs_d, kv_len, d_mask, True, EVEN_D)
        v = _load_tile(V + b * svb + h * svh, offs_n, svn, offs_d, kv_len, d_mask, True, EVEN_D)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        q_base = Q + b * sqb + h * sqh
        do_base = DO + b * sdb + h * sdh
        lse_base = LSE + pid_bh * LQ
        delta_base = DELTA + pid_bh * LQ
        # Query blocks [lo, mid) need the mask, [mid, end) see every key of this block; a block of
        # padded keys only visits none (its gradients are zero).
        lo = 0
        mid = 0
        if CAUSAL:
            lo = tl.maximum(start_n - diag, 0) // BLOCK_M * BLOCK_M
            mid = tl.maximum(tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - diag, 0), BLOCK_M) * BLOCK_M, lo)
        end = tl.where(start_n < kv_len, LQ, 0)
        mid = tl.minimum(tl.where(start_n + BLOCK_N > kv_len, end, mid), end)
        for start_m in range(lo, mid, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqm, sdm, offs_n, offs_d,
                                 d_mask, kv_len, diag, start_m, LQ, qk_scale, True, CAUSAL, EVEN_D, PRECISION, BLOCK_M)
        for start_m in range(mid, end, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqm, sdm, offs_n, offs_d,
                                 d_mask, kv_len, diag, start_m, LQ, qk_scale, False, CAUSAL, EVEN_D, PRECISION, BLOCK_M)
        out_mask = (offs_n < LK)[:, None] & d_mask[None, :]
        out_offs = pid_bh * LK * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(DK + out_offs, (dk * scale).to(DK.dtype.element_ty), mask=out_mask)
        tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _dq_block(
        dq, q, do, lse, delta, k_base, v_base, skn, svn, offs_m, offs_d, d_mask, kv_len, diag, start_n, qk_scale,
        MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        k = _load_tile(k_base, offs_n, skn, offs_d, kv_len, d_mask, MASKED, EVEN_D)
        v = _load_tile(v_base, offs_n, svn, offs_d, kv_len, d_mask, MASKED, EVEN_D)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(qk - lse[:, None])
        if MASKED:
            valid = (offs_n < kv_len)[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None] + diag)
            p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        return dq

    @triton.jit
    def _attn_bwd_dq_kernel(
        Q, K, V, DO, LSE, DELTA, DQ, LENS,
        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, sg_split,
        H, LQ, LK, qk_scale, scale, SPLITS, LQ_KEY, LK_KEY,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr, CAUSAL: tl.constexpr,
        HAS_LENS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        """dQ of one query block over one key split, recomputing P block by block.

        DQ is contiguous (SPLITS, B, H, LQ, HEAD_DIM) (split stride ``sg_split``; 0 when SPLITS = 1);
        the host sums the splits in order (deterministic).
        """
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        b = pid_bh // H
        h = pid_bh % H
        start_m = pid_m * BLOCK_M
        offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        m_mask = offs_m < LQ
        if HAS_LENS:
            kv_len = tl.minimum(tl.maximum(tl.load(LENS + b), 0), LK)  # memory-safe even unchecked (compiled)
        else:
            kv_len = LK
        diag = LK - LQ
        q = _load_tile(Q + b * sqb + h * sqh, offs_m, sqm, offs_d, LQ, d_mask, True, EVEN_D)
        do = _load_tile(DO + b * sdb + h * sdh, offs_m, sdm, offs_d, LQ, d_mask, True, EVEN_D)
        lse = tl.load(LSE + pid_bh * LQ + offs_m, mask=m_mask, other=float("inf"))
        delta = tl.load(DELTA + pid_bh * LQ + offs_m, mask=m_mask, other=0.0)
        k_base = K + b * skb + h * skh
        v_base = V + b * svb + h * svh
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        lo, full, hi = _key_range(start_m, kv_len, diag, split, SPLITS, LK, CAUSAL, BLOCK_M, BLOCK_N)
        for start_n in range(lo, full, BLOCK_N):
            dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, skn, svn, offs_m, offs_d, d_mask, kv_len, diag,
                           start_n, qk_scale, False, CAUSAL, EVEN_D, PRECISION, BLOCK_N)
        for start_n in range(full, hi, BLOCK_N):
            dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, skn, svn, offs_m, offs_d, d_mask, kv_len, diag,
                           start_n, qk_scale, True, CAUSAL, EVEN_D, PRECISION, BLOCK_N)
        dq_ptrs = DQ + split.to(tl.int64) * sg_split + pid_bh * LQ * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
        tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


_LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128


def dot_precision(dtype: torch.dtype):
    """``tl.dot`` input precision for a storage dtype: fp32 follows
    ``torch.get_float32_matmul_precision()`` as PyTorch's own matmuls do ("highest": exact
    "ieee" FMA dots; "high" / "medium": "tf32" tensor cores, inputs rounded to 10 mantissa
    bits); fp16 / bf16 always use tensor cores (None: Triton's default)."""
    if dtype != torch.float32:
        return None
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _bucket(n: int) -> int:
    """Autotuning key for a length: the next power of two (at least 16), so varying audio lengths
    re-tune O(log L) times, not once per length."""
    return max(16, 1 << (max(int(n), 1) - 1).bit_length())


def _fixed(bm: int, bn: int) -> dict:
    return {"BLOCK_M": bm, "BLOCK_N": bn}


if HAS_TRITON and not INTERPRET:
    def _configs(shapes):
        return [triton.Config(_fixed(bm, bn), num_warps=w, num_stages=s) for bm, bn, w, s in shapes]

    #: Shared memory a config may plan for (bytes): within the per-block limit of both targets
    #: (A100 163 KB, H100 227 KB), so no config is even tried that could not launch.
    _SMEM_BUDGET = 160 * 1024
    #: Tiles for exact fp32 (``PRECISION="ieee"``): the dots are FMA loops whose operands and
    #: accumulators all live in registers, so fp32 gets its own small tiles. Each tile on 8 warps
    #: and on 4: exact fp32 takes the 4-warp variant when the resident (tile rows, head dim) block
    #: has at most 1024 elements (head dim 32, or 16-row tiles at head dim 64), where on 8 warps
    #: ptxas settled at 64 or 80 registers and spilled 4 to 12 B on sm_90a; 8 warps otherwise
    #: (``python -m perf static``, perf/NOTES.md).
    #: Beyond head dim 64 exact fp32 runs one stage: the dK/dV 16x32 tile at head dim 128 with two
    #: stages spilled 16 B on sm_80 (causal), one stage is clean on both targets.
    _IEEE = {(32, 32, 8, 2), (16, 32, 8, 2), (32, 32, 4, 2), (16, 32, 4, 2), (16, 32, 8, 1)}
    _IEEE_FOUR_WARPS = 1024

    #: 16-bit tiles that spill on Ampere (sm_8x: mma.sync needs more registers than Hopper's
    #: wgmma), per kernel, from every-config ``python -m perf static`` compiles for sm_80: 4 to 56 B.
    _NOT_AMPERE = {
        "fwd": ((128, 128, 8, 3), (64, 128, 4, 3), (64, 64, 4, 3)),
        "dkdv": ((64, 128, 8, 3), (64, 64, 4, 3), (64, 64, 8, 3), (16, 64, 4, 3)),
        "dq": ((128, 64, 8, 3),),
    }
    #: The compute capability's major version the config filters assume for tensors that are not
    #: on a GPU (``python -m perf static`` sets it per target); a CUDA tensor's own device decides
    #: otherwise.
    STATIC_ARCH = 9

    def _arch(t: torch.Tensor) -> int:
        return torch.cuda.get_device_capability(t.device)[0] if t.is_cuda else STATIC_ARCH

    def _keep_for(acc_blocks: tuple, stream: str, resident: int, not_fp32: tuple = (), kernel: str = ""):
        """Config filter: tiles no larger than the (bucketed) problem, fp32 accumulators within
        64 registers per thread (``acc_blocks``: the tile axes of the (axis, head dim)
        accumulators: dK and dV for the dK/dV kernel), planned shared memory within the budget
        (two (``stream``, head dim) operand tiles per pipeline stage plus ``resident`` tiles of
        the other axis), the exact-fp32 tile list for ``PRECISION="ieee"`` (the tensor-core list
        otherwise; with fp32 storage less the ``not_fp32`` tiles, which spill there: found by
        ``python -m perf static``)."""

        def keep(configs, named_args, **kwargs):
            lq = _bucket(named_args["LQ"])
            lk = _bucket(named_args["LK"])
            bd = kwargs.get("BLOCK_D", named_args.get("BLOCK_D", 64))
            ieee = kwargs.get("PRECISION", named_args.get("PRECISION")) == "ieee"
            size = named_args["Q"].element_size()
            not_here = _NOT_AMPERE.get(kernel, ()) if _arch(named_args["Q"]) == 8 and size == 2 else ()

            # fp32 storage beyond head dim 64 holds 4-byte operand tiles too large for the
            # tensor-core tiles (TF32 spills): it takes the small 8-warp tiles as well
            small = ieee or (size == 4 and bd > 64)

            def own_list(c):
                """In the list of this precision, with the warps and stages it takes there."""
                bm, bn, w, s = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
                if ((bm, bn, w, s) in _IEEE) != small:
                    return False
                if not small:
                    return True
                held = c.kwargs[acc_blocks[0]] * bd  # the resident (tile rows, head dim) block
                want = (4 if ieee and held <= _IEEE_FOUR_WARPS else 8, 1 if ieee and bd > 64 else 2)
                return (w, s) == want

            def fits(c, bounded=True):
                bm, bn, w, s = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
                if not own_list(c):
                    return False
                # small tiles: the 8-warp tile's budget (the 4-warp variants are checked statically)
                budget_warps = 8 if small else w
                if bounded and (bm > lq or bn > lk):
                    return False
                if (size == 4 and (bm, bn, w, s) in not_fp32) or (bm, bn, w, s) in not_here:
                    return False
                acc = sum(c.kwargs[a] for a in acc_blocks) * bd
                if small:  # the dots hold operands and their (BLOCK_M, BLOCK_N) product in
                    acc += bm * bn  # registers too: half the budget (a quarter for FMA dots)
                if acc > (512 if ieee else 1024 if small else 2048) * budget_warps:
                    return False
                other = bn if stream == "BLOCK_M" else bm
                return (2 * s * c.kwargs[stream] + resident * other) * bd * size <= _SMEM_BUDGET

            kept = [c for c in configs if fits(c)]
            if kept:
                return kept
            # a problem smaller than every tile: the smallest tile that passes the other checks
            own = [c for c in configs if fits(c, bounded=False)] or [c for c in configs if own_list(c)]
            return [min(own, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]

        return {"early_config_prune": keep}

    _KEY = ["LQ_KEY", "LK_KEY", "SPLITS", "HEAD_DIM", "CAUSAL", "HAS_LENS", "PRECISION"]
    _IEEE_LIST = sorted(_IEEE, reverse=True)
    # Hopper-oriented short lists: (BLOCK_M, BLOCK_N, warps, stages), then the exact-fp32 tiles.
    _fwd = triton.autotune(_configs([
        (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 128, 4, 3),
        (32, 64, 4, 3), (16, 64, 4, 4), (16, 128, 4, 3),
    ] + _IEEE_LIST), key=_KEY, prune_configs_by=_keep_for(("BLOCK_M",), "BLOCK_N", 1,
                                                          ((128, 64, 4, 3), (32, 64, 4, 3)), "fwd"))(
        _attn_fwd_kernel)
    _dkdv = triton.autotune(_configs([
        (64, 128, 8, 3), (64, 64, 4, 3), (64, 64, 8, 3), (32, 64, 4, 3), (32, 64, 8, 3), (16, 64, 4, 3),
    ] + _IEEE_LIST), key=_KEY, prune_configs_by=_keep_for(("BLOCK_N", "BLOCK_N"), "BLOCK_M", 2,
                                              ((64, 128, 8, 3), (64, 64, 8, 3), (64, 64, 4, 3),
                                               (32, 64, 4, 3), (32, 64, 8, 3)), "dkdv"))(
        _attn_bwd_dkdv_kernel)
    _dq = triton.autotune(_configs([
        (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3), (64, 32, 4, 3), (16, 64, 4, 3), (16, 128, 4, 3),
    ] + _IEEE_LIST), key=_KEY, prune_configs_by=_keep_for(("BLOCK_M",), "BLOCK_N", 2,
                                            ((128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (16, 32, 8, 2)),
                                            "dq"))(
        _attn_bwd_dq_kernel)
    _FIXED: dict = {}
    _MIN_SPLIT_KEYS = 256
elif HAS_TRITON:
    # The interpreter: one small fixed tile, so tests cross block boundaries at small sizes, and a
    # pretend 4-SM device with short key splits, so split-key paths run at test sizes too.
    _fwd, _dkdv, _dq = _attn_fwd_kernel, _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel
    _FIXED = _fixed(16, 16)
    _MIN_SPLIT_KEYS = 32

_SM_COUNT: dict = {}


def _sm_count(device: torch.device) -> int:
    if INTERPRET or device.type != "cuda":
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _num_splits(bh: int, lq: int, lk: int, device: torch.device) -> int:
    """Key splits for few queries over many keys (flash-decoding): one program per (query block,
    head) would leave most SMs idle, so the keys are cut into up to 64 chunks processed in parallel
    and merged by their log-sum-exp. 1 (no split) whenever the query blocks fill the device."""
    if lq > 64:
        return 1
    programs = bh * -(-lq // 16)
    sms = _sm_count(device)
    if programs >= sms:
        return 1
    return max(1, min(-(-2 * sms // programs), -(-lk // _MIN_SPLIT_KEYS), 64))


def _grid(meta_block: str, length: int, bh: int, splits: int = 1):
    return lambda meta: (triton.cdiv(length, meta[meta_block]), bh, splits)


def _common(q: torch.Tensor, k: torch.Tensor, kv_lengths, causal: bool) -> dict:
    dh = q.shape[-1]
    block_d = max(16, 1 << (dh - 1).bit_length())
    return dict(
        LQ_KEY=_bucket(q.shape[2]), LK_KEY=_bucket(k.shape[2]),
        HEAD_DIM=dh, BLOCK_D=block_d, EVEN_D=block_d == dh, CAUSAL=causal,
        HAS_LENS=kv_lengths is not None, PRECISION=dot_precision(q.dtype), **_FIXED,
    )


def _last_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("sepkit::attention_fwd", mutates_args=())
def _attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lengths: Optional[torch.Tensor], causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, Lq, Dh) contiguous, row log-sum-exp in base 2 (B, H, Lq) float32, +inf if no key)."""
    q, k, v = (_last_contiguous(t) for t in (q, k, v))
    b, h, lq, dh = q.shape
    lk = k.shape[2]
    out = empty(b, h, lq, dh, dtype=q.dtype, device=q.device)
    lse = empty(b, h, lq, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    meta = _common(q, k, kv_lengths, causal)
    lens = kv_lengths if kv_lengths is not None else q
    splits = _num_splits(b * h, lq, lk, q.device)
    in_strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    if splits == 1:
        _fwd[_grid("BLOCK_M", lq, b * h)](
            q, k, v, out, lse, lens, *in_strides, *out.stride()[:3], 0, 0,
            h, lq, lk, scale * _LOG2E, 1, PARTIAL=False, **meta,
        )
        return out, lse
    part_o = empty(splits, b, h, lq, dh, dtype=torch.float32, device=q.device)
    part_lse = empty(splits, b, h, lq, dtype=torch.float32, device=q.device)
    _fwd[_grid("BLOCK_M", lq, b * h, splits)](
        q, k, v, part_o, part_lse, lens, *in_strides, *part_o.stride()[1:4], part_o.stride(0), part_lse.stride(0),
        h, lq, lk, scale * _LOG2E, splits, PARTIAL=True, **meta,
    )
    block = 16
    _attn_fwd_combine_kernel[(triton.cdiv(lq, block), b * h)](
        part_o, part_lse, out, lse, splits, part_o.stride(0), part_lse.stride(0), *out.stride()[:3], h, lq,
        HEAD_DIM=dh, BLOCK_D=meta["BLOCK_D"], BLOCK_M=block,
    )
    return out, lse


@_attention_fwd.register_fake
def _(q, k, v, kv_lengths, causal, scale):
    b, h, lq, dh = q.shape
    return q.new_empty(b, h, lq, dh), q.new_empty(b, h, lq, dtype=torch.float32)


@torch.library.custom_op("sepkit::attention_bwd", mutates_args=())
def _attention_bwd(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    kv_lengths: Optional[torch.Tensor], causal: bool, scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in the dtypes of q, k, v."""
    do, q, k, v = (_last_contiguous(t) for t in (do, q, k, v))
    b, h, lq, dh = q.shape
    lk = k.shape[2]
    dk = empty(b, h, lk, dh, dtype=k.dtype, device=k.device)
    dv = empty(b, h, lk, dh, dtype=v.dtype, device=v.device)
    if b * h == 0 or lq == 0:
        return empty(b, h, lq, dh, dtype=q.dtype, device=q.device), dk.zero_(), dv.zero_()
    meta = _common(q, k, kv_lengths, causal)
    delta = empty(b, h, lq, dtype=torch.float32, device=q.device)
    block = 16 if INTERPRET else 64
    _attn_bwd_delta_kernel[(triton.cdiv(lq, block), b * h)](
        out, do, delta, *out.stride()[:3], *do.stride()[:3], h, lq,
        HEAD_DIM=dh, BLOCK_D=meta["BLOCK_D"], BLOCK_M=block,
    )
    lens = kv_lengths if kv_lengths is not None else q
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    if lk > 0:
        _dkdv[_grid("BLOCK_N", lk, b * h)](
            q, k, v, do, lse, delta, dk, dv, lens, *strides, 0, h, lq, lk, scale * _LOG2E, scale, 1, **meta,
        )
    splits = _num_splits(b * h, lq, lk, q.device)
    if splits == 1:
        dq = empty(b, h, lq, dh, dtype=q.dtype, device=q.device)
    else:
        dq = empty(splits, b, h, lq, dh, dtype=torch.float32, device=q.device)
    _dq[_grid("BLOCK_M", lq, b * h, splits)](
        q, k, v, do, lse, delta, dq, lens, *strides, dq.stride(0) if splits > 1 else 0,
        h, lq, lk, scale * _LOG2E, scale, splits, **meta,
    )
    if splits > 1:
        dq = dq.sum(dim=0).to(q.dtype)  # fixed order over the splits: deterministic
    return dq, dk, dv


@_attention_bwd.register_fake
def _(do, q, k, v, out, lse, kv_lengths, causal, scale):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _attention_setup_context(ctx, inputs, output):
    q, k, v, kv_lengths, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_lengths)
    ctx.causal, ctx.scale = causal, scale
    ctx.mark_non_differentiable(lse)


def _attention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, kv_lengths = ctx.saved_tensors
    dq, dk, dv = _attention_bwd(grad_out, q, k, v, out, lse, kv_lengths, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None, None


_attention_fwd.register_autograd(_attention_backward, setup_context=_attention_setup_context)


def _triton_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    dh = q.shape[-1]
    if dh > MAX_HEAD_DIM:
        return [f"the Triton kernels take head dims up to {MAX_HEAD_DIM}, got {dh}"]
    return []


def attention_sdpa(q, k, v, kv_lengths=None, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """The attention of :func:`attention` through ``torch.nn.functional.scaled_dot_product_attention``
    (PyTorch's fused eager kernels): the automatic choice for tensors Triton does not take (CPU).

    Same rules as the reference: keys past ``kv_lengths`` are zeroed before the call (so NaN in
    padding cannot reach the output through a 0 weight), the causal mask is bottom-right aligned,
    a row without a valid key is 0. Inputs are not checked here (:func:`attention` does it).
    """
    b, _, lq, _ = q.shape
    lk = k.shape[2]
    F = torch.nn.functional
    if kv_lengths is None and (not causal or lq == lk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    keys = torch.arange(lk, device=q.device)
    mask = torch.ones(b, 1, lq, lk, dtype=torch.bool, device=q.device)
    if kv_lengths is not None:
        valid = keys[None, :] < kv_lengths.to(q.device)[:, None].long()  # (B, Lk)
        mask = mask & valid[:, None, None, :]
        k = k.masked_fill(~valid[:, None, :, None], 0)
        v = v.masked_fill(~valid[:, None, :, None], 0)
    if causal:
        mask = mask & (keys[None, :] <= torch.arange(lq, device=q.device)[:, None] + (lk - lq))
    row_valid = mask.any(dim=-1, keepdim=True)  # (B, 1, Lq, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~row_valid, scale=scale)
    return out * row_valid.to(out.dtype)


def _check_lengths(kv_lengths, batch: int, lk: int, device) -> torch.Tensor | None:
    if kv_lengths is None:
        return None
    if isinstance(kv_lengths, (list, tuple)):
        kv_lengths = torch.tensor(kv_lengths, dtype=torch.int32, device=device)
    if not isinstance(kv_lengths, torch.Tensor):
        raise InputTypeError(f"{OP}: kv_lengths must be a tensor or a list of ints, got {type(kv_lengths).__name__}")
    if kv_lengths.is_floating_point() or kv_lengths.is_complex() or kv_lengths.dtype == torch.bool:
        raise InputTypeError(f"{OP}: kv_lengths must have an integer dtype, got {kv_lengths.dtype}")
    if kv_lengths.shape != (batch,):
        raise InputError(f"{OP}: kv_lengths must have shape ({batch},) (one length per batch element), "
                         f"got {tuple(kv_lengths.shape)}")
    kv_lengths = kv_lengths.to(device=device, dtype=torch.int32)
    if not torch.compiler.is_compiling():  # a value check is a graph break under torch.compile
        lo, hi = int(kv_lengths.min()) if batch else 0, int(kv_lengths.max()) if batch else 0
        if lo < 0 or hi > lk:
            raise InputError(f"{OP}: kv_lengths must lie in [0, Lk={lk}], got values in [{lo}, {hi}]")
    return kv_lengths


def _check_finite_inputs(q, k, v, kv_lengths) -> None:
    """``SEPKIT_CHECK_FINITE=1``: NaN / Inf in q or in a valid key or value raises (padding is free)."""
    check_finite(OP, "q", q)
    for name, t in (("k", k), ("v", v)):
        bad = ~torch.isfinite(t)
        if kv_lengths is not None:
            valid = torch.arange(t.shape[2], device=t.device) < kv_lengths.to(torch.int64)[:, None]
            bad = bad & valid[:, None, :, None]
        if bool(bad.any()):
            raise InputError(f"{OP}: {name} contains NaN or Inf in a valid position (within kv_lengths)")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_lengths: torch.Tensor | Sequence[int] | None = None,
    causal: bool = False,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v, flash-style on the Triton backend.

    Args:
        q: queries (B, H, Lq, Dh), float32/float16/bfloat16 (float64 on the torch backend).
        k: keys (B, H, Lk, Dh), same dtype and device as ``q``; Lk may differ from Lq either way.
        v: values (B, H, Lk, Dh).
        kv_lengths: number of valid keys per batch element, integer (B,) in [0, Lk] (a tensor or a
            list of ints), or None when every key is valid. Keys past the length are ignored
            entirely (even NaN there does not reach the output).
        causal: query i sees keys j <= i + Lk - Lq (bottom-right aligned causal mask).
        scale: score scale, ``1 / sqrt(Dh)`` when None.
        backend: "triton", "torch" (the reference) or None (automatic: Triton for CUDA tensors
            it supports, :func:`attention_sdpa` otherwise).

    Returns:
        (B, H, Lq, Dh) in the dtype of ``q``. Rows with no valid key are zero (and pass zero
        gradient back). Inputs are not checked for NaN / Inf unless ``SEPKIT_CHECK_FINITE=1``:
        a NaN query row gives a NaN output row (see ``sepkit.kernels._checks``).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(OP, name, t, ndim=4)
    check_same_dtype(OP, q=q, k=k, v=v)
    check_same_device(OP, q=q, k=k, v=v)
    b, h, lq, dh = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != dh:
        raise InputError(f"{OP}: k must have shape (B={b}, H={h}, Lk, Dh={dh}) to match q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise InputError(f"{OP}: v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if not isinstance(causal, bool):
        raise InputTypeError(f"{OP}: causal must be a bool, got {type(causal).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(dh)
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InputError(f"{OP}: scale must be a finite number or None, got {scale!r}")
    lk = k.shape[2]
    kv_lengths = _check_lengths(kv_lengths, b, lk, q.device)
    if _checks.CHECK_FINITE and not torch.compiler.is_compiling():
        _check_finite_inputs(q, k, v, kv_lengths)
    which = resolve_backend(OP, backend, (q, k, v), _triton_reasons(q, k, v))
    if which == "torch":
        if is_automatic(backend):
            return attention_sdpa(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=float(scale))
        return attention_reference(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=float(scale))
    out, _ = _attention_fwd(q, k, v, kv_lengths, causal, float(scale))
    return out


__all__ = ["attention", "attention_sdpa"]
