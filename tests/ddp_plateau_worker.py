"""Run under torchrun by tests/test_tasks.py: train the toy task with a plateau scheduler, then
save this rank's learning rates and weights to OUT/rank<r>.pt."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_task  # noqa: E402

from sepkit.train import load_recipe, train  # noqa: E402

recipe, out = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
result = train(load_recipe(recipe), os.path.join(out, "run"), progress=False, test=False)
model = toy_task.BUILT[-1]
torch.save({"lr": result["lr"], "weights": {k: v.clone() for k, v in model.state_dict().items()}},
           os.path.join(out, f"rank{rank}.pt"))
