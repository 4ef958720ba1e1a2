"""Metrics: SI-SDR / SDR (BSS-eval) against independent implementations, improvements, PESQ / STOI
wrappers against the packages they wrap (skipped when the `eval` extra is not installed)."""
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from sepkit.metrics import estoi, pesq, sdr, sdri, si_sdr, si_sdri, snr, spd_solve, stoi


def speech_like(seed: int, sample_rate: int, seconds: float) -> np.ndarray:
    """Voiced harmonic source with a drifting pitch, syllable-rate envelope and two formant peaks."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    x = voiced * env + 0.05 * rng.standard_normal(n) * env
    for fc in (rng.uniform(500, 800), rng.uniform(1200, 2000)):
        b, a = scipy.signal.iirpeak(fc, 5, fs=sample_rate)
        x = x + scipy.signal.lfilter(b, a, x)
    return 0.1 * x / np.abs(x).max()


def _separation_case(seed: int, n_src: int, length: int, speech: bool):
    """References, and estimates that are filtered references + interference + noise."""
    rng = np.random.default_rng(seed)
    if speech:
        ref = np.stack([speech_like(seed * 10 + s, 8000, length / 8000) for s in range(n_src)])
    else:
        ref = rng.standard_normal((n_src, length))
    est = np.empty_like(ref)
    for s in range(n_src):
        fir = np.r_[1.0, rng.uniform(-0.5, 0.5, size=20)]
        est[s] = scipy.signal.lfilter(fir, [1.0], ref[s])
        est[s] += 0.3 * ref[(s + 1) % n_src] + 0.05 * rng.standard_normal(length) * ref.std()
    return ref, est


# ---------------------------------------------------------------- SDR against BSS-eval


@pytest.mark.parametrize("speech", [False, True], ids=["random", "speech-like"])
@pytest.mark.parametrize("n_src", [1, 2, 3])
def test_sdr_matches_bss_eval_sources(n_src, speech):
    mir_eval = pytest.importorskip("mir_eval")
    refs, ests = zip(*(_separation_case(100 * n_src + b, n_src, 2001, speech) for b in range(2)))
    ref, est = np.stack(refs), np.stack(ests)  # (B, S, T)
    got = sdr(torch.from_numpy(est), torch.from_numpy(ref), eps=0.0)  # the exact maths
    assert got.shape == (2, n_src) and got.dtype == torch.float64
    stabilised = sdr(torch.from_numpy(est), torch.from_numpy(ref))  # default eps = 1e-8
    assert torch.allclose(stabilised, got, atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # bss_eval_sources is deprecated in mir_eval 0.8
        for b in range(2):
            want = mir_eval.separation.bss_eval_sources(ref[b], est[b], compute_permutation=False)[0]
            np.testing.assert_allclose(got[b].numpy(), want, atol=1e-6)
    # The filter is forgiven: SDR well above SI-SDR for filtered estimates.
    assert (got > si_sdr(torch.from_numpy(est), torch.from_numpy(ref)) + 1.0).all()


def test_sdr_pairwise_broadcasting_and_float32_inputs():
    ref, est = _separation_case(7, 2, 2000, speech=True)
    ref_t, est_t = torch.from_numpy(ref), torch.from_numpy(est)
    pairs = sdr(est_t[:, None], ref_t[None, :])  # (S_est, S_ref)
    assert pairs.shape == (2, 2)
    assert torch.allclose(pairs.diagonal(), sdr(est_t, ref_t))
    assert torch.allclose(pairs[0, 1], sdr(est_t[0], ref_t[1]))
    assert torch.allclose(sdr(est_t.float(), ref_t.float()), sdr(est_t, ref_t), atol=1e-3)


def test_sdr_one_tap_equals_si_sdr_without_mean_removal():
    ref, est = _separation_case(8, 2, 1500, speech=False)
    est = est + 0.2  # an offset: only the zero-mean variant ignores it
    ref_t, est_t = torch.from_numpy(ref), torch.from_numpy(est)
    assert torch.allclose(sdr(est_t, ref_t, filter_length=1), si_sdr(est_t, ref_t, zero_mean=False), atol=1e-8)
    assert torch.allclose(sdr(est_t, ref_t, filter_length=1, zero_mean=True), si_sdr(est_t, ref_t), atol=1e-8)


# ---------------------------------------------------------------- SI-SDR, SNR, improvements


def test_spd_solve_matches_the_exact_solution_and_falls_back_where_cholesky_fails():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    spd = a @ a.mT + 6 * torch.eye(6, dtype=torch.float64)
    rhs = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    x = spd_solve(spd, rhs)
    assert torch.allclose(spd @ x, rhs, atol=1e-12, rtol=0)
    # one system only semi-definite (rank 2): the factorisation fails for it alone; the fallback
    # is the least-squares (minimum-norm) solution, the others stay exact
    v = torch.randn(6, 2, generator=g, dtype=torch.float64)
    singular = spd.clone()
    singular[1] = v @ v.T
    x = spd_solve(singular, rhs)
    assert torch.isfinite(x).all()
    assert torch.allclose(spd[[0, 2]] @ x[[0, 2]], rhs[[0, 2]], atol=1e-12, rtol=0)
    want = torch.linalg.pinv(singular[1]) @ rhs[1]
    assert torch.allclose(x[1], want, atol=1e-8, rtol=0)


def test_sdr_does_not_hang_after_set_num_threads():
    """Hang detector (not a timing): batched float64 LU solves of 512 x 512 systems fail or hang
    after ``torch.set_num_threads`` on some builds; the SDR's Cholesky solve must not."""
    script = textwrap.dedent("""
        import torch
        torch.set_num_threads(2)
        from sepkit.metrics import sdr
        g = torch.Generator().manual_seed(0)
        ref = torch.randn(4, 4000, generator=g, dtype=torch.float64)
        est = ref + 0.1 * torch.randn(4, 4000, generator=g, dtype=torch.float64)
        value = sdr(est, ref)  # four 512 x 512 float64 systems in one batch
        assert value.shape == (4,) and bool(torch.isfinite(value).all()), value
        assert bool((value > 15).all() & (value < 25).all()), value
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert "ERROR" not in proc.stderr, proc.stderr[-2000:]


def test_si_sdr_matches_formula_on_speech_like_signals():
    ref, est = _separation_case(9, 3, 4000, speech=True)
    got = si_sdr(torch.from_numpy(est), torch.from_numpy(ref), eps=0.0)
    for s in range(3):
        e, r = est[s] - est[s].mean(), ref[s] - ref[s].mean()
        target = (e @ r) / (r @ r) * r
        want = 10 * np.log10(target @ target / ((e - target) @ (e - target)))
        assert got[s].item() == pytest.approx(want, abs=1e-7)


def test_snr_and_improvements():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 3, 800, generator=g, dtype=torch.float64)
    mixture = ref.sum(dim=1)
    est = ref + 0.1 * torch.randn(2, 3, 800, generator=g, dtype=torch.float64)
    assert torch.allclose(snr(est, ref), 10 * torch.log10(ref.square().sum(-1) / (ref - est).square().sum(-1)))
    imp = si_sdri(est, ref, mixture)
    assert imp.shape == (2, 3)
    assert torch.allclose(imp, si_sdr(est, ref) - si_sdr(mixture[:, None].expand_as(ref), ref))
    assert torch.allclose(si_sdri(est, ref, mixture[:, None]), imp)  # (B, 1, T) mixture
    assert (imp > 10).all()
    imp_sdr = sdri(est, ref, mixture, filter_length=32)
    assert torch.allclose(imp_sdr, sdr(est, ref, 32) - sdr(mixture[:, None].expand_as(ref), ref, 32))
    # The mixture itself improves nothing.
    no_gain = si_sdri(mixture[:, None].expand_as(ref), ref, mixture)
    assert torch.allclose(no_gain, torch.zeros(2, 3, dtype=torch.float64))


def test_silent_signals_give_finite_metrics():
    x = torch.randn(2, 500)
    zero = torch.zeros(2, 500)
    for fn in (si_sdr, snr, sdr):
        assert torch.isfinite(fn(x, zero)).all() and torch.isfinite(fn(zero, x)).all()
        assert torch.allclose(fn(zero, zero).double(), torch.zeros(2, dtype=torch.float64))


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="estimate has 100 samples but reference has 90"):
        si_sdr(torch.randn(2, 100), torch.randn(2, 90))
    with pytest.raises(ValueError, match="do not broadcast"):
        sdr(torch.randn(3, 100), torch.randn(2, 100))
    with pytest.raises(ValueError, match="mixture shape"):
        si_sdri(torch.randn(2, 3, 100), torch.randn(2, 3, 100), torch.randn(2, 2, 100))
    with pytest.raises(ValueError, match="filter_length"):
        sdr(torch.randn(100), torch.randn(100), filter_length=0)


# ---------------------------------------------------------------- PESQ / STOI


def _perceptual_case(sample_rate: int):
    ref = np.stack([np.stack([speech_like(s + 3 * b, sample_rate, 1.5) for s in range(2)]) for b in range(2)])
    noise = np.random.default_rng(sample_rate).standard_normal(ref.shape)
    est = ref + 0.01 * np.arange(1, 5).reshape(2, 2, 1) * noise  # four noise levels
    return torch.from_numpy(est).float(), torch.from_numpy(ref).float()


@pytest.mark.parametrize("sample_rate,mode", [(16000, "wb"), (16000, "nb"), (8000, "nb")])
def test_pesq_matches_the_package(sample_rate, mode):
    backend = pytest.importorskip("pesq")
    est, ref = _perceptual_case(sample_rate)
    got = pesq(est, ref, sample_rate, mode=mode)
    assert got.shape == (2, 2) and got.dtype == torch.float64
    for b in range(2):
        for s in range(2):
            want = backend.pesq(sample_rate, ref[b, s].double().numpy(), est[b, s].double().numpy(), mode)
            assert got[b, s].item() == pytest.approx(want, abs=1e-6)
    assert got[0, 0] > got[1, 1]  # less noise, higher score


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the package divides silence by its peak
def test_pesq_rejects_bad_rates_and_reports_failures():
    est, ref = torch.randn(1, 16000), torch.randn(1, 16000)
    with pytest.raises(ValueError, match="wide-band mode needs sample_rate 16000"):
        pesq(est, ref, 8000, mode="wb")
    with pytest.raises(ValueError, match="sample_rate must be 8000 or 16000"):
        pesq(est, ref, 44100, mode="nb")
    pytest.importorskip("pesq")
    silent = torch.zeros(2, 16000)
    with pytest.raises(ValueError, match="item 0"):
        pesq(silent, silent, 16000)
    assert torch.isnan(pesq(silent, silent, 16000, on_error="nan")).all()


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_stoi_and_estoi_match_the_package(sample_rate):
    backend = pytest.importorskip("pystoi")
    est, ref = _perceptual_case(sample_rate)
    got, got_ext = stoi(est, ref, sample_rate), estoi(est, ref, sample_rate)
    assert got.shape == got_ext.shape == (2, 2)
    for b in range(2):
        for s in range(2):
            r, e = ref[b, s].double().numpy(), est[b, s].double().numpy()
            assert got[b, s].item() == pytest.approx(backend.stoi(r, e, sample_rate), abs=1e-9)
            assert got_ext[b, s].item() == pytest.approx(backend.stoi(r, e, sample_rate, extended=True), abs=1e-9)
    assert got[0, 0] > got[1, 1]


def test_missing_eval_packages_raise_a_clear_error(monkeypatch):
    for mod in ("pesq", "pystoi"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
    x = torch.randn(1, 16000)
    with pytest.raises(ImportError, match=r"'pesq' package.*'eval' extra"):
        pesq(x, x, 16000)
    with pytest.raises(ImportError, match=r"'pystoi' package.*'eval' extra"):
        estoi(x, x, 16000)
