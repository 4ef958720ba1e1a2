"""DIP frontend pretraining: one Siamese MIC step and its loss part alone, fused kernels vs reference.

- ``step``: forward + backward of a whole pretraining step: a real-domain and a synthetic-domain
  batch through the same :class:`sepkit.models.dip.DIPFrontend` (masking, quantizer, transformer)
  and :class:`sepkit.models.dip.DIPPretrainLoss` (MPC on both branches + alpha MMD of the
  frame-level cues, alpha = 10, K = 100 negatives).
- ``loss``: the loss part alone (negative sampling, the two ``nce`` calls, ``mmd`` of the cues,
  diversity and feature penalties) forward + backward, on fixed DIPOutputs whose tensors are leaves.

Providers: ``sepkit`` (``backend="triton"`` for attention, nce and mmd) and ``reference``
(``backend="torch"``: the plain-PyTorch references of the three ops), same weights, same inputs.
GPU (``python -m perf --op dip``): ``base`` at batch 8 x 15 s of 16 kHz audio (4 real + 4
synthetic utterances, 750 frames each), fp32 storage (TF32 as allowed), time (p50 ms) and peak
memory (MiB). CPU (``python -m perf.bench_dip``): the ``small`` config at 2 + 2 utterances of 4 s
with the automatic CPU paths, the median wall time of a few steps (no memory figure: the CPU
allocator is not instrumented); the result says which machine it ran on. Smoke
(``python -m perf --smoke``): the GPU body on the CPU with :data:`SMOKE` (a one-layer frontend,
1 + 1 utterances of 0.3 s, K = 8 negatives), Triton in the interpreter for ``sepkit``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from sepkit.models.dip import DIP_CONFIGS, DIPFrontend, DIPOutputs, DIPPretrainLoss

PROVIDERS = {"sepkit": "triton", "reference": "torch"}
#: (config, utterances per branch, seconds, negatives K, config overrides) of each run kind.
GPU = ("base", 4, 15.0, 100, {})
QUICK = ("small", 2, 4.0, 100, {})
SMOKE = ("small", 1, 0.3, 8, dict(conv_channels=16, d_model=32, n_layers=1, n_heads=2, ffn_dim=64, final_dim=16,
                                  codevector_dim=16, num_vars=8, pos_conv_kernel=8))


def build(config: str, backend: str | None, device, seed: int = 0, num_negatives: int = 100, **overrides):
    """(frontend in train mode, loss) with weights fixed by ``seed``."""
    torch.manual_seed(seed)
    frontend = DIPFrontend(config, backend=backend, **overrides).to(device).train()
    return frontend, DIPPretrainLoss(alpha=10.0, num_negatives=num_negatives, backend=backend)


def batches(per_branch: int, seconds: float, sample_rate: int, device, seed: int = 0):
    """(real, synthetic) (B, T) noise batches; the content does not change the work done."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    return tuple(torch.randn(per_branch, n, generator=gen).to(device) for _ in range(2))


def step(frontend: DIPFrontend, loss_fn: DIPPretrainLoss, real: torch.Tensor, synthetic: torch.Tensor) -> float:
    frontend.zero_grad(set_to_none=True)
    loss, _ = loss_fn(frontend.pretrain_outputs(real), frontend.pretrain_outputs(synthetic))
    loss.backward()
    return float(loss.detach())


def leaf_outputs(frontend: DIPFrontend, wave: torch.Tensor) -> DIPOutputs:
    """DIPOutputs of ``wave`` whose differentiable tensors are fresh leaves (for the loss alone)."""
    with torch.no_grad():
        out = frontend.pretrain_outputs(wave)
    for name in ("context", "targets", "cues", "codebook_logits"):
        setattr(out, name, getattr(out, name).detach().requires_grad_())
    out.feature_penalty = out.feature_penalty.detach().requires_grad_()
    return out


