"""``python -m perf.models``: sepkit's separators side by side with their peers on the CPU.

At identical configurations (parameter counts in the table), in one run: inference and one
training step (forward + backward of the negative SI-SDR) at batch 1 x 4 s at 8 kHz, fp32, with
``--threads`` threads (default 2). Every implementation is timed in fresh processes, sepkit's
and the peer's in turn for ``--rounds`` rounds, so they see the same machine load and none
inherits another's heap; the table gives medians and the ratio peer time / sepkit time (above 1:
sepkit is faster) with its spread over the rounds. ``--memory`` also measures the peak resident memory of one
training step in a fresh process per model (RSS growth over the process after building the
model).

Peers, baselines only (skipped when not installed): torchaudio's ``conv_tasnet_base``,
SpeechBrain's Sepformer (``Dual_Path_Model`` with the WSJ0-2mix hyperparameters, its encoder and
decoder), Asteroid's ``DPRNNTasNet`` at the DPRNN paper's configuration, ESPnet's
``TFGridNetV2`` with its defaults (its WSJ0-2mix recipe; sepkit's TF-GridNet at ``config="espnet"``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


# -- the models -----------------------------------------------------------------------------

def sepkit_model(name: str, **kwargs) -> torch.nn.Module:
    from sepkit.models.separators import build_separator

    return build_separator(name, n_src=2, sample_rate=8000, **kwargs)


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


class _ESPnetTFGridNet(torch.nn.Module):
    """ESPnet's TFGridNetV2 with its defaults (the WSJ0-2mix recipe's): (B, T) -> (B, S, T)."""

    def __init__(self):
        super().__init__()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from espnet2.enh.separator.tfgridnetv2_separator import TFGridNetV2
        self.model = TFGridNetV2(None)

    def forward(self, mix):
        lengths = torch.full((mix.shape[0],), mix.shape[-1], dtype=torch.long)
        return torch.stack(self.model(mix, lengths)[0], dim=1)


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
        if name == "tfgridnet":
            return _ESPnetTFGridNet()
    except ImportError:
        return None
    raise ValueError(f"no peer for {name!r}")


PEERS = {"convtasnet": "torchaudio conv_tasnet_base", "sepformer": "SpeechBrain Sepformer (WSJ0-2mix)",
         "dprnn": "Asteroid DPRNNTasNet", "tfgridnet": "ESPnet TFGridNetV2 (WSJ0-2mix)"}
PEER_PACKAGES = {"convtasnet": "torchaudio", "sepformer": "speechbrain", "dprnn": "asteroid", "tfgridnet": "espnet2"}


def peer_installed(name: str) -> bool:
    """Whether the package of ``name``'s peer is installed (found, not imported)."""
    import importlib.util

    return importlib.util.find_spec(PEER_PACKAGES[name]) is not None


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


TIMING_MALLOC = {
    "steady": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)},
    "glibc": {},
}
"""The timing runs' allocator settings. ``"steady"`` (default): glibc keeps the pages it has
(blocks up to 32 MiB come from its heap, which is never trimmed), so after warm-up a step takes
no page faults, as in a long training or inference job under a caching allocator (PyTorch's on a
GPU; jemalloc or tcmalloc on a CPU). ``"glibc"``: the defaults, where the heap is trimmed and
re-grown as blocks are freed; how often depends on the process's whole allocation history, and
from one fresh process to the next the same model's step took between 4 k and 1.3 M page faults
and up to twice the time, for sepkit and the peers alike (perf/NOTES.md)."""

TIMED_CODE = """
import json, resource, statistics, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from perf.models import n_params, sepkit_model, peer_model, step_fn
torch.manual_seed(0)
m = sepkit_model({name!r}, **{kwargs!r}) if {which!r} == "sepkit" else peer_model({name!r})
if {compile!r} != "none":
    from sepkit.train.compiling import compile_model
    compile_model(m, {compile!r}, "perf models --compile", backend={backend!r})
g = torch.Generator().manual_seed(0)
mix = torch.randn(1, int({seconds} * 8000), generator=g) * 0.1
ref = torch.randn(1, 2, mix.shape[-1], generator=g) * 0.1
out = {{}}
for mode in {modes!r}:
    fn = step_fn(m, mix, ref, mode)
    first = []
    for _ in range({warmup}):
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
    times, faults = [], []
    for _ in range({reps}):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    out[mode] = {{"median_s": statistics.median(times), "times_s": times, "page_faults": faults, "warmup_s": first}}
out["params"] = n_params(m)
if {compile!r} != "none":
    forward = m.__dict__.get("forward")
    out["compiled"] = bool(forward is not None and not forward.failed)
    out["compile_failure"] = getattr(forward, "reason", None) or (None if forward is not None else "not compiled")
print(json.dumps(out))
"""


