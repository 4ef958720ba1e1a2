"""The perf harness's reporting (synthetic rows) and its refusal to time anything without CUDA."""
import json

import pytest
import torch

from perf import report
from perf.__main__ import available, main


def _row(provider, mode, metric, p50, unit="ms"):
    return dict(op="snake", provider=provider, mode=mode, metric=metric, unit=unit, x_name="elements",
                x_value=1024, p50=p50, p20=p50, p80=p50, config={}, gpu="TestGPU", torch="t", triton="t",
                sepkit="t", timestamp="2026-01-01T00:00:00+00:00")


FACTS = dict(gpu="TestGPU", copy_bandwidth_gbs=100.0, matmul_tflops_bf16=10.0, torch="t", triton="t", sepkit="t",
             date="2026-01-01T00:00:00+00:00")


def test_comparison_rows_compute_speedups_and_oom():
    rows = [_row("sepkit", "fwd", "time", 1.0), _row("torch", "fwd", "time", 3.0),
            _row("sepkit", "fwd", "pct_copy_bandwidth", 85.0, "%"), _row("cdist", "fwd", "oom", float("nan"), "")]
    (c,) = report.comparison_rows(rows)
    assert c["ours"] == 1.0 and c["baselines"]["torch"] == (3.0, 3.0)
    assert c["baselines"]["cdist"] == ("oom", None) and c["ceiling"] == (85.0, "copy")
    table = report.markdown_table(rows, FACTS)
    assert "torch: 3 (3.00x)" in table and "cdist: OOM" in table and "85% copy" in table


def test_readme_table_says_not_measured_without_results(tmp_path):
    table = report.readme_table(tmp_path)
    for op in report.OPS:
        assert f"| {op} | not yet measured on a GPU |" in table
    (tmp_path / "r.json").write_text(json.dumps(dict(facts=FACTS, notes=[], rows=[_row("sepkit", "fwd", "time", 2.0)])))
    table = report.readme_table(tmp_path)
    assert "| snake | not yet measured" not in table and "TestGPU" in table


def test_every_kernel_has_a_benchmark():
    assert {"snake", "stft_mask", "attention", "mmd", "nce"} <= set(available())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_perf_refuses_without_cuda(capsys):
    assert main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_models_timing_in_a_fresh_process():
    """perf models times each implementation in a process of its own and reports page faults."""
    from perf import models

    out = models.time_in_process("sepkit", "convtasnet", 0.05, 1, reps=2, warmup=1, modes=("inference",))
    assert set(out) == {"inference", "params"} and out["params"] == 4_984_881
    r = out["inference"]
    assert r["median_s"] > 0 and len(r["times_s"]) == 2 and len(r["page_faults"]) == 2
    with pytest.raises(RuntimeError, match="timing run"):
        models.time_in_process("sepkit", "no-such-model", 0.05, 1, reps=1, warmup=0, modes=("inference",))


def test_models_table_states_the_rounds_and_their_spread():
    from perf import models

    row = dict(model="convtasnet", peer="p", sepkit_params=1, peer_params=1, inference_sepkit_s=0.4,
               inference_peer_s=0.5, inference_ratio=1.25, inference_ratio_range=[1.1, 1.3], training_sepkit_s=1.5,
               training_peer_s=1.8, training_ratio=1.2, training_ratio_range=[1.0, 1.4], training_ckpt_s=1.8,
               checkpointing_time_factor=1.2)
    doc = dict(rows=[row], memory=[], config=dict(batch=1, seconds=4.0, sample_rate=8000, dtype="fp32", threads=2,
                                                     reps=3, warmup=1, rounds=3, timing_malloc="steady", device="cpu"),
               machine=dict(cpu="x", torch="t", date="d"))
    text = models.markdown(doc)
    assert "median over 3 rounds of fresh processes" in text and "allocator: steady" in text
    assert "400 / 500 ms (1.25x, rounds 1.10 to 1.30)" in text


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--reps", "0"], ["--seconds", "0"]])
def test_models_rejects_bad_counts(bad, capsys):
    from perf import models

    with pytest.raises(SystemExit) as err:
        models.main(["--model", "convtasnet", *bad])
    assert err.value.code == 2 and "need --rounds >= 1" in capsys.readouterr().err