def loss_part(loss_fn: DIPPretrainLoss, real: DIPOutputs, synthetic: DIPOutputs):
    loss, _ = loss_fn(real, synthetic)
    leaves = [getattr(o, n) for o in (real, synthetic) for n in ("context", "targets", "cues", "codebook_logits")]
    return torch.autograd.grad(loss, leaves)


def run(ctx) -> None:
    """GPU benchmark for ``python -m perf`` (see the module docstring)."""
    config, per_branch, seconds, negatives, overrides = ctx.sizes(full=GPU, quick=QUICK, smoke=SMOKE)
    real, synthetic = batches(per_branch, seconds, 16000, ctx.device)
    field, hop = DIP_CONFIGS[config].receptive_field, DIP_CONFIGS[config].hop
    frames = (real.shape[-1] - field) // hop + 1
    cfg = dict(config=config, batch=2 * per_branch, seconds=seconds, frames=frames, alpha=10.0, K=negatives,
               dtype="float32", **({"overrides": overrides} if overrides else {}))
    for provider, backend in PROVIDERS.items():
        common = dict(op="dip", provider=provider, x_name="batch x seconds", x_value=f"{2 * per_branch}x{seconds:g}",
                      config=cfg)
        try:
            frontend, loss_fn = build(config, backend, ctx.device, num_negatives=negatives, **overrides)
            fn_step = (lambda f, l, r, s: lambda: step(f, l, r, s))(frontend, loss_fn, real, synthetic)
            ctx.record_time(mode="step", fn=fn_step, **common)
            ctx.record(mode="step", metric="peak_memory", unit="MiB", p50=ctx.peak_memory(fn_step) / 2**20, **common)
            outs = (leaf_outputs(frontend, real), leaf_outputs(frontend, synthetic))
            fn_loss = (lambda l, o: lambda: loss_part(l, *o))(loss_fn, outs)
            ctx.record_time(mode="loss", fn=fn_loss, **common)
            ctx.record(mode="loss", metric="peak_memory", unit="MiB", p50=ctx.peak_memory(fn_loss) / 2**20, **common)
            del frontend, loss_fn, outs
        except torch.cuda.OutOfMemoryError:
            ctx.record(mode="step", metric="oom", unit="", p50=float("nan"), **common)
        except Exception as exc:  # a provider that cannot run: say so, keep going
            ctx.note(f"dip {provider} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        ctx.empty_cache()


def cpu_main(config: str = "small", per_branch: int = 2, seconds: float = 4.0, reps: int = 3) -> dict:
    """Median wall time (s) of a pretraining step and of its loss part on the CPU (automatic paths)."""
    frontend, loss_fn = build(config, None, "cpu")
    real, synthetic = batches(per_branch, seconds, frontend.sample_rate, "cpu")
    step(frontend, loss_fn, real, synthetic)                            # warm-up
    steps = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step(frontend, loss_fn, real, synthetic)
        steps.append(time.perf_counter() - t0)
    outs = (leaf_outputs(frontend, real), leaf_outputs(frontend, synthetic))
    losses = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss_part(loss_fn, *outs)
        losses.append(time.perf_counter() - t0)
    return dict(op="dip", device="cpu", threads=torch.get_num_threads(), cpus=os.cpu_count(),
                machine=platform.processor() or platform.machine(), config=config,
                batch=f"{per_branch}+{per_branch}", seconds=seconds,
                parameters=sum(p.numel() for p in frontend.parameters()),
                step_s_p50=statistics.median(steps), loss_s_p50=statistics.median(losses), reps=reps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_dip", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=("small", "base"))
    parser.add_argument("--per-branch", type=int, default=2, help="utterances per domain (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.per_branch < 1 or args.seconds < 0.025 or args.reps < 1:
        parser.error("need --per-branch >= 1, --seconds >= 0.025 and --reps >= 1")
    print(json.dumps(cpu_main(args.config, args.per_branch, args.seconds, args.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
