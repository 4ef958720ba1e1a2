"""The prepared GPU check, on the CPU: its dry run end to end, its pytest plugin, the benchmark
worker's time shares, the output limits, the targets and ``perf.report --from``."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from perf import gpu_check, report
from perf.gpu import runner, workers
from perf.gpu.stages import KERNEL_OPS, STAGES, run_check

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check-out")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)  # the stages must find their own way to the interpreter
    proc = subprocess.run([sys.executable, "-m", "perf.gpu_check", "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    return out, proc


def test_dry_run_invokes_every_stage_or_says_why_not(dry):
    out, proc = dry
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    stages = {s["name"]: s for s in record["stages"]}
    assert list(stages) == ["facts", "check", "kernel-tests", "model-tests", "kernel-bench", "model-bench", "sweep"]
    assert stages["check"]["status"] == "pass" and "3 of 3 checks passed" in stages["check"]["detail"]
    for name in ("kernel-tests", "model-tests"):
        assert stages[name]["status"] == "pass", stages[name]
        assert "1 passed, 0 failed" in stages[name]["detail"]
    assert "tests/test_snake.py" in stages["kernel-tests"]["detail"]
    bench = stages["kernel-bench"]
    assert bench["status"] == "skipped" and "5 modules import" in bench["detail"]
    models = [p for p in (ROOT / "perf").glob("bench_*.py") if p.stem[len("bench_"):] not in KERNEL_OPS]
    model_bench = stages["model-bench"]
    assert model_bench["status"] == "skipped", model_bench
    want = f"{len(models)} modules import" if models else "no model-level"
    assert want in model_bench["detail"]
    for stage in stages.values():
        assert stage["status"] != "not run" and (stage["status"] == "pass" or stage["detail"])
    assert record["facts"]["dry_run"] is True and record["facts"]["imports"]["torch"] is True
    # the printed table: stages, targets, what was skipped for time
    assert "| kernel-tests | pass |" in proc.stdout and "| target (docs/DESIGN.md) |" in proc.stdout
    assert "Skipped for time:" in proc.stdout
    assert {t["verdict"] for t in record["targets"]} == {"not measured"}


def test_dry_run_output_respects_the_device_limits(dry):
    out, _ = dry
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 4 <= len(files) <= runner.MAX_FILES
    assert all(p.stat().st_size <= runner.MAX_FILE_BYTES for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert {"summary.md", "gpu_check.json", "results.json", "pytest.txt", "logs.tar.gz"} <= {p.name for p in files}
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/check.log" in names and "logs/kernel-tests.log" in names


def test_report_refuses_a_dry_run_folder(dry, tmp_path):
    out, _ = dry
    with pytest.raises(ValueError, match="dry run"):
        report.merge_from(out, tmp_path)
    with pytest.raises(FileNotFoundError, match="results.json"):
        report.merge_from(tmp_path, tmp_path / "r")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_without_a_gpu_the_real_run_stops_after_the_facts(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path), "--budget-s", "120"]) == 1
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    facts, *rest = record["stages"]
    assert facts["status"] == "FAIL" and "no CUDA device" in facts["detail"]
    assert [s["status"] for s in rest] == ["skipped"] * 6 and "no CUDA device" in rest[0]["detail"]
    assert "| facts | FAIL |" in capsys.readouterr().out


def test_only_reruns_the_chosen_stages_after_the_facts(tmp_path, capsys):
    chk = run_check(tmp_path, 120, dry=True, only=("sweep",))
    status = {s.name: (s.status, s.detail) for s in chk.stages}
    assert list(status) == list(STAGES) and status["facts"][0] == "pass"
    assert status["check"] == ("skipped", "not selected (--only)")
    with pytest.raises(SystemExit):
        gpu_check.main(["--only", "kernel-test"])
    assert "unknown stage 'kernel-test'" in capsys.readouterr().err


def _pytest(tmp_path, env_extra, body, conftest=""):
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(body))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), SEPKIT_GPU_CHECK_EVENTS=str(tmp_path / "events.jsonl"), **env_extra)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "perf.gpu.plugin", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    return proc, events


def test_plugin_bounds_examples_and_logs_outcomes(tmp_path):
    proc, events = _pytest(tmp_path, {"SEPKIT_GPU_CHECK_MAX_EXAMPLES": "7"}, """
        from hypothesis import given, strategies as st
        CALLS = []

        @given(st.integers())
        def test_counts(x):
            CALLS.append(x)

        def test_seen():
            assert len(CALLS) <= 7

        def test_fails():
            assert 1 == 2, "planted"
        """, conftest="""
        from hypothesis import settings
        settings.register_profile("probe", max_examples=500, deadline=None)
        settings.load_profile("probe")   # what tests/conftest.py does at import time
        """)
    assert proc.returncode == 1
    outcome = {e["nodeid"].split("::")[-1]: e for e in events}
    assert outcome["test_counts"]["outcome"] == "passed" and outcome["test_seen"]["outcome"] == "passed"
    assert outcome["test_fails"]["outcome"] == "failed" and "planted" in outcome["test_fails"]["message"]


def test_plugin_skips_for_time_past_the_deadline_and_keeps_one_item_per_file(tmp_path):
    proc, events = _pytest(tmp_path, {"SEPKIT_GPU_CHECK_DEADLINE": str(time.time() - 1),
                                      "SEPKIT_GPU_CHECK_ITEMS_PER_FILE": "1"}, """
        def test_a():
            pass

        def test_b():
            raise AssertionError("deselected, never run")
        """)
    assert proc.returncode == 0 and "1 deselected" in proc.stdout
    assert len(events) == 1 and events[0]["outcome"] == "skipped" and "skipped for time" in events[0]["message"]


def test_bench_worker_stops_a_module_at_its_time_share(tmp_path, monkeypatch):
    class FakeContext:
        def __init__(self, quick):
            self.quick, self.rows, self.notes = quick, [], []
            self.facts = dict(gpu="FakeGPU", date="2026-01-01T00:00:00+00:00")
            self.copy_bandwidth = self.matmul_tflops = 1.0

    def slow(ctx):
        ctx.rows.append(dict(op="slow"))
        try:
            time.sleep(30)
        except Exception:  # what the bench modules do: must not swallow the stop
            pass

    def fast(ctx):
        ctx.rows.append(dict(op="fast"))

    def broken(ctx):
        raise RuntimeError("planted")

    for name, fn in (("slow", slow), ("fast", fast), ("broken", broken)):
        monkeypatch.setitem(sys.modules, f"perf.bench_{name}", types.SimpleNamespace(run=fn))
    import perf.harness

    monkeypatch.setattr(perf.harness, "Context", FakeContext)
    path = tmp_path / "bench.json"
    t = time.time()
    assert workers.bench_worker(path, ["slow", "fast", "broken", "missing"], time.time() + 15, True, False) == 0
    assert time.time() - t < 12  # slow gets a third of 15 s
    data = json.loads(path.read_text())
    assert data["status"]["slow"].startswith("stopped for time") and data["status"]["fast"] == "done"
    assert "planted" in data["status"]["broken"] and data["status"]["missing"].startswith("failed to import")
    assert [r["op"] for r in data["rows"]] == ["slow", "fast"]


def test_enforce_limits_cuts_and_drops(tmp_path):
    (tmp_path / "pytest.txt").write_bytes(b"a" * 600 + b"b" * 5000 + b"z" * 600)
    (tmp_path / "plots.tar").write_bytes(b"x" * 2000)
    for i in range(10):
        (tmp_path / f"extra{i}.txt").write_text("x")
    left = dict(runner.enforce_limits(tmp_path, runner.Limits(max_file_bytes=1000)))
    assert len(left) <= runner.MAX_FILES and all(size <= 1000 for size in left.values())
    text = (tmp_path / "pytest.txt").read_bytes()
    assert text.startswith(b"a") and text.endswith(b"z") and b"cut by gpu_check" in text
    assert "plots.tar" not in left and "plots.tar" in (tmp_path / "dropped.txt").read_text()


def test_enforce_limits_takes_the_file_count_and_keeps_the_checks_own_files_first(tmp_path):
    for name in ("zz-extra.txt", "summary.md", "gpu_check.json", "pytest.txt", "results.json"):
        (tmp_path / name).write_text(name)
    left = dict(runner.enforce_limits(tmp_path, runner.Limits(max_files=3)))
    assert set(left) == {"gpu_check.json", "pytest.txt", "dropped.txt"}
    dropped = (tmp_path / "dropped.txt").read_text()
    assert "3 files, 16 MiB each" in dropped and "summary.md" in dropped and "zz-extra.txt" in dropped
    assert runner.Limits() == runner.Limits(8, 16 * 2**20)  # the defaults


def test_output_limits_are_options_with_documented_defaults(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-files MAX_FILES most files the output folder may hold (default 8)" in text
    assert "largest size of one output file in MiB (default 16)" in text
    for bad, message in ((["--max-files", "1"], "--max-files must be >= 2"),
                         (["--max-file-mib", "0"], "--max-file-mib must be >= 0.01")):
        with pytest.raises(SystemExit):
            gpu_check.main(["--dry-run", "--out", str(tmp_path), *bad])
        assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any work


def test_dry_run_keeps_the_output_inside_limits_given_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_check.main(["--dry-run", "--only", "check", "--out", str(out), "--budget-s", "60",
                           "--max-files", "3", "--max-file-mib", "0.01"]) == 0
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert len(files) == 3 and "dropped.txt" in files and all(n <= 10485 for n in files.values())
    assert "over the output limits (3 files, 10485 bytes each)" in (out / "dropped.txt").read_text()
    assert "output: " in capsys.readouterr().out


def _row(op, provider, mode, metric, p50, x, config=None, unit="ms"):
    return dict(op=op, provider=provider, mode=mode, metric=metric, unit=unit, x_name="x", x_value=x, p50=p50,
                p20=p50, p80=p50, config=config or {}, gpu="TestGPU", torch="t", triton="t", sepkit="t",
                timestamp="2026-01-01T00:00:00+00:00")


ROWS = [
    _row("snake", "sepkit", "full", "time", 1.0, 4096), _row("snake", "torch", "full", "time", 4.0, 4096),
    _row("snake", "sepkit", "full", "pct_copy_bandwidth", 85.0, 4096, unit="%"),
    _row("snake", "sepkit", "full", "pct_copy_bandwidth", 20.0, 16, unit="%"),  # not the headline size
    _row("attention", "sepkit", "full", "time", 1.0, "self L=1024"),
    _row("attention", "sdpa.flash", "full", "time", 0.8, "self L=1024"),
    _row("attention", "sdpa.math", "full", "time", 5.0, "self L=1024"),
    _row("attention", "sepkit", "full", "time", 1.0, "cross Lq=4096 Lk=16"),
    _row("attention", "xformers", "full", "time", 1.2, "cross Lq=4096 Lk=16"),
    _row("mmd", "sepkit", "full", "time", 2.0, 16384, {"D": 256}),
    _row("mmd", "cdist", "full", "time", 12.0, 16384, {"D": 256}),
    _row("mmd", "sepkit", "full", "time", 9.0, 65536, {"D": 256}),
    _row("mmd", "cdist", "full", "oom", float("nan"), 65536, {"D": 256}, unit=""),
    _row("nce", "sepkit", "full", "time", 1.0, 4000), _row("nce", "gathered", "full", "time", 2.0, 4000),
    _row("nce", "sepkit", "full", "peak_memory", 5.0, 4000, unit="MiB"),
    _row("nce", "gathered", "full", "peak_memory", 100.0, 4000, unit="MiB"),
    _row("dip", "sepkit", "step", "time", 10.0, "8x15"), _row("dip", "reference", "step", "time", 20.0, "8x15"),
    _row("codecformer", "codecformer-kernels", "train", "step_time", 1.0, 1.0),
    _row("codecformer", "codecformer-reference", "train", "step_time", 1.2, 1.0),
]


def test_targets_read_the_design_ratios():
    got = {t["target"]: t for t in report.targets(ROWS)}
    snake_bw = got["snake full: % of copy bandwidth"]
    assert snake_bw["value"] == 85.0 and snake_bw["verdict"] == "met"
    assert got["snake full: speedup vs eager"]["value"] == 4.0
    self_attn = got["attention full self-attention: vs best SDPA"]
    assert self_attn["value"] == pytest.approx(0.8) and self_attn["verdict"] == "MISSED"
    assert got["attention full cross-attention: vs best SDPA / xformers"]["value"] == pytest.approx(1.2)
    mmd = got["mmd full: speedup vs cdist at 16k x 16k x 256"]
    assert mmd["value"] == 6.0 and mmd["verdict"] == "met"
    assert got["mmd runs where cdist runs out of memory"]["verdict"] == "met"
    assert got["nce full: peak memory vs gathered"]["value"] == 0.05
    assert got["nce full: speedup vs gathered"]["verdict"] == "MISSED"
    assert got["dip step: kernels vs reference"]["value"] == 2.0
    cf = got["codecformer train: kernels vs reference"]
    assert cf["value"] == pytest.approx(1.2) and cf["verdict"] == "MISSED"
    assert got["stft_mask full: speedup vs eager"]["verdict"] == "not measured"


def test_pack_with_benchmark_rows_stays_inside_the_limits(tmp_path):
    chk = runner.Check(tmp_path, 480, False, 20, 0)
    rows = ROWS + [_row(op, "sepkit", mode, "bandwidth", 100.0, 4096, unit="GB/s")
                   for op in ("snake", "stft_mask", "nce") for mode in ("fwd", "full", "full:a", "full:b")]
    chk.bench = dict(facts=dict(gpu="TestGPU", date="2026-01-01T00:00:00+00:00"), notes=["n"], rows=rows)
    chk.stages = [runner.Stage("facts", 30, "pass", 1.0, "ok")]
    chk.pack(final=True)
    files = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    import importlib.util

    plots = importlib.util.find_spec("matplotlib") is not None  # the perf extra draws them
    expected = set(runner.OUTPUT_FILES) - (set() if plots else {"plots.tar"})
    assert set(files) == expected and len(files) <= runner.MAX_FILES
    if plots:
        with tarfile.open(tmp_path / "plots.tar") as tar:
            assert len(tar.getnames()) == 12 and all(n.endswith(".png") for n in tar.getnames())
    summary = (tmp_path / "summary.md").read_text()
    assert "| snake full: speedup vs eager | 4.00x | >= 3x | met |" in summary
    assert json.loads((tmp_path / "results.json").read_text())["facts"]["dry_run"] is False


def test_report_from_merges_a_returned_folder_and_names_the_device(tmp_path):
    returned = tmp_path / "returned"
    returned.mkdir()
    facts = dict(gpu="NVIDIA H200", capability="9.0", memory_gib=139.8, driver="580.1", copy_bandwidth_gbs=4300.0,
                 matmul_tflops_bf16=790.0, torch="2.11", triton="3.6", sepkit="0.1.0", date="2026-12-01T12:00:00+00:00")
    (returned / "results.json").write_text(json.dumps(dict(facts=facts, notes=["n"], rows=ROWS)))
    (returned / "summary.md").write_text("# sepkit GPU check\n")
    png = tmp_path / "bench-snake-full.png"
    png.write_bytes(b"\x89PNG")
    with tarfile.open(returned / "plots.tar", "w") as tar:
        tar.add(png, arcname=png.name)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nrest\n")
    results = tmp_path / "results"
    assert report.main(["--from", str(returned), "--results", str(results), "--readme", str(readme)]) == 0
    names = sorted(p.name for p in results.iterdir())
    stem = report._stamp(facts["date"]) + "-nvidia-h200"  # the names python -m perf gives its own results
    assert names == [f"{stem}-bench-snake-full.png", f"{stem}-check.md", f"{stem}.json", f"{stem}.md"]
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "NVIDIA H200 (sm_90, 139.8 GiB, driver 580.1)" in text
    assert "**dip**" in text and "| stft_mask | not yet measured on a GPU |" in text
    assert "| mmd full: speedup vs cdist at 16k x 16k x 256 | 6.00x | >= 5x | met |" in text
    assert report.main(["--from", str(tmp_path / "nowhere"), "--results", str(results), "--readme", str(readme)]) == 2
