"""The automatic attention path on the CPU (torch's SDPA) computes what the reference specifies:
padding (NaN included) ignored, bottom-right causal alignment, empty rows zero, gradients."""
import pytest
import torch

from sepkit.kernels import attention
from sepkit.kernels.attention import attention_sdpa
from sepkit.kernels.reference.attention import attention_reference


@pytest.mark.parametrize("lq, lk, causal, lengths", [
    (7, 7, False, None), (7, 7, True, None), (5, 11, True, None), (11, 5, True, None),
    (6, 9, False, [9, 4, 0]), (9, 6, True, [6, 2, 0]),
])
def test_sdpa_path_matches_the_reference(lq, lk, causal, lengths):
    g = torch.Generator().manual_seed(lq * 100 + lk)
    q, k, v = (torch.randn(3, 2, n, 16, generator=g, dtype=torch.float64, requires_grad=True) for n in (lq, lk, lk))
    kv = None if lengths is None else torch.tensor(lengths)
    if kv is not None:  # poison the padding: it must not reach the output or the gradients
        with torch.no_grad():
            for b, n in enumerate(lengths):
                k[b, :, n:] = float("nan")
                v[b, :, n:] = float("nan")
    up = torch.randn(3, 2, lq, 16, generator=g, dtype=torch.float64)
    got = attention(q, k, v, kv_lengths=kv, causal=causal)  # automatic on CPU tensors: SDPA
    want = attention_reference(q, k, v, kv_lengths=kv, causal=causal)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g_got = torch.autograd.grad(got, (q, k, v), up)
    g_want = torch.autograd.grad(want, (q, k, v), up)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(torch.nan_to_num(a, 7.0), torch.nan_to_num(b, 7.0), rtol=1e-9, atol=1e-11)


def test_explicit_torch_backend_is_still_the_reference(monkeypatch):
    q = torch.randn(1, 1, 4, 16)
    calls = []
    import importlib

    mod = importlib.import_module("sepkit.kernels.attention")

    monkeypatch.setattr(mod, "attention_sdpa", lambda *a, **kw: calls.append(1) or attention_sdpa(*a, **kw))
    attention(q, q, q, backend="torch")
    assert not calls
    attention(q, q, q)
    assert calls == [1]
    monkeypatch.setenv("SEPKIT_BACKEND", "torch")
    attention(q, q, q)
    assert calls == [1]
