"""Kernel numerics at the edges (issue 22): degenerate MMD sets, MMD off the origin, extreme STFT
magnitudes, non-tensor arguments, non-finite inputs.

Degenerate sets are compared with the float64 reference on both backends under a tolerance
relative to the size of the terms each result is summed from (``_mmd_term_sizes``), never
relative to the result itself: a gradient whose exact value is 0 (every row identical) must then
come out exactly 0, and one that is a small difference of large terms is judged against those
terms.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from harness import BACKENDS, DEVICE, DOT_DTYPES, TOLERANCES, randn, seeds, sizes
from sepkit.kernels import attention, compress_spec, decompress_spec, mmd, nce, poison_outputs, snake, stft_mask
from sepkit.kernels import _checks
from sepkit.kernels.reference import heuristic_bandwidths, stft_mask_reference
from sepkit.kernels.reference.mmd import pooled_centre
from sepkit.kernels.testing import rel_error
from sepkit.losses import PITLoss, SISDRLoss
from sepkit.metrics import sdr, si_sdr, si_sdri

MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _device(backend):
    return DEVICE if backend == "triton" else torch.device("cpu")


def _test_dtypes(backend):
    return DOT_DTYPES if backend == "triton" else (torch.float32, torch.float64)


# ---------------------------------------------------------------- MMD: degenerate sets


@st.composite
def degenerate_sets(draw):
    """Float64 (x, y) that break naive distance or gradient formulas, plus how to call mmd."""
    kind = draw(st.sampled_from(["identical", "two_points", "rank1", "tiny_spread", "single_row"]))
    estimator = "biased" if kind == "single_row" else draw(st.sampled_from(["biased", "unbiased"]))
    n, m = max(2, draw(sizes(20))), max(2, draw(sizes(20)))
    d = draw(sizes(24))
    seed = draw(seeds())
    offset = draw(st.sampled_from([0.0, 0.7, 5.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    centre = offset * (1.0 + 0.1 * torch.randn(d, generator=g, dtype=torch.float64))
    row = centre + torch.randn(d, generator=g, dtype=torch.float64)
    if kind == "identical":  # every row of x and y the same point
        x, y = row.expand(n, d).clone(), row.expand(m, d).clone()
    elif kind == "two_points":  # each set collapsed onto its own point
        other = centre + torch.randn(d, generator=g, dtype=torch.float64)
        x, y = row.expand(n, d).clone(), other.expand(m, d).clone()
    elif kind == "rank1":  # every row on one line through the centre
        v = torch.randn(d, generator=g, dtype=torch.float64)
        a = torch.randn(n, 1, generator=g, dtype=torch.float64)
        b = torch.randn(m, 1, generator=g, dtype=torch.float64) + 0.5
        x, y = centre + a * v, centre + b * v
    elif kind == "tiny_spread":  # spread 1e-4 on a large offset (the off-origin case)
        x = centre + 1e-4 * torch.randn(n, d, generator=g, dtype=torch.float64)
        y = centre + 1e-4 * (torch.randn(m, d, generator=g, dtype=torch.float64) + 1.0)
    else:  # N = 1 (or M = 1) against duplicates of that row and of one other point
        dup = draw(st.integers(1, m))
        other = centre + torch.randn(d, generator=g, dtype=torch.float64)
        x = row[None].clone()
        y = torch.cat([row.expand(dup, d), other.expand(m - dup, d)])
        if draw(st.booleans()):
            x, y = y, x
    case = dict(x=x, y=y, estimator=estimator)
    if draw(st.booleans()):  # explicit widths near the data's spread (or 1 for collapsed data)
        spread = float(torch.cat([x, y]).std(0).norm()) or 1.0
        case["bandwidths"] = tuple(spread * f for f in (0.5, 2.0))
    return case


def _mmd_term_sizes(x, y, estimator, bandwidths=None):
    """Float64 sizes of the terms the value and each gradient element are sums of.

    value: sum over pairs of |weight| k(a, b). gradient of x_i (element d): the terms
    |weight| W(x_i, z_j) |x_i - z_j| of the exact gradient, bounded here by
    |weight| W (|x_id - c_d| + |z_jd - c_d|) (c the pooled centre: what the kernels subtract).
    """
    if bandwidths is None:
        bw = heuristic_bandwidths(x, y, MULTIPLIERS)
    else:
        bw = torch.tensor(bandwidths, dtype=torch.float64)
    gammas = 1.0 / (2.0 * bw**2)
    n, m = x.shape[0], y.shape[0]
    c = pooled_centre(x, y)
    xc, yc = x - c, y - c

    def kernels(a, b):
        e = torch.exp(-(torch.cdist(a, b) ** 2)[..., None] * gammas)
        return e.sum(-1), (gammas * e).sum(-1)

    kxx, wxx = kernels(xc, xc)
    kyy, wyy = kernels(yc, yc)
    kxy, wxy = kernels(xc, yc)
    if estimator == "unbiased":
        axx, ayy = 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1))
    else:
        axx, ayy = 1.0 / n**2, 1.0 / m**2
    axy = 2.0 / (n * m)
    value = axx * float(kxx.sum()) + ayy * float(kyy.sum()) + axy * float(kxy.sum())
    ax, ay = xc.abs(), yc.abs()
    gx = 4 * axx * (wxx.sum(1, keepdim=True) * ax + wxx @ ax) + 2 * axy * (wxy.sum(1, keepdim=True) * ax + wxy @ ay)
    gy = 4 * ayy * (wyy.sum(1, keepdim=True) * ay + wyy @ ay) + 2 * axy * (wxy.sum(0)[:, None] * ay + wxy.T @ ax)
    return value, gx, gy


def _mmd_both(case, dtype, backend, upstream=1.0):
    """(tested value, gx, gy), (float64 reference value, gx, gy), term sizes, on the rounded inputs."""
    x, y = case["x"].to(dtype), case["y"].to(dtype)
    kw = dict(bandwidths=case.get("bandwidths"), estimator=case["estimator"])
    xt = x.to(_device(backend)).clone().requires_grad_()
    yt = y.to(_device(backend)).clone().requires_grad_()
    with poison_outputs():
        out = mmd(xt, yt, backend=backend, **kw)
        gx, gy = torch.autograd.grad(out, (xt, yt), torch.tensor(upstream, dtype=out.dtype, device=out.device))
    xr, yr = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    ref = mmd(xr, yr, backend="torch", **kw)
    rx, ry = torch.autograd.grad(ref, (xr, yr), torch.tensor(upstream, dtype=torch.float64))
    sizes_ = _mmd_term_sizes(x.double(), y.double(), case["estimator"], case.get("bandwidths"))
    return (out.detach(), gx, gy), (ref.detach(), rx, ry), sizes_


def _assert_within_terms(case, dtype, backend, upstream=1.0):
    (out, gx, gy), (ref, rx, ry), (value_terms, gx_terms, gy_terms) = _mmd_both(case, dtype, backend, upstream)
    tol = TOLERANCES[dtype]
    for name, got, want in (("value", out, ref), ("grad_x", gx, rx), ("grad_y", gy, ry)):
        assert bool(torch.isfinite(got).all()), f"{backend} {dtype}: {name} is not finite"
    err = abs(float(out) - float(ref))
    assert err <= tol * value_terms, f"{backend} {dtype}: value {float(out)} vs {float(ref)} (terms {value_terms:.3g})"
    for name, got, want, terms in (("grad_x", gx, rx, gx_terms), ("grad_y", gy, ry, gy_terms)):
        excess = (got.double().cpu() - want).abs() - tol * abs(upstream) * terms
        assert float(excess.max()) <= 0, (
            f"{backend} {dtype}: {name} off by {float((got.double().cpu() - want).abs().max()):.3g}, "
            f"bound {tol:.0e} x terms (max {float(terms.max()):.3g}) exceeded by {float(excess.max()):.3g}"
        )


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=degenerate_sets(), data=st.data())
def test_mmd_degenerate_sets_match_the_reference_within_their_terms(backend, case, data):
    dtype = data.draw(st.sampled_from(_test_dtypes(backend)))
    _assert_within_terms(case, dtype, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("value", [0.7, 0.0, 5.0, -3.1])
def test_mmd_collapsed_sets_give_exactly_zero_gradients(backend, dtype, estimator, value):
    """The issue's case: x = y = full((8, 20), 0.7); the heuristic's base is floored (gammas
    ~ 1e12), yet the exact gradient is 0 and so must the computed one be, bit for bit."""
    x = torch.full((8, 20), value, dtype=dtype, device=_device(backend), requires_grad=True)
    y = torch.full((5, 20), value, dtype=dtype, device=_device(backend), requires_grad=True)
    out = mmd(x, y, estimator=estimator, backend=backend)
    gx, gy = torch.autograd.grad(out, (x, y))
    assert abs(float(out.detach())) <= 1e-6  # both estimators are exactly 0 here
    assert torch.count_nonzero(gx) == 0 and torch.count_nonzero(gy) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_off_the_origin_keeps_its_distances(backend):
    """The issue's cases: spread 1e-4 around 0.7 (fp32 returned 0.0) and randn + 100 (1e-3 off)."""
    g = torch.Generator().manual_seed(0)
    c = torch.full((8, 20), 0.7, dtype=torch.float64)
    tiny = dict(x=c + 1e-4 * torch.randn(8, 20, generator=g, dtype=torch.float64),
                y=c + 1e-4 * torch.randn(8, 20, generator=g, dtype=torch.float64) + 1e-4, estimator="biased")
    far = dict(x=torch.randn(30, 16, generator=g, dtype=torch.float64) + 100,
               y=1.2 * torch.randn(20, 16, generator=g, dtype=torch.float64) + 100, estimator="unbiased")
    for case in (tiny, far):
        (out, *_), (ref, *_), _ = _mmd_both(case, torch.float32, backend)
        assert abs(float(out) - float(ref)) <= 1e-5 * abs(float(ref)), (float(out), float(ref))
        _assert_within_terms(case, torch.float32, backend, upstream=-1.7)
    # and the value does not depend on where the data sit: on a grid of 2^-16, fp32 holds the
    # data at 0.7 and at 64.7 exactly, so the shifted sets are the same sets
    x, y = (torch.round(tiny[k] * 2**16) / 2**16 for k in ("x", "y"))
    x, y = x.float(), y.float()
    here = mmd(x.to(_device(backend)), y.to(_device(backend)), backend=backend)
    there = mmd((x + 64).to(_device(backend)), (y + 64).to(_device(backend)), backend=backend)
    assert abs(float(here) - float(there)) <= 1e-4 * abs(float(here))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_gradients_sum_to_zero(backend):
    """Translation invariance: the gradients of all rows sum to 0, within their terms' rounding
    (the centre is a constant, so its exactly-zero contribution is neither added nor needed)."""
    x = (randn(13, 9, seed=21) * 0.3 + 40.0).float().to(_device(backend)).requires_grad_()
    y = (randn(11, 9, seed=22) * 0.3 + 40.1).float().to(_device(backend)).requires_grad_()
    gx, gy = torch.autograd.grad(mmd(x, y, backend=backend), (x, y))
    _, tx, ty = _mmd_term_sizes(x.detach().double().cpu(), y.detach().double().cpu(), "unbiased")
    total = (gx.double().sum(0) + gy.double().sum(0)).cpu()
    assert float(total.abs().max()) <= 2e-5 * float(tx.sum(0).max() + ty.sum(0).max())


