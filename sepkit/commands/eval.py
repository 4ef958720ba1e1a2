"""``sepkit eval RECIPE --ckpt PATH``: per-utterance metrics (CSV) and a summary table."""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path (its data section names the test set)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=PATH")
    parser.add_argument("--ckpt", required=True, help="checkpoint folder, or a run folder (its newest checkpoint)")
    parser.add_argument("--preset", help="a preset of the recipe")
    parser.add_argument("--config", help="a YAML file merged over the recipe")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--csv", help="per-utterance CSV (default: <checkpoint>/eval_<split>.csv)")
    parser.add_argument("--max-items", type=int, help="evaluate only the first N utterances")
    parser.add_argument("--device")


def run(args) -> int:
    import torch

    from sepkit.data import AudioError
    from sepkit.train import CheckpointError, ConfigError, evaluate, load_recipe, load_weights, read_meta, resolve_checkpoint
    from sepkit.train.builders import build_dataset, build_model
    from sepkit.train.evaluate import format_summary, summarize, write_rows

    try:
        cfg = load_recipe(args.recipe, args.preset, args.overrides, args.config)
        ckpt = resolve_checkpoint(args.ckpt)
        meta = read_meta(ckpt)
        if meta.get("model") != cfg.model.name.lower():
            raise CheckpointError(f"{ckpt} holds a {meta.get('model')} model but recipe {cfg.recipe!r} is a "
                                  f"{cfg.model.name} recipe")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = build_model(cfg.model, cfg.data)
        load_weights(ckpt, model)
        dataset = build_dataset(cfg.data, args.split, cfg.train.seed)
        rows = evaluate(model.to(device), dataset, device, max_items=args.max_items, progress=True)
    except (ConfigError, CheckpointError, AudioError, FileNotFoundError) as exc:
        print(f"sepkit eval: {exc}", file=sys.stderr)
        return 2
    path = write_rows(args.csv or ckpt / f"eval_{args.split}.csv", rows)
    print(format_summary(summarize(rows), len(rows)))
    print(f"per-utterance metrics: {path}")
    return 0
