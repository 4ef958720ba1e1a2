"""Negative sampling, the codebook-diversity penalty, MPCLoss and MICLoss."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import DEVICE, randn, seeds
from sepkit.kernels import mmd, nce
from sepkit.losses import Branch, MICLoss, MPCLoss, diversity_loss, sample_negatives


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@st.composite
def batches(draw):
    """Lengths (some utterances shorter than K + 1), masks inside the valid part."""
    b = draw(st.integers(1, 4))
    steps = draw(st.integers(2, 30))
    lengths = torch.tensor([draw(st.integers(2, steps)) for _ in range(b)])
    seed = draw(seeds())
    valid = torch.arange(steps)[None, :] < lengths[:, None]
    mask = (torch.rand(b, steps, generator=_gen(seed)) < 0.5) & valid
    mask[:, 0] = True  # at least one masked step per utterance
    return lengths, mask, draw(st.integers(0, 40)), seed


@given(case=batches(), as_padding_mask=st.booleans(), pool=st.sampled_from(["all", "masked"]))
def test_sample_negatives_stay_in_the_utterance_and_skip_the_positive(case, as_padding_mask, pool):
    lengths, mask, k, seed = case
    b, steps = mask.shape
    valid = torch.arange(steps)[None, :] < lengths[:, None]
    if pool == "masked":  # every utterance needs 2 masked steps to draw from
        mask[:, 1] = True
    spec = ~valid if as_padding_mask else lengths
    pos, neg = sample_negatives(spec, mask, k, generator=_gen(seed), negatives_from=pool)
    assert pos.dtype == neg.dtype == torch.int64 and neg.shape == (int(mask.sum()), k)
    assert torch.equal(pos, mask.reshape(-1).nonzero().squeeze(1))  # the order of x[mask]
    utt = pos // steps
    assert torch.equal(neg // steps, utt[:, None].expand_as(neg))   # same utterance
    assert not (neg == pos[:, None]).any()                          # never the positive
    allowed = (valid if pool == "all" else mask).reshape(-1)
    assert allowed[neg].all()                                       # never padding (nor unmasked for "masked")
    again = sample_negatives(spec, mask, k, generator=_gen(seed), negatives_from=pool)
    assert torch.equal(again[1], neg)                               # seeded


def test_sample_negatives_is_uniform_over_the_other_steps():
    lengths = torch.tensor([5, 3])
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 2] = mask[1, 0] = True
    _, neg = sample_negatives(lengths, mask, 20000, generator=_gen(0))
    counts0 = torch.bincount(neg[0], minlength=12)
    assert counts0[2] == 0 and counts0[5:].sum() == 0
    torch.testing.assert_close(counts0[[0, 1, 3, 4]].double() / 20000, torch.full((4,), 0.25, dtype=torch.float64),
                               atol=0.015, rtol=0)
    counts1 = torch.bincount(neg[1] - 6, minlength=6)
    assert counts1[0] == 0 and counts1[3:].sum() == 0
    torch.testing.assert_close(counts1[1:3].double() / 20000, torch.full((2,), 0.5, dtype=torch.float64), atol=0.015, rtol=0)


def test_sample_negatives_short_utterance_repeats_and_seeds_differ():
    mask = torch.tensor([[True, False, False]])
    _, a = sample_negatives(None, mask, 100, generator=_gen(1))
    _, b = sample_negatives(None, mask, 100, generator=_gen(2))
    assert set(a[0].tolist()) == {1, 2}        # T - 1 = 2 < K = 100 candidates: duplicates
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    "spec, mask, message",
    [
        (torch.tensor([1, 4]), torch.tensor([[True, False, False, False], [True, True, False, False]]),
         "utterance 0 has 1 candidate step"),
        (torch.tensor([2, 4]), torch.tensor([[False, False, True, False], [True, False, False, False]]),
         "masked step 2 of utterance 0 is padding"),
        (torch.tensor([5, 4]), torch.zeros(2, 4, dtype=torch.bool), r"lengths must lie in \[0, 4\]"),
        (torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool), "padding mask has shape"),
        (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool), "must be bool"),
        (None, torch.zeros(2, 4), "mask_indices must be a"),
    ],
)
def test_sample_negatives_rejects_bad_input(spec, mask, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sample_negatives(spec, mask, 5)


def test_sample_negatives_masked_pool_needs_two_masked_steps():
    mask = torch.tensor([[True, False, False], [True, True, False]])
    with pytest.raises(ValueError, match="utterance 0 has 1 candidate step"):
        sample_negatives(None, mask, 3, negatives_from="masked")


def test_diversity_loss_formula():
    g, v = 2, 5
    uniform = torch.zeros(3, 4, g, v)
    assert float(diversity_loss(uniform)) == pytest.approx(0.0, abs=1e-6)
    peaked = torch.full((3, 4, g, v), -1e4)
    peaked[..., 0] = 0.0  # every step picks entry 0: perplexity 1 per group
    assert float(diversity_loss(peaked)) == pytest.approx((g * v - g) / (g * v), abs=1e-6)
    logits = randn(2, 6, g, v, seed=1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    avg = torch.softmax(logits, -1)[valid].mean(0)
    want = (g * v - torch.exp(-(avg * avg.log()).sum(-1)).sum()) / (g * v)
    torch.testing.assert_close(diversity_loss(logits, valid), want)
    changed = logits.clone()
    changed[1, 4:] = 50.0  # padded steps do not count
    torch.testing.assert_close(diversity_loss(changed, valid), want)


def _sequences(seed, b=2, steps=12, d=6):
    context = randn(b, steps, d, seed=seed).float()
    targets = randn(b, steps, d, seed=seed + 1).float()
    lengths = torch.tensor([steps, steps - 4])[:b]
    mask = torch.zeros(b, steps, dtype=torch.bool)
    mask[:, 1::3] = True
    if b > 1:
        mask[1, steps - 4:] = False
    logits = randn(b, steps, 2, 4, seed=seed + 2).float()
    return context, targets, lengths, mask, logits


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mpc_loss_is_contrastive_plus_diversity(reduction):
    context, targets, lengths, mask, logits = _sequences(3)
    loss_fn = MPCLoss(num_negatives=7, reduction=reduction, backend="torch")
    loss, parts = loss_fn(context, targets, mask, lengths, logits, generator=_gen(4), return_parts=True)
    pos, neg = sample_negatives(lengths, mask, 7, generator=_gen(4))
    b, steps, d = context.shape
    contrastive = nce(context.reshape(-1, d)[pos], targets.reshape(-1, d), pos, neg, 0.1, reduction)
    valid = torch.arange(steps)[None, :] < lengths[:, None]
    n = int(mask.sum())
    scale = 0.1 * (n if reduction == "sum" else 1)
    torch.testing.assert_close(loss, contrastive + scale * diversity_loss(logits, valid))
    torch.testing.assert_close(parts["contrastive"], contrastive)
    assert parts["num_masked"] == n


def test_mpc_loss_sum_is_n_times_mean():
    context, targets, lengths, mask, logits = _sequences(5)
    total = MPCLoss(num_negatives=5, reduction="sum")(context, targets, mask, lengths, logits, generator=_gen(6))
    mean = MPCLoss(num_negatives=5, reduction="mean")(context, targets, mask, lengths, logits, generator=_gen(6))
    torch.testing.assert_close(total, mean * int(mask.sum()))


def test_mpc_loss_on_the_triton_kernel_with_gradients():
    context, targets, lengths, mask, logits = (t.to(DEVICE) for t in _sequences(7))
    context.requires_grad_()
    targets.requires_grad_()
    logits.requires_grad_()
    fn = MPCLoss(num_negatives=9)
    got = MPCLoss(num_negatives=9, backend="triton")(context, targets, mask, lengths, logits, generator=_gen(8))
    want = MPCLoss(num_negatives=9, backend="torch")(
        context.double(), targets.double(), mask, lengths, logits.double(), generator=_gen(8))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    got.backward()
    for t in (context, targets, logits):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # unmasked, unpadded context steps get no gradient; padded target steps neither
    assert context.grad[~mask].abs().max() == 0
    assert targets.grad[1, -4:].abs().max() == 0
    assert "num_negatives=9" in repr(fn)


def test_mpc_loss_rejects_bad_input():
    context, targets, lengths, mask, logits = _sequences(9)
    with pytest.raises(ValueError, match="differ in shape"):
        MPCLoss()(context, targets[:, :-1], mask, lengths)
    with pytest.raises(ValueError, match="selects no step"):
        MPCLoss()(context, targets, torch.zeros_like(mask), lengths)
    with pytest.raises(ValueError, match="codebook_logits has shape"):
        MPCLoss()(context, targets, mask, lengths, logits[:, :-1])
    with pytest.raises(ValueError, match="reduction must be"):
        MPCLoss(reduction="none")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mic_loss_is_mpc_on_both_branches_plus_alpha_mmd(backend):
    device = DEVICE if backend == "triton" else "cpu"
    c1, t1, l1, m1, g1 = (t.to(device) for t in _sequences(10))
    c2, t2, l2, m2, g2 = (t.to(device) for t in _sequences(11, b=1, steps=9))
    c2 = c2 * 1.5 + 0.3  # a shifted "synthetic" domain
    c1.requires_grad_()
    c2.requires_grad_()
    real = Branch(c1, t1, m1, l1, g1)
    synth = Branch(c2, t2, m2, None, g2)
    mic = MICLoss(num_negatives=6, backend=backend)
    assert mic.alpha == 10.0
    loss, parts = mic(real, synth, generator=_gen(12), return_parts=True)
    gen = _gen(12)
    mpc = MPCLoss(num_negatives=6, backend=backend)
    want_real = mpc(c1, t1, m1, l1, g1, generator=gen)
    want_synth = mpc(c2, t2, m2, None, g2, generator=gen)
    valid1 = torch.arange(12, device=device)[None, :] < l1[:, None]
    x, y = c1[valid1], c2.reshape(-1, c2.shape[-1])      # N = 20 real cues, M = 9 synthetic cues
    want_mmd = mmd(x, y, backend=backend)
    torch.testing.assert_close(loss, want_real + want_synth + 10.0 * want_mmd)
    torch.testing.assert_close(parts["mmd"], want_mmd.detach())
    assert float(parts["mmd"]) > 0
    g_real, g_synth = torch.autograd.grad(loss, (c1, c2))
    assert torch.isfinite(g_real).all() and torch.isfinite(g_synth).all()
    assert g_real[~valid1].abs().max() == 0                   # padded cues take no part
    assert g_synth[~m2].abs().max() > 0                       # the MMD reaches unmasked steps too
    assert math.isfinite(float(loss.detach()))


def test_mic_loss_separate_cues_and_errors():
    c1, t1, l1, m1, _ = _sequences(13)
    c2, t2, _, m2, _ = _sequences(14)
    cues1 = randn(2, 12, 3, seed=15).float().requires_grad_()
    cues2 = randn(2, 12, 3, seed=16).float()
    mic = MICLoss(num_negatives=4, alpha=2.0, estimator="biased")
    loss, parts = mic(Branch(c1, t1, m1, l1, cues=cues1), Branch(c2, t2, m2, cues=cues2), generator=_gen(17),
                      return_parts=True)
    valid1 = torch.arange(12)[None, :] < l1[:, None]
    torch.testing.assert_close(parts["mmd"], mmd(cues1[valid1], cues2.reshape(-1, 3), estimator="biased").detach())
    (g,) = torch.autograd.grad(loss, cues1)
    assert g.abs().sum() > 0
    with pytest.raises(ValueError, match="cues must be"):
        mic(Branch(c1, t1, m1, l1, cues=cues1[:, :-1]), Branch(c2, t2, m2, cues=cues2))
    with pytest.raises(ValueError, match="real cues have 3 features, synthetic 6"):
        mic(Branch(c1, t1, m1, l1, cues=cues1), Branch(c2, t2, m2))
    with pytest.raises(ValueError, match="estimator must be one of"):
        MICLoss(estimator="linear")