def test_mmd_float16_too_large_to_centre_is_refused():
    x = torch.full((4, 3), 40000.0, dtype=torch.float16)
    with pytest.raises(ValueError, match="float16 x and y must stay below 32752"):
        mmd(x, -x, backend="triton" if DEVICE.type == "cpu" else None)


# ---------------------------------------------------------------- stft_mask: extreme magnitudes


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    spec_exp=st.sampled_from([-37, -30, -25, -21, -19, 0, 19, 20, 25, 30]),
    mask_exp=st.sampled_from([-30, -20, 0, 20]),
    kind=st.sampled_from(["magnitude", "complex"]),
    bound=st.sampled_from(["none", "tanh", "sigmoid"]),
    compress=st.sampled_from([None, (0.5, 0.15), (0.3, 1.0)]),
    seed=seeds(),
)
def test_stft_mask_keeps_every_finite_fp32_magnitude(backend, spec_exp, mask_exp, kind, bound, compress, seed):
    """|X| well below 1e-19 or above 1.8e19 (where fp32 |X|^2 under/overflows) keep their exact
    maths, forward and backward, within the fp32 tolerance of the table."""
    if bound != "tanh":
        mask_exp = 0  # unbounded or sigmoid masks of 1e20 are not masks; tanh only sees |M|
    shape = (3, 7)
    spec = randn(*shape, 2, seed=seed) * 10.0**spec_exp
    mask = randn(*shape, *((2,) if kind == "complex" else ()), seed=seed + 1) * 10.0**mask_exp
    spec[0, 0] = 0.0  # a zero bin: zero out, zero gradient under compression
    xs = spec.float().to(_device(backend)).requires_grad_()
    ms = mask.float().to(_device(backend)).requires_grad_()
    with poison_outputs():
        out = stft_mask(xs, ms, kind, bound, compress, backend=backend)
    xr, mr = xs.detach().double().cpu().requires_grad_(), ms.detach().double().cpu().requires_grad_()
    ref = stft_mask_reference(xr, mr, kind, bound, compress)
    up = randn(*ref.shape, seed=seed + 2)
    with poison_outputs():
        gx, gm = torch.autograd.grad(out, (xs, ms), up.float().to(out.device))
    rx, rm = torch.autograd.grad(ref, (xr, mr), up)
    # the case itself must lie in fp32's normal range, output and gradients (|X| 1e-37 times
    # |M| 1e-30 underflows whatever the kernel does)
    assume(all(bool(torch.isfinite(t).all()) and 1e-35 < float(t.detach().abs().max()) < 1e35 for t in (ref, rx, rm)))
    tol = TOLERANCES[torch.float32]
    for name, got, want in (("out", out, ref), ("grad_spec", gx, rx), ("grad_mask", gm, rm)):
        err = rel_error(got, want, floor=1e-300)
        assert err <= tol, f"{backend}: {name} error {err:.2e} at |X| ~ 1e{spec_exp}, |M| ~ 1e{mask_exp}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("magnitude", [1e-30, 1e25])
