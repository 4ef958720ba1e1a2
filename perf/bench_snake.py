"""Snake: forward and forward+backward throughput (GB/s, % of copy bandwidth).

Providers: sepkit (Triton), torch (the eager reference), torch.compile of the reference, and the
Descript Audio Codec's formulation under TorchScript (a per-channel alpha of shape (1, C, 1),
``x + (alpha + 1e-9).reciprocal() * sin(alpha * x).pow(2)``), the common baseline in codec code.
Shapes (B, C, T) channels-first in bf16 with fp32 parameters, up to 256 MiB per tensor (a smoke run:
B = 2, C = 16, T = 64 in float32).
Bytes counted: forward reads x and writes y; forward+backward adds reading x and dy and writing dx.
"""
from __future__ import annotations

import warnings

import torch

from sepkit.kernels import snake
from sepkit.kernels.reference import snake_reference


def _dac_snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


def run(ctx) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; it is the baseline here
        _scripted_snake = torch.jit.script(_dac_snake)
    B, C = ctx.sizes(full=(16, 1024), quick=(16, 1024), smoke=(2, 16))
    # 8192: 128 Mi elements, 256 MiB bf16
    lengths = ctx.sizes(full=[1024, 2048, 4096, 8192], quick=[4096], smoke=[64])
    for T in lengths:
        x = torch.randn(B, C, T, device=ctx.device, dtype=ctx.dtype)
        alpha = (torch.rand(C, device=ctx.device) + 0.5).requires_grad_()
        alpha3 = alpha.detach().view(1, C, 1).requires_grad_()
        dy = torch.randn_like(x)
        es = x.element_size()
        cfg = dict(B=B, C=C, T=T, dtype=str(ctx.dtype), layout="channels-first")
        compiled = ctx.try_compile(lambda a, b: snake_reference(a, b), x, alpha, name="torch.compile(reference)")
        providers = {
            "sepkit": lambda a, b: snake(a, b, backend="triton"),
            "torch": lambda a, b: snake_reference(a, b),
            "torch.compile": compiled,
            "dac-torchscript": None,  # uses the (1, C, 1) parameter, below
        }
        for name, fn in providers.items():
            if name == "dac-torchscript":
                xg = x.detach().requires_grad_()
                fwd = (lambda a: lambda: _scripted_snake(a, alpha3))(x)
                full = (lambda a, g: lambda: torch.autograd.grad(_scripted_snake(a, alpha3), (a, alpha3), g))(xg, dy)
            elif fn is None:
                continue
            else:
                xg = x.detach().requires_grad_()
                fwd = (lambda f, a: lambda: f(a, alpha))(fn, x)
                full = (lambda f, a, g: lambda: torch.autograd.grad(f(a, alpha), (a, alpha), g))(fn, xg, dy)
            ctx.record_time(op="snake", provider=name, mode="fwd", x_name="elements", x_value=x.numel(),
                            fn=fwd, nbytes=2 * x.numel() * es, config=cfg)
            ctx.record_time(op="snake", provider=name, mode="full", x_name="elements", x_value=x.numel(),
                            fn=full, nbytes=5 * x.numel() * es, config=cfg)
        del x, dy
        ctx.empty_cache()
