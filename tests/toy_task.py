"""A toy task for the trainer's tests: a learnable filter after a frozen one, two parameter
groups, a scripted validation curve. Used as ``task: toy_task:ToyTask`` (tests/ is importable)."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sepkit.train.tasks import Task

BUILT: list[nn.Module] = []  # every model the task built in this process (for the DDP worker)


@dataclasses.dataclass
class ToyOptions:
    """length: samples per item; items: training items; valid_values: the monitor's value at
    each successive validation (cycled; None: minus the validation loss)."""

    length: int = 64
    items: int = 8
    valid_values: list | None = None
    interrupt_at: int | None = None  # raise KeyboardInterrupt at this training step call (1-based)
    sleep: float = 0.0  # seconds per training step (for signal tests)


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, seed: int):
        self.n, self.length, self.seed = n, length, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        clean = torch.randn(self.length, generator=g)
        noisy = clean + 0.5 * torch.randn(self.length, generator=g)
        return {"mixture": noisy, "sources": clean[None], "id": f"toy-{self.seed}-{i}"}


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen_part = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.frozen_part.weight.copy_(torch.tensor([[[0.25, 0.5, 0.25]]]))
        self.filt = nn.Conv1d(1, 1, 5, padding=2)
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):  # (B, T) -> (B, T)
        y = self.filt(self.frozen_part(x.unsqueeze(1)))
        return (self.gain * y).squeeze(1)


class ToyTask(Task):
    name = "toy"
    monitor = "score"
    monitor_mode = "max"
    Options = ToyOptions

    def __init__(self, cfg):
        super().__init__(cfg)
        self.validations = 0
        self.calls = 0

    def build_model(self):
        model = ToyModel()
        BUILT.append(model)
        return model

    def dataset(self, which):
        n = {"train": self.options.items, "valid": 2, "test": 3}[which]
        return ToyDataset(n, self.options.length, {"train": 0, "valid": 1, "test": 2}[which])

    def frozen(self, model):
        return ("frozen_part",)

    def param_groups(self, model):
        return [{"params": list(model.filt.parameters())}, {"params": [model.gain], "lr": self.cfg.optim.lr * 0.1}]

    def training_step(self, model, batch):
        self.calls += 1
        if self.options.interrupt_at is not None and self.calls == self.options.interrupt_at:
            raise KeyboardInterrupt("interrupted by the test")
        if self.options.sleep:
            import time

            time.sleep(self.options.sleep)
        est = model(batch["mixture"])
        loss = (est - batch["sources"][:, 0]).pow(2).mean()
        return loss, {"est_rms": float(est.detach().pow(2).mean().sqrt())}

    def evaluate(self, model, dataset, progress=False, max_items=None):
        rows = []
        for i in range(len(dataset) if max_items is None else min(max_items, len(dataset))):
            item = dataset[i]
            est = model(item["mixture"][None].to(self.model_device(model)))[0].cpu()
            rows.append({"id": item["id"], "mse": float((est - item["sources"][0]).pow(2).mean())})
        return rows

    def validate(self, model, dataset):
        mse = sum(r["mse"] for r in self.evaluate(model, dataset)) / len(dataset)
        values = self.options.valid_values
        score = -mse if not values else float(values[self.validations % len(values)])
        self.validations += 1
        return {"score": score, "mse": mse}

    def infer(self, model, waveform, sample_rate, chunk=8.0, overlap=1.0, **options):
        from sepkit.data import resample

        out = model(self.to_model_rate(waveform, sample_rate)[None])[0]
        return {"s1": resample(out, self.sample_rate, sample_rate)}

    def output_names(self):
        return ["s1"]


TASK = ToyTask