def test_power_law_round_trip_at_extreme_magnitudes(backend, magnitude):
    spec = (randn(4, 9, 2, seed=5) * magnitude).float().to(_device(backend))
    back = decompress_spec(compress_spec(spec, backend=backend), backend=backend)
    assert rel_error(back, spec, floor=1e-300) <= 1e-5


# ---------------------------------------------------------------- non-tensor arguments


def _spec():
    return torch.randn(3, 4, 2)


def _attn():
    return torch.randn(1, 2, 3, 16)


def _op_table():
    """(op name, function of keyword arguments, valid keyword arguments, tensor argument names)."""
    ctx, tgt = torch.randn(3, 4), torch.randn(6, 4)
    return [
        ("snake", lambda **kw: snake(**kw), dict(x=torch.randn(2, 3, 5), alpha=torch.ones(3), beta=torch.ones(3)),
         ("x", "alpha", "beta")),
        ("stft_mask", lambda **kw: stft_mask(kind="complex", **kw), dict(spec=_spec(), mask=_spec()), ("spec", "mask")),
        ("stft_mask", lambda **kw: stft_mask(kind="magnitude", **kw), dict(spec=_spec(), mask=torch.rand(3, 4)),
         ("spec", "mask")),
        ("compress_spec", lambda **kw: compress_spec(**kw), dict(spec=_spec()), ("spec",)),
        ("decompress_spec", lambda **kw: decompress_spec(**kw), dict(spec=_spec()), ("spec",)),
        ("attention", lambda **kw: attention(**kw), dict(q=_attn(), k=_attn(), v=_attn()), ("q", "k", "v")),
        ("mmd", lambda **kw: mmd(**kw), dict(x=torch.randn(4, 3), y=torch.randn(5, 3)), ("x", "y")),
        ("nce", lambda **kw: nce(**kw),
         dict(context=ctx, targets=tgt, pos_idx=torch.tensor([0, 1, 2]), neg_idx=torch.tensor([[3, 4], [5, 0], [1, 2]])),
         ("context", "targets", "pos_idx", "neg_idx")),
        ("PIT", lambda **kw: PITLoss(SISDRLoss(reduction="none"))(**kw),
         dict(estimate=torch.randn(2, 2, 30), target=torch.randn(2, 2, 30)), ("estimate", "target")),
        ("sdr", lambda **kw: sdr(filter_length=4, **kw), dict(estimate=torch.randn(2, 30), reference=torch.randn(2, 30)),
         ("estimate", "reference")),
        ("si_sdr", lambda **kw: si_sdr(**kw), dict(estimate=torch.randn(2, 30), reference=torch.randn(2, 30)),
         ("estimate", "reference")),
        ("si_sdri", lambda **kw: si_sdri(**kw),
         dict(estimate=torch.randn(2, 30), reference=torch.randn(2, 30), mixture=torch.randn(30)),
         ("estimate", "reference", "mixture")),
    ]


