"""Ex-Diff / SGMSE+: training-step and sampling time per second of audio, by attention backend.

Model-level timings of the guided score model (NCSN++ + bottleneck cross-attention to one latent
channel at the STFT frame rate): one training step (DSM loss, backward, Adam) and one score
evaluation, the unit of the samplers (the PC sampler makes ``2 * steps`` of them), both reported
per second of audio. Providers are the attention backends of every attention layer of the model:
``auto`` (the Triton kernel on CUDA, the reference on a CPU), ``torch`` (the plain reference) and
``sdpa`` (torch's scaled_dot_product_attention). On a GPU the cross-attention shape that matters
(long queries, the bottleneck's F' x N' positions, over a short latent) is also timed alone.

``python -m perf.bench_exdiff [--device cpu|cuda] [--config small|sgmse] [--repeats N]`` prints
one JSON row per measurement; ``run(ctx)`` is the ``python -m perf`` entry (GPU; in a smoke run the
same body on the CPU: the small config on 0.1 s of audio, one repeat, ``auto`` on the Triton
interpreter, tiny cross-attention shapes).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sepkit.models.exdiff import ExDiff
from sepkit.models.ncsnpp import build_ncsnpp

BACKENDS = {"auto": None, "torch": "torch", "sdpa": "sdpa"}
SMALL = dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(), cross_heads=2, pe_dim=16)


class _Ones(torch.nn.Module):
    """A stand-in latent extractor: one channel of ones at 125 frames/s (timing only)."""
    frame_rate = 125.0

    def forward(self, wave):
        return torch.ones(wave.shape[0], 1 + wave.shape[-1] // 128, 1, device=wave.device)


def build(config: str, backend, device) -> ExDiff:
    torch.manual_seed(0)
    args = SMALL if config == "small" else {}
    return ExDiff(build_ncsnpp(config, latent_dim=1, backend=backend, **args), _Ones()).to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, repeats: int, device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(config: str = "small", device: str = "cpu", repeats: int = 3, batch: int = 4, seconds: float = 0.5,
            sample_seconds: float = 2.0, auto_backend: str | None = None) -> list[dict]:
    """Rows of the training-step and score-evaluation times per backend; ``auto_backend`` is what
    the ``auto`` provider passes (None: automatic choice)."""
    device = torch.device(device)
    rows = []
    g = torch.Generator().manual_seed(0)
    train_wave = (0.1 * torch.randn(batch, int(seconds * 16000), generator=g)).to(device)
    sample_wave = (0.1 * torch.randn(1, int(sample_seconds * 16000), generator=g)).to(device)
    for name, backend in BACKENDS.items():
        model = build(config, auto_backend if name == "auto" else backend, device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            loss = model.loss(0.5 * train_wave, train_wave)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        y, _, _ = model.specs(sample_wave)
        cond = model.conditioning(sample_wave, y.shape[-1])
        t = torch.full((1,), 0.5, device=device)

        @torch.no_grad()
        def score(model=model, y=y, cond=cond, t=t):
            model.score(y, t, y, **cond)

        t_step = _median_time(step, repeats, device)
        t_score = _median_time(score, repeats, device)
        common = dict(op="exdiff", provider=name, config=config, device=str(device), torch=torch.__version__,
                      cpu=platform.processor() or platform.machine(),
                      gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
        rows.append(dict(common, mode="train_step", metric="s_per_audio_s", value=t_step / (batch * seconds),
                         batch=batch, seconds=seconds, step_s=t_step))
        rows.append(dict(common, mode="score_eval", metric="s_per_audio_s", value=t_score / sample_seconds,
                         seconds=sample_seconds, nfe_s=t_score,
                         pc30_s_per_audio_s=60 * t_score / sample_seconds))
    return rows


def run(ctx) -> None:
    """``python -m perf`` entry: model timings on the GPU plus the bottleneck cross-attention shape."""
    from sepkit.kernels import attention

    config, measure_args = ctx.sizes(full=("sgmse", dict(repeats=10, batch=8, seconds=2.04, sample_seconds=4.08)),
                                     quick=("sgmse", dict(repeats=10, batch=8, seconds=2.04, sample_seconds=4.08)),
                                     smoke=("small", dict(repeats=1, batch=1, seconds=0.1, sample_seconds=0.1)))
    for row in measure(config, ctx.device, auto_backend=ctx.auto_backend, **measure_args):
        ctx.record(op="exdiff", provider=row["provider"], mode=row["mode"], metric=row["metric"], unit="s/s",
                   x_name="config", x_value=config, p50=row["value"], config={k: row[k] for k in ("seconds",)})
    # Bottleneck of the default U-Net on 4 s: 4 x 8 positions per 64 frames -> long queries, short keys.
    b, h, dh = ctx.sizes(full=(8, 4, 64), quick=(8, 4, 64), smoke=(1, 2, 32))
    shapes = ctx.sizes(full=((4 * 8, 512), (4 * 64, 512), (16 * 128, 512), (16 * 1024, 1000)),
                       quick=((4 * 8, 512), (4 * 64, 512), (16 * 128, 512), (16 * 1024, 1000)),
                       smoke=((8, 16), (32, 16)))
    for lq, lk in shapes:
        q = torch.randn(b, h, lq, dh, device=ctx.device, dtype=ctx.dtype)
        k = torch.randn(b, h, lk, dh, device=ctx.device, dtype=ctx.dtype)
        v = torch.randn_like(k)
        flops = 4 * b * h * lq * lk * dh
        for provider, fn in (("sepkit", lambda: attention(q, k, v, backend="triton")),
                             ("sdpa", lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))):
            ctx.record_time(op="exdiff_cross", provider=provider, mode="fwd", x_name="Lq x Lk",
                            x_value=f"{lq}x{lk}", fn=fn, flops=flops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="small", choices=("small", "sgmse"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for row in measure(args.config, args.device, args.repeats):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
