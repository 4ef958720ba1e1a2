"""Attention layers (sepkit.nn) against torch.nn.MultiheadAttention / TransformerEncoderLayer with
copied weights, on every backend that runs here, with key padding and cross-attention."""
import math

import pytest
import torch
from torch import nn

from harness import DEVICE, randn
from sepkit.nn import (
    CrossAttention, LearnedPositionalEncoding, MultiheadAttention, SinusoidalPositionalEncoding, TransformerBlock,
)
from sepkit.nn.attention import lengths_from_padding_mask

# "triton" runs in the interpreter on the CPU (fp32 there: the Triton path does not store float64).
LAYER_BACKENDS = ("torch", "sdpa", "triton")


def _dtype(backend):
    return torch.float32 if backend == "triton" else torch.float64


def _tol(dtype):
    return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)


def _padding_mask(lengths, length):
    return torch.arange(length)[None, :] >= torch.as_tensor(lengths)[:, None]


def _dev(backend):
    return DEVICE if backend == "triton" else torch.device("cpu")


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch_mha(backend, causal):
    torch.manual_seed(0)
    dtype, dev = _dtype(backend), _dev(backend)
    E, H, B, L = 24, 3, 3, 11
    ref = nn.MultiheadAttention(E, H, batch_first=True, dtype=dtype)
    with torch.no_grad():
        ref.in_proj_bias.normal_()  # biases are zero at init: make them count
        ref.out_proj.bias.normal_()
    ours = MultiheadAttention(E, H, causal=causal, backend=backend, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    ours.to(dev)
    x = randn(B, L, E, seed=1).to(dtype)
    lengths = [L, 7, 1]
    kpm = _padding_mask(lengths, L)
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1) if causal else None
    xr = x.clone().requires_grad_()
    want, _ = ref(xr, xr, xr, key_padding_mask=kpm, attn_mask=mask, need_weights=False)
    xo = x.to(dev).requires_grad_()
    got = ours(xo, lengths=torch.tensor(lengths))
    torch.testing.assert_close(got.cpu(), want.detach(), **_tol(dtype))
    # The boolean padding mask of torch is accepted as well.
    torch.testing.assert_close(ours(x.to(dev), key_padding_mask=kpm.to(dev)).detach().cpu(), want.detach(), **_tol(dtype))
    up = randn(B, L, E, seed=2).to(dtype)
    want.backward(up)
    got.backward(up.to(dev))
    torch.testing.assert_close(xo.grad.cpu(), xr.grad, **_tol(dtype))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad.cpu(), q.grad, **_tol(dtype), msg=name)


@pytest.mark.parametrize("backend", LAYER_BACKENDS)
def test_cross_attention_matches_torch_mha(backend):
    torch.manual_seed(1)
    dtype, dev = _dtype(backend), _dev(backend)
    E, H, B, Lq, Lk, kdim, vdim = 16, 2, 3, 5, 9, 12, 20
    ref = nn.MultiheadAttention(E, H, kdim=kdim, vdim=vdim, batch_first=True, dtype=dtype)
    with torch.no_grad():
        ref.in_proj_bias.normal_()
    ours = CrossAttention(E, H, kdim=kdim, vdim=vdim, backend=backend, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    ours.to(dev)
    query, key, value = randn(B, Lq, E, seed=3).to(dtype), randn(B, Lk, kdim, seed=4).to(dtype), randn(B, Lk, vdim, seed=5).to(dtype)
    lengths = [9, 4, 1]
    inputs_ref = [t.clone().requires_grad_() for t in (query, key, value)]
    want, _ = ref(*inputs_ref, key_padding_mask=_padding_mask(lengths, Lk), need_weights=False)
    inputs = [t.to(dev).requires_grad_() for t in (query, key, value)]
    got = ours(*inputs, key_lengths=torch.tensor(lengths))
    torch.testing.assert_close(got.detach().cpu(), want.detach(), **_tol(dtype))
    up = randn(B, Lq, E, seed=6).to(dtype)
    want.backward(up)
    got.backward(up.to(dev))
    for name, a, b in zip("qkv", inputs, inputs_ref):
        torch.testing.assert_close(a.grad.cpu(), b.grad, **_tol(dtype), msg=name)


def test_cross_attention_loads_packed_weights():
    torch.manual_seed(2)
    E, H = 8, 2
    ref = nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    ours = CrossAttention(E, H, backend="torch", dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    q, m = randn(2, 3, E, seed=7), randn(2, 6, E, seed=8)
    want, _ = ref(q, m, m, need_weights=False)
    torch.testing.assert_close(ours(q, m), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "sdpa"])
def test_all_padded_memory_gives_bias_and_finite_grads(backend):
    torch.manual_seed(3)
    E, H = 8, 2
    layer = CrossAttention(E, H, backend=backend, dtype=torch.float64)
    with torch.no_grad():
        layer.out_proj.bias.normal_()
    q = randn(2, 4, E, seed=9).requires_grad_()
    m = randn(2, 5, E, seed=10).requires_grad_()
    out = layer(q, m, key_lengths=[0, 5])
    torch.testing.assert_close(out[0], layer.out_proj.bias.detach().expand(4, E))
    out.square().sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(m.grad).all()
    assert q.grad[0].abs().max() == 0 and m.grad[0].abs().max() == 0
    assert m.grad[1].abs().max() > 0


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_block_matches_torch_encoder_layer(norm_first, activation):
    torch.manual_seed(4)
    D, H, F, B, L = 16, 4, 40, 2, 9
    ref = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, activation=activation, batch_first=True,
                                     norm_first=norm_first, dtype=torch.float64)
    ours = TransformerBlock(D, H, F, activation=activation, norm_first=norm_first, backend="torch").double()
    ours.load_state_dict(ref.state_dict())
    x = randn(B, L, D, seed=11)
    lengths = [9, 5]
    want = ref(x, src_key_padding_mask=_padding_mask(lengths, L))
    got = ours(x, lengths=torch.tensor(lengths))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_transformer_block_snake_activation_trains():
    block = TransformerBlock(8, 2, 12, activation="snake", backend="torch")
    assert block.activation.alpha.shape == (12,)
    x = randn(2, 5, 8, seed=12).float()
    out = block(x, lengths=[5, 3])
    assert out.shape == x.shape
    out.square().sum().backward()
    assert block.activation.alpha.grad is not None and block.activation.alpha.grad.abs().sum() > 0


