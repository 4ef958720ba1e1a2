"""GCRN: the streaming step on one CPU thread (time per hop, real-time factor, margin to the hop)
and the batch training step with the kernels vs the reference backend.

Two entry points:

- ``run(ctx)`` (``python -m perf --op gcrn``, CUDA only): the training step (forward + backward +
  Adam) of each configuration on a batch of 4-second utterances with ``stft_mask`` on
  ``backend="triton"`` (provider ``sepkit``) and ``backend="torch"`` (provider ``torch``), plus
  the CPU streaming rows.
- smoke (``python -m perf --smoke``): the same rows on the CPU, batch 1 x 0.25 s, one timed
  training step (``sepkit`` in the Triton interpreter), 5 streaming hops.
- ``python -m perf.bench_gcrn [--hops N] [--out FILE]`` (any machine): the CPU numbers alone, as
  JSON: per configuration the step time per hop (ms, median and 20/80 % quantiles over ``N``
  hops of one stream, one intra-op thread), RTF = step time / hop duration, the margin to the
  hop (hop duration - step time, ms), and the CPU training step with the reference backend.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sepkit.models.gcrn import GCRN, count_parameters, macs_per_second
from sepkit.models.streaming import StreamingEnhancer

CONFIGS = ("ondevice", "tan_wang")


def _quantiles(times_ms: list[float]) -> tuple[float, float, float]:
    a = np.asarray(times_ms)
    return float(np.median(a)), float(np.quantile(a, 0.2)), float(np.quantile(a, 0.8))


def streaming_step(config: str, hops: int = 300, threads: int = 1, seed: int = 0) -> dict:
    """Time the per-frame step of one stream on ``threads`` CPU threads (``hops`` frames after 20
    warm-up frames). Returns ms per hop (p50, p20, p80), the hop in ms, RTF and margin."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = GCRN(config).eval()
        stream = StreamingEnhancer(model)
        hop = model.hop_length
        audio = 0.1 * torch.randn(1, (hops + 20 + 2) * hop, generator=torch.Generator().manual_seed(seed))
        stream.process(audio[:, : 20 * hop])  # warm-up
        times = []
        with torch.inference_mode():
            for k in range(20, 20 + hops):
                chunk = audio[:, k * hop : (k + 1) * hop]
                t0 = time.perf_counter()
                stream.process(chunk)
                times.append((time.perf_counter() - t0) * 1e3)
        p50, p20, p80 = _quantiles(times)
        hop_ms = 1e3 * hop / model.sample_rate
        return dict(config=config, threads=threads, hops=hops, hop_ms=hop_ms, step_ms_p50=p50, step_ms_p20=p20,
                    step_ms_p80=p80, rtf=p50 / hop_ms, margin_ms=hop_ms - p50,
                    params=count_parameters(model), macs_per_s=macs_per_second(model))
    finally:
        torch.set_num_threads(before)


def train_step(config: str, backend: str, device: str = "cpu", batch: int = 4, seconds: float = 4.0,
               reps: int = 5) -> dict:
    """Median ms of one training step (forward, negative SI-SDR, backward, Adam) on ``device``."""
    from sepkit.losses import si_sdr_loss

    torch.manual_seed(0)
    model = GCRN(config, backend=backend).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = int(seconds * model.sample_rate)
    noisy = 0.1 * torch.randn(batch, n, device=device)
    clean = 0.1 * torch.randn(batch, n, device=device)

    def step():
        loss = si_sdr_loss(model(noisy), clean).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    step()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p20, p80 = _quantiles(times)
    return dict(config=config, backend=backend, device=device, batch=batch, seconds=seconds,
                step_ms_p50=p50, step_ms_p20=p20, step_ms_p80=p80)


def run(ctx) -> None:
    """The perf-harness entry (CUDA): training steps, kernels vs reference, and the CPU streaming rows."""
    batch, seconds, reps = ctx.sizes(full=(8, 4.0, 10), quick=(8, 4.0, 10), smoke=(1, 0.25, 1))
    for config in CONFIGS:
        for provider, backend in (("sepkit", "triton"), ("torch", "torch")):
            r = train_step(config, backend, device=str(ctx.device), batch=batch, seconds=seconds, reps=reps)
            ctx.record(op="gcrn", provider=provider, mode="train_step", metric="time", unit="ms", x_name="config",
                       x_value=config, p50=r["step_ms_p50"], p20=r["step_ms_p20"], p80=r["step_ms_p80"],
                       config=dict(batch=batch, seconds=seconds))
        s = streaming_step(config, hops=ctx.sizes(full=300, quick=100, smoke=5))
        ctx.record(op="gcrn", provider="sepkit", mode="stream_cpu1", metric="time", unit="ms", x_name="config",
                   x_value=config, p50=s["step_ms_p50"], p20=s["step_ms_p20"], p80=s["step_ms_p80"],
                   config=dict(threads=1, hop_ms=s["hop_ms"]))
        ctx.record(op="gcrn", provider="sepkit", mode="stream_cpu1", metric="rtf", unit="x", x_name="config",
                   x_value=config, p50=s["rtf"], config=dict(threads=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_gcrn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hops", type=int, default=300, help="timed frames per stream (default 300)")
    parser.add_argument("--train-reps", type=int, default=3, help="timed CPU training steps (default 3)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.hops < 1 or args.train_reps < 1:
        print("error: --hops and --train-reps must be >= 1", file=sys.stderr)
        return 2
    result = {"machine": f"CPU, {torch.get_num_threads()} threads available, torch {torch.__version__}",
              "streaming": [streaming_step(c, args.hops) for c in CONFIGS],
              "train_step_cpu": [train_step(c, "torch", reps=args.train_reps) for c in CONFIGS]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
