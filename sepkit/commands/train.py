"""``sepkit train RECIPE [--preset P] [--config FILE] [key=value ...] --out DIR [--resume]``."""
from __future__ import annotations

import os


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="recipe name (recipes/<name>.yaml) or path to a recipe YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=500")
    parser.add_argument("--preset", help="a preset of the recipe, e.g. demo")
    parser.add_argument("--config", help="a YAML file merged over the recipe")
    parser.add_argument("--out", default=None, help="run folder (default runs/<recipe>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-test", action="store_true", help="skip the test-set evaluation at the end")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from sepkit.train import load_recipe, train

    cfg = load_recipe(args.recipe, args.preset, args.overrides, args.config)
    out = args.out or f"runs/{cfg.recipe}"
    result = train(cfg, out, resume=args.resume, device=args.device, progress=not args.no_progress,
                   test=not args.no_test)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports
        return 0
    print(f"run folder: {out} (step {result['step']}; checkpoints in {out}/checkpoints)")
    if "si_sdri" in result.get("test", {}):
        print(f"test SI-SDRi: {result['test']['si_sdri'][0]:.2f} dB")
    return 0
