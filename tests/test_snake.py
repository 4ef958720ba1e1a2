"""Snake op and modules against the float64 reference, on both backends."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import BACKENDS, DEVICE, assert_matches_reference, dtypes, randn, seeds, sizes
from sepkit.kernels import BackendError, snake
from sepkit.kernels import _tmath as tm  # noqa: F401  (the kernels' sin terms, used in a jit function)
from sepkit.kernels.reference import snake_reference
from sepkit.nn import Snake, SnakeBeta


def run(backend, x, alpha, beta=None, dim=1, logscale=False, transpose=False):
    if transpose:  # a non-contiguous view of the same values
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
    return snake(x, alpha, beta, dim=dim, logscale=logscale, backend=backend)


@st.composite
def snake_cases(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(sizes(40 if rank > 1 else 300)) for _ in range(rank)]
    dim = draw(st.integers(-rank, rank - 1))
    channels = shape[dim]
    seed = draw(seeds())
    logscale = draw(st.booleans())
    has_beta = draw(st.booleans())
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    inputs = dict(x=randn(*shape, seed=seed, scale=scale), dim=dim, logscale=logscale)
    if logscale:
        inputs["alpha"] = randn(channels, seed=seed + 1, scale=0.5)
    else:  # both signs, some near zero
        inputs["alpha"] = randn(channels, seed=seed + 1)
    if has_beta:
        inputs["beta"] = randn(channels, seed=seed + 2, scale=0.5) + (0.0 if logscale else 1.5)
    inputs["transpose"] = rank > 1 and draw(st.booleans())
    return inputs


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=snake_cases(), dtype=dtypes(), seed=seeds())
def test_snake_matches_reference(backend, case, dtype, seed):
    grad = ("x", "alpha") + (("beta",) if "beta" in case else ())
    assert_matches_reference(
        run, case, dtype=dtype, backend=backend, grad=grad, keep_dtype=("alpha", "beta"), seed=seed
    )


@pytest.mark.parametrize("limit", [1.0, 1e3, 1e6, 1e8])
def test_sin_terms_of_the_kernels_against_float64(limit):
    """The kernels' (sin(t)^2, sin(2t)): reduction by pi/2 and polynomials, no libdevice."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def terms(T, S2, D, N, BLOCK: tl.constexpr):
        o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = o < N
        s2, d = tm.sin_sq_sin2(tl.load(T + o, mask=m))
        tl.store(S2 + o, s2, mask=m)
        tl.store(D + o, d, mask=m)

    g = torch.Generator().manual_seed(int(limit) % 997)
    t = ((torch.rand(20000, generator=g, dtype=torch.float64) * 2 - 1) * limit).float()
    t[:4] = torch.tensor([0.0, 1e-30, -3e-4, limit])
    t = t.to(DEVICE)
    s2 = torch.full_like(t, float("nan"))
    d = torch.full_like(t, float("nan"))
    terms[(triton.cdiv(t.numel(), 1024),)](t, s2, d, t.numel(), BLOCK=1024)
    t64 = t.double()
    assert float((s2.double() - torch.sin(t64) ** 2).abs().max()) < 3e-7
    assert float((d.double() - torch.sin(2 * t64)).abs().max()) < 3e-7
    assert float(s2[0]) == 0.0 and float(d[0]) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_snake_large_arguments(backend):
    """|alpha x| up to about 1e6: the kernels' argument reduction holds, forward and backward.

    alpha is a power of two, so alpha x is exact in fp32 (otherwise the rounding of the product,
    2^-24 |alpha x|, would dominate any implementation's error at these arguments)."""
    alpha = torch.tensor([64.0, -256.0, 1024.0, 4096.0], dtype=torch.float64)
    case = dict(x=randn(2, 4, 64, seed=11, scale=100.0), alpha=alpha)
    assert_matches_reference(run, case, dtype=torch.float32, backend=backend, grad=("x", "alpha"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_snake_parameters_in_storage_dtype(backend, dtype):
    """Parameters stored in the activation dtype (no fp32 master copy) work too."""
    case = dict(x=randn(2, 6, 50, seed=3), alpha=randn(6, seed=4) + 1.0, beta=randn(6, seed=5).abs() + 0.5)
    assert_matches_reference(run, case, dtype=dtype, backend=backend, grad=("x", "alpha", "beta"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_snake_matches_dac_formula_in_float64_semantics(backend):
    """x + (alpha + 1e-9)^-1 * sin(alpha x)^2 with alpha near zero and negative."""
    alpha = torch.tensor([1e-7, -1e-7, 1e-4, -0.7, 2.5, -3.0, 0.0, 1.0], dtype=torch.float64)
    x = randn(3, alpha.numel(), 129, seed=11, scale=3.0)
    dac = x + (alpha[None, :, None] + 1e-9).reciprocal() * torch.sin(alpha[None, :, None] * x) ** 2
    if backend == "torch":
        torch.testing.assert_close(snake(x, alpha, backend="torch"), dac, rtol=0, atol=0)
    else:
        got = snake(x.float().to(DEVICE), alpha.float().to(DEVICE), backend="triton").double().cpu()
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, dac, rtol=2e-6, atol=2e-6)
        # y ~ x hides the snake term; its alpha-gradient does not: compare it channel by channel
        xf = x.float().to(DEVICE)
        af = alpha.float().to(DEVICE).requires_grad_()
        (got_da,) = torch.autograd.grad(snake(xf, af, backend="triton").sum(), af)
        a64 = alpha.clone().requires_grad_()
        (want_da,) = torch.autograd.grad(snake_reference(x.float().double(), a64).sum(), a64)
        assert torch.isfinite(got_da).all()
        torch.testing.assert_close(got_da.double().cpu(), want_da, rtol=1e-4, atol=1e-6)


def test_snake_parameter_gradients_are_deterministic():
    x = randn(4, 16, 333, seed=1).float().to(DEVICE).requires_grad_()
    alpha = (randn(16, seed=2) + 1).float().to(DEVICE).requires_grad_()
    g = randn(4, 16, 333, seed=3).float().to(DEVICE)
    grads = []
    for _ in range(2):
        (da,) = torch.autograd.grad(snake(x, alpha, backend="triton"), alpha, g)
        grads.append(da)
    assert torch.equal(grads[0], grads[1])


def test_snake_empty_input():
    x = torch.empty(2, 3, 0, device=DEVICE, requires_grad=True)
    alpha = torch.ones(3, device=DEVICE, requires_grad=True)
    y = snake(x, alpha, backend="triton")
    assert y.shape == (2, 3, 0)
    y.sum().backward()
    assert torch.equal(alpha.grad, torch.zeros(3, device=DEVICE))


def test_snake_traces_under_torch_compile_fullgraph():
    x = randn(2, 4, 37, seed=5).float().to(DEVICE).requires_grad_()
    alpha = (randn(4, seed=6) + 1).float().to(DEVICE).requires_grad_()
    fn = torch.compile(lambda a, b: snake(a, b, backend="triton").square().sum(), fullgraph=True, backend="aot_eager")
    out = fn(x, alpha)
    out.backward()
    ref_x, ref_a = x.detach().double().requires_grad_(), alpha.detach().double().requires_grad_()
    snake_reference(ref_x, ref_a).square().sum().backward()
    torch.testing.assert_close(out.double().cpu(), snake_reference(ref_x, ref_a).square().sum().detach().cpu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alpha.grad.double().cpu(), ref_a.grad.cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.randn(2, 3, 4), alpha=torch.ones(4)), "alpha has 4 values but x has 3 channels"),
        (dict(x=torch.randn(2, 3, 4), alpha=torch.ones(3), dim=3), "dim=3 is out of range"),
        (dict(x=torch.randn(2, 3, 4), alpha=torch.ones(1, 3, 1)), "alpha must have 1 dimensions"),
        (dict(x=torch.randint(0, 3, (2, 3, 4)), alpha=torch.ones(3)), "x must have dtype"),
        (dict(x=torch.randn(2, 3, 4), alpha=torch.ones(3), beta=torch.ones(2)), "beta has 2 values"),
        (dict(x=[1.0], alpha=torch.ones(3)), "x must be a torch.Tensor"),
    ],
)
def test_snake_rejects_bad_input(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        snake(**kwargs)


def test_snake_explicit_triton_says_why_not():
    x = torch.randn(2, 3, 4, dtype=torch.float64, device=DEVICE)
    with pytest.raises(BackendError, match="float64"):
        snake(x, torch.ones(3, dtype=torch.float64, device=DEVICE), backend="triton")
    # automatic choice falls back to the reference silently
    assert snake(x, torch.ones(3, dtype=torch.float64, device=DEVICE)).dtype == torch.float64


def test_snake_env_backend(monkeypatch):
    monkeypatch.setenv("SEPKIT_BACKEND", "nonsense")
    with pytest.raises(BackendError, match="SEPKIT_BACKEND"):
        snake(torch.randn(2, 3, 4), torch.ones(3))
    monkeypatch.setenv("SEPKIT_BACKEND", "torch")
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(snake(x, torch.ones(3)), snake_reference(x, torch.ones(3)))


def test_snake_modules_initialisation_and_dac_state_dict():
    m = Snake(5)
    assert m.alpha.shape == (5,) and torch.equal(m.alpha, torch.ones(5))
    assert torch.equal(Snake(5, logscale=True).alpha, torch.zeros(5))
    mb = SnakeBeta(5, logscale=True)
    assert torch.equal(mb.beta, torch.zeros(5))
    dac_alpha = torch.rand(1, 5, 1) + 0.5
    m.load_state_dict({"alpha": dac_alpha})
    torch.testing.assert_close(m.alpha.data, dac_alpha.reshape(5))
    x = randn(2, 5, 17, seed=9).float()
    torch.testing.assert_close(m(x), x + (dac_alpha + 1e-9).reciprocal() * torch.sin(dac_alpha * x) ** 2)


@pytest.mark.parametrize("module", [Snake, SnakeBeta])
def test_snake_module_channels_last_backward(module):
    m = module(6, dim=-1, backend="triton").to(DEVICE)
    x = randn(2, 11, 6, seed=4).float().to(DEVICE).requires_grad_()
    m(x).sum().backward()
    assert torch.isfinite(m.alpha.grad).all() and m.alpha.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
