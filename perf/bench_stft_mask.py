"""STFT masking: forward and forward+backward throughput (GB/s, % of copy bandwidth).

Providers: sepkit (Triton), torch (the eager reference composition on (..., 2) views) and
torch.compile of it. Two configurations: a plain complex ratio mask, and a tanh-bounded complex
mask in the SGMSE+ compressed domain (p = 0.5, s = 0.15). Spectrograms (B, F, T) complex64 with
F = 257 (512-point FFT), up to 256 MiB per tensor (a smoke run: B = 1, T = 8).
Bytes counted: forward reads spec and mask and writes the output; forward+backward adds reading
dy, spec and mask and writing both gradients.
"""
from __future__ import annotations

import torch

from sepkit.kernels import SGMSE_COMPRESSION, stft_mask
from sepkit.kernels.reference import stft_mask_reference

CONFIGS = {
    "complex": dict(kind="complex", bound="none", compress=None),
    "complex-tanh-compressed": dict(kind="complex", bound="tanh", compress=SGMSE_COMPRESSION),
}


def run(ctx) -> None:
    B, F = ctx.sizes(full=(16, 257), quick=(16, 257), smoke=(1, 257))
    # 8192: 33.7 M bins, 270 MB complex64
    frames = ctx.sizes(full=[1024, 2048, 4096, 8192], quick=[4096], smoke=[8])
    for T in frames:
        spec = torch.randn(B, F, T, 2, device=ctx.device)
        mask = torch.randn(B, F, T, 2, device=ctx.device)
        dy = torch.randn_like(spec)
        bins = B * F * T
        for cname, cfg in CONFIGS.items():
            config = dict(B=B, F=F, T=T, dtype="complex64", **{k: str(v) for k, v in cfg.items()})
            ref = lambda s, m, cfg=cfg: stft_mask_reference(s, m, **cfg)  # noqa: E731
            compiled = ctx.try_compile(ref, spec, mask, name="torch.compile(reference)")
            providers = {
                "sepkit": lambda s, m, cfg=cfg: stft_mask(s, m, backend="triton", **cfg),
                "torch": ref,
                "torch.compile": compiled,
            }
            for name, fn in providers.items():
                if fn is None:
                    continue
                sg, mg = spec.detach().requires_grad_(), mask.detach().requires_grad_()
                fwd = (lambda f, s, m: lambda: f(s, m))(fn, spec, mask)
                full = (lambda f, sg, mg, g: lambda: torch.autograd.grad(f(sg, mg), (sg, mg), g))(fn, sg, mg, dy)
                ctx.record_time(op="stft_mask", provider=name, mode=f"fwd:{cname}", x_name="bins", x_value=bins,
                                fn=fwd, nbytes=3 * bins * 8, config=config)
                ctx.record_time(op="stft_mask", provider=name, mode=f"full:{cname}", x_name="bins", x_value=bins,
                                fn=full, nbytes=8 * bins * 8, config=config)
        del spec, mask, dy
        ctx.empty_cache()
