"""wav2vec2-style contrastive loss against the float64 reference on both backends."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import BACKENDS, CUDA, DEVICE, assert_matches_reference, dtypes, randn, seeds, sizes
from sepkit.kernels import BackendError, nce
from sepkit.kernels.reference import nce_reference
from sepkit.kernels.reference.nce import nce_logits_reference


def run(backend, context, targets, pos_idx, neg_idx, temperature=0.1, reduction="sum"):
    return nce(context, targets, pos_idx, neg_idx, temperature, reduction, backend=backend)


@st.composite
def nce_cases(draw):
    n = draw(sizes(12))
    t_total = max(2, draw(sizes(24)))
    k = draw(st.integers(0, 12))
    d = max(2, draw(sizes(40)))  # D = 1: cosines are +-1, piecewise constant, the true gradient is 0
    seed = draw(seeds())
    gen = torch.Generator().manual_seed(seed)
    targets = randn(t_total, d, seed=seed, scale=draw(st.sampled_from([0.1, 1.0, 10.0])))
    # a target row duplicated elsewhere: as a negative it equals the positive in every element
    targets[t_total - 1] = targets[0]
    pos = torch.randint(0, t_total, (n,), generator=gen)
    neg = torch.randint(0, t_total, (n, k), generator=gen)
    if k >= 2:
        neg[:, 1] = neg[:, 0]                 # duplicated negatives
        neg[0, 0] = pos[0]                    # the positive's own index among its negatives
        pos[-1] = 0
        neg[-1, -1] = t_total - 1             # a different row with the positive's values
    context = randn(n, d, seed=seed + 1, scale=draw(st.sampled_from([0.1, 1.0, 10.0])))
    return dict(
        context=context, targets=targets, pos_idx=pos, neg_idx=neg,
        temperature=draw(st.sampled_from([0.01, 0.1, 0.5, 1.0])),
        reduction=draw(st.sampled_from(["sum", "mean", "none"])),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=nce_cases(), dtype=dtypes(), seed=seeds())
def test_nce_matches_reference(backend, case, dtype, seed):
    assert_matches_reference(run, case, dtype=dtype, backend=backend, grad=("context", "targets"), seed=seed)


def test_reference_masks_negatives_identical_to_the_positive():
    targets = randn(6, 4, seed=1)
    targets[5] = targets[2]
    logits = nce_logits_reference(randn(2, 4, seed=2), targets, torch.tensor([2, 3]), torch.tensor([[5, 2, 1], [5, 3, 3]]))
    assert torch.isinf(logits[0, 1:3]).all() and torch.isfinite(logits[0, [0, 3]]).all()
    assert torch.isfinite(logits[1, :2]).all() and torch.isinf(logits[1, 2:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nce_every_negative_identical_gives_zero(backend):
    """All negatives equal the positive: one live logit, loss 0, no gradient anywhere."""
    device = DEVICE if backend == "triton" else "cpu"
    targets = randn(5, 7, seed=3).float().to(device)
    targets[4] = targets[1]
    context = randn(3, 7, seed=4).float().to(device).requires_grad_()
    targets.requires_grad_()
    pos = torch.tensor([1, 1, 4], device=device)
    neg = torch.tensor([[4, 1, 4], [1, 1, 1], [1, 4, 4]], device=device)
    loss = nce(context, targets, pos, neg, backend=backend, reduction="none")
    assert torch.equal(loss.detach().cpu(), torch.zeros(3))
    gc, gt = torch.autograd.grad(loss.sum(), (context, targets))
    assert torch.equal(gc.cpu(), torch.zeros(3, 7)) and torch.equal(gt.cpu(), torch.zeros(5, 7))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nce_one_target_row_shared_by_many_steps(backend):
    """The same target row is a negative of every step (and a positive of some): scatter is exact."""
    n, t_total, k, d = 11, 6, 9, 13
    targets = randn(t_total, d, seed=5)
    pos = torch.arange(n) % 3
    neg = torch.full((n, k), 5)
    neg[:, ::2] = 4
    case = dict(context=randn(n, d, seed=6), targets=targets, pos_idx=pos, neg_idx=neg, temperature=0.05)
    assert_matches_reference(run, case, dtype=torch.float32, backend=backend, grad=("context", "targets"))


def test_nce_is_deterministic():
    n, t_total, k, d = 9, 7, 10, 21
    gen = torch.Generator().manual_seed(7)
    context = randn(n, d, seed=8).float().to(DEVICE).requires_grad_()
    targets = randn(t_total, d, seed=9).float().to(DEVICE).requires_grad_()
    pos = torch.randint(0, t_total, (n,), generator=gen).to(DEVICE)
    neg = torch.randint(0, t_total, (n, k), generator=gen).to(DEVICE)
    results = []
    for _ in range(2):
        loss = nce(context, targets, pos, neg, backend="triton")
        results.append((loss.detach(), *torch.autograd.grad(loss, (context, targets))))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [0.01, 1.0])
def test_nce_stable_at_extreme_temperature_and_scale(backend, temperature):
    """Large norms (~6e3), cosines within ~1e-2 of each other at temperature 0.01 (logits ~100,
    spread ~1): finite, and as the reference. (Closer cosines are beyond fp32 itself.)"""
    n, t_total, k, d = 5, 9, 8, 37
    base = randn(1, d, seed=10, scale=1e3)
    targets = base + randn(t_total, d, seed=11, scale=100.0)
    context = base + randn(n, d, seed=12, scale=100.0)
    gen = torch.Generator().manual_seed(13)
    case = dict(context=context, targets=targets, pos_idx=torch.randint(0, t_total, (n,), generator=gen),
                neg_idx=torch.randint(0, t_total, (n, k), generator=gen), temperature=temperature)
    assert_matches_reference(run, case, dtype=torch.float32, backend=backend, grad=("context", "targets"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nce_zero_vectors_have_zero_cosine(backend):
    device = DEVICE if backend == "triton" else "cpu"
    context = torch.zeros(2, 5, device=device, requires_grad=True)
    targets = randn(4, 5, seed=14).float().to(device).requires_grad_()
    loss = nce(context, targets, torch.tensor([0, 1], device=device), torch.tensor([[1, 2, 3], [0, 2, 3]], device=device),
               backend=backend, reduction="none")
    torch.testing.assert_close(loss.detach().cpu(), torch.full((2,), float(torch.log(torch.tensor(4.0)))))
    gc, _ = torch.autograd.grad(loss.sum(), (context, targets))
    assert torch.isfinite(gc).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nce_no_selected_steps(backend):
    device = DEVICE if backend == "triton" else "cpu"
    context = torch.zeros(0, 5, device=device, requires_grad=True)
    targets = torch.randn(4, 5, device=device, requires_grad=True)
    loss = nce(context, targets, torch.zeros(0, dtype=torch.long, device=device),
               torch.zeros(0, 3, dtype=torch.long, device=device), backend=backend)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(targets.grad.cpu(), torch.zeros(4, 5))


def test_nce_traces_under_torch_compile_fullgraph():
    n, t_total, k, d = 6, 8, 5, 9
    gen = torch.Generator().manual_seed(15)
    context = randn(n, d, seed=16).float().to(DEVICE).requires_grad_()
    targets = randn(t_total, d, seed=17).float().to(DEVICE).requires_grad_()
    pos = torch.randint(0, t_total, (n,), generator=gen).to(DEVICE)
    neg = torch.randint(0, t_total, (n, k), generator=gen).to(DEVICE)
    fn = torch.compile(lambda c, t: nce(c, t, pos, neg, 0.1, "mean", backend="triton") * 2.0,
                       fullgraph=True, backend="aot_eager")
    out = fn(context, targets)
    gc, gt = torch.autograd.grad(out, (context, targets))
    cr, tr = context.detach().double().cpu().requires_grad_(), targets.detach().double().cpu().requires_grad_()
    ref = nce_reference(cr, tr, pos.cpu(), neg.cpu(), 0.1, "mean") * 2.0
    rc, rt = torch.autograd.grad(ref, (cr, tr))
    torch.testing.assert_close(out.double().cpu(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gc.double().cpu(), rc, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gt.double().cpu(), rt, rtol=1e-4, atol=1e-6)


def _bad(**overrides):
    args = dict(context=torch.randn(3, 4), targets=torch.randn(5, 4), pos_idx=torch.tensor([0, 1, 2]),
                neg_idx=torch.tensor([[1, 2], [0, 3], [4, 4]]))
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (_bad(targets=torch.randn(5, 3)), ValueError, "context has 4 features but targets has 3"),
        (_bad(neg_idx=torch.tensor([[1, 2], [0, 5], [4, 4]])), ValueError, r"neg_idx holds indices outside \[0, 5\)"),
        (_bad(pos_idx=torch.tensor([0, -1, 2])), ValueError, "pos_idx holds indices outside"),
        (_bad(pos_idx=torch.tensor([0, 1])), ValueError, "pos_idx has 2 entries but context has 3 rows"),
        (_bad(neg_idx=torch.tensor([[1, 2], [0, 3]])), ValueError, "neg_idx has 2 rows but context has 3"),
        (_bad(neg_idx=torch.tensor([1.0, 2.0])), ValueError, "neg_idx must have 2 dimensions"),
        (_bad(neg_idx=torch.tensor([[1.0], [2.0], [0.0]])), TypeError, "neg_idx must have dtype"),
        (_bad(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
        (_bad(reduction="max"), ValueError, "reduction must be one of"),
        (_bad(targets=torch.randn(5, 4).double()), TypeError, "targets has dtype"),
        (_bad(context=torch.full((3, 4), float("inf"))), ValueError, "context contains NaN or Inf"),
    ],
)
def test_nce_rejects_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        nce(**kwargs)


def test_nce_explicit_triton_says_why_not():
    args = _bad(context=torch.randn(3, 4, dtype=torch.float64), targets=torch.randn(5, 4, dtype=torch.float64))
    with pytest.raises(BackendError, match="float64"):
        nce(**{k: v.to(DEVICE) for k, v in args.items()}, backend="triton")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_nce_wav2vec2_sizes_on_gpu(dtype):
    """K = 100 negatives, D up to 1024, a batch of utterances: compiled kernels."""
    gen = torch.Generator().manual_seed(18)
    n, t_total, k = 300, 800, 100
    for d in (256, 1024):
        case = dict(context=randn(n, d, seed=19), targets=randn(t_total, d, seed=20),
                    pos_idx=torch.randint(0, t_total, (n,), generator=gen),
                    neg_idx=torch.randint(0, t_total, (n, k), generator=gen), temperature=0.1)
        assert_matches_reference(run, case, dtype=dtype, backend="triton", grad=("context", "targets"))
    assert CUDA
