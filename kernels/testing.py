"""Comparison of an op against its float64 reference: shared by the test-suite and ``sepkit check``.

The error measure is normwise: ``max|out - ref| / max(max|ref|, floor)``, taken separately for the
forward output and for every gradient. The reference runs in float64 on the *same* values the
tested call sees (inputs are rounded to the storage dtype first), so the error measures the
computation, not the input rounding.

Tolerances (``TOLERANCES``), the bound on that error per storage dtype:

=========  =========  ============================================================
dtype      tolerance  why
=========  =========  ============================================================
float64    1e-9       same maths, different association order
float32    2e-5       fp32 accumulation over up to ~1e5 terms
float16    4e-3       output rounding 2^-11 plus fp32 maths on rounded operands
bfloat16   3e-2       output rounding 2^-8 plus fp32 maths on rounded operands
=========  =========  ============================================================

An op may pass a larger ``tol`` for a named reason (long reductions, a documented
approximation); the reason belongs next to the call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from ._alloc import poison_outputs

TOLERANCES = {
    torch.float64: 1e-9,
    torch.float32: 2e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}


def rel_error(out: torch.Tensor, ref: torch.Tensor, floor: float = 1e-6) -> float:
    """Normwise relative error of ``out`` against ``ref`` (NaN/Inf anywhere gives ``inf``)."""
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    if torch.is_complex(out):
        out, ref = torch.view_as_real(out), torch.view_as_real(ref)
    out = out.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(out).all()):
        # Non-finite entries must match the reference exactly (same position, same value).
        same = (out == ref) | (torch.isnan(out) & torch.isnan(ref))
        if not bool(same[~torch.isfinite(out) | ~torch.isfinite(ref)].all()):
            return float("inf")
        keep = torch.isfinite(out) & torch.isfinite(ref)
        out, ref = out[keep], ref[keep]
    if out.numel() == 0:
        return 0.0
    scale = max(float(ref.abs().max()), floor)
    return float((out - ref).abs().max()) / scale


@dataclass
class Comparison:
    """Errors of one call against the reference: ``errors['out']``, ``errors['grad_<name>']``."""

    dtype: torch.dtype
    errors: dict = field(default_factory=dict)
    tol: float = 0.0

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tol

    def describe(self) -> str:
        parts = ", ".join(f"{k}={v:.2e}" for k, v in self.errors.items())
        return f"dtype={self.dtype}, tol={self.tol:.1e}: {parts}"


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def compare_with_reference(
    run: Callable[..., torch.Tensor],
    inputs: Mapping[str, object],
    *,
    dtype: torch.dtype,
    backend: str,
    device: torch.device | str = "cpu",
    grad: tuple[str, ...] = (),
    keep_dtype: tuple[str, ...] = (),
    tol: float | None = None,
    seed: int = 0,
) -> Comparison:
    """Run ``run(backend=..., **inputs)`` in ``dtype`` and ``run(backend="torch", ...)`` in float64.

    ``inputs`` holds float64 tensors (cast to ``dtype`` for the tested call) and anything else
    (integer tensors, numbers, strings: passed as they are). Names in ``keep_dtype`` are cast to
    float32 rather than ``dtype`` (parameters an op keeps in fp32). Names in ``grad`` get
    gradients, compared with one shared random upstream gradient. Outputs of the tested call are
    poisoned before it runs.
    """
    gen = torch.Generator().manual_seed(seed)
    tested, ref = {}, {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            low = value.to(torch.float32 if name in keep_dtype else dtype)
            tested[name] = low.to(device).detach().requires_grad_(name in grad)
            ref[name] = low.to(torch.float64).detach().requires_grad_(name in grad)
        elif isinstance(value, torch.Tensor):
            tested[name], ref[name] = value.to(device), value
        else:
            tested[name] = ref[name] = value

    with poison_outputs():
        outs = _as_tuple(run(backend=backend, **tested))
    refs = _as_tuple(run(backend="torch", **ref))
    result = Comparison(dtype=dtype, tol=TOLERANCES[dtype] if tol is None else tol)
    for i, (o, r) in enumerate(zip(outs, refs)):
        result.errors["out" if len(outs) == 1 else f"out{i}"] = rel_error(o, r)
    if grad:
        # One upstream gradient per output, rounded to the output's dtype and shared by both sides.
        ups = [torch.randn(r.shape, generator=gen, dtype=torch.float64).to(o.dtype) for r, o in zip(refs, outs)]
        with poison_outputs():
            got = torch.autograd.grad(
                list(outs), [tested[n] for n in grad], [u.to(o.device) for u, o in zip(ups, outs)],
                allow_unused=True,
            )
        want = torch.autograd.grad(
            list(refs), [ref[n] for n in grad], [u.to(torch.float64) for u in ups], allow_unused=True,
        )
        for name, g, w in zip(grad, got, want):
            if g is None or w is None:
                if (g is None) != (w is None):
                    result.errors[f"grad_{name}"] = float("inf")
                continue
            result.errors[f"grad_{name}"] = rel_error(g, w)
    return result
