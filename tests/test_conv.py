"""sepkit.nn.conv against the native convolution, float64, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from sepkit.nn.conv import depthwise_conv1d


CASES = [  # (batch, channels, length, kernel, dilation, padding)
    (1, 5, 40, 3, 1, 1),
    (3, 4, 33, 3, 4, 4),
    (2, 6, 50, 3, 16, 16),
    (2, 3, 20, 3, 2, 0),      # causal blocks: padding done outside
    (1, 4, 17, 4, 3, 2),      # even kernel, padding not d (K-1) / 2
    (2, 3, 5, 3, 4, 4),       # dilation wider than the input: a tap sees only padding
    (1, 2, 9, 1, 1, 0),
    (2, 3, 12, 5, 1, 6),      # padding beyond the kernel's reach: output longer than input
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_matches_native(case, bias):
    B, C, T, K, d, p = case
    g = torch.Generator().manual_seed(hash(case) % 1000)
    x = torch.randn(B, C, T, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(C, 1, K, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    ref = F.conv1d(x, w, b, padding=p, dilation=d, groups=C)
    out = depthwise_conv1d(x, w, b, d, p)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    inputs = (x, w) + ((b,) if bias else ())
    want = torch.autograd.grad(ref, inputs, grad)
    got = torch.autograd.grad(out, inputs, grad)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(depthwise_conv1d(x, w, b, d, p), ref.detach(), rtol=1e-12, atol=1e-12)


def test_depthwise_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 11, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 1, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: depthwise_conv1d(*a, 2, 2), (x, w, b))


def test_depthwise_float32_close_to_native():
    torch.manual_seed(2)
    x = torch.randn(1, 64, 4001)
    w, b = torch.randn(64, 1, 3), torch.randn(64)
    for d in (1, 128):
        torch.testing.assert_close(depthwise_conv1d(x, w, b, d, d), F.conv1d(x, w, b, padding=d, dilation=d, groups=64),
                                   rtol=1e-5, atol=1e-5)


def test_depthwise_only_grad_of_weight():
    x = torch.randn(1, 3, 10)
    w = torch.randn(3, 1, 3, requires_grad=True)
    out = depthwise_conv1d(x, w, None, 1, 1)
    (gw,) = torch.autograd.grad(out.square().sum(), (w,))
    w2 = w.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(F.conv1d(x, w2, None, padding=1, groups=3).square().sum(), (w2,))
    torch.testing.assert_close(gw, want)


def test_depthwise_other_shapes_fall_back():
    # a length the kernel cannot cover: the native error, not a silent empty tensor
    with pytest.raises(RuntimeError):
        depthwise_conv1d(torch.randn(1, 2, 2), torch.randn(2, 1, 5), None, 1, 0)


def test_depthwise_mixed_dtypes_take_the_native_path():
    x = torch.randn(1, 3, 10, dtype=torch.float64)
    w = torch.randn(3, 1, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float32)
    with pytest.raises(RuntimeError):  # the native convolution's own dtype error, not a silent promotion
        depthwise_conv1d(x, w, b, 1, 1)