def time_in_process(which: str, name: str, seconds: float, threads: int, reps: int, warmup: int,
                    malloc: str = "steady", modes=("inference", "training"), checkpointing: str = "none",
                    compile: str = "none", compile_backend: str = "inductor") -> dict:
    """Time ``which`` ("sepkit" or "peer") in a fresh process: per mode, the median of ``reps``
    repetitions after ``warmup``, the repetitions' times, their minor page faults and the
    warm-up calls' times (``"warmup_s"``: with ``compile``, the first one includes compiling);
    the model's parameter count (``"params"``). ``compile`` (a :mod:`sepkit.train.compiling`
    mode): the model's forward under torch.compile, for sepkit and peers alike, through
    :func:`~sepkit.train.compiling.compile_model`; then ``"compiled"`` says whether it stayed
    compiled and ``"compile_failure"`` why not."""
    kwargs = {} if checkpointing == "none" else {"checkpointing": checkpointing}
    code = TIMED_CODE.format(root=str(Path(__file__).resolve().parents[1]), threads=threads, name=name,
                             kwargs=kwargs, which=which, seconds=seconds, modes=tuple(modes), warmup=warmup, reps=reps,
                             compile=compile, backend=compile_backend)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(TIMING_MALLOC[malloc])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"timing run {which} {name} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""The memory runs' allocator setting: glibc serves every block over 128 KiB by ``mmap`` and returns
