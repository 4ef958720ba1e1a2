"""``python -m perf traffic``: bytes a fused kernel must move vs bytes the eager reference moves.

For each op at a benchmark shape, forward and forward + backward:

- **fused** (counted from the shapes): every input read once, every output written once, plus
  for the backward the tensors saved for it read back, the incoming gradient read and the input
  gradients written. Intermediate scratch the kernels keep in registers costs nothing; small
  per-block partials (snake's parameter partial sums, nce's (N, K + 1) coefficients, attention's
  row statistics) are counted. Re-reads a tiled kernel makes through L2 (attention's K and V per
  query block, mmd's rows per tile) are not: this is the compulsory traffic, the floor.
- **eager** (measured on the CPU): the sepkit reference (``backend="torch"``) is run under a
  ``TorchDispatchMode`` that adds up, for every aten op dispatched (forward and autograd
  backward), the bytes of its tensor inputs and outputs. Ops whose output aliases an input (views,
  reshapes) move nothing; in-place ops count their result as written. ``torch.profiler`` with
  ``record_shapes`` gives the same op list but records input shapes only, so the outputs come
  from the dispatch mode; the op count from the profiler is reported as a cross-check.

The ratio eager / fused bounds the speedup a memory-bound fused kernel can reach over the eager
composition on any GPU (when both run at the same fraction of bandwidth).
Writes ``perf/results/traffic-<date>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

RESULTS = Path(__file__).resolve().parent / "results"


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class ByteCounter(TorchDispatchMode):
    """Sum of input + output bytes over every aten op dispatched while active."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _is_view(func):
            return out  # a view moves no bytes
        ins = list(_tensors(args)) + list(_tensors(kwargs))
        # in-place and out= results are written: their bytes count as outputs too
        self.bytes += sum(_nbytes(t) for t in ins) + sum(_nbytes(t) for t in _tensors(out))
        self.ops += 1
        return out


def _is_view(func) -> bool:
    """Whether ``func`` returns a view of an input (an alias that is not written)."""
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def eager_bytes(fn, inputs, backward: bool) -> tuple[int, int]:
    """(bytes, aten ops) of ``fn(*inputs)`` (and its backward with a ones gradient)."""
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    counter = ByteCounter()
    with counter:
        out = fn(*leaves)
        if backward:
            grads = [t for t in leaves if t.requires_grad]
            torch.autograd.grad(out, grads, torch.ones_like(out), allow_unused=True)
    return counter.bytes, counter.ops


