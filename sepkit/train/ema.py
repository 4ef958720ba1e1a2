"""An exponential moving average of a model's weights (``train.ema``: the decay)."""
from __future__ import annotations

import torch
from torch import nn

from sepkit.errors import CheckpointError, InputError
from sepkit.files import layout_problems


class EMA:
    """Shadow copy of the floating-point entries of ``model.state_dict()`` (trainable weights and
    buffers; frozen submodules named in ``exclude`` are left out), updated after every optimizer
    step as ``shadow = decay * shadow + (1 - decay) * weight``; integer buffers are copied.

    :meth:`swapped` temporarily loads the averaged weights into the model (for validation and
    inference), restoring the trained ones afterwards.
    """

    def __init__(self, model: nn.Module, decay: float, exclude: tuple[str, ...] = ()):
        if not 0.0 < decay < 1.0:
            raise InputError(f"EMA: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.exclude = tuple(exclude)
        self.shadow = {k: v.detach().clone() for k, v in self._entries(model).items()}

    def _entries(self, model: nn.Module) -> dict:
        return {k: v for k, v in model.state_dict().items()
                if not any(k == p or k.startswith(p + ".") for p in self.exclude)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in self._entries(model).items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        problems = layout_problems(self.shadow, state)
        if problems:
            raise CheckpointError(f"the EMA weights do not match the model: {problems}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    class _Swap:
        def __init__(self, ema: "EMA", model: nn.Module):
            self.ema, self.model = ema, model

        def __enter__(self):
            self.saved = {k: v.detach().clone() for k, v in self.ema._entries(self.model).items()}
            self.model.load_state_dict(self.ema.shadow, strict=False)
            return self.model

        def __exit__(self, *exc):
            self.model.load_state_dict(self.saved, strict=False)
            return False

    def swapped(self, model: nn.Module) -> "EMA._Swap":
        """``with ema.swapped(model): ...`` runs with the averaged weights."""
        return EMA._Swap(self, model)
