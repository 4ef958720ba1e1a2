"""Multi-kernel MMD against the float64 reference on both backends, its properties, MMDLoss."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import BACKENDS, CUDA, DEVICE, TOLERANCES, assert_matches_reference, dtypes, randn, seeds, sizes
from sepkit.kernels import BackendError, mmd
from sepkit.kernels.reference import heuristic_bandwidths, mmd_reference
from sepkit.kernels.reference.mmd import BASE_FLOOR, heuristic_base
from sepkit.kernels.testing import compare_with_reference
from sepkit.losses import MMDLoss


def run(backend, x, y, bandwidths=None, multipliers=(0.25, 0.5, 1.0, 2.0, 4.0), estimator="unbiased"):
    return mmd(x, y, bandwidths, multipliers, estimator, backend=backend)


@st.composite
def mmd_cases(draw):
    estimator = draw(st.sampled_from(["unbiased", "biased"]))
    low = 2 if estimator == "unbiased" else 1
    n = max(low, draw(sizes(35)))
    m = max(low, draw(sizes(35)))
    d = draw(sizes(40))
    seed = draw(seeds())
    scale = draw(st.sampled_from([0.3, 1.0, 5.0]))
    x = randn(n, d, seed=seed, scale=scale)
    y = randn(m, d, seed=seed + 1, scale=scale * draw(st.sampled_from([1.0, 1.5]))) + draw(st.sampled_from([0.0, 0.5])) * scale
    case = dict(x=x, y=y, estimator=estimator)
    mode = draw(st.sampled_from(["heuristic", "multipliers", "explicit"]))
    if mode == "multipliers":  # not a doubling chain: the general kernel path
        case["multipliers"] = (0.3, 1.0, 3.7)
    elif mode == "explicit":  # widths around the data's typical distance, as numbers (exact in every dtype)
        typical = scale * (2.0 * d) ** 0.5
        case["bandwidths"] = tuple(typical * f for f in draw(st.sampled_from([(0.5, 2.0), (1.0,), (0.2, 0.7, 1.3, 3.0)])))
    return case


def _condition(case, dtype) -> float:
    """sum of |terms| / |MMD| in float64: how much the final difference amplifies term errors."""
    x, y = case["x"].to(dtype).double(), case["y"].to(dtype).double()
    if "bandwidths" in case:
        bw = torch.tensor(case["bandwidths"], dtype=torch.float64)
    else:
        bw = heuristic_bandwidths(x, y, case.get("multipliers", (0.25, 0.5, 1.0, 2.0, 4.0)))
    unbiased = case["estimator"] == "unbiased"
    total = 0.0
    for a, b, weight in ((x, x, 1.0), (y, y, 1.0), (x, y, 2.0)):
        k = torch.exp(-(torch.cdist(a, b) ** 2)[..., None] / (2 * bw**2)).sum(-1)
        n, m = k.shape
        if unbiased and a is b:
            total += float(k.sum() - k.diagonal().sum()) / (n * (n - 1))
        else:
            total += weight * float(k.sum()) / (n * m)
    value = abs(float(mmd_reference(x, y, bw, estimator=case["estimator"])))
    return total / max(value, 1e-30)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=mmd_cases(), dtype=dtypes(dot=True), seed=seeds())
def test_mmd_matches_reference(backend, case, dtype, seed):
    """Gradients under the table's tolerance; the value under tolerance x condition number.

    MMD is a difference of three means of kernel values: rounding in the kernel values is
    relative to those means, which can be orders of magnitude above their difference (two
    samples of one distribution). The forward bound is therefore the normwise one,
    tol * sum|terms| / |MMD|, as for any sum with cancellation.
    """
    device = DEVICE if backend == "triton" else torch.device("cpu")
    cmp = compare_with_reference(run, case, dtype=dtype, backend=backend, device=device, grad=("x", "y"), seed=seed)
    tol = TOLERANCES[dtype]
    assert cmp.errors["grad_x"] <= tol and cmp.errors["grad_y"] <= tol, f"{backend}: {cmp.describe()}"
    assert cmp.errors["out"] <= tol * max(1.0, _condition(case, dtype)), f"{backend}: {cmp.describe()}"


def _value_and_grads(backend, x, y, **kw):
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    out = mmd(x, y, backend=backend, **kw)
    gx, gy = torch.autograd.grad(out, (x, y))
    return out.detach(), gx, gy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("factor", [1e-4, 1e4])
def test_mmd_tiny_and_large_bandwidths_stay_finite(backend, factor):
    """Widths far below / above every distance: no NaN or Inf, limits of the estimators."""
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(19, 23, seed=1).float().to(device)
    y = (randn(17, 23, seed=2) + 0.3).float().to(device)
    bw = (factor, 2.0 * factor)
    for estimator in ("biased", "unbiased"):
        out, gx, gy = _value_and_grads(backend, x, y, bandwidths=bw, estimator=estimator)
        assert torch.isfinite(out) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
        if factor < 1:  # every pair but the self pairs is exp(-huge) = 0
            want = 2.0 / 19 + 2.0 / 17 if estimator == "biased" else 0.0
            assert abs(float(out) - want) < 1e-6
            assert gx.abs().max() == 0 and gy.abs().max() == 0
        else:  # every kernel ~ 1: the discrepancy vanishes
            assert abs(float(out)) < 1e-5
            assert gx.abs().max() < 1e-6 and gy.abs().max() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_identical_sets(backend):
    """x == y: biased MMD ~ 0 with zero gradient; unbiased is negative, as its formula says."""
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(21, 13, seed=3).float().to(device)
    out, gx, gy = _value_and_grads(backend, x, x.clone(), estimator="biased")
    assert abs(float(out)) < 1e-6
    assert gx.abs().max() < 1e-6 and gy.abs().max() < 1e-6
    unbiased = mmd(x, x.clone(), estimator="unbiased", backend=backend)
    ref = mmd_reference(x.double().cpu(), x.double().cpu(), estimator="unbiased")
    assert float(unbiased) < 0
    assert abs(float(unbiased) - float(ref)) < 1e-5 * abs(float(ref))


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=seeds(), n=sizes(20), m=sizes(20), shift=st.sampled_from([0.0, 0.05, 1.0]))
def test_mmd_biased_is_nonnegative(backend, seed, n, m, shift):
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(n, 9, seed=seed).float().to(device)
    y = (randn(m, 9, seed=seed + 1) + shift).float().to(device)
    assert float(mmd(x, y, estimator="biased", backend=backend)) >= -1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_single_rows_biased(backend):
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(1, 5, seed=4).float().to(device)
    y = randn(1, 5, seed=5).float().to(device)
    s2 = heuristic_bandwidths(x, y).double().cpu() ** 2
    d2 = float(((x - y).double() ** 2).sum())
    # k(x,x) = k(y,y) = 5 kernels; base = d2 for two points
    want = 2 * 5 - 2 * float(torch.exp(-d2 / (2 * s2)).sum())
    assert abs(float(mmd(x, y, estimator="biased", backend=backend)) - want) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_unbiased_needs_two_rows(backend):
    x = torch.randn(1, 4, device=DEVICE if backend == "triton" else "cpu")
    y = torch.randn(6, 4, device=x.device)
    with pytest.raises(ValueError, match="unbiased estimator needs at least 2 rows"):
        mmd(x, y, backend=backend)
    with pytest.raises(ValueError, match="unbiased estimator needs at least 2 rows"):
        mmd(y, x, backend=backend)


def test_heuristic_base_is_the_mean_pairwise_squared_distance():
    x = randn(7, 4, seed=6, scale=2.0) + 10.0  # far from the origin: the closed form is centred
    y = randn(5, 4, seed=7)
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z) ** 2
    brute = d2.sum() / (z.shape[0] * (z.shape[0] - 1))
    torch.testing.assert_close(heuristic_base(x, y), brute, rtol=1e-12, atol=0)
    torch.testing.assert_close(heuristic_bandwidths(x, y, (0.5, 2.0)) ** 2, torch.stack([0.5 * brute, 2.0 * brute]))
    # all points identical: clamped, no 0/0
    assert float(heuristic_base(torch.ones(3, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64))) == BASE_FLOOR


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_heuristic_bandwidths_are_constants(backend):
    """The heuristic is detached: same value and gradient as passing its widths explicitly."""
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(11, 6, seed=8).float().to(device)
    y = (randn(9, 6, seed=9) * 1.3).float().to(device)
    bw = heuristic_bandwidths(x, y)
    auto = _value_and_grads(backend, x, y)
    fixed = _value_and_grads(backend, x, y, bandwidths=bw)
    for a, b in zip(auto, fixed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # and the float64 reference's gradient is the detached one
    xr, yr = x.double().cpu().requires_grad_(), y.double().cpu().requires_grad_()
    gxr, _ = torch.autograd.grad(mmd_reference(xr, yr), (xr, yr))
    torch.testing.assert_close(auto[1].double().cpu(), gxr, rtol=1e-4, atol=1e-6)


def test_mmd_is_deterministic():
    x = randn(37, 21, seed=10).float().to(DEVICE).requires_grad_()
    y = randn(29, 21, seed=11).float().to(DEVICE).requires_grad_()
    results = []
    for _ in range(2):
        out = mmd(x, y, backend="triton")
        results.append((out.detach(), *torch.autograd.grad(out, (x, y))))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_mmd_traces_under_torch_compile_fullgraph():
    x = randn(18, 7, seed=12).float().to(DEVICE).requires_grad_()
    y = randn(20, 7, seed=13).float().to(DEVICE).requires_grad_()
    fn = torch.compile(lambda a, b: mmd(a, b, backend="triton") * 3.0, fullgraph=True, backend="aot_eager")
    out = fn(x, y)
    gx, gy = torch.autograd.grad(out, (x, y))
    xr, yr = x.detach().double().cpu().requires_grad_(), y.detach().double().cpu().requires_grad_()
    ref = mmd_reference(xr, yr) * 3.0
    rx, ry = torch.autograd.grad(ref, (xr, yr))
    torch.testing.assert_close(out.double().cpu(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx.double().cpu(), rx, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gy.double().cpu(), ry, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 5)), ValueError, "x has 4 features but y has 5"),
        (dict(x=torch.randn(3, 4, 1), y=torch.randn(3, 4)), ValueError, "x must have 2 dimensions"),
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 4).double()), TypeError, "y has dtype"),
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 4), estimator="v"), ValueError, "estimator must be one of"),
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 4), bandwidths=[1.0, 0.0]), ValueError, "bandwidths must be finite and > 0"),
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 4), bandwidths=[]), ValueError, "bandwidths must not be empty"),
        (dict(x=torch.randn(3, 4), y=torch.randn(3, 4), multipliers=(1.0, -2.0)), ValueError, "multipliers must be finite"),
        (dict(x=torch.full((3, 4), float("nan")), y=torch.randn(3, 4)), ValueError, "x contains NaN or Inf"),
        (dict(x=torch.randn(0, 4), y=torch.randn(3, 4), estimator="biased"), ValueError, "at least one row"),
        (dict(x=torch.randint(0, 3, (3, 4)), y=torch.randn(3, 4)), TypeError, "x must have dtype"),
    ],
)
def test_mmd_rejects_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        mmd(**kwargs)


def test_mmd_explicit_triton_says_why_not():
    x = torch.randn(3, 4, dtype=torch.float64, device=DEVICE)
    with pytest.raises(BackendError, match="float64"):
        mmd(x, x, backend="triton")
    assert mmd(x, x + 1).dtype == torch.float64  # automatic: the reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_loss_module_flattens_rows(backend):
    device = DEVICE if backend == "triton" else "cpu"
    x = randn(2, 7, 5, seed=14).float().to(device)
    y = randn(3, 4, 5, seed=15).float().to(device)
    loss = MMDLoss(estimator="biased", backend=backend)
    torch.testing.assert_close(loss(x, y), mmd(x.reshape(14, 5), y.reshape(12, 5), estimator="biased", backend=backend))
    fixed = MMDLoss(bandwidths=[1.0, 3.0], backend=backend)
    torch.testing.assert_close(fixed(x, y), mmd(x.reshape(14, 5), y.reshape(12, 5), [1.0, 3.0], backend=backend))
    with pytest.raises(ValueError, match="estimator must be one of"):
        MMDLoss(estimator="linear")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mmd_large_dim_on_gpu(dtype):
    """D up to 1024 and N, M over many tiles, compiled kernels."""
    case = dict(x=randn(700, 1024, seed=16), y=randn(513, 1024, seed=17) * 1.2)
    assert_matches_reference(run, case, dtype=dtype, backend="triton", grad=("x", "y"))
    assert CUDA