it when freed, so the peak resident set follows the peak of live tensors (the CPU analogue of
``torch.cuda.max_memory_allocated``) instead of the heap glibc keeps after frees, which depends
on the order of allocations more than on what a model stores (``--malloc glibc`` measures with
glibc's defaults)."""


def peak_rss_mb(which: str, name: str, seconds: float, threads: int, checkpointing: str = "none",
                malloc: str = "live") -> float:
    """Peak RSS growth (MB) of one training step, in a fresh process: the process's peak resident
    set (VmHWM, reset just before the step) minus its resident set after building the model and
    the batch. ``malloc``:
    "live" (:data:`MALLOC_ENV`) or "glibc" (the allocator's defaults)."""
    kwargs = {} if checkpointing == "none" else {"checkpointing": checkpointing}
    code = f"""
import resource, torch, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
torch.set_num_threads({threads})
from perf.models import sepkit_model, peer_model, step_fn
m = sepkit_model({name!r}, **{kwargs!r}) if {which!r} == "sepkit" else peer_model({name!r})
g = torch.Generator().manual_seed(0)
mix = torch.randn(1, int({seconds} * 8000), generator=g); ref = torch.randn(1, 2, mix.shape[-1], generator=g)
import gc; gc.collect()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
before = rss()
try:  # reset the peak: ru_maxrss would report the launching process's peak when that is higher
    open("/proc/self/clear_refs", "w").write("5")
    reset = peak() <= before + 1
except OSError:
    reset = False
step_fn(m, mix, ref, "training")()
if not reset:
    sys.exit("cannot reset the peak resident set (/proc/self/clear_refs): no fresh-process figure")
print(peak() - before)
"""
    env = dict(os.environ, **(MALLOC_ENV if malloc == "live" else {}))
    if malloc != "live":
        for key in MALLOC_ENV:
            env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory run {which} {name} {seconds:g} s failed: {done.stderr.strip()[-300:]}")
    return float(done.stdout.strip().splitlines()[-1])


def peak_cuda_mb(model: torch.nn.Module, seconds: float) -> float:
    """Peak CUDA memory (MB) allocated by one training step above what was allocated before it."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(1, int(seconds * 8000), generator=g).cuda()
    ref = torch.randn(1, 2, mix.shape[-1], generator=g).cuda()
    model = model.cuda()
    step = step_fn(model, mix, ref, "training")
    step()  # allocate the gradients, then measure a step as the training loop sees it
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def available_mb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) / 1024
    return float("inf")


MEMORY_VARIANTS = (("sepkit", "none"), ("sepkit", "blocks"), ("peer", "none"))


def memory_rows(models: list[str], lengths: list[float], threads: int, device: str = "cpu",
                malloc: str = "live") -> list[dict]:
    """Peak training-step memory of each separator (without and with checkpointing) and its peer
    at each length. On the CPU each figure is a fresh process's RSS growth; a run predicted (from
    the same variant at the previous length, scaled linearly) to need more than 80% of the memory
    available now is skipped with its reason rather than risk the out-of-memory killer."""
    rows = []
    for name in models:
        last: dict[str, tuple[float, float]] = {}
        has_peer = peer_installed(name)
        for seconds in sorted(lengths):
            row = {"model": name, "peer": PEERS[name], "seconds": seconds, "device": device}
            for which, ckpt in MEMORY_VARIANTS:
                key = f"{which}_{ckpt}" if which == "sepkit" else "peer"
                if which == "peer" and not has_peer:
                    row[f"{key}_skipped"] = "peer package not installed"
                    continue
                if key in last:
                    prev_s, prev_mb = last[key]
                    need, free = prev_mb * seconds / prev_s * 1.1, available_mb()
                    if need > 0.8 * free:
                        row[f"{key}_skipped"] = f"would need about {need:.0f} MB, {free:.0f} MB available"
                        continue
                if device == "cuda":
                    kwargs = {} if ckpt == "none" else {"checkpointing": ckpt}
                    model = sepkit_model(name, **kwargs) if which == "sepkit" else peer_model(name)
                    mb = peak_cuda_mb(model, seconds)
                    del model
                    torch.cuda.empty_cache()
                else:
                    mb = peak_rss_mb(which, name, seconds, threads, ckpt, malloc)
                row[f"{key}_mb"] = mb
                last[key] = (seconds, mb)
            for ckpt in ("none", "blocks"):
                if f"sepkit_{ckpt}_mb" in row and "peer_mb" in row:
                    row[f"ratio_{ckpt}"] = row["peer_mb"] / row[f"sepkit_{ckpt}_mb"]
            rows.append(row)
            print(format_memory_row(row), flush=True)
    return rows


# -- the run --------------------------------------------------------------------------------

def run(models: list[str], seconds: float, threads: int, reps: int, warmup: int, timing: bool = True,
        memory_lengths: list[float] | None = None, device: str = "cpu", malloc: str = "live",
        rounds: int = 3, timing_malloc: str = "steady") -> dict:
    """Timings: ``rounds`` rounds, each timing sepkit, the peer and sepkit with checkpointing in a
    fresh process of its own, one after the other (so the three see the same machine load and
    no one inherits another's heap); a figure is the median over the rounds of each process's
    median. Memory: :func:`memory_rows`."""
    torch.set_num_threads(threads)
    # memory first, while this process is small: the fresh processes get the machine's memory
    memory = memory_rows(models, memory_lengths, threads, device, malloc) if memory_lengths else []
    rows = []
    for name in models if timing else []:
        row = {"model": name, "peer": PEERS[name]}
        if not peer_installed(name):
            row["sepkit_params"] = n_params(sepkit_model(name))
            row["skipped"] = f"peer package {PEER_PACKAGES[name]} not installed"
            rows.append(row)
            print(format_row(row), flush=True)
            continue
        runs = {"sepkit": [], "peer": [], "sepkit_ckpt": []}
        for _ in range(rounds):
            for key in runs:
                which = "peer" if key == "peer" else "sepkit"
                runs[key].append(time_in_process(
                    which, name, seconds, threads, reps, warmup, timing_malloc,
                    modes=("training",) if key == "sepkit_ckpt" else ("inference", "training"),
                    checkpointing="blocks" if key == "sepkit_ckpt" else "none"))

        row["sepkit_params"], row["peer_params"] = runs["sepkit"][0]["params"], runs["peer"][0]["params"]

        def med(key, mode):
            return statistics.median(r[mode]["median_s"] for r in runs[key])

        for mode in ("inference", "training"):
            row[f"{mode}_sepkit_s"], row[f"{mode}_peer_s"] = med("sepkit", mode), med("peer", mode)
            row[f"{mode}_ratio"] = row[f"{mode}_peer_s"] / row[f"{mode}_sepkit_s"]
            per_round = [p[mode]["median_s"] / o[mode]["median_s"] for o, p in zip(runs["sepkit"], runs["peer"])]
            row[f"{mode}_ratio_range"] = [min(per_round), max(per_round)]
        row["training_ckpt_s"] = med("sepkit_ckpt", "training")
        row["checkpointing_time_factor"] = row["training_ckpt_s"] / row["training_sepkit_s"]
        row["processes"] = runs
        rows.append(row)
        print(format_row(row), flush=True)
    import sepkit

    return {"rows": rows, "memory": memory,
            "config": {"batch": 1, "seconds": seconds, "sample_rate": 8000, "dtype": "fp32", "threads": threads,
                       "reps": reps, "warmup": warmup, "rounds": rounds, "timing_malloc": timing_malloc,
                       "memory_lengths": memory_lengths or [], "device": device, "malloc": malloc},
            "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "sepkit": sepkit.__version__, "python": platform.python_version(),
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}


COMPILE_VARIANTS = (("sepkit_compiled", "sepkit", True), ("sepkit", "sepkit", False), ("peer", "peer", False),
                    ("peer_compiled", "peer", True))
"""The processes of a ``--compile`` round, in turn: (key, implementation, compiled)."""


def compile_rows(models: list[str], seconds: float, threads: int, reps: int, warmup: int, rounds: int,
                 timing_malloc: str, mode: str = "default", backend: str = "inductor") -> list[dict]:
    """``--compile``: per model, ``rounds`` rounds of fresh processes for sepkit compiled, sepkit
    eager, the peer eager and the peer compiled (each its model's forward under
    :func:`sepkit.train.compiling.compile_model` in ``mode``), one after the other. A figure is
    the median over the rounds of each process's median step after ``warmup`` calls (``warmup``
    >= 1: the first call compiles); the compile time is the first call's time less that
    process's median step, apart from the steady step. A peer whose compile fell back to eager
    has no compiled figure, only the reason."""
    if warmup < 1:
        raise ValueError("compile_rows: warmup must be >= 1 (the first call compiles)")
    rows = []
    for name in models:
        row = {"model": name, "peer": PEERS[name], "compile_mode": mode}
        if not peer_installed(name):
            row["sepkit_params"] = n_params(sepkit_model(name))
            row["skipped"] = f"peer package {PEER_PACKAGES[name]} not installed"
            rows.append(row)
            print(format_compile_row(row), flush=True)
            continue
        runs = {key: [] for key, _, _ in COMPILE_VARIANTS}
        for _ in range(rounds):
            for key, which, compiled in COMPILE_VARIANTS:
                if key == "peer_compiled" and runs[key] and not runs[key][-1].get("compiled", True):
                    continue  # the peer did not compile: no need to try again
                runs[key].append(time_in_process(which, name, seconds, threads, reps, warmup, timing_malloc,
                                                 compile=mode if compiled else "none", compile_backend=backend))
        row["sepkit_params"], row["peer_params"] = runs["sepkit"][0]["params"], runs["peer"][0]["params"]
        for key in ("sepkit_compiled", "peer_compiled"):
            failed = [r.get("compile_failure") for r in runs[key] if not r.get("compiled", False)]
            if failed:
                row[f"{key}_failure"] = failed[0] or "fell back to eager"
        usable = [k for k, _, _ in COMPILE_VARIANTS if not row.get(f"{k}_failure")]
        for m in ("inference", "training"):
            for key in usable:
                row[f"{m}_{key}_s"] = statistics.median(r[m]["median_s"] for r in runs[key])
                if key.endswith("_compiled"):
                    row[f"{m}_{key}_compile_s"] = statistics.median(r[m]["warmup_s"][0] - r[m]["median_s"]
                                                                    for r in runs[key])
            if "sepkit_compiled" not in usable:
                continue
            base = f"{m}_sepkit_compiled_s"
            for key in ("peer", "peer_compiled", "sepkit"):
                if key in usable:
                    row[f"{m}_ratio_{key}"] = row[f"{m}_{key}_s"] / row[base]
                    per_round = [o[m]["median_s"] / c[m]["median_s"] for c, o in zip(runs["sepkit_compiled"], runs[key])]
                    row[f"{m}_ratio_{key}_range"] = [min(per_round), max(per_round)]
        row["processes"] = runs
        rows.append(row)
        print(format_compile_row(row), flush=True)
    return rows


def _ms(row: dict, key: str) -> str:
    return f"{row[key] * 1e3:.0f} ms" if key in row else "-"


def _ratio(row: dict, key: str) -> str:
    if key not in row:
        return ""
    lo, hi = row.get(f"{key}_range", (None, None))
    spread = f", rounds {lo:.2f} to {hi:.2f}" if lo is not None and lo != hi else ""
    return f" ({row[key]:.2f}x{spread})"


def format_compile_row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['model']} | {r['peer']} | skipped: {r['skipped']} | | | |"
    cells = []
    for m in ("inference", "training"):
        if r.get("sepkit_compiled_failure"):
            cells.append(f"sepkit did not compile: {r['sepkit_compiled_failure']}")
            continue
        peer_c = (_ms(r, f"{m}_peer_compiled_s") + _ratio(r, f"{m}_ratio_peer_compiled")
                  if not r.get("peer_compiled_failure") else "does not compile")
        cells.append(f"{_ms(r, f'{m}_sepkit_compiled_s')} / {_ms(r, f'{m}_peer_s')}{_ratio(r, f'{m}_ratio_peer')} / "
                     f"{peer_c} / eager sepkit {_ms(r, f'{m}_sepkit_s')}{_ratio(r, f'{m}_ratio_sepkit')}")
    compile_s = []
    for key, who in (("sepkit_compiled", "sepkit"), ("peer_compiled", "peer")):
        if r.get(f"{key}_failure"):
            compile_s.append(f"{who}: {r[f'{key}_failure']}")
        else:
            compile_s.append(f"{who} {r.get(f'inference_{key}_compile_s', float('nan')):.0f} / "
                             f"{r.get(f'training_{key}_compile_s', float('nan')):.0f} s")
    return f"| {r['model']} | {r['peer']} | {cells[0]} | {cells[1]} | {'; '.join(compile_s)} |"


def compile_markdown(result: dict) -> str:
    c, m = result["config"], result["machine"]
    lines = [f"Compiled separators vs peers on the CPU ({m['cpu']}, {c['threads']} threads, torch {m['torch']}, "
             f"{m['date']}): torch.compile mode {c['compile_mode']} (backend {c['compile_backend']}), batch "
             f"{c['batch']} x {c['seconds']:g} s at {c['sample_rate']} Hz, fp32; each figure the median over "
             f"{c['rounds']} round(s) of fresh processes (sepkit compiled, sepkit eager, peer eager, peer compiled in "
             f"turn) of each process's median of {c['reps']} steps after {c['warmup']} warm-up call(s); allocator: "
             f"{c['timing_malloc']}. Cells: sepkit compiled / peer eager (ratio) / peer compiled (ratio) / sepkit "
             "eager (ratio), each ratio = that time / sepkit compiled (above 1: compiled sepkit is faster). Compile "
             "time: the first call less a steady step, inference / training, apart from the steps.",
             "",
             "| model | peer | inference | training step | compile time |",
             "|---|---|---|---|---|"]
    lines += [format_compile_row(r) for r in result["rows"]]
    return "\n".join(lines) + "\n"


def format_row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['model']} | {r['peer']} | {r['sepkit_params']:,} | skipped: {r['skipped']} | | |"
    return (f"| {r['model']} | {r['peer']} | {r['sepkit_params']:,} / {r['peer_params']:,} | "
            f"{r['inference_sepkit_s'] * 1e3:.0f} / {r['inference_peer_s'] * 1e3:.0f} ms ({r['inference_ratio']:.2f}x"
            f"{_range(r, 'inference')}) | "
            f"{r['training_sepkit_s'] * 1e3:.0f} / {r['training_peer_s'] * 1e3:.0f} ms ({r['training_ratio']:.2f}x"
            f"{_range(r, 'training')}) | "
            f"{r['training_ckpt_s'] * 1e3:.0f} ms ({r['checkpointing_time_factor']:.2f}x) |")


def _range(row: dict, mode: str) -> str:
    lo_hi = row.get(f"{mode}_ratio_range")
    return f", rounds {lo_hi[0]:.2f} to {lo_hi[1]:.2f}" if lo_hi else ""


def _mb(row: dict, key: str) -> str:
    if f"{key}_mb" in row:
        return f"{row[f'{key}_mb']:.0f} MB"
    return f"skipped ({row.get(f'{key}_skipped', 'not run')})"


def format_memory_row(r: dict) -> str:
    ratio = {k: f" ({r[f'ratio_{k}']:.2f}x)" if f"ratio_{k}" in r else "" for k in ("none", "blocks")}
    return (f"| {r['model']} | {r['seconds']:g} s | {_mb(r, 'sepkit_none')}{ratio['none']} | "
            f"{_mb(r, 'sepkit_blocks')}{ratio['blocks']} | {_mb(r, 'peer')} |")


def markdown(result: dict) -> str:
    c, m = result["config"], result["machine"]
    lines = []
    if result["rows"]:
        if "rounds" in c:
            how = (f"each figure the median over {c['rounds']} rounds of fresh processes (sepkit, peer and sepkit "
                   f"with checkpointing in turn) of each process's median of {c['reps']} repetitions after "
                   f"{c['warmup']} warm-up; allocator: {c['timing_malloc']} (`perf/models.py`, TIMING_MALLOC); "
                   "ratio = peer time / sepkit time (above 1: sepkit is faster), with its lowest and highest "
                   "round")
        else:
            how = (f"median of {c['reps']} interleaved repetitions; ratio = peer time / sepkit time (above 1: "
                   "sepkit is faster)")
        lines += [f"Separators vs peers on the CPU ({m['cpu']}, {c['threads']} threads, torch {m['torch']}, {m['date']}): "
                  f"batch {c['batch']} x {c['seconds']:g} s at {c['sample_rate']} Hz, {c['dtype']}, {how}; the last "
                  "column is sepkit's training step with `checkpointing: blocks` (factor: its time / the step without).",
                  "",
                  "| model | peer | parameters (sepkit / peer) | inference (sepkit / peer) | training step (sepkit / peer) "
                  "| training step, checkpointing |",
                  "|---|---|---|---|---|---|"]
        lines += [format_row(r) for r in result["rows"]]
    if result.get("memory"):
        where = ("peak CUDA memory allocated by the step" if c["device"] == "cuda" else
                 "peak resident-memory growth of the step, each in a fresh process, "
                 + ("glibc blocks over 128 KiB mmapped so that the peak follows the live tensors"
                    if c.get("malloc", "live") == "live" else "glibc's default allocator settings"))
        lines += ([""] if lines else []) + [
            f"Training-step memory ({where}; {m['cpu'] if c['device'] == 'cpu' else 'GPU'}, {c['threads']} threads, "
            f"torch {m['torch']}, {m['date']}): batch 1, fp32; ratio = peer / sepkit (above 1: sepkit needs less).",
            "",
            "| model | length | sepkit | sepkit, checkpointing | peer |",
            "|---|---|---|---|---|"]
        lines += [format_memory_row(r) for r in result["memory"]]
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- models-table:start -->", "<!-- models-table:end -->"
COMPILE_START, COMPILE_END = "<!-- models-compile-table:start -->", "<!-- models-compile-table:end -->"


def update_readme(text: str, readme: Path, start: str = README_START, end: str = README_END) -> bool:
    """Replace the README's models table (between its markers ``start`` and ``end``) with ``text``."""
    from perf.report import replace_block

    return replace_block(readme, start, end, text)


