"""``python -m perf.models``: sepkit's separators side by side with their peers on the CPU.

At identical configurations (parameter counts in the table), in one run: inference and one
training step (forward + backward of the negative SI-SDR) at batch 1 x 4 s at 8 kHz, fp32, with
``--threads`` threads (default 2). Repetitions of sepkit and its peer alternate after warm-up,
so both see the same machine load; the table gives medians and the ratio peer time / sepkit
time (above 1: sepkit is faster). ``--memory`` also measures the peak resident memory of one
training step in a fresh process per model (RSS growth over the process after building the
model).

Peers, baselines only (skipped when not installed): torchaudio's ``conv_tasnet_base``,
SpeechBrain's Sepformer (``Dual_Path_Model`` with the WSJ0-2mix hyperparameters, its encoder and
decoder), Asteroid's ``DPRNNTasNet`` at the DPRNN paper's configuration.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


# -- the models -----------------------------------------------------------------------------

def sepkit_model(name: str) -> torch.nn.Module:
    from sepkit.models.separators import build_separator

    return build_separator(name, n_src=2, sample_rate=8000)


class _SpeechBrainSepformer(torch.nn.Module):
    """SpeechBrain's Sepformer pipeline with the WSJ0-2mix recipe's hyperparameters."""

    def __init__(self):
        super().__init__()
        from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBTransformerBlock

        def block():
            return SBTransformerBlock(num_layers=8, d_model=256, nhead=8, d_ffn=1024, dropout=0.0,
                                      use_positional_encoding=True, norm_before=True)

        self.encoder = Encoder(kernel_size=16, out_channels=256, in_channels=1)
        self.masknet = Dual_Path_Model(num_spks=2, in_channels=256, out_channels=256, num_layers=2, K=250,
                                       intra_model=block(), inter_model=block(), norm="ln",
                                       linear_layer_after_inter_intra=False, skip_around_intra=True)
        self.decoder = Decoder(in_channels=256, out_channels=1, kernel_size=16, stride=8, bias=False)

    def forward(self, mix):  # (B, T) -> (B, S, T)
        w = self.encoder(mix)
        masks = self.masknet(w)
        est = torch.stack([self.decoder(w * m) for m in masks], dim=1)
        T = mix.shape[-1]
        return torch.nn.functional.pad(est, (0, max(0, T - est.shape[-1])))[..., :T]


class _Peer(torch.nn.Module):
    """(B, T) -> (B, S, T) around a peer model with another call convention."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mix):
        return self.model(mix.unsqueeze(1) if self.model.__class__.__name__ == "ConvTasNet" else mix)


def peer_model(name: str) -> torch.nn.Module | None:
    """The peer of sepkit's ``name`` separator, or None when its package is missing."""
    try:
        if name == "convtasnet":
            from torchaudio.models import conv_tasnet_base

            return _Peer(conv_tasnet_base(num_sources=2))
        if name == "sepformer":
            return _SpeechBrainSepformer()
        if name == "dprnn":
            from asteroid.models import DPRNNTasNet

            return _Peer(DPRNNTasNet(n_src=2, n_filters=64, kernel_size=2, stride=1, bn_chan=64, hid_size=128,
                                     chunk_size=250, hop_size=125, n_repeats=6, mask_act="sigmoid"))
    except ImportError:
        return None
    raise ValueError(f"no peer for {name!r}")


