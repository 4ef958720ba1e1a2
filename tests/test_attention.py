"""attention op: Triton (interpreted on CPU) and reference against float64, forward and gradients."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import BACKENDS, DEVICE, DOT_DTYPES, assert_matches_reference, randn, seeds, sizes
from sepkit.kernels import BackendError, attention, poison_outputs
from sepkit.kernels.attention import _attention_fwd
from sepkit.kernels.reference.attention import attention_lse_reference, attention_mask, attention_reference

GRADS = ("q", "k", "v")


def run(backend, q, k, v, kv_lengths=None, causal=False, scale=None):
    return attention(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=scale, backend=backend)


def _inputs(b, h, lq, lk, dh, seed, lengths=None, causal=False, scale=None):
    return dict(
        q=randn(b, h, lq, dh, seed=seed), k=randn(b, h, lk, dh, seed=seed + 1), v=randn(b, h, lk, dh, seed=seed + 2),
        kv_lengths=None if lengths is None else torch.tensor(lengths, dtype=torch.int32), causal=causal, scale=scale,
    )


@st.composite
def problems(draw):
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 2))
    lq = draw(sizes(40))
    lk = draw(sizes(40))
    dh = draw(st.sampled_from((16, 32, 24, 8)))
    causal = draw(st.booleans())
    padded = draw(st.booleans())
    lengths = [draw(st.integers(0, lk)) for _ in range(b)] if padded else None
    return b, h, lq, lk, dh, causal, lengths


# The kernels are cheap at these sizes even interpreted: more examples than the profile's minimum.
@settings(max_examples=max(30, settings().max_examples))
@given(problem=problems(), dtype=st.sampled_from(DOT_DTYPES), backend=st.sampled_from(BACKENDS), seed=seeds())
def test_attention_matches_reference(problem, dtype, backend, seed):
    b, h, lq, lk, dh, causal, lengths = problem
    # With at most one visible key per row, the gradients of q and k are exactly zero in float64
    # (softmax over one element is constant) and only rounding noise in fp32, which a normwise
    # error against zero cannot judge: compare v's gradient alone then.
    mask = attention_mask(lq, lk, None if lengths is None else torch.tensor(lengths), causal, b, "cpu")
    several = mask is None and lk > 1 or mask is not None and int(mask.sum(-1).max()) > 1
    assert_matches_reference(run, _inputs(b, h, lq, lk, dh, seed, lengths, causal), dtype=dtype, backend=backend,
                             grad=GRADS if several else ("v",), seed=seed)


@pytest.mark.parametrize("dtype", DOT_DTYPES)
@pytest.mark.parametrize(
    "b, h, lq, lk, dh, causal, lengths",
    [
        (1, 2, 3, 200, 16, False, None),         # few queries over a long memory
        (2, 1, 100, 3, 32, False, [3, 2]),       # many queries over a short padded memory
        (1, 1, 17, 70, 64, True, None),          # causal, Lq < Lk: the last 17 positions
        (1, 1, 45, 12, 128, True, None),         # causal, Lq > Lk: the first 33 rows see nothing
        (2, 1, 33, 31, 16, True, [31, 1]),       # causal and padded, length 1
        (1, 1, 20, 37, 16, True, None),          # causal, Lk - Lq = 1 (mod block): first visible row at a block end
    ],
)
def test_attention_regimes(b, h, lq, lk, dh, causal, lengths, dtype):
    inputs = _inputs(b, h, lq, lk, dh, seed=lq * lk + dh, lengths=lengths, causal=causal, scale=0.3)
    assert_matches_reference(run, inputs, dtype=dtype, backend="triton", grad=GRADS)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DOT_DTYPES)
@pytest.mark.parametrize(
    "b, h, lq, lk, dh, causal, lengths",
    [
        (2, 4, 3, 2000, 64, False, [2000, 1311]),   # set queries over a long memory: split keys
        (2, 2, 4096, 32, 128, False, [32, 7]),      # long queries over a short memory
        (1, 2, 1000, 1000, 16, True, None),         # causal self-attention, autotuned tiles
        (2, 1, 777, 1500, 32, True, [1500, 900]),   # causal cross with padding
    ],
)
def test_attention_issue_shapes_on_gpu(b, h, lq, lk, dh, causal, lengths, dtype):
    inputs = _inputs(b, h, lq, lk, dh, seed=lq + lk, lengths=lengths, causal=causal)
    assert_matches_reference(run, inputs, dtype=dtype, backend="triton", grad=GRADS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_without_keys_are_zero_with_zero_gradient(backend):
    dev = DEVICE if backend == "triton" else torch.device("cpu")
    inputs = _inputs(2, 2, 20, 6, 16, seed=3, lengths=[0, 4], causal=True)
    q, k, v = (inputs[n].float().to(dev).requires_grad_() for n in GRADS)
    with poison_outputs():
        out = attention(q, k, v, kv_lengths=inputs["kv_lengths"], causal=True, backend=backend)
        out.backward(randn(*out.shape, seed=4).float().to(dev))
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.isfinite(t).all()
    assert out[0].abs().max() == 0 and q.grad[0].abs().max() == 0 and k.grad[0].abs().max() == 0
    # Batch 1, causal bottom-right with Lq=20 > Lk=6: rows 0..13 see no key; row 14 sees key 0.
    assert out[1, :, :14].abs().max() == 0 and q.grad[1, :, :14].abs().max() == 0
    assert out[1, :, 14:].abs().max() > 0
    # Padded keys (4, 5 of batch 1) get no gradient.
    assert k.grad[1, :, 4:].abs().max() == 0 and v.grad[1, :, 4:].abs().max() == 0
    assert v.grad[1, :, :4].abs().max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_padded_keys_does_not_propagate(backend):
    dev = DEVICE if backend == "triton" else torch.device("cpu")
    inputs = _inputs(2, 1, 9, 21, 16, seed=5, lengths=[21, 7])
    k, v = inputs["k"].clone(), inputs["v"].clone()
    k[1, :, 7:] = float("nan")
    v[1, :, 7:] = float("nan")
    q, k, v = (t.float().to(dev).requires_grad_() for t in (inputs["q"], k, v))
    out = attention(q, k, v, kv_lengths=[21, 7], backend=backend)
    out.backward(torch.ones_like(out))
    want = attention_reference(inputs["q"][1:], inputs["k"][1:, :, :7], inputs["v"][1:, :, :7])
    torch.testing.assert_close(out[1:].double().cpu(), want, rtol=1e-5, atol=1e-5)
    for t in (out, q.grad, k.grad[:, :, :7], v.grad[:, :, :7]):
        assert torch.isfinite(t).all()


def test_causal_alignment_is_bottom_right():
    q, k, v = randn(1, 1, 2, 4, seed=6), randn(1, 1, 5, 4, seed=7), randn(1, 1, 5, 4, seed=8)
    out = attention(q, k, v, causal=True, backend="torch")
    # Query 0 of 2 over 5 keys sees keys 0..3, query 1 sees all 5.
    torch.testing.assert_close(out[..., :1, :], attention_reference(q[..., :1, :], k[..., :4, :], v[..., :4, :]))
    torch.testing.assert_close(out[..., 1:, :], attention_reference(q[..., 1:, :], k, v))


def test_stored_log_sum_exp_is_base_two():
    inputs = _inputs(2, 1, 19, 23, 16, seed=9, lengths=[23, 0], causal=True)
    q, k, v = (inputs[n].float().to(DEVICE) for n in GRADS)
    lens = inputs["kv_lengths"].to(DEVICE)
    with poison_outputs():
        _, lse = _attention_fwd(q, k, v, lens, True, 0.25)
    want = attention_lse_reference(inputs["q"], inputs["k"], inputs["kv_lengths"], True, 0.25) / math.log(2)
    assert torch.isinf(lse[1]).all() and (lse[1] > 0).all()  # empty rows: +inf
    torch.testing.assert_close(lse[0].double().cpu(), want[0], rtol=1e-5, atol=1e-5)


def test_triton_is_deterministic_and_takes_strided_inputs():
    g = torch.Generator().manual_seed(10)
    packed = torch.randn(2, 18, 3, 2, 16, generator=g).to(DEVICE)  # (B, L, 3, H, Dh), as a fused projection
    q, k, v = (packed[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))  # strided (B, H, L, Dh)
    assert not q.is_contiguous()
    up = torch.randn(2, 2, 18, 16, generator=g).to(DEVICE)

    def once():
        out = attention(q, k, v, kv_lengths=[18, 11], backend="triton")
        return (out, *torch.autograd.grad(out, (q, k, v), up))

    first, second = once(), once()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    ref = [t.detach().double().cpu().requires_grad_() for t in (q, k, v)]
    want = attention_reference(*ref, kv_lengths=torch.tensor([18, 11]))
    wgrads = torch.autograd.grad(want, ref, up.double().cpu())
    for a, b in zip(first, (want, *wgrads)):
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_traces_under_torch_compile_fullgraph(backend):
    dev = DEVICE if backend == "triton" else torch.device("cpu")
    inputs = _inputs(1, 2, 13, 20, 16, seed=11, lengths=[15], causal=True)
    q, k, v = (inputs[n].float().to(dev).requires_grad_() for n in GRADS)
    lens = inputs["kv_lengths"].to(dev)
    fn = torch.compile(lambda a, b, c, n: attention(a, b, c, kv_lengths=n, causal=True, backend=backend).square().sum(),
                       fullgraph=True, backend="aot_eager")
    loss = fn(q, k, v, lens)
    loss.backward()
    ref = [inputs[n].requires_grad_() for n in GRADS]
    want = attention_reference(*ref, kv_lengths=inputs["kv_lengths"], causal=True).square().sum()
    want.backward()
    torch.testing.assert_close(loss.double().cpu(), want.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip((q, k, v), ref):
        torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, kwargs, error, message",
    [
        (lambda: (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)), {}, ValueError, "q must have 4 dimensions"),
        (lambda: (torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)), {}, ValueError, "k must have shape"),
        (lambda: (torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 6, 8)), {}, ValueError, "v must have the shape of k"),
        (lambda: (torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 5, 8, dtype=torch.float64), torch.zeros(1, 1, 5, 8)), {}, TypeError, "k has dtype"),
        (lambda: (torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, 5, 8), torch.zeros(2, 1, 5, 8)), dict(kv_lengths=[5, 6]), ValueError, r"kv_lengths must lie in \[0, Lk=5\]"),
        (lambda: (torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, 5, 8), torch.zeros(2, 1, 5, 8)), dict(kv_lengths=torch.tensor([5])), ValueError, r"kv_lengths must have shape \(2,\)"),
        (lambda: (torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 5, 8)), dict(kv_lengths=torch.tensor([5.0])), TypeError, "integer dtype"),
        (lambda: (torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 5, 8)), dict(scale=float("nan")), ValueError, "scale must be a finite"),
        (lambda: (torch.zeros(1, 1, 3, 8), torch.zeros(1, 1, 5, 8), torch.zeros(1, 1, 5, 8)), dict(causal=1), TypeError, "causal must be a bool"),
    ],
)
def test_attention_errors(make, kwargs, error, message):
    q, k, v = make()
    with pytest.raises(error, match=message):
        attention(q, k, v, backend="torch", **kwargs)


def test_triton_backend_says_why_not():
    q = torch.zeros(1, 1, 3, 8, dtype=torch.float64, device=DEVICE)
    with pytest.raises(BackendError, match="float64"):
        attention(q, q, q, backend="triton")
    big = torch.zeros(1, 1, 3, 256, device=DEVICE)
    with pytest.raises(BackendError, match="head dims up to 128"):
        attention(big, big, big, backend="triton")
