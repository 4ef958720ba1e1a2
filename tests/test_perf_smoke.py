"""``sepkit perf --smoke``: every benchmark runs its whole body on the CPU, and nothing it writes
passes for a measurement.

One smoke run of every benchmark (``python -m sepkit perf --smoke``, which runs ``python -m perf
--smoke``, in a subprocess without TRITON_INTERPRET: the command must switch the interpreter on
itself) feeds the per-op checks. torch.compile providers build with ``aot_eager`` here (Dynamo
capture and the AOTAutograd split, no C++ build: inductor's CPU build takes tens of seconds per
run on a small machine); the command's default is inductor.
"""
import hashlib
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from perf import report
from perf.__main__ import available, main
from perf.report import RESULTS, SMOKE_MARK

ROOT = Path(__file__).resolve().parent.parent
NO_CUDA = "no CUDA device here; the benchmarks time Triton kernels on a GPU only"
KERNEL_OPS = ("attention", "mmd", "nce", "snake", "stft_mask")


def _compile_failed(what):
    return (f"torch.compile({what}) failed",)


def _sdpa(short, attr):
    return (f"attention sdpa.{short} ", f"SDPA backend {attr} not in this torch", "sdpa_kernel unavailable")


#: op -> provider -> notes that excuse its absence (empty: the provider must have run).
EXPECTED = {
    "attention": {"sepkit": (), "reference": (), "reference.compile": _compile_failed("reference"),
                  "sdpa.flash": _sdpa("flash", "FLASH_ATTENTION"), "sdpa.efficient": _sdpa("efficient", "EFFICIENT_ATTENTION"),
                  "sdpa.cudnn": _sdpa("cudnn", "CUDNN_ATTENTION"), "sdpa.math": _sdpa("math", "MATH"),
                  "xformers": ("xformers not importable",)},
    "mmd": {"sepkit": (), "cdist": (), "cdist.compile": _compile_failed("cdist")},
    "nce": {"sepkit": (), "gathered": (), "gathered.compile": _compile_failed("gathered")},
    "snake": {"sepkit": (), "torch": (), "torch.compile": _compile_failed("reference"), "dac-torchscript": ()},
    "stft_mask": {"sepkit": (), "torch": (), "torch.compile": _compile_failed("reference")},
    "codecformer": {"codecformer-kernels": (), "codecformer-reference": (), "sepformer-kernels": (),
                    "sepformer-reference": (), "codecformer_separator": (), "sepformer": ()},
    "dip": {"sepkit": (), "reference": ()},
    "exdiff": {"auto": (), "torch": (), "sdpa": ()},
    "exdiff_cross": {"sepkit": (), "sdpa": ()},
    "gcrn": {"sepkit": (), "torch": ()},
}
#: Ops whose benchmark measures peak memory, and the providers that must have a figure.
PEAK = {"attention": ("sepkit", "reference"), "mmd": ("sepkit", "cdist"), "nce": ("sepkit", "gathered"),
        "dip": ("sepkit", "reference")}