def test_models_from_refuses_missing_or_foreign_files(tmp_path, capsys):
    from perf import models

    foreign = tmp_path / "x.json"
    foreign.write_text('{"a": 1}')
    out = tmp_path / "out"
    assert models.main(["--from", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert models.main(["--from", str(foreign), "--out", str(out)]) == 2
    assert "not a perf models result" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_data_table_lists_every_worker_count_and_the_training_rates(tmp_path):
    from perf import data

    result = {"config": {"batches": 5, "rounds": 2, "workers": [0, 2], "steps": 3, "threads": 1, "rooms": "rooms",
                         "quick": False},
              "machine": {"cpu": "x86_64", "cores": 2, "torch": "2", "date": "today"},
              "rows": [{"data": "synthetic", "augment": a, "workers": w, "items_per_s": 10.0 * (w + 1) + a}
                       for a in (False, True) for w in (0, 2)],
              "training": [{"model": "convtasnet demo", "step_s": 0.25, "items_per_s": 16.0}]}
    text = data.markdown(result)
    assert "| synthetic | off | 10.0 | 30.0 |" in text and "| synthetic | on | 11.0 | 31.0 |" in text
    assert "| convtasnet demo | 250 | 16.00 |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{data.README_START}\nold\n{data.README_END}\nb\n")
    assert data.update_readme(text, readme) and "\nold\n" not in readme.read_text() and text in readme.read_text()


def test_export_runs_end_to_end_on_tiny_models(tmp_path):
    """perf export --quick: a separator and the GCRN step exported, timed in both runtimes in fresh
    processes, the outputs of the two equal, the tables written (never into perf/results)."""
    from perf import export

    out = tmp_path / "out"
    assert export.main(["--quick", "--model", "convtasnet", "--model", "gcrn-ondevice", "--rounds", "1",
                        "--reps", "1", "--threads", "1", "--seconds", "0.25", "--out", str(out)]) == 0
    result = json.loads((out / "export_cpu.json").read_text())
    sep, step = result["rows"]
    assert sep["model"] == "convtasnet" and step["model"] == "gcrn-ondevice"
    for row in (sep, step):
        assert row["torch_s"] > 0 and row["ort_s"] > 0 and row["ratio"] == row["torch_s"] / row["ort_s"]
        assert row["difference"] <= 1e-4 and row["check_error"] <= 1e-4
        assert len(row["processes"]["torch"]) == len(row["processes"]["ort"]) == 1
    assert step["hop"] == 32 and step["hops"] == 0.25 * 16000 // 32
    assert step["ort_rtf"] == step["ort_per_hop_s"] / (32 / 16000)
    text = (out / "export_cpu.md").read_text()
    assert "QUICK, tiny models: not a measurement" in text and "| gcrn-ondevice |" in text and "(RTF " in text


def test_export_refuses_bad_values_and_marks_skipped_models(tmp_path, capsys):
    from perf import export

    for bad in (["--threads", "0"], ["--reps", "0"], ["--rounds", "0"], ["--seconds", "-1"], ["--quick"],
                ["--quick", "--readme", "--out", str(tmp_path)]):
        assert export.main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("python -m perf export: ") and "\n" not in err
    row = {"model": "tfgridnet", "params": 5, "skipped": "does not export: why"}
    assert export.format_row(row) == "| tfgridnet | 5 | does not export: why | | | |"
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{export.README_START}\nold\n{export.README_END}\nb\n")
    assert export.update_readme("new\n", readme)
    assert readme.read_text() == f"a\n{export.README_START}\nnew\n{export.README_END}\nb\n"


def test_separate_long_runs_end_to_end_with_bounded_memory(tmp_path):
    """perf separate-long --quick: a checkpoint, a speech-like WAV, the blockwise and the in-memory
    calls each in a fresh process with its peak memory, outputs of the file's length."""
    import soundfile as sf

    from perf import separate_long

    pool = separate_long.mixture_pool(2)
    wav = tmp_path / "x.wav"
    assert separate_long.write_long_wav(wav, 3.0, pool) == 3 * separate_long.RATE
    x, rate = sf.read(str(wav))
    assert rate == 8000 and len(x) == 24000 and 0.01 < abs(x).max() <= 1  # speech-like, not silence

    out = tmp_path / "out"
    assert separate_long.main(["--quick", "--minutes", "0.25", "--in-memory-minutes", "0.25", "--threads", "1",
                               "--out", str(out)]) == 0
    result = json.loads((out / "separate_long_cpu.json").read_text())
    assert [r["mode"] for r in result["rows"]] == ["blockwise", "in-memory"]
    for r in result["rows"]:
        assert r["output_frames"] == [r["samples"]] * 2 and r["samples"] == 15 * 8000
        assert 0 <= r["growth_mb"] < r["peak_mb"] and r["loaded_mb"] > 0 and r["wall_s"] > 0
    assert "QUICK: not a measurement" in (out / "separate_long_cpu.md").read_text()
    assert separate_long.main(["--minutes", "0"]) == 2
    assert separate_long.main(["--quick", "--out", str(separate_long.RESULTS)]) == 2
