"""The ``sepkit check`` command: a table of every kernel against its reference, failures reported."""
import torch

from sepkit.cli import main
from sepkit.kernels import selftest


def test_check_passes_every_registered_op(capsys):
    assert main(["check", "--op", "snake", "--op", "stft_mask"]) == 0
    out = capsys.readouterr().out
    for op in ("snake", "stft_mask"):
        assert op in out
    assert "FAIL" not in out and "checks passed" in out


def test_check_reports_a_wrong_kernel(monkeypatch, capsys):
    def broken():
        def run(backend, x):
            y = x * 2
            return y + 1e-2 if backend == "triton" else y  # the "kernel" is off by 1e-2

        return selftest.Case("broken", run, lambda g: dict(x=torch.randn(8, generator=g, dtype=torch.float64)),
                             grad=("x",), dtypes=(torch.float32,))

    monkeypatch.setattr(selftest, "CASES", [broken])
    assert main(["check"]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "broken" in captured.err