def _non_tensors(t: torch.Tensor):
    return {
        "list": t.tolist(),
        "tuple": tuple(t.tolist()),
        "ndarray": t.numpy(),
        "scalar": 1 if not t.is_floating_point() else 1.0,
    }


_CASES = [(op, fn, valid, arg) for op, fn, valid, args in _op_table() for arg in args]


@pytest.mark.parametrize("op, fn, valid, arg", _CASES, ids=[f"{c[0]}-{c[3]}" for c in _CASES])
def test_every_tensor_argument_refuses_non_tensors_naming_it(op, fn, valid, arg):
    fn(**valid)  # the valid call runs
    for what, bad in _non_tensors(valid[arg]).items():
        with pytest.raises(TypeError, match=rf"{arg} must be a torch\.Tensor, got"):
            fn(**{**valid, arg: bad})


def test_sequence_arguments_take_sequences_and_refuse_scalars():
    """mmd's bandwidths and attention's kv_lengths are documented as tensor-or-sequence."""
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    want = mmd(x, y, torch.tensor([0.5, 2.0]))
    for seq in ([0.5, 2.0], (0.5, 2.0), np.array([0.5, 2.0])):
        torch.testing.assert_close(mmd(x, y, seq), want)
    with pytest.raises(TypeError, match="bandwidths must be a 1-d tensor or a sequence of numbers"):
        mmd(x, y, 1.0)
    q = torch.randn(2, 1, 3, 16)
    want = attention(q, q, q, kv_lengths=torch.tensor([2, 3]))
    for seq in ([2, 3], (2, 3)):
        torch.testing.assert_close(attention(q, q, q, kv_lengths=seq), want)
    for bad in (3, np.array([2, 3])):
        with pytest.raises(TypeError, match="kv_lengths must be a tensor or a list of ints"):
            attention(q, q, q, kv_lengths=bad)