def profiler_ops(fn, inputs) -> int:
    """Number of aten ops ``torch.profiler`` (record_shapes) sees in the forward (cross-check)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn(*inputs)
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children)


def _cases():
    """(op, shape label, eager function, inputs, fused fwd bytes, fused fwd+bwd bytes)."""
    from sepkit import kernels as K

    g = torch.Generator().manual_seed(0)
    cases = []

    # snake: (16, 1024, 1024) bf16 channels-first, fp32 alpha (bench_snake, T = 1024)
    B, C, T = 16, 1024, 1024
    x = torch.randn(B, C, T, generator=g).to(torch.bfloat16)
    a = torch.rand(C, generator=g) + 0.5
    n = x.numel() * 2
    fwd = 2 * n + 4 * C                       # read x, alpha; write y
    cases.append(("snake", f"B={B} C={C} T={T} bf16", lambda x, a: K.snake(x, a, backend="torch"), (x, a), fwd,
                  fwd + 3 * n + 8 * B * C))  # bwd: read g, x; write dx; fp32 partial sums (write + read)

    # stft_mask: complex mask, tanh bound in the SGMSE+ compressed domain, (16, 257, 1024) complex64
    B, F, T = 16, 257, 1024
    spec = torch.randn(B, F, T, 2, generator=g)
    mask = torch.randn(B, F, T, 2, generator=g)
    n = spec.numel() * 4
    for label, cfg in (("complex", dict(kind="complex", bound="none", compress=None)),
                       ("complex-tanh-compressed", dict(kind="complex", bound="tanh", compress=K.SGMSE_COMPRESSION))):
        cases.append(("stft_mask", f"{label} B={B} F={F} T={T} complex64",
                      (lambda cfg: lambda s, m: K.stft_mask(s, m, backend="torch", **cfg))(cfg), (spec, mask),
                      3 * n, 3 * n + 5 * n))  # bwd: read dy, spec, mask; write dspec, dmask

    # attention: B=4, H=8, L=1024, Dh=64, bf16 (bench_attention's smallest self-attention shape)
    B, H, L, D = 4, 8, 1024, 64
    q, k, v = (torch.randn(B, H, L, D, generator=g).to(torch.bfloat16) for _ in range(3))
    t = q.numel() * 2
    lse = B * H * L * 4
    fwd = 3 * t + t + lse                     # read q, k, v; write o, lse
    bwd = 5 * t + 2 * lse + 2 * lse + 3 * t   # read q, k, v, o, do; lse, delta (write + read); write dq, dk, dv
    cases.append(("attention", f"B={B} H={H} L={L} Dh={D} bf16",
                  lambda q, k, v: K.attention(q, k, v, backend="torch"), (q, k, v), fwd, fwd + bwd))

    # mmd: N = M = 4096, D = 256, fp32 (bench_mmd), five kernels
    N, D = 4096, 256
    xm, ym = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g) + 0.1
    rows = 2 * N * D * 4
    cases.append(("mmd", f"N=M={N} D={D} fp32", lambda x, y: K.mmd(x, y, backend="torch"), (xm, ym),
                  rows + 2 * N * 4, rows + 2 * N * 4 + rows + rows + 2 * N * 4))  # bwd: read x, y again; write dx, dy

    # nce: B=8, T=500, half the steps masked, K=100, D=256, fp32 (bench_nce)
    Bn, Tn, Kn, Dn = 8, 500, 100, 256
    nsel = Bn * Tn // 2
    ctx_ = torch.randn(nsel, Dn, generator=g)
    tgt = torch.randn(Bn * Tn, Dn, generator=g)
    pos = torch.randperm(Bn * Tn, generator=g)[:nsel]
    neg = torch.randint(0, Bn * Tn, (nsel, Kn), generator=g)
    idx = (nsel + nsel * Kn) * 8
    fwd = ctx_.numel() * 4 + tgt.numel() * 4 + idx + 2 * nsel * 4
    coef = 2 * nsel * (Kn + 1) * 4
    bwd = ctx_.numel() * 4 + tgt.numel() * 4 + idx + nsel * 4 + 2 * coef + ctx_.numel() * 4 + tgt.numel() * 4
    cases.append(("nce", f"B={Bn} T={Tn} N={nsel} K={Kn} D={Dn} fp32",
                  lambda c, t: K.nce(c, t, pos, neg, backend="torch"), (ctx_, tgt), fwd, fwd + bwd))
    return cases


def run() -> dict:
    torch.set_num_threads(2)
    rows = []
    for op, shape, fn, inputs, fused_fwd, fused_full in _cases():
        e_fwd, n_fwd = eager_bytes(fn, inputs, backward=False)
        e_full, n_full = eager_bytes(fn, inputs, backward=True)
        rows.append(dict(op=op, shape=shape, fused_fwd=fused_fwd, eager_fwd=e_fwd, eager_fwd_ops=n_fwd,
                         profiler_fwd_ops=profiler_ops(fn, inputs), ratio_fwd=e_fwd / fused_fwd,
                         fused_full=fused_full, eager_full=e_full, eager_full_ops=n_full,
                         ratio_full=e_full / fused_full))
    return dict(facts=dict(torch=torch.__version__, date=_dt.date.today().isoformat(),
                           machine="CPU (counts do not depend on the machine)"), rows=rows)


def markdown(doc: dict) -> str:
    mb = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    out = [f"# Memory traffic: fused kernel vs eager reference ({doc['facts']['date']}, torch {doc['facts']['torch']})",
           "", "Fused: compulsory bytes (inputs + outputs + saved tensors for backward). Eager: sum of input and "
           "output bytes of every aten op the reference dispatches (`python -m perf traffic`). MiB.", "",
           "| op | shape | fwd fused | fwd eager | fwd ratio | fwd+bwd fused | fwd+bwd eager | fwd+bwd ratio | eager ops fwd / fwd+bwd |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(f"| {r['op']} | {r['shape']} | {mb(r['fused_fwd'])} | {mb(r['eager_fwd'])} | {r['ratio_fwd']:.1f}x | "
                   f"{mb(r['fused_full'])} | {mb(r['eager_full'])} | {r['ratio_full']:.1f}x | "
                   f"{r['eager_fwd_ops']} / {r['eager_full_ops']} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    doc = run()
    text = markdown(doc)
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"traffic-{doc['facts']['date']}"
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        stem.with_suffix(".md").write_text(text)
        print("wrote", stem.with_suffix(".json"), stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
