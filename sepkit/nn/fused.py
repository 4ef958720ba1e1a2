"""Pairs of layers whose backward pass needs less than the two layers store separately.

- :func:`layer_norm_linear`: a LayerNorm followed by a linear layer, without storing the
  normalised tensor;
- :func:`prelu_global_norm`: a PReLU followed by gLN (Conv-TasNet's blocks), without storing the
  PReLU's output.

``linear(layer_norm(x))`` as two autograd ops keeps both ``x`` (for the norm's backward) and the
normalised ``y`` (for the linear layer's weight gradient): two tensors of x's size. In a pre-norm
transformer both norms feed linear layers, so a layer stores two such tensors more than it needs.
:func:`layer_norm_linear` keeps ``x`` and the per-row mean and reciprocal standard deviation
(B x L floats) and recomputes ``y`` in the backward pass: one element-wise pass, the same
result. Used by :class:`sepkit.nn.TransformerBlock` (pre-norm) for the attention's input
projection and the feed-forward's first layer.

Under autocast the linear layer runs in the autocast dtype and the norm in float32, as they would
as separate ops; gradients come back in the parameters' dtypes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _LayerNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, weight, bias):
        shape = (x.shape[-1],)
        y, mean, rstd = torch.native_layer_norm(x, shape, norm_weight, norm_bias, eps)
        out = F.linear(y.to(weight.dtype), weight, bias)
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias, weight)
        ctx.has_bias = bias is not None
        ctx.out_dtype = out.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, mean, rstd, norm_weight, norm_bias, weight = ctx.saved_tensors
        need_x, need_nw, need_nb, _, need_w, need_b = ctx.needs_input_grad
        grad_out = grad_out.to(ctx.out_dtype)
        grad_x = grad_nw = grad_nb = grad_w = grad_b = None
        if need_w:
            y = (x - mean) * rstd
            if norm_weight is not None:
                y = torch.addcmul(norm_bias, y, norm_weight) if norm_bias is not None else y * norm_weight
            elif norm_bias is not None:
                y = y + norm_bias
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            grad_w = (g2.t() @ y.reshape(-1, y.shape[-1]).to(g2.dtype)).to(weight.dtype)
        if need_b and ctx.has_bias:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0).to(weight.dtype)
        if need_x or need_nw or need_nb:
            grad_y = (grad_out @ weight.to(grad_out.dtype)).to(x.dtype)
            grad_x, grad_nw, grad_nb = torch.ops.aten.native_layer_norm_backward(
                grad_y, x, [x.shape[-1]], mean, rstd, norm_weight, norm_bias, [need_x, need_nw, need_nb])
        return grad_x, grad_nw, grad_nb, None, grad_w, grad_b


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta tensors counting operations)
        return False


def layer_norm_linear(x: torch.Tensor, norm: torch.nn.LayerNorm, weight: torch.Tensor,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(norm(x), weight, bias)`` for a LayerNorm ``norm`` over the last dimension,
    storing ``x`` and the row statistics instead of ``norm(x)`` for the backward pass.

    x (..., D) -> (..., weight.shape[0]). Falls back to the two ops when ``norm`` normalises
    more than the last dimension.
    """
    if len(norm.normalized_shape) != 1 or torch.jit.is_tracing():  # TorchScript records no autograd.Function
        return F.linear(norm(x), weight, bias)
    if _autocast_enabled(x.device.type):
        # autocast: the norm in float32, the product in the autocast dtype, as separately
        dtype = torch.get_autocast_dtype(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            return _LayerNormLinear.apply(x.float(), norm.weight, norm.bias, norm.eps, weight.to(dtype),
                                          None if bias is None else bias.to(dtype))
    return _LayerNormLinear.apply(x, norm.weight, norm.bias, norm.eps, weight, bias)


class _PReLUGlobalNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, prelu_weight, norm_weight, norm_bias, eps):
        a = torch._prelu_kernel(x, prelu_weight.to(x.dtype))
        af = a.to(torch.promote_types(a.dtype, torch.float32))
        B, C = af.shape[:2]
        hw = af[0, 0].numel()
        nw = None if norm_weight is None else norm_weight.to(af.dtype)
        nb = None if norm_bias is None else norm_bias.to(af.dtype)
        y, mean, rstd = torch.native_group_norm(af.contiguous(), nw, nb, B, C, hw, 1, eps)
        ctx.save_for_backward(x, prelu_weight, mean, rstd, norm_weight)
        ctx.dims = B, C, hw
        ctx.has_norm_bias = norm_bias is not None
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        x, prelu_weight, mean, rstd, norm_weight = ctx.saved_tensors
        need_x, need_pw, need_nw, need_nb, _ = ctx.needs_input_grad
        B, C, hw = ctx.dims
        a = torch._prelu_kernel(x, prelu_weight.to(x.dtype))
        af = a.to(mean.dtype).contiguous()
        nw = None if norm_weight is None else norm_weight.to(af.dtype)
        grad_a, grad_nw, grad_nb = torch.ops.aten.native_group_norm_backward(
            grad_y.to(af.dtype).contiguous(), af, mean, rstd, nw, B, C, hw, 1,
            [need_x or need_pw, need_nw and norm_weight is not None, need_nb and ctx.has_norm_bias])
        grad_x = grad_pw = None
        if need_x or need_pw:
            grad_x, grad_pw = torch.ops.aten._prelu_kernel_backward(grad_a.to(x.dtype), x, prelu_weight.to(x.dtype))
            grad_pw = grad_pw.to(prelu_weight.dtype)
        if grad_nw is not None:
            grad_nw = grad_nw.to(norm_weight.dtype)
        if grad_nb is not None:
            grad_nb = grad_nb.to(norm_weight.dtype if norm_weight is not None else grad_nb.dtype)
        return grad_x, grad_pw, grad_nw, grad_nb, None


def prelu_global_norm(x: torch.Tensor, prelu: torch.nn.PReLU, norm: torch.nn.Module) -> torch.Tensor:
    """``norm(prelu(x))`` for a :class:`sepkit.nn.GlobalLayerNorm` ``norm``, storing ``x`` and the
    per-example statistics instead of the PReLU's output (recomputed in the backward pass).

    x (B, C, *) -> same shape and dtype; the statistics in float32 at least, as gLN. Other norms
    run as the two layers.
    """
    from .norm import GlobalLayerNorm

    if type(norm) is not GlobalLayerNorm or not isinstance(prelu, torch.nn.PReLU) or x.dim() < 3:
        return norm(prelu(x))
    if not torch.is_grad_enabled():  # nothing is stored: the two native ops
        return norm(prelu(x))
    if x.shape[1] != norm.channels:
        return norm(prelu(x))  # let the norm raise its own error
    prelu_weight = prelu.weight if prelu.weight.numel() == 1 else prelu.weight.view(-1, *([1] * (x.dim() - 2)))
    return _PReLUGlobalNorm.apply(x, prelu_weight, norm.weight, norm.bias, norm.eps)


__all__ = ["layer_norm_linear", "prelu_global_norm"]
