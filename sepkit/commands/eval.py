"""``sepkit eval [RECIPE] --ckpt PATH``: per-utterance metrics (CSV) and a summary table.

The model, its task and its weights come from the checkpoint; the data set from RECIPE (with
its preset and overrides) or, without one, from the recipe saved in the checkpoint.
"""
from __future__ import annotations

import sys

from .options import add_compile_arguments


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe name or YAML path whose data section names the test set "
                        "(default: the recipe saved in the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=PATH")
    parser.add_argument("--ckpt", required=True, help="checkpoint folder, or a run folder (its newest checkpoint)")
    parser.add_argument("--preset", help="a preset of the recipe")
    parser.add_argument("--config", help="a YAML file merged over the recipe")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--csv", help="per-utterance CSV (default: <checkpoint>/eval_<split>.csv)")
    parser.add_argument("--max-items", type=int, help="evaluate only the first N utterances")
    parser.add_argument("--no-ema", action="store_true", help="the trained weights, not their moving average")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing per-utterance CSV")
    parser.add_argument("--device")
    add_compile_arguments(parser)


def run(args) -> int:
    from pathlib import Path

    import torch

    from sepkit.train import CheckpointError, ConfigError, load_recipe, load_trained, make_task, resolve_checkpoint
    from sepkit.data.loading import Loaded
    from sepkit.train.builders import loader_options
    from sepkit.train.checks import check_output_dir, resolve_device
    from sepkit.train.config import apply_overrides
    from sepkit.train.evaluate import format_summary, summarize, write_rows
    from sepkit.train.prerequisites import run_folder_of
    from sepkit.train.restore import saved_config

    overrides = list(args.overrides or [])
    recipe = args.recipe
    if recipe is not None and "=" in recipe:  # an override standing where the recipe may be
        overrides.insert(0, recipe)
        recipe = None
    if args.max_items is not None and args.max_items < 1:
        raise ConfigError(f"--max-items={args.max_items}: must be >= 1")
    ckpt = resolve_checkpoint(args.ckpt)
    saved = saved_config(ckpt)
    if recipe is None:
        if args.preset or args.config:
            raise ConfigError("--preset and --config apply to a RECIPE; name one, or give key=value overrides only")
        cfg = apply_overrides(saved, overrides)
    else:
        cfg = load_recipe(recipe, args.preset, overrides, args.config)
    if (cfg.task.replace("-", "_"), cfg.model.name.lower()) != (saved.task.replace("-", "_"), saved.model.name.lower()):
        raise CheckpointError(f"{ckpt} holds a {saved.model.name} model (task {saved.task}) but recipe "
                              f"{cfg.recipe!r} is a {cfg.model.name} recipe (task {cfg.task})")
    if cfg.data.sample_rate != saved.data.sample_rate:
        raise ConfigError(f"data.sample_rate={cfg.data.sample_rate}: the checkpoint's model runs at "
                          f"{saved.data.sample_rate} Hz; evaluate on data at that rate (data.sample_rate="
                          f"{saved.data.sample_rate})")
    if cfg.data.n_src != saved.data.n_src:
        raise ConfigError(f"data.n_src={cfg.data.n_src}: the checkpoint's model makes {saved.data.n_src} sources; "
                          f"evaluate on data with that many (data.n_src={saved.data.n_src})")
    csv_path = Path(args.csv) if args.csv else ckpt / f"eval_{args.split}.csv"
    if csv_path.exists() and not args.overwrite:
        raise FileExistsError(f"{csv_path} exists; pass --overwrite to replace it or --csv PATH (nothing was written)")
    check_output_dir(csv_path.parent, "--csv folder")
    device = resolve_device(args.device)
    _, model = load_trained(ckpt, device, ema=not args.no_ema, compile=args.compile or "none")
    task = make_task(cfg)
    task.run_dir = run_folder_of(ckpt)
    dataset = Loaded(task.dataset(args.split), loader_options(cfg.data, cfg.train.seed), f"{args.split} item", device)
    try:
        with torch.no_grad():
            rows = task.evaluate(model, dataset, progress=True, max_items=args.max_items)
    finally:
        dataset.close()
    if not rows:
        print("sepkit eval: the data set is empty", file=sys.stderr)
        return 2
    path = write_rows(csv_path, rows)
    print(format_summary(summarize(rows), len(rows)))
    print(f"per-utterance metrics: {path}")
    return 0