# ---------------------------------------------------------------- non-finite inputs


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_nan_query_poisons_its_own_row_only(backend):
    """Documented in kernels/_checks.py: a NaN query gives a NaN output row, nothing else."""
    q = randn(1, 2, 5, 16, seed=30).float().to(_device(backend))
    k = randn(1, 2, 7, 16, seed=31).float().to(_device(backend))
    v = randn(1, 2, 7, 16, seed=32).float().to(_device(backend))
    q[0, 1, 3, 4] = float("nan")
    k[0, :, 6] = float("nan")  # past kv_lengths: never read into an output
    out = attention(q, k, v, kv_lengths=torch.tensor([6]), backend=backend)
    bad = ~torch.isfinite(out).all(-1)
    want = torch.zeros_like(bad)
    want[0, 1, 3] = True
    assert torch.equal(bad, want)


def test_attention_checks_finite_inputs_under_the_debug_flag(monkeypatch):
    q = torch.randn(1, 1, 3, 16)
    k = torch.randn(1, 1, 4, 16)
    k[0, 0, 3] = float("inf")
    monkeypatch.setattr(_checks, "CHECK_FINITE", True)
    attention(q, k, k.nan_to_num(posinf=0.0), kv_lengths=[3])  # the bad key is padding: fine
    with pytest.raises(ValueError, match="k contains NaN or Inf in a valid position"):
        attention(q, k, k.nan_to_num(posinf=0.0))
    q[0, 0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="q contains NaN or Inf"):
        attention(q, k, k, kv_lengths=[3])
    monkeypatch.setattr(_checks, "CHECK_FINITE", False)
    assert torch.isnan(attention(q, k, k, kv_lengths=[3])).any()  # off by default: documented NaN row
    assert not math.isnan(float(attention(q, k, k, kv_lengths=[3])[0, 0, 0, 0]))
