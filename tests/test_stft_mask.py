"""stft_mask, compress_spec and decompress_spec against the float64 reference on both backends."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import BACKENDS, DEVICE, assert_matches_reference, dtypes, randn, seeds, sizes
from sepkit.kernels import SGMSE_COMPRESSION, compress_spec, decompress_spec, stft_mask
from sepkit.kernels.reference import stft_mask_reference

COMPRESSIONS = (None, SGMSE_COMPRESSION, (0.3, 1.0), (1.0, 2.0))


def run(backend, spec, mask, kind, bound, compress):
    return stft_mask(spec, mask, kind, bound, compress, backend=backend)


@st.composite
def mask_cases(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(sizes(24)) for _ in range(rank))
    kind = draw(st.sampled_from(["magnitude", "complex"]))
    seed = draw(seeds())
    spec = randn(*shape, 2, seed=seed, scale=draw(st.sampled_from([1e-3, 1.0, 30.0])))
    mask = randn(*shape, *((2,) if kind == "complex" else ()), seed=seed + 1)
    # zero-magnitude bins in the spectrogram and in a complex mask
    flat = spec.view(-1, 2)
    flat[:: max(1, flat.shape[0] // 3)] = 0.0
    if kind == "complex":
        mask.view(-1, 2)[1::4] = 0.0
    return dict(
        spec=spec, mask=mask, kind=kind,
        bound=draw(st.sampled_from(["none", "sigmoid", "tanh"])),
        compress=draw(st.sampled_from(COMPRESSIONS)),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=mask_cases(), dtype=dtypes(), seed=seeds())
def test_stft_mask_matches_reference(backend, case, dtype, seed):
    assert_matches_reference(run, case, dtype=dtype, backend=backend, grad=("spec", "mask"), seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@given(shape=st.tuples(sizes(30), sizes(30)), power=st.sampled_from([0.3, 0.5, 1.0, 2.0]),
       scale=st.sampled_from([0.15, 1.0, 3.0]), dtype=dtypes(), seed=seeds())
def test_power_law_matches_reference(backend, inverse, shape, power, scale, dtype, seed):
    def op(backend, spec):
        fn = decompress_spec if inverse else compress_spec
        return fn(spec, power, scale, backend=backend)

    spec = randn(*shape, 2, seed=seed)
    spec[0, 0] = 0.0
    assert_matches_reference(op, dict(spec=spec), dtype=dtype, backend=backend, grad=("spec",), seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bound", ["none", "sigmoid", "tanh"])
def test_complex_tensors_match_complex_arithmetic(backend, bound):
    dev = DEVICE if backend == "triton" else "cpu"
    spec = torch.randn(3, 17, 10, dtype=torch.complex64, device=dev)
    mask = torch.randn(3, 17, 10, dtype=torch.complex64, device=dev)
    got = stft_mask(spec, mask, "complex", bound, backend=backend)
    assert got.dtype == torch.complex64 and got.shape == spec.shape
    if bound == "none":
        want = mask * spec
    elif bound == "sigmoid":
        want = torch.complex(torch.sigmoid(mask.real), torch.sigmoid(mask.imag)) * spec
    else:
        want = torch.tanh(mask.abs()) * torch.exp(1j * mask.angle()) * spec
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    mag = torch.rand(3, 17, 10, device=dev)
    torch.testing.assert_close(stft_mask(spec, mag, "magnitude", backend=backend), mag * spec)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_gradients_follow_pytorch_convention(backend):
    """Gradients of complex inputs equal those of the same maths written on complex tensors."""
    dev = DEVICE if backend == "triton" else "cpu"
    spec = torch.randn(4, 9, dtype=torch.complex64, device=dev, requires_grad=True)
    mask = torch.randn(4, 9, dtype=torch.complex64, device=dev, requires_grad=True)
    up = torch.randn(4, 9, dtype=torch.complex64, device=dev)
    got = torch.autograd.grad(stft_mask(spec, mask, backend=backend), (spec, mask), up)
    want = torch.autograd.grad(mask * spec, (spec, mask), up)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["magnitude", "complex"])
def test_zero_magnitude_bins_give_finite_gradients(backend, kind):
    dev = DEVICE if backend == "triton" else "cpu"
    spec = torch.zeros(2, 5, 2, device=dev)
    spec[1] = torch.randn(5, 2)
    spec = spec.requires_grad_()
    mask = torch.zeros(2, 5, *((2,) if kind == "complex" else ()), device=dev, requires_grad=True)
    y = stft_mask(spec, mask, kind, "tanh", SGMSE_COMPRESSION, backend=backend)
    y.backward(torch.randn_like(y))
    assert torch.isfinite(y).all() and torch.isfinite(spec.grad).all() and torch.isfinite(mask.grad).all()
    assert torch.equal(spec.grad[0], torch.zeros_like(spec.grad[0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compression_round_trip(backend):
    dev = DEVICE if backend == "triton" else "cpu"
    x = torch.randn(6, 33, dtype=torch.complex64, device=dev)
    y = compress_spec(x, backend=backend)
    torch.testing.assert_close(y.abs(), 0.15 * x.abs() ** 0.5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decompress_spec(y, backend=backend), x, rtol=1e-5, atol=1e-5)
    # masking with the identity in the compressed domain is the identity
    ones = torch.ones(6, 33, device=dev)
    torch.testing.assert_close(stft_mask(x, ones, "magnitude", compress=SGMSE_COMPRESSION, backend=backend), x,
                               rtol=1e-5, atol=1e-5)


def test_stft_mask_traces_under_torch_compile_fullgraph():
    spec = randn(3, 8, 2, seed=1).float().to(DEVICE).requires_grad_()
    mask = randn(3, 8, 2, seed=2).float().to(DEVICE).requires_grad_()
    fn = torch.compile(lambda s, m: stft_mask(s, m, "complex", "tanh", SGMSE_COMPRESSION, backend="triton").sum(),
                       fullgraph=True, backend="aot_eager")
    fn(spec, mask).backward()
    s64, m64 = spec.detach().double().cpu().requires_grad_(), mask.detach().double().cpu().requires_grad_()
    stft_mask_reference(s64, m64, "complex", "tanh", SGMSE_COMPRESSION).sum().backward()
    torch.testing.assert_close(mask.grad.double().cpu(), m64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(spec.grad.double().cpu(), s64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.randn(3, 4, 3), torch.randn(3, 4)), dict(kind="magnitude"), "last axis of size 2"),
        ((torch.randn(3, 4, 2), torch.randn(3, 5)), dict(kind="magnitude"), "magnitude mask must have"),
        ((torch.randn(3, 4, 2), torch.randn(3, 4, 2)), dict(kind="phase"), "kind must be one of"),
        ((torch.randn(3, 4, 2), torch.randn(3, 4, 2)), dict(bound="relu"), "bound must be one of"),
        ((torch.randn(3, 4, 2), torch.randn(3, 4, 2)), dict(compress=(0.0, 0.15)), "power must be a positive"),
        ((torch.randn(3, 4, 2), torch.randn(3, 4, 2)), dict(compress=0.5), "compress must be None or"),
        ((torch.randn(3, 4, dtype=torch.complex64), torch.randn(3, 4, 2)), {}, "representation of spec"),
        ((torch.randn(3, 4, 2), torch.randn(3, 5, 2)), {}, "does not match spec shape"),
    ],
)
def test_stft_mask_rejects_bad_input(args, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        stft_mask(*args, **kwargs)
