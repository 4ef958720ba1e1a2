"""Multi-kernel MMD: forward and forward+backward time, % of the dot rate, peak memory.

Providers: sepkit (Triton, never an N x M matrix), cdist (the usual formulation: torch.cdist,
the (N, M, K) stack of Gaussian kernels, means; the diagonal removed for the unbiased estimator;
computed in fp32 as autocast runs cdist) and torch.compile of it. Same maths for all: unbiased
estimator, the default heuristic with multipliers 0.25 .. 4 (five kernels). Sizes N = M in
{1k, 4k, 16k, 64k}, D in {64, 256}, inputs in ``ctx.dtype`` (bf16; a smoke run: N = M = 64, D = 16,
float32). The cdist baseline runs out
of memory at the top sizes: recorded as metric "oom".

FLOPs counted (the useful matrix work, same count for every provider):
forward 2 D (N (N + 1) / 2 + M (M + 1) / 2 + N M) (the distinct pairs' dot products),
backward 4 D (N + M)^2 (each gradient row re-computes its distances and sums the weighted
rows); "full" = forward + backward.
"""
from __future__ import annotations

import torch

from sepkit.kernels import mmd
from sepkit.kernels.reference.mmd import DEFAULT_MULTIPLIERS, heuristic_base


def cdist_mmd(x: torch.Tensor, y: torch.Tensor, multipliers=DEFAULT_MULTIPLIERS) -> torch.Tensor:
    """Unbiased multi-kernel MMD by torch.cdist and full kernel matrices (the common baseline)."""
    x, y = x.float(), y.float()
    n, m = x.shape[0], y.shape[0]
    s2 = heuristic_base(x, y) * torch.tensor(multipliers, device=x.device, dtype=torch.float32)
    gammas = 1.0 / (2.0 * s2)

    def kernel_sum(a, b):
        d2 = torch.cdist(a, b).square()
        return torch.exp(-d2[..., None] * gammas).sum(-1)

    kxx, kyy, kxy = kernel_sum(x, x), kernel_sum(y, y), kernel_sum(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2.0 * kxy.mean())


def _flops(n: int, m: int, d: int) -> tuple[float, float]:
    fwd = 2.0 * d * (n * (n + 1) / 2 + m * (m + 1) / 2 + n * m)
    return fwd, fwd + 4.0 * d * (n + m) ** 2


def run(ctx) -> None:
    sizes = ctx.sizes(full=[1024, 4096, 16384, 65536], quick=[4096], smoke=[64])
    dims = ctx.sizes(full=[64, 256], quick=[256], smoke=[16])
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    for d in dims:
        for n in sizes:
            m = n
            x = torch.randn(n, d, device=ctx.device, dtype=ctx.dtype, generator=gen)
            y = (torch.randn(m, d, device=ctx.device, dtype=ctx.dtype, generator=gen) * 1.2 + 0.1).to(ctx.dtype)
            config = dict(N=n, M=m, D=d, dtype=str(ctx.dtype), estimator="unbiased", kernels=len(DEFAULT_MULTIPLIERS))
            fwd_flops, full_flops = _flops(n, m, d)
            compiled = ctx.try_compile(cdist_mmd, x[:256], y[:256], name="torch.compile(cdist)")
            providers = {
                "sepkit": lambda a, b: mmd(a, b, backend="triton"),
                "cdist": cdist_mmd,
                "cdist.compile": compiled,
            }
            ctx.time_providers(providers, (x, y), op="mmd", x_name="N=M", x_value=n, config=config,
                               work={"fwd": dict(flops=fwd_flops), "full": dict(flops=full_flops)}, peaks=("full",),
                               label=f"N={n} D={d}")
            del x, y
            ctx.empty_cache()
