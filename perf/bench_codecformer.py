"""Codecformer vs Sepformer: MACs per second of audio and the training-step time.

* MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
  convolutions; MACs = FLOPs / 2; elementwise ops such as Snake, norms and softmax are not
  counted) on the meta device, so nothing runs: the default Codecformer (16 layers, d 256) over
  the official 16 kHz DAC layout, for 1 s of 8 kHz audio (50 latent frames), as the separator
  alone (the masker on the latents, what the paper compares) and with the codec (resampling,
  DAC encoder, masker, DAC decoder for both sources), against the default Sepformer
  (``sepkit.models.separators.Sepformer``, 2 x (8 + 8) layers, chunks of 250). Attention is
  counted on the reference backend (explicit matrix products).
* Training-step time: forward, negative SI-SDR with PIT, backward and an Adam step, batch 1,
  random weights (the codec frozen); the median of a few steps after a warm-up.

A smoke run (``python -m perf --smoke``) does the same with :data:`SMOKE_SIZES` (a 1-layer
Codecformer over a tiny DAC, a 1-block Sepformer) on 0.02 s of audio, one timed step.

``python -m perf.bench_codecformer [--seconds 2] [--steps 3] [--threads 1] [--json PATH]`` runs on
the CPU and prints a Markdown table; :func:`run` is the GPU entry point of ``python -m perf``
(the same MACs plus step times with the kernels vs the reference backend).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sepkit.codecs import DAC, DAC_CONFIGS
from sepkit.losses import PITLoss, SISDRLoss
from sepkit.models.codecformer import Codecformer
from sepkit.models.separators import Sepformer

RATE = 8000
#: Model sizes of a smoke run: keyword overrides of the DAC config, Codecformer and Sepformer.
SMOKE_SIZES = dict(
    codec=dict(encoder_dim=4, encoder_rates=[2, 4], latent_dim=16, decoder_dim=16, decoder_rates=[4, 2],
               n_codebooks=2, codebook_size=16, codebook_dim=4),
    codecformer=dict(d_model=16, nhead=2, dim_feedforward=32, n_layers=1),
    sepformer=dict(n_filters=16, nhead=2, dim_feedforward=32, n_layers=1, n_blocks=1, chunk_size=10),
)


def _macs(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


def build(device: str | torch.device = "cpu", backend: str | None = None, sizes: dict | None = None) -> dict:
    """The default models of the comparison on ``device`` (random weights); ``sizes`` overrides
    their arguments (keys "codec", "codecformer", "sepformer", as :data:`SMOKE_SIZES`)."""
    sizes = sizes or {}
    with torch.device(device):
        codec = DAC(**{**DAC_CONFIGS["16khz"], **sizes.get("codec", {})})
        return {"codecformer": Codecformer(codec, attention_backend=backend, **sizes.get("codecformer", {})),
                "sepformer": Sepformer(attention_backend=backend, **sizes.get("sepformer", {}))}


def count_macs(seconds: float = 1.0, sizes: dict | None = None) -> dict:
    """MACs for ``seconds`` of 8 kHz audio (meta device), per model part; see the module docstring."""
    models = build("meta", backend="torch", sizes=sizes)
    cf, sep = models["codecformer"].eval(), models["sepformer"].eval()
    mix = torch.zeros(1, int(seconds * RATE), device="meta")
    frames = -(-int(seconds * cf.codec.sample_rate) // cf.codec.hop_length)
    z = torch.zeros(1, cf.latent_dim, frames, device="meta")
    with torch.no_grad():
        out = {
            "codecformer_separator": _macs(cf.masks, z),
            "codecformer_with_codec": _macs(cf, mix),
            "dac_encoder": _macs(cf.encode, mix),
            "dac_decoder_2_sources": _macs(cf.decode, torch.zeros(1, 2, cf.latent_dim, frames, device="meta"), mix.shape[-1]),
            "sepformer": _macs(sep, mix),
        }
    out = {k: v / seconds for k, v in out.items()}
    out["sepformer_over_separator"] = out["sepformer"] / out["codecformer_separator"]
    out["sepformer_over_with_codec"] = out["sepformer"] / out["codecformer_with_codec"]
    return out


def step_time(model: torch.nn.Module, seconds: float, steps: int, device="cpu") -> float:
    """Median seconds of one training step (batch 1, ``seconds`` of 8 kHz audio, 2 sources)."""
    model = model.to(device).train()
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    pit = PITLoss(SISDRLoss(reduction="none"))
    g = torch.Generator().manual_seed(0)
    mix = (0.1 * torch.randn(1, int(seconds * RATE), generator=g)).to(device)
    src = (0.1 * torch.randn(1, 2, mix.shape[-1], generator=g)).to(device)

    def one():
        opt.zero_grad(set_to_none=True)
        loss, _ = pit(model(mix), src)
        loss.backward()
        opt.step()
        if device != "cpu" and torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    one()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(ctx) -> None:
    """``python -m perf`` entry (GPU, or the CPU in smoke): MACs rows and training-step time, kernels
    vs reference (the kernels provider takes ``ctx.auto_backend``)."""
    sizes = ctx.sizes(full=None, quick=None, smoke=SMOKE_SIZES)
    macs = count_macs(1.0, sizes)
    for name, value in macs.items():
        unit = "x" if "_over_" in name else "MAC/s-audio"
        ctx.record(op="codecformer", provider=name, mode="fwd", metric="macs", unit=unit, x_name="seconds",
                   x_value=1.0, p50=float(value))
    seconds = ctx.sizes(full=4.0, quick=1.0, smoke=0.02)
    steps = ctx.sizes(full=5, quick=5, smoke=1)
    for backend, provider in ((ctx.auto_backend, "kernels"), ("torch", "reference")):
        old = os.environ.get("SEPKIT_BACKEND")
        os.environ["SEPKIT_BACKEND"] = backend or ""
        try:
            for name, model in build("cpu", backend=backend, sizes=sizes).items():
                t = step_time(model, seconds, steps=steps, device=ctx.device)
                ctx.record(op="codecformer", provider=f"{name}-{provider}", mode="train", metric="step_time",
                           unit="s", x_name="seconds", x_value=seconds, p50=t)
                ctx.record(op="codecformer", provider=f"{name}-{provider}", mode="train", metric="throughput",
                           unit="s-audio/s", x_name="seconds", x_value=seconds, p50=seconds / t)
        finally:
            if old is None:
                os.environ.pop("SEPKIT_BACKEND", None)
            else:
                os.environ["SEPKIT_BACKEND"] = old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_codecformer", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per training step (default 2 s)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=str, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"macs_per_audio_second": count_macs(1.0), "threads": torch.get_num_threads(), "seconds": args.seconds}
    m = result["macs_per_audio_second"]
    print("| model (1 s of 8 kHz audio) | GMAC |")
    print("|---|---:|")
    for key in ("codecformer_separator", "dac_encoder", "dac_decoder_2_sources", "codecformer_with_codec", "sepformer"):
        print(f"| {key} | {m[key] / 1e9:.2f} |")
    print(f"Sepformer / Codecformer separator: {m['sepformer_over_separator']:.1f}x; "
          f"Sepformer / Codecformer with codec: {m['sepformer_over_with_codec']:.2f}x")
    models = build("cpu")
    steps = {}
    for name, model in models.items():
        steps[name] = step_time(model, args.seconds, args.steps)
        print(f"{name}: training step {steps[name]:.2f} s for {args.seconds:g} s of audio (CPU, {torch.get_num_threads()} threads)",
              flush=True)
    result["train_step_s"] = steps
    result["sepformer_over_codecformer_step"] = steps["sepformer"] / steps["codecformer"]
    print(f"Sepformer / Codecformer step time: {result['sepformer_over_codecformer_step']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