PEERS = {"convtasnet": "torchaudio conv_tasnet_base", "sepformer": "SpeechBrain Sepformer (WSJ0-2mix)",
         "dprnn": "Asteroid DPRNNTasNet"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- one measurement ------------------------------------------------------------------------

def _loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    from sepkit.losses import SISDRLoss

    return SISDRLoss()(est, ref)


def step_fn(model: torch.nn.Module, mix: torch.Tensor, ref: torch.Tensor, mode: str):
    if mode == "inference":
        model.eval()

        def run():
            with torch.inference_mode():
                model(mix)
    else:
        model.train()

        def run():
            model.zero_grad(set_to_none=True)
            _loss(model(mix)[..., : ref.shape[-1]], ref).backward()
    return run


def time_pair(fns: dict, reps: int, warmup: int) -> dict:
    """Median seconds of each callable, repetitions interleaved."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss_mb(which: str, name: str, seconds: float, threads: int) -> float | None:
    """Peak RSS growth (MB) of one training step, in a fresh process."""
    code = f"""
import resource, torch, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
torch.set_num_threads({threads})
from perf.models import sepkit_model, peer_model, step_fn
m = sepkit_model({name!r}) if {which!r} == "sepkit" else peer_model({name!r})
g = torch.Generator().manual_seed(0)
mix = torch.randn(1, int({seconds} * 8000), generator=g); ref = torch.randn(1, 2, mix.shape[-1], generator=g)
import gc; gc.collect()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
before = rss()
step_fn(m, mix, ref, "training")()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return None
    return float(done.stdout.strip().splitlines()[-1])


# -- the run --------------------------------------------------------------------------------

def run(models: list[str], seconds: float, threads: int, reps: int, warmup: int, memory: bool) -> dict:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    T = int(seconds * 8000)
    mix = torch.randn(1, T, generator=g) * 0.1
    ref = torch.randn(1, 2, T, generator=g) * 0.1
    rows = []
    for name in models:
        ours, peer = sepkit_model(name), peer_model(name)
        row = {"model": name, "peer": PEERS[name], "sepkit_params": n_params(ours),
               "peer_params": n_params(peer) if peer is not None else None}
        if peer is None:
            row["skipped"] = "peer package not installed"
            rows.append(row)
            continue
        for mode in ("inference", "training"):
            t = time_pair({"sepkit": step_fn(ours, mix, ref, mode), "peer": step_fn(peer, mix, ref, mode)}, reps, warmup)
            row[f"{mode}_sepkit_s"], row[f"{mode}_peer_s"] = t["sepkit"], t["peer"]
            row[f"{mode}_ratio"] = t["peer"] / t["sepkit"]
        if memory:
            row["train_peak_mb_sepkit"] = peak_rss_mb("sepkit", name, seconds, threads)
            row["train_peak_mb_peer"] = peak_rss_mb("peer", name, seconds, threads)
        rows.append(row)
        print(format_row(row), flush=True)
    import sepkit

    return {"rows": rows, "config": {"batch": 1, "seconds": seconds, "sample_rate": 8000, "dtype": "fp32",
                                     "threads": threads, "reps": reps, "warmup": warmup},
            "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "sepkit": sepkit.__version__, "python": platform.python_version(),
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}


def format_row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['model']} | {r['peer']} | {r['sepkit_params']:,} | - | skipped: {r['skipped']} | | |"
    mem = ""
    if r.get("train_peak_mb_sepkit") is not None and r.get("train_peak_mb_peer") is not None:
        mem = f" | {r['train_peak_mb_sepkit']:.0f} / {r['train_peak_mb_peer']:.0f} MB"
    return (f"| {r['model']} | {r['peer']} | {r['sepkit_params']:,} / {r['peer_params']:,} | "
            f"{r['inference_sepkit_s'] * 1e3:.0f} / {r['inference_peer_s'] * 1e3:.0f} ms ({r['inference_ratio']:.2f}x) | "
            f"{r['training_sepkit_s'] * 1e3:.0f} / {r['training_peer_s'] * 1e3:.0f} ms ({r['training_ratio']:.2f}x)"
            f"{mem} |")


def markdown(result: dict) -> str:
    c, m = result["config"], result["machine"]
    mem = any("train_peak_mb_sepkit" in r for r in result["rows"])
    lines = [f"Separators vs peers on the CPU ({m['cpu']}, {c['threads']} threads, torch {m['torch']}, {m['date']}): "
             f"batch {c['batch']} x {c['seconds']:g} s at {c['sample_rate']} Hz, {c['dtype']}, median of {c['reps']} "
             "interleaved repetitions; ratio = peer time / sepkit time (above 1: sepkit is faster).", "",
             "| model | peer | parameters (sepkit / peer) | inference (sepkit / peer) | training step (sepkit / peer) |"
             + (" peak training memory (sepkit / peer) |" if mem else ""),
             "|---|---|---|---|---|" + ("---|" if mem else "")]
    lines += [format_row(r) for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(PEERS), help="only this model (repeatable)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="also peak RSS of a training step (fresh processes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.model or sorted(PEERS), args.seconds, args.threads, args.reps, args.warmup, args.memory)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models_cpu.json").write_text(json.dumps(result, indent=1))
    (args.out / "models_cpu.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'models_cpu.json'} and {args.out / 'models_cpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
