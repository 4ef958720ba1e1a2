"""Attention: forward and forward+backward TFLOP/s against torch SDPA, xformers and the reference.

Shapes (B = 4, H = 8, Dh = 64, ``ctx.dtype``, bf16 by default; a smoke run takes B = 1, H = 2,
Dh = 32 and sequence lengths of 4 to 32, in float32):

* self-attention, L in {1k, 4k, 16k}, without and with the causal mask;
* Ex-Diff-like cross-attention: Lq = 4096 queries over Lk in {16, 64, 256} keys;
* set-query cross-attention (mixture-to-set predictor): Lq = 4 over Lk in {2k, 8k}.

``ctx.quick`` keeps the smallest of each. FLOPs counted: forward 4 B H Lq Lk Dh (two products),
backward 2.5x that (five products), "full" = forward + backward; halved with the causal mask
(Lq = Lk, so about half the score matrix is computed). Providers:

* ``sepkit``: the Triton kernels (``backend="triton"``);
* ``sdpa.flash``, ``sdpa.efficient``, ``sdpa.cudnn``, ``sdpa.math``: torch's
  ``scaled_dot_product_attention`` pinned to one backend with ``torch.nn.attention.sdpa_kernel``
  (a backend that cannot run a shape is noted and skipped);
* ``xformers``: ``xformers.ops.memory_efficient_attention`` when it imports (noted otherwise);
* ``reference`` and ``reference.compile``: the explicit softmax, eager and under torch.compile
  (the (Lq, Lk) matrix: out of memory at the largest shapes, recorded as "oom").

With Lq = Lk the causal masks of SDPA (top-left) and sepkit (bottom-right) coincide.
"""
from __future__ import annotations

import torch

from sepkit.kernels import attention
from sepkit.kernels.reference.attention import attention_reference

B, H, DH = 4, 8, 64


def _dims(ctx) -> tuple[int, int, int]:
    """(B, H, Dh) of this run."""
    return ctx.sizes(full=(B, H, DH), quick=(B, H, DH), smoke=(1, 2, 32))


def _shapes(ctx) -> list[tuple[str, int, int, bool]]:
    """(label, Lq, Lk, causal)."""
    selfs = ctx.sizes(full=[1024, 4096, 16384], quick=[1024], smoke=[32])
    cross_q = ctx.sizes(full=4096, quick=4096, smoke=32)
    cross = ctx.sizes(full=[16, 64, 256], quick=[16], smoke=[16])
    setq = ctx.sizes(full=[2048, 8192], quick=[2048], smoke=[32])
    shapes = [(f"self L={n}", n, n, False) for n in selfs]
    shapes += [(f"causal L={n}", n, n, True) for n in selfs]
    shapes += [(f"cross Lq={cross_q} Lk={n}", cross_q, n, False) for n in cross]
    shapes += [(f"set-query Lq=4 Lk={n}", 4, n, False) for n in setq]
    return shapes


def _sdpa_providers(ctx) -> dict:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        ctx.note("torch.nn.attention.sdpa_kernel unavailable: SDPA backends not benchmarked one by one")
        return {}
    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    providers = {}
    for short, attr in names.items():
        backend = getattr(SDPBackend, attr, None)
        if backend is None:
            ctx.note(f"SDPA backend {attr} not in this torch: skipped")
            continue

        def fn(q, k, v, causal, _backend=backend):
            with sdpa_kernel([_backend]):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

        providers[f"sdpa.{short}"] = fn
    return providers


def _xformers_provider(ctx):
    try:
        import xformers.ops as xops
    except Exception as exc:  # ImportError, or a broken build raising at import
        ctx.note(f"xformers not importable ({type(exc).__name__}): skipped")
        return None

    def fn(q, k, v, causal):
        bias = xops.LowerTriangularMask() if causal else None
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
        return out.transpose(1, 2)

    return fn


def _flops(lq: int, lk: int, causal: bool, b: int = B, h: int = H, dh: int = DH) -> tuple[float, float]:
    fwd = 4.0 * b * h * lq * lk * dh
    if causal:
        fwd /= 2
    return fwd, fwd * 3.5


def run(ctx) -> None:
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    providers = {"sepkit": lambda q, k, v, causal: attention(q, k, v, causal=causal, backend="triton")}
    providers.update(_sdpa_providers(ctx))
    xf = _xformers_provider(ctx)
    if xf is not None:
        providers["xformers"] = xf
    providers["reference"] = lambda q, k, v, causal: attention_reference(q, k, v, causal=causal)
    b, h, dh = _dims(ctx)
    small = [torch.randn(1, 2, 64, dh, device=ctx.device, dtype=ctx.dtype) for _ in range(3)]
    compiled = ctx.try_compile(lambda q, k, v: attention_reference(q, k, v), *small, name="torch.compile(reference)")
    if compiled is not None:
        # One compiled function per mask setting (the flag is a Python constant under compile).
        compiled_causal = ctx.compile(lambda q, k, v: attention_reference(q, k, v, causal=True))
        providers["reference.compile"] = lambda q, k, v, causal: (compiled_causal if causal else compiled)(q, k, v)

    for label, lq, lk, causal in _shapes(ctx):
        q = torch.randn(b, h, lq, dh, device=ctx.device, dtype=ctx.dtype, generator=gen)
        k = torch.randn(b, h, lk, dh, device=ctx.device, dtype=ctx.dtype, generator=gen)
        v = torch.randn(b, h, lk, dh, device=ctx.device, dtype=ctx.dtype, generator=gen)
        do = torch.randn(b, h, lq, dh, device=ctx.device, dtype=ctx.dtype, generator=gen)
        fwd_flops, full_flops = _flops(lq, lk, causal, b, h, dh)
        config = dict(B=b, H=h, Lq=lq, Lk=lk, Dh=dh, causal=causal, dtype=str(ctx.dtype))
        for name, fn in providers.items():
            qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
            fwd = (lambda f, a, b, c: lambda: f(a, b, c, causal))(fn, q, k, v)
            full = (lambda f, a, b, c, g: lambda: torch.autograd.grad(f(a, b, c, causal), (a, b, c), g))(
                fn, qg, kg, vg, do)
            common = dict(op="attention", provider=name, x_name="shape", x_value=label, config=config)
            try:
                fwd()  # a provider that cannot run this shape raises here, before timing
                ctx.record_time(mode="fwd", fn=fwd, flops=fwd_flops, **common)
                ctx.record_time(mode="full", fn=full, flops=full_flops, **common)
                try:
                    peak = ctx.peak_memory(full)
                    ctx.record(mode="full", metric="peak_memory", unit="MiB", p50=peak / 2**20, **common)
                except torch.cuda.OutOfMemoryError:
                    ctx.empty_cache()
                    ctx.record(mode="full", metric="oom", unit="", p50=float("nan"), **common)
            except torch.cuda.OutOfMemoryError:
                ctx.empty_cache()
                ctx.record(mode="fwd", metric="oom", unit="", p50=float("nan"), **common)
            except Exception as exc:  # e.g. an SDPA backend without a kernel for this shape
                ctx.empty_cache()
                ctx.note(f"attention {name} {label} skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            ctx.empty_cache()
        del q, k, v, do
        ctx.empty_cache()