def combine(sources: list[Path], out: Path, readme: bool) -> int:
    """One result from several runs: the timing rows of the first file with rows, the memory
    rows of the last file with memory rows (each table keeps its own run's header)."""
    results = []
    for p in sources:
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            print(f"python -m perf models --from: cannot read {p}: {err}", file=sys.stderr)
            return 2
        if not isinstance(doc, dict) or not ("rows" in doc or "memory" in doc) or "config" not in doc:
            print(f"python -m perf models --from: {p} is not a perf models result (no rows, memory or config)",
                  file=sys.stderr)
            return 2
        results.append(doc)
    timed = next((r for r in results if r.get("rows")), None)
    memory = next((r for r in reversed(results) if r.get("memory")), None)
    parts = []
    if timed is not None:
        parts.append(markdown(dict(timed, memory=[])))
    if memory is not None:
        parts.append(markdown(dict(memory, rows=[])))
    text = "\n".join(parts)
    combined = dict(timed or memory, rows=(timed or {}).get("rows", []), memory=(memory or {}).get("memory", []),
                    memory_run={k: memory[k] for k in ("config", "machine")} if memory else None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "models_cpu.json").write_text(json.dumps(combined, indent=1))
    (out / "models_cpu.md").write_text(text)
    print(text)
    if readme:
        path = Path(__file__).resolve().parents[1] / "README.md"
        if not update_readme(text, path):
            print(f"{path} has no {README_START} ... {README_END} markers; not updated", file=sys.stderr)
            return 2
        print(f"updated {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(PEERS), help="only this model (repeatable)")
    parser.add_argument("--seconds", type=float, default=4.0, help="input length of the timings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="repetitions per process")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per implementation")
    parser.add_argument("--timing-malloc", choices=tuple(TIMING_MALLOC), default="steady",
                        help="allocator of the timing processes (see TIMING_MALLOC)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="also the peak memory of a training step")
    parser.add_argument("--memory-only", action="store_true", help="the memory table alone, no timings")
    parser.add_argument("--lengths", type=float, nargs="+", default=[4.0, 8.0], help="input lengths of the memory runs")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the memory runs go")
    parser.add_argument("--malloc", choices=("live", "glibc"), default="live",
                        help="CPU memory runs: live tensors (default, see MALLOC_ENV) or glibc's defaults")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="also rewrite the README's models table")
    parser.add_argument("--compile", nargs="?", const="default", choices=("default", "max-autotune"),
                        help="compiled sepkit (torch.compile, MODE default) beside each peer eager and compiled, "
                        "compile time apart; results in --out/models_cpu_compile.*")
    parser.add_argument("--compile-backend", choices=("inductor", "aot_eager"), default="inductor",
                        help="with --compile: torch.compile backend (aot_eager: graphs without code generation, "
                        "for checking the harness, not a measurement)")
    parser.add_argument("--from", dest="sources", type=Path, nargs="+",
                        help="measure nothing: combine these result JSON files (timings of the first that has "
                        "them, memory of the last that has it) into --out/models_cpu.* (and --readme)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.reps < 1 or args.warmup < 0 or args.threads < 1 or args.seconds <= 0:
        parser.error("need --rounds >= 1, --reps >= 1, --warmup >= 0, --threads >= 1 and --seconds > 0")
    if args.sources:
        return combine(args.sources, args.out, args.readme)
    if args.compile:
        return main_compile(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("python -m perf models: --device cuda needs a CUDA GPU", file=sys.stderr)
        return 2
    lengths = args.lengths if (args.memory or args.memory_only) else None
    result = run(args.model or sorted(PEERS), args.seconds, args.threads, args.reps, args.warmup,
                 timing=not args.memory_only, memory_lengths=lengths, device=args.device, malloc=args.malloc,
                 rounds=args.rounds, timing_malloc=args.timing_malloc)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "models_cpu" if not args.memory_only else "models_memory"
    if args.device == "cuda":
        stem += "_cuda"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    if args.readme:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        if not update_readme(markdown(result), readme):
            print(f"{readme} has no {README_START} ... {README_END} markers; not updated", file=sys.stderr)
            return 2
        print(f"updated {readme}")
    return 0


def main_compile(args) -> int:
    """``--compile``: :func:`compile_rows`, written to ``--out/models_cpu_compile.{json,md}``
    (and the README's compiled-models table with ``--readme``)."""
    import sepkit

    if args.warmup < 1:
        print("python -m perf models --compile: need --warmup >= 1 (the first call compiles)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = compile_rows(args.model or sorted(PEERS), args.seconds, args.threads, args.reps, args.warmup, args.rounds,
                        args.timing_malloc, args.compile, args.compile_backend)
    result = {"rows": rows,
              "config": {"batch": 1, "seconds": args.seconds, "sample_rate": 8000, "dtype": "fp32",
                         "threads": args.threads, "reps": args.reps, "warmup": args.warmup, "rounds": args.rounds,
                         "timing_malloc": args.timing_malloc, "compile_mode": args.compile,
                         "compile_backend": args.compile_backend, "device": "cpu"},
              "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "sepkit": sepkit.__version__, "python": platform.python_version(),
                          "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}}
    args.out.mkdir(parents=True, exist_ok=True)
    text = compile_markdown(result)
    (args.out / "models_cpu_compile.json").write_text(json.dumps(result, indent=1))
    (args.out / "models_cpu_compile.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'models_cpu_compile.json'} and {args.out / 'models_cpu_compile.md'}")
    if args.readme:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        if not update_readme(text, readme, COMPILE_START, COMPILE_END):
            print(f"{readme} has no {COMPILE_START} ... {COMPILE_END} markers; not updated", file=sys.stderr)
            return 2
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
