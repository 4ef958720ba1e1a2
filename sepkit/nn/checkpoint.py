"""Activation checkpointing of repeated blocks, as one model switch.

Every model with repeated blocks (TCN blocks, dual-path paths, transformer layers, LSTM layers,
residual blocks) takes ``checkpointing``:

- ``"none"`` (default): autograd keeps every block's intermediate tensors for the backward pass;
- ``"blocks"``: each block keeps only its inputs and recomputes its insides during the backward
  pass (:func:`torch.utils.checkpoint.checkpoint` with ``use_reentrant=False``), trading about one
  extra forward pass for the activation memory of all blocks but one.

Outputs and gradients are the same either way (the recomputation replays the random state, so
dropout draws the same masks, and the autocast state of the forward pass). It applies only when
gradients are being recorded; inference runs the blocks directly.
"""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import InputError

CHECKPOINTING = ("none", "blocks")


def check_checkpointing(owner: str, value) -> str:
    """Validate a ``checkpointing`` argument ("none" or "blocks") and return it."""
    if value not in CHECKPOINTING:
        raise InputError(f"{owner}: checkpointing must be one of {CHECKPOINTING}, got {value!r}")
    return value


def run_block(block: nn.Module, *args, checkpointing: str = "none", **kwargs):
    """``block(*args, **kwargs)``, recomputed in the backward pass when ``checkpointing`` is
    "blocks" and gradients are being recorded."""
    if checkpointing == "blocks" and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


__all__ = ["CHECKPOINTING", "check_checkpointing", "run_block"]