def _snapshot():
    """What must not change: every file under perf/results/ and README.md."""
    files = {}
    if RESULTS.exists():
        for p in sorted(RESULTS.rglob("*")):
            if p.is_file():
                st = p.stat()
                files[str(p.relative_to(RESULTS))] = (st.st_size, st.st_mtime_ns)
    readme = ROOT / "README.md"
    digest = hashlib.sha256(readme.read_bytes()).hexdigest() if readme.is_file() else None
    return files, digest


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    before = _snapshot()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke runs on the CPU whatever the machine has
    proc = subprocess.run([sys.executable, "-m", "sepkit", "perf", "--smoke", "--compile-backend", "aot_eager",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    after = _snapshot()
    jsons = sorted(out.glob("*.json"))
    data = json.loads(jsons[0].read_text()) if len(jsons) == 1 else None
    return types.SimpleNamespace(proc=proc, out=out, data=data, before=before, after=after)


def _rows(smoke, op, provider=None):
    return [r for r in smoke.data["rows"] if r["op"] == op and (provider is None or r["provider"] == provider)]


def test_smoke_runs_every_benchmark_and_writes_marked_results(smoke):
    assert smoke.proc.returncode == 0, smoke.proc.stderr[-4000:]
    assert smoke.data is not None, f"expected one JSON in {smoke.out}: {sorted(p.name for p in smoke.out.iterdir())}"
    assert SMOKE_MARK in smoke.proc.stdout
    data = smoke.data
    assert data["smoke"] == SMOKE_MARK and data["facts"]["smoke"] is True
    assert data["facts"]["triton_interpret"] is True  # switched on by the command itself
    assert data["facts"]["compile_backend"] == "aot_eager"
    assert data["rows"] and all(r["smoke"] == SMOKE_MARK for r in data["rows"])
    assert not [n for n in data["notes"] if " failed: " in n and n.startswith("bench_")], data["notes"]
    (md,) = smoke.out.glob("*.md")
    text = md.read_text()
    assert text.startswith(f"**{SMOKE_MARK}**") and "CPU smoke" in text
    pngs = sorted(smoke.out.glob("*.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert pngs == []
    else:
        assert {p.name.split("-smoke-")[1].split("-")[0] for p in pngs} >= {"attention", "mmd", "nce", "snake", "stft"}
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_smoke_touches_neither_results_nor_readme(smoke):
    assert smoke.after == smoke.before
    assert not RESULTS.exists() or not [p for p in RESULTS.rglob("*smoke*")]


@pytest.mark.parametrize("bench", available())
def test_every_benchmark_module_ran(smoke, bench):
    assert smoke.data is not None
    assert not [n for n in smoke.data["notes"] if n.startswith(f"bench_{bench} failed")], smoke.data["notes"]
    ops = {r["op"] for r in smoke.data["rows"] if r["op"] == bench or r["op"].startswith(f"{bench}_")}
    assert ops, f"bench_{bench} recorded no rows"


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_each_provider_ran_or_is_skipped_with_its_reason(smoke, op):
    assert smoke.data is not None
    notes = smoke.data["notes"]
    for provider, excuses in EXPECTED[op].items():
        rows = _rows(smoke, op, provider)
        if rows:
            continue
        assert excuses, f"{op}: provider {provider} did not run"
        assert any(e in n for e in excuses for n in notes), f"{op}: {provider} neither ran nor was noted: {notes}"
    if op in KERNEL_OPS:  # forward and forward+backward of sepkit's kernel
        modes = {r["mode"].split(":")[0] for r in _rows(smoke, op, "sepkit") if r["metric"] == "time"}
        assert modes == {"fwd", "full"}
    if op == "attention":
        labels = {r["x_value"].split()[0] for r in _rows(smoke, op, "sepkit")}
        assert labels == {"self", "causal", "cross", "set-query"}


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_figures_are_finite_and_positive(smoke, op):
    assert smoke.data is not None
    rows = _rows(smoke, op)
    assert rows
    for r in rows:
        assert r["metric"] != "oom", r
        assert isinstance(r["p50"], (int, float)) and math.isfinite(r["p50"]) and r["p50"] > 0, r
        if r["p20"] is not None and r["p80"] is not None:
            assert r["p20"] <= r["p50"] <= r["p80"], r
    assert any(r["metric"] in ("time", "step_time", "s_per_audio_s") for r in rows)


@pytest.mark.parametrize("op", sorted(PEAK))
def test_peak_memory_path_runs(smoke, op):
    assert smoke.data is not None
    for provider in PEAK[op]:
        peaks = [r for r in _rows(smoke, op, provider) if r["metric"] == "peak_memory"]
        assert peaks and all(r["unit"] == "MiB" and 0 < r["p50"] < 1024 for r in peaks), (op, provider)


# --- refusals and guards (no benchmark runs) ---------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("command", [["-m", "perf"], ["-m", "sepkit", "perf"]], ids=["python -m perf", "sepkit perf"])
def test_without_cuda_and_without_smoke_the_commands_refuse(command):
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert NO_CUDA in proc.stderr


def test_smoke_refuses_to_write_into_results(capsys):
    target = RESULTS / "smoke-here"
    assert main(["--smoke", "--out", str(target)]) == 2
    assert "never go there" in capsys.readouterr().err and not target.exists()
    ctx = types.SimpleNamespace(facts=dict(smoke=True, gpu="CPU smoke", date="2026-01-01T00:00:00+00:00"), notes=[],
                                rows=[])
    with pytest.raises(ValueError, match="smoke results never go into"):
        report.write_results(ctx, RESULTS)


def _smoke_results(folder: Path) -> Path:
    row = dict(op="snake", provider="sepkit", mode="fwd", metric="time", unit="ms", x_name="elements", x_value=64,
               p50=1.0, p20=1.0, p80=1.0, config={}, gpu="CPU smoke", torch="t", triton="t", sepkit="t",
               timestamp="2026-01-01T00:00:00+00:00", smoke=SMOKE_MARK)
    facts = dict(gpu="CPU smoke", smoke=True, date="2026-01-01T00:00:00+00:00")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(dict(smoke=SMOKE_MARK, facts=facts, notes=[], rows=[row])))
    return path


def test_readme_table_and_merge_ignore_smoke_results(tmp_path):
    _smoke_results(tmp_path / "results")
    table = report.readme_table(tmp_path / "results")
    assert "| snake | not yet measured on a GPU |" in table and "CPU smoke" not in table
    with pytest.raises(ValueError, match="smoke run"):
        report.merge_from(tmp_path / "results", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