def test_causal_block_ignores_the_future():
    block = TransformerBlock(8, 2, 16, causal=True, backend="torch").double()
    x = randn(1, 7, 8, seed=13)
    y = x.clone()
    y[:, 4:] = randn(1, 3, 8, seed=14)
    torch.testing.assert_close(block(x)[:, :4], block(y)[:, :4])
    assert not torch.allclose(block(x)[:, 4:], block(y)[:, 4:])


def test_sinusoidal_encoding_values():
    pe = SinusoidalPositionalEncoding(6, max_len=10)
    x = randn(2, 4, 6, seed=15).float()
    got = pe(x) - x
    t, i = 3, 2  # pe[t, 2i] = sin(t / 10000^(2i/D)), pe[t, 2i+1] = cos(...)
    angle = t / 10000 ** (2 * i / 6)
    assert math.isclose(float(got[1, t, 2 * i]), math.sin(angle), abs_tol=1e-6)
    assert math.isclose(float(got[0, t, 2 * i + 1]), math.cos(angle), abs_tol=1e-6)
    torch.testing.assert_close(got[:, 0], torch.tensor([0.0, 1.0] * 3).expand(2, 6))
    assert "pe" not in pe.state_dict()
    odd = SinusoidalPositionalEncoding(5, max_len=4)(torch.zeros(1, 4, 5))
    assert torch.isfinite(odd).all() and float(odd[0, 1, 4]) == pytest.approx(math.sin(1 / 10000 ** (4 / 5)), abs=1e-6)
    with pytest.raises(ValueError, match="exceeds max_len=10"):
        pe(torch.zeros(1, 11, 6))


def test_learned_encoding_adds_its_weight():
    pe = LearnedPositionalEncoding(6, max_len=10)
    x = randn(2, 4, 6, seed=16).float()
    torch.testing.assert_close(pe(x), x + pe.weight[:4])
    with pytest.raises(ValueError, match="shape \\(B, L, 6\\)"):
        pe(torch.zeros(4, 5))


def test_layer_errors():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiheadAttention(8, 2, backend="flash")
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerBlock(8, 2, 16, activation="swish")
    layer = MultiheadAttention(8, 2, backend="torch")
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 8\)"):
        layer(torch.zeros(2, 5, 6))
    with pytest.raises(ValueError, match="suffix"):
        lengths_from_padding_mask(torch.tensor([[False, True, False]]))
    with pytest.raises(ValueError, match="not both"):
        layer(torch.zeros(1, 3, 8), lengths=[3], key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="lengths must have shape"):
        layer(torch.zeros(2, 3, 8), lengths=[3])


def test_xformers_backend_reports_missing_package():
    pytest.importorskip("torch")
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        layer = MultiheadAttention(8, 2, backend="xformers")
        with pytest.raises(ImportError, match="needs the xformers package"):
            layer(torch.zeros(1, 3, 8))
    else:
        pytest.skip("xformers is installed: the missing-package message is not reachable")


def test_transformer_block_traces_under_torch_compile_fullgraph():
    torch.manual_seed(5)
    block = TransformerBlock(32, 2, 64, backend="triton").to(DEVICE)
    ref = TransformerBlock(32, 2, 64, backend="torch").double()
    ref.load_state_dict(block.state_dict())
    x = randn(2, 19, 32, seed=17)
    lengths = torch.tensor([19, 7])
    fn = torch.compile(lambda a, n: block(a, n), fullgraph=True, backend="aot_eager")
    xo = x.float().to(DEVICE).requires_grad_()
    got = fn(xo, lengths.to(DEVICE))
    xr = x.clone().requires_grad_()
    want = ref(xr, lengths)
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-4, atol=1e-5)
    got.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(xo.grad.double().cpu(), xr.grad, rtol=1e-4, atol=1e-4)
