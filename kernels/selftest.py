"""Short correctness self-test of every kernel: what ``sepkit check`` runs.

Each :class:`Case` builds small random float64 inputs, runs the op on the Triton backend in each
storage dtype (compiled on a GPU, interpreted on a CPU under TRITON_INTERPRET=1) and compares the
forward output and every gradient with the float64 reference (``testing.compare_with_reference``).
Ops register their cases in ``CASES``; one case per op is enough here, the test-suite is thorough.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .testing import compare_with_reference


@dataclass
class Case:
    """One self-test: ``run(backend, **inputs())`` checked in each dtype, gradients for ``grad``."""

    op: str
    run: Callable
    inputs: Callable[[torch.Generator], dict]
    grad: tuple[str, ...] = ()
    keep_dtype: tuple[str, ...] = ()
    dot: bool = False  # uses tl.dot: bf16 is not checked under the interpreter (upstream gap)
    dtypes: tuple[torch.dtype, ...] = field(default=(torch.float32, torch.float16, torch.bfloat16))


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def _snake_case() -> Case:
    from .snake import snake

    def run(backend, x, alpha, beta):
        return snake(x, alpha, beta, dim=1, backend=backend)

    return Case(
        "snake", run,
        lambda g: dict(x=_randn(g, 2, 8, 67, scale=2.0), alpha=_randn(g, 8) + 1.0, beta=_randn(g, 8).abs() + 0.5),
        grad=("x", "alpha", "beta"), keep_dtype=("alpha", "beta"),
    )


def _stft_mask_case() -> Case:
    from .stft_mask import SGMSE_COMPRESSION, stft_mask

    def run(backend, spec, mask):
        return stft_mask(spec, mask, "complex", "tanh", SGMSE_COMPRESSION, backend=backend)

    return Case("stft_mask", run, lambda g: dict(spec=_randn(g, 2, 17, 9, 2), mask=_randn(g, 2, 17, 9, 2)),
                grad=("spec", "mask"))


def _mmd_case() -> Case:
    from .mmd import mmd

    def run(backend, x, y):
        return mmd(x, y, estimator="unbiased", backend=backend)

    # a clear discrepancy (shifted, wider y): the value is not a near-cancellation of its terms
    return Case("mmd", run, lambda g: dict(x=_randn(g, 29, 24), y=_randn(g, 21, 24, scale=1.3) + 0.8),
                grad=("x", "y"), dot=True)


def _nce_case() -> Case:
    from .nce import nce

    def inputs(g):
        targets = _randn(g, 15, 20)
        targets[14] = targets[0]  # a negative identical to a positive gets -inf
        pos = torch.randint(0, 15, (9,), generator=g)
        neg = torch.randint(0, 15, (9, 12), generator=g)
        pos[0], neg[0, 3] = 0, 14
        return dict(context=_randn(g, 9, 20), targets=targets, pos_idx=pos, neg_idx=neg)

    def run(backend, context, targets, pos_idx, neg_idx):
        return nce(context, targets, pos_idx, neg_idx, temperature=0.1, reduction="none", backend=backend)

    return Case("nce", run, inputs, grad=("context", "targets"))


def _attention_case() -> Case:
    from .attention import attention

    def run(backend, q, k, v, kv_lengths):
        return attention(q, k, v, kv_lengths=kv_lengths, causal=True, backend=backend)

    # Lq != Lk, a padded batch element, bottom-right causal (rows before the diagonal see no key)
    return Case("attention", run, lambda g: dict(q=_randn(g, 2, 2, 37, 32), k=_randn(g, 2, 2, 29, 32),
                                                 v=_randn(g, 2, 2, 29, 32), kv_lengths=torch.tensor([29, 17])),
                grad=("q", "k", "v"), dot=True)


#: Builders of the self-test cases, one per op.
CASES: list[Callable[[], Case]] = [_snake_case, _stft_mask_case]
CASES += [_mmd_case, _nce_case]
CASES += [_attention_case]


@dataclass
class Row:
    op: str
    backend: str
    device: str
    dtype: str
    max_rel_error: float
    tol: float
    passed: bool
    detail: str = ""


def run_selftest(device: torch.device | str, ops: list[str] | None = None, seed: int = 0) -> list[Row]:
    """Run every registered case (or those named in ``ops``) on ``device``; never raises per case."""
    from ._backend import INTERPRET

    device = torch.device(device)
    rows = []
    for build in CASES:
        case = build()
        if ops and case.op not in ops:
            continue
        for dtype in case.dtypes:
            if case.dot and INTERPRET and dtype == torch.bfloat16:
                continue
            gen = torch.Generator().manual_seed(seed)
            try:
                cmp = compare_with_reference(
                    case.run, case.inputs(gen), dtype=dtype, backend="triton", device=device,
                    grad=case.grad, keep_dtype=case.keep_dtype, seed=seed,
                )
                rows.append(Row(case.op, "triton", str(device), str(dtype).replace("torch.", ""),
                                cmp.max_error, cmp.tol, cmp.ok, cmp.describe()))
            except Exception as exc:  # report, keep going
                rows.append(Row(case.op, "triton", str(device), str(dtype).replace("torch.", ""),
                                float("nan"), 0.0, False, f"{type(exc).__name__}: {exc}"))
    return rows
