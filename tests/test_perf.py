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
