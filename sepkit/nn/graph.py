"""Where a model's torch.compile graphs break: layers that run outside them.

torch.compile (dynamo) does not trace torch's RNN, GRU and LSTM modules. A model that has them
runs each in a method decorated with :func:`outside_graph`, so the graph breaks exactly there,
by the model's choice: the layers before and after it compile (the norms, projections, residuals
and chunking around a dual-path block's LSTMs) and the recurrent layer runs eagerly on torch's
own kernels. In eager execution the decorated method is a plain call.

:func:`relu` (and :class:`ReLU`) is the ReLU the models use where its backward matters under
compile (the transformer blocks' feed-forward, the mask activation): see its docstring.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)


def outside_graph(fn: F) -> F:
    """Decorator: ``fn`` runs eagerly even when called inside a compiled function (a graph break
    before and after the call; nothing inside it is traced). Decorate a method that reads the
    layer from ``self``: a layer passed as an argument would be looked at by dynamo first."""
    return torch.compiler.disable(fn, recursive=True)


@torch.library.custom_op("sepkit::relu_saving_output", mutates_args=())
def _relu_op(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


@_relu_op.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _relu_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output)


def _relu_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (y,) = ctx.saved_tensors
    return torch.ops.aten.threshold_backward(grad, y, 0)


_relu_op.register_autograd(_relu_backward, setup_context=_relu_setup)


def relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)``. Inside a compiled function it is one opaque op whose backward reads
    its output (as eager's does): traced, inductor's partitioner stores a boolean mask for the
    backward instead, and on the CPU (torch 2.14, AVX-512) the generated kernel that writes it
    took 13 ms for 1 M floats against 1 ms eager (a Sepformer training step 0.82x of eager's,
    with this op 1.0x; ``perf/NOTES.md``)."""
    compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()  # exports see torch.relu
    return _relu_op(x) if compiling else torch.relu(x)


class ReLU(nn.Module):
    """:func:`relu` as a module (no parameters; a drop-in for ``torch.nn.ReLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)


__all__ = ["outside_graph", "relu", "ReLU"]
