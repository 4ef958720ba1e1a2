"""Where a model's torch.compile graphs break: layers that run outside them.

torch.compile (dynamo) does not trace torch's RNN, GRU and LSTM modules. A model that has them
runs each in a method decorated with :func:`outside_graph`, so the graph breaks exactly there,
by the model's choice: the layers before and after it compile (the norms, projections, residuals
and chunking around a dual-path block's LSTMs) and the recurrent layer runs eagerly on torch's
own kernels. In eager execution the decorated method is a plain call.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def outside_graph(fn: F) -> F:
    """Decorator: ``fn`` runs eagerly even when called inside a compiled function (a graph break
    before and after the call; nothing inside it is traced). Decorate a method that reads the
    layer from ``self``: a layer passed as an argument would be looked at by dynamo first."""
    return torch.compiler.disable(fn, recursive=True)


__all__ = ["outside_graph"]
