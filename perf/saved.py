"""``python -m perf saved``: what one training step keeps for the backward pass.

Runs one forward pass of a model under :func:`torch.autograd.graph.saved_tensors_hooks` and
records every tensor autograd saves, with the module that was running when it was saved (a
forward pre-hook / hook stack). Tensors are counted once per storage (a view of a saved tensor,
or a tensor saved by two ops, costs nothing more), so the total is the activation memory the
backward pass holds, parameters excluded. Summaries group by module type and by shape.

    python -m perf saved --model sepformer [--seconds 4] [--top 15] [--checkpointing blocks]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import torch


class SavedTensors:
    """Context manager recording the storages autograd saves during a forward pass.

    ``records``: one dict per distinct storage: ``module`` (qualified name of the innermost
    running module), ``kind`` (its class name), ``shape``, ``dtype``, ``bytes`` (of the whole
    storage). Parameters and buffers of ``model`` are left out.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.records: list[dict] = []
        self._seen: set[int] = set()
        self._stack: list[str] = []
        self._handles = []
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._params |= {b.untyped_storage().data_ptr() for b in model.buffers()}

    def __enter__(self):
        names = {m: n for n, m in self.model.named_modules()}
        def enter(module, args, name):
            self._stack.append(name)

        def leave(module, args, output):
            self._stack.pop()

        for module, name in names.items():
            self._handles.append(module.register_forward_pre_hook(lambda m, a, n=name: enter(m, a, n)))
            self._handles.append(module.register_forward_hook(leave))
        self._kinds = {n: type(m).__name__ for m, n in names.items()}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        return False

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in self._seen and ptr not in self._params:
            self._seen.add(ptr)
            where = self._stack[-1] if self._stack else ""
            self.records.append(dict(module=where, kind=self._kinds.get(where, "-"), shape=tuple(t.shape),
                                     dtype=str(t.dtype).replace("torch.", ""), bytes=storage.nbytes()))
        return t

    @property
    def total_bytes(self) -> int:
        return sum(r["bytes"] for r in self.records)

    def by_kind(self) -> list[tuple[str, int, int]]:
        """(module class, number of storages, bytes), largest first."""
        acc = defaultdict(lambda: [0, 0])
        for r in self.records:
            acc[r["kind"]][0] += 1
            acc[r["kind"]][1] += r["bytes"]
        return sorted(((k, n, b) for k, (n, b) in acc.items()), key=lambda x: -x[2])

    def largest(self, k: int = 10) -> list[dict]:
        return sorted(self.records, key=lambda r: -r["bytes"])[:k]


def saved_by_step(model: torch.nn.Module, mixture: torch.Tensor) -> SavedTensors:
    """The storages one training forward pass of ``model`` on ``mixture`` (B, T) saves."""
    model.train()
    with SavedTensors(model) as saved:
        out = model(mixture)
    del out
    return saved


def main(argv=None) -> int:
    from perf.models import PEERS, sepkit_model

    parser = argparse.ArgumentParser(prog="python -m perf saved", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PEERS), required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--checkpointing", default="none", choices=("none", "blocks"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = sepkit_model(args.model, **({} if args.checkpointing == "none" else {"checkpointing": args.checkpointing}))
    mix = 0.1 * torch.randn(1, int(args.seconds * 8000))
    saved = saved_by_step(model, mix)
    print(f"{args.model}, batch 1 x {args.seconds:g} s at 8 kHz, checkpointing={args.checkpointing}: "
          f"{len(saved.records)} storages, {saved.total_bytes / 2**20:.1f} MiB saved for backward")
    print("\n| module class | storages | MiB |\n|---|---|---|")
    for kind, n, b in saved.by_kind()[: args.top]:
        print(f"| {kind} | {n} | {b / 2**20:.1f} |")
    print("\n| largest: module | shape | dtype | MiB |\n|---|---|---|---|")
    for r in saved.largest(args.top):
        print(f"| {r['module']} | {r['shape']} | {r['dtype']} | {r['bytes'] / 2**20:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
