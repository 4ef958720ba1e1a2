"""Separation losses: SI-SDR / SDR / Codec SI-SDR values, stability, and permutation-invariant training."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sepkit.losses import (
    CodecSISDRLoss, PITLoss, SDRLoss, SISDRLoss, best_permutation_exhaustive, best_permutation_hungarian,
    pairwise_losses, reorder_sources, si_sdr_loss,
)


def _signals(seed, shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _np_si_sdr(est, ref, zero_mean=True):
    """Le Roux et al. (2019) SI-SDR in float64 numpy, no epsilon."""
    est, ref = np.asarray(est, np.float64), np.asarray(ref, np.float64)
    if zero_mean:
        est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target)))


# ---------------------------------------------------------------- SI-SDR / SDR / Codec SI-SDR


@given(seed=st.integers(0, 2**31 - 1), T=st.integers(8, 400), zero_mean=st.booleans())
def test_si_sdr_loss_matches_formula(seed, T, zero_mean):
    ref = _signals(seed, (2, 3, T))
    est = 0.7 * ref + 0.4 * _signals(seed + 1, (2, 3, T)) + 0.3
    got = SISDRLoss(zero_mean=zero_mean, reduction="none")(est, ref)
    assert got.shape == (2, 3)
    want = [[-_np_si_sdr(est[b, s], ref[b, s], zero_mean) for s in range(3)] for b in range(2)]
    np.testing.assert_allclose(got.numpy(), np.array(want), rtol=1e-7, atol=1e-6)
    assert torch.allclose(SISDRLoss(zero_mean=zero_mean)(est, ref), got.mean())
    assert torch.allclose(SISDRLoss(zero_mean=zero_mean, reduction="sum")(est, ref), got.sum())


def test_si_sdr_loss_scale_and_offset_invariance():
    ref = _signals(0, (3, 500))
    est = ref + 0.5 * _signals(1, (3, 500))
    loss = SISDRLoss(reduction="none")
    assert torch.allclose(loss(3.7 * est, ref), loss(est, ref), atol=1e-9)
    assert torch.allclose(loss(est + 2.0, ref - 1.0), loss(est, ref), atol=1e-9)
    # Without mean removal an offset is an error term.
    raw = SISDRLoss(zero_mean=False, reduction="none")
    assert (raw(est + 2.0, ref) > raw(est, ref) + 1.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_si_sdr_loss_low_precision_inputs_computed_in_float32(dtype):
    ref = _signals(2, (2, 800), torch.float32)
    est = ref + 0.3 * _signals(3, (2, 800), torch.float32)
    got = SISDRLoss(reduction="none")(est.to(dtype), ref.to(dtype))
    assert got.dtype == torch.float32
    want = SISDRLoss(reduction="none")(est.to(dtype).double(), ref.to(dtype).double())
    assert torch.allclose(got.double(), want, atol=1e-3)


@pytest.mark.parametrize("loss", [SISDRLoss(), SDRLoss(), SDRLoss(filter_length=16), CodecSISDRLoss()],
                         ids=["sisdr", "snr", "sdr16", "codec"])
def test_silent_reference_gives_finite_loss_and_gradient(loss):
    est = _signals(4, (2, 300), torch.float32).requires_grad_()
    silent = torch.zeros(2, 300)
    value = loss(est, silent)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(est.grad).all()
    # Silent estimate and silent reference: 0 dB, finite gradient.
    est0 = torch.zeros(2, 300, requires_grad=True)
    value0 = loss(est0, silent)
    value0.backward()
    assert value0.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(est0.grad).all()


def test_si_sdr_gradient_matches_float64_finite_differences():
    ref = _signals(5, (2, 40))
    est = (0.8 * ref + 0.5 * _signals(6, (2, 40))).requires_grad_()
    assert torch.autograd.gradcheck(lambda e: SISDRLoss(reduction="none")(e, ref), (est,))
    assert torch.autograd.gradcheck(lambda e: SDRLoss(filter_length=4, reduction="none")(e, ref), (est,))


def test_sdr_loss_plain_is_negative_snr():
    ref = _signals(7, (4, 256))
    est = ref + 0.2 * _signals(8, (4, 256))
    want = -10 * torch.log10(ref.square().sum(-1) / (ref - est).square().sum(-1))
    assert torch.allclose(SDRLoss(reduction="none")(est, ref), want, atol=1e-7)
    # Not scale invariant, unlike SI-SDR.
    assert (SDRLoss(reduction="none")(2 * est, ref) > want + 3).all()


def test_sdr_loss_one_tap_filter_is_si_sdr_without_mean_removal():
    ref = _signals(9, (3, 300))
    est = 0.5 * ref + 0.3 * _signals(10, (3, 300)) + 0.1
    one_tap = SDRLoss(filter_length=1, reduction="none")(est, ref)
    assert torch.allclose(one_tap, SISDRLoss(zero_mean=False, reduction="none")(est, ref), atol=1e-6)


def test_sdr_loss_forgives_a_short_filter():
    ref = _signals(11, (2, 600))
    ref[..., -8:] = 0.0  # the filter's tail stays inside the signal
    filtered = ref + 0.6 * torch.nn.functional.pad(ref, (3, 0))[..., :600]  # 4-tap FIR of the reference
    est = filtered + 1e-3 * _signals(12, (2, 600))
    assert (SDRLoss(filter_length=8, reduction="none")(est, ref) < -50).all()  # SDR above 50 dB
    assert (SISDRLoss(reduction="none")(est, ref) > -10).all()  # SI-SDR does not forgive it


def test_codec_si_sdr_targets_the_transmitted_signal_and_crops_padding():
    clean = _signals(13, (2, 2, 500))
    transmitted = clean + 0.1 * _signals(14, (2, 2, 500))
    transmitted = torch.cat([transmitted, _signals(15, (2, 2, 12))], dim=-1)  # codec hop padding
    est = transmitted[..., :500] + 0.05 * _signals(16, (2, 2, 500))
    got = CodecSISDRLoss(reduction="none")(est, transmitted)
    assert torch.allclose(got, SISDRLoss(reduction="none")(est, transmitted[..., :500]))
    assert (got < SISDRLoss(reduction="none")(est, clean)).all()  # closer to t than to s
    with pytest.raises(ValueError, match="transmitted target has 400 samples"):
        CodecSISDRLoss()(est, transmitted[..., :400])


def test_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match="reduction"):
        SISDRLoss(reduction="avg")
    with pytest.raises(ValueError, match="estimate has 10 samples but reference has 11"):
        SISDRLoss()(torch.randn(2, 10), torch.randn(2, 11))
    with pytest.raises(TypeError, match="floating-point"):
        SISDRLoss()(torch.ones(2, 10, dtype=torch.long), torch.randn(2, 10))
    with pytest.raises(ValueError, match="filter_length"):
        SDRLoss(filter_length=0)


# ---------------------------------------------------------------- permutation-invariant training


def _brute_force(loss_fn, est, tgt):
    """Per example: min over permutations of the mean pair loss, by explicit loops."""
    B, S = est.shape[:2]
    best = []
    for b in range(B):
        values = []
        for perm in itertools.permutations(range(S)):
            pairs = [loss_fn(est[b, perm[j]][None], tgt[b, j][None])[0] for j in range(S)]
            values.append(torch.stack(pairs).mean())
        best.append(torch.stack(values).min())
    return torch.stack(best)


def _mixed_up(seed, B, S, T):
    tgt = _signals(seed, (B, S, T))
    order = torch.stack([torch.randperm(S, generator=torch.Generator().manual_seed(seed + b)) for b in range(B)])
    est = reorder_sources(tgt, order) + 0.8 * _signals(seed + 99, (B, S, T))
    return est, tgt


@given(seed=st.integers(0, 2**31 - 1), S=st.integers(1, 4), B=st.integers(1, 3))
def test_pit_equals_brute_force_minimum(seed, S, B):
    est, tgt = _mixed_up(seed, B, S, 64)
    pair = SISDRLoss(reduction="none")
    loss, perm = PITLoss(pair, reduction="none")(est, tgt)
    assert torch.allclose(loss, _brute_force(pair, est, tgt), atol=1e-9)
    # The returned permutation achieves it.
    aligned = pair(reorder_sources(est, perm), tgt).mean(dim=1)
    assert torch.allclose(aligned, loss, atol=1e-9)
    assert sorted(perm[0].tolist()) == list(range(S))


@pytest.mark.parametrize("S", [2, 3, 4, 6])
def test_pit_is_invariant_to_source_order(S):
    est, tgt = _mixed_up(21, 3, S, 80)
    pit = PITLoss(SISDRLoss(reduction="none"), reduction="none")
    loss, perm = pit(est, tgt)
    shuffle = torch.randperm(S, generator=torch.Generator().manual_seed(3))
    loss_t, perm_t = pit(est, tgt[:, shuffle])
    loss_e, perm_e = pit(est[:, shuffle], tgt)
    assert torch.allclose(loss_t, loss, atol=1e-9) and torch.allclose(loss_e, loss, atol=1e-9)
    assert torch.equal(perm_t, perm[:, shuffle])  # target j of the shuffled set is target shuffle[j]
    assert torch.equal(shuffle[perm_e], perm)  # estimates moved with the shuffle


@pytest.mark.parametrize("S", [3, 4, 5])
def test_hungarian_equals_exhaustive(S):
    est, tgt = _mixed_up(31 + S, 4, S, 100)
    pair = SISDRLoss(reduction="none")
    exhaustive = PITLoss(pair, search="exhaustive", reduction="none")(est, tgt)
    hungarian = PITLoss(pair, search="hungarian", reduction="none")(est, tgt)
    assert torch.allclose(exhaustive[0], hungarian[0], atol=1e-9)
    assert torch.equal(exhaustive[1], hungarian[1])
    matrix = pairwise_losses(pair, est, tgt)
    assert torch.equal(best_permutation_exhaustive(matrix), best_permutation_hungarian(matrix))


def test_pit_auto_switches_to_hungarian_beyond_max_exhaustive(monkeypatch):
    est, tgt = _mixed_up(41, 2, 5, 50)
    calls = []
    import sepkit.losses.pit as pit_module

    real = pit_module.best_permutation_hungarian
    monkeypatch.setattr(pit_module, "best_permutation_hungarian", lambda m: calls.append(m.shape) or real(m))
    PITLoss(SISDRLoss(reduction="none"))(est, tgt)
    assert calls == [(2, 5, 5)]
    PITLoss(SISDRLoss(reduction="none"), max_exhaustive=5)(est, tgt)
    assert len(calls) == 1


def test_pit_takes_any_pairwise_loss_and_backpropagates():
    est, tgt = _mixed_up(51, 2, 3, 40)
    est = est.clone().requires_grad_()
    mse = lambda e, t: (e - t).square().mean(dim=-1)  # noqa: E731
    loss, perm = PITLoss(mse)(est, tgt)
    want = (reorder_sources(est, perm) - tgt).square().mean()
    assert torch.allclose(loss, want)
    loss.backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    # Works on extra feature axes too: (B, S, C, T).
    loss4, _ = PITLoss(lambda e, t: (e - t).square().flatten(1).mean(1))(est.detach()[:, :, None], tgt[:, :, None])
    assert torch.allclose(loss4, want.detach())


def test_pit_perfect_estimates_recover_the_shuffle():
    tgt = _signals(61, (2, 4, 120))
    order = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    est = reorder_sources(tgt, order) * 0.5
    for search in ("exhaustive", "hungarian"):
        loss, perm = PITLoss(SISDRLoss(reduction="none"), search=search)(est, tgt)
        assert torch.equal(reorder_sources(est, perm), tgt * 0.5)
        assert loss.item() < -80  # perfect up to eps = 1e-8


def test_pit_errors_name_the_problem():
    est = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match="one loss per pair"):
        PITLoss(SISDRLoss())(est, est)  # reduction="mean" returns a scalar
    with pytest.raises(ValueError, match="differs from target shape"):
        PITLoss(SISDRLoss(reduction="none"))(est, torch.randn(2, 2, 10))
    with pytest.raises(ValueError, match="search"):
        PITLoss(si_sdr_loss, search="greedy")
    with pytest.raises(ValueError, match="NaN or Inf"):
        best_permutation_hungarian(torch.tensor([[[0.0, math.inf], [1.0, 2.0]]]))


@pytest.mark.parametrize("search", ["exhaustive", "hungarian"])
def test_pit_searches_agree_on_non_finite_input(search):
    """Both searches raise the same error on NaN / Inf, naming the input and the batch item."""
    matrix = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.0, float("nan")], [1.0, 2.0]]])
    best = best_permutation_exhaustive if search == "exhaustive" else best_permutation_hungarian
    with pytest.raises(ValueError, match=r"pairwise loss matrix contains NaN or Inf \(batch items \[1\]\)"):
        best(matrix)
    with pytest.raises(ValueError, match=r"pairwise loss matrix contains NaN or Inf \(batch items \[0\]\)"):
        best(torch.tensor([[[0.0, -math.inf], [1.0, 2.0]]]))
    pit = PITLoss(SISDRLoss(reduction="none"), search=search)
    est, tgt = torch.randn(3, 2, 50), torch.randn(3, 2, 50)
    bad = est.clone()
    bad[2, 1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"estimate contains NaN or Inf \(batch items \[2\]\)"):
        pit(bad, tgt)
    bad = tgt.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"target contains NaN or Inf \(batch items \[0\]\)"):
        pit(est, bad)
    # a loss that turns finite input into NaN is caught at the matrix
    with pytest.raises(ValueError, match="pairwise loss matrix contains NaN"):
        PITLoss(lambda a, b: (a - b).sum(-1) * float("nan"), search=search)(est, tgt)
    loss, _ = pit(est, tgt)
    assert torch.isfinite(loss)
