"""``sepkit demo [RECIPE] [--out DIR] [key=value ...] [--resume]``: a recipe's demo, end to end.

Four stages on the recipe's ``demo`` preset (RECIPE defaults to ``convtasnet``; overrides
apply over the preset; a preset on the spoken corpus falls back to the synthetic generator, with
a notice, where espeak-ng is not installed): [1/4] train (the trainer's progress bar), [2/4]
evaluate on the held-out test set of the built-in data, [3/4] run the task's inference on one
held-out test item (the one with the median headline metric, e.g. SI-SDRi: a typical example,
not the best), [4/4] write the report. ``--out`` (default ``runs/demo-RECIPE``) then holds the run (``checkpoints/``,
``metrics.csv``) and:

- ``test_metrics.csv``: the task's metrics per test item;
- ``example/<name>.wav``: the example's audio at the model's rate (a separator: ``mixture``,
  ``reference_k``, ``estimate_k``; an enhancer: ``noisy``, ``clean``, ``enhanced``), the
  estimates at the input's level (a scale-invariant loss leaves theirs free), all scaled
  together to avoid clipping;
- ``report.png``: the training loss and validation curves, and the task's example panel
  (spectrograms and waveforms of the input, references and estimates; a task without a panel
  gets the curves alone);
- ``report.md`` and ``report.json``. The JSON's keys: ``recipe`` (the recipe's name, e.g.
  ``convtasnet-demo``), ``task``, ``parameters`` (the model's parameter count), ``steps``
  (training steps), ``stages`` (``{train, eval, example, report}``: wall seconds),
  ``machine`` (``{device, name, threads, cores, torch, triton, python}``: the CPU model or GPU
  name, torch's thread count, the versions), ``summary`` (``{metric: {mean, std}}`` over the
  test items), ``test_items`` (how many), ``headline`` (``{metric, label, value, unit}``,
  e.g. SI-SDRi in dB), ``example`` (``{id, <headline metric>}``: the item shown), ``panel``
  (whether the task drew its example panel) and ``files``
  (paths relative to the folder: ``report_md``, ``report_json``, ``report_png``, ``metrics``,
  ``test_metrics``, ``checkpoint``, ``audio`` ``{name: path}``).

An existing non-empty ``--out`` is refused (nothing is touched) unless ``--resume`` continues
an interrupted demo there: training resumes from the newest checkpoint (or starts when there is
none), then evaluation, example and report are redone.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sepkit.errors import InputError

from .options import add_compile_arguments

DEFAULT_RECIPE = "convtasnet"


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", default=None,
                        help=f"recipe name (recipes/<name>.yaml, with a demo preset) or YAML path "
                        f"(default {DEFAULT_RECIPE})")
    parser.add_argument("overrides", nargs="*",
                        help="key=value overrides over the demo preset, e.g. train.max_steps=100")
    parser.add_argument("--out", default=None, help="output folder (default runs/demo-RECIPE); must be new or empty")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_compile_arguments(parser)  # sets train.compile; evaluation and the example run compiled too


def synthesizer_installed() -> bool:
    """Whether the spoken corpus's synthesizer (espeak-ng) is on PATH."""
    import shutil

    from sepkit.data.spoken import SYNTHESIZER

    return shutil.which(SYNTHESIZER) is not None


def output_folder(out: str | Path, resume: bool) -> Path:
    """``out`` checked: new or empty, or (with ``resume``) the folder of an interrupted demo;
    FileExistsError otherwise (nothing in it is touched)."""
    from sepkit.train.checks import check_output_dir, is_run_folder

    path = check_output_dir(out)
    if path.is_dir() and any(path.iterdir()):
        if not resume:
            raise FileExistsError(f"--out {path} exists and is not empty; pass --resume to continue an interrupted "
                                  "demo there, or choose another --out (nothing was touched)")
        if not is_run_folder(path):
            raise FileExistsError(f"--out {path} is not empty and holds no demo run; --resume continues an interrupted "
                                  "demo only (nothing was touched)")
    return path


def save_example(folder: Path, example: dict, sample_rate: int) -> dict:
    """Write the example's waveforms (1-D float tensors) as ``folder/<name>.wav``, scaled together
    below full scale; returns ``{name: path}``."""
    import torch

    from sepkit.data import write_audio

    waves = {k: v.detach().float().cpu() for k, v in example.items()
             if isinstance(v, torch.Tensor) and v.dim() == 1 and v.is_floating_point()}
    if not waves:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    peak = max(float(w.abs().max()) for w in waves.values())
    scale = 0.99 / peak if peak > 0.99 else 1.0
    return {name: write_audio(folder / f"{name}.wav", torch.nan_to_num(w) * scale, sample_rate)
            for name, w in waves.items()}


def run(args) -> int:
    import torch

    from sepkit.train import load_recipe, load_trained, make_task, resolve_checkpoint, train
    from sepkit.train.checkpoint import CheckpointError
    from sepkit.train.checks import resolve_device
    from sepkit.train.evaluate import format_summary, summarize, write_rows
    from sepkit.train.trainer import require_items
    from sepkit.train.report import (
        build_report,
        draw_report,
        headline,
        headline_text,
        median_item,
        read_history,
        write_report,
    )

    recipe, overrides = args.recipe, list(args.overrides or [])
    if recipe is not None and "=" in recipe:  # an override standing where the recipe may be
        overrides.insert(0, recipe)
        recipe = None
    recipe = recipe or DEFAULT_RECIPE
    if args.compile is not None:
        overrides.append(f"train.compile={args.compile}")
    cfg = load_recipe(recipe, "demo", overrides)
    if cfg.data.dataset == "spoken" and not synthesizer_installed():
        print("sepkit demo: espeak-ng is not installed, so this demo trains on the synthetic speech-like generator "
              "instead (its model will not work on real speech); apt-get install espeak-ng for the spoken corpus",
              file=sys.stderr)
        cfg = load_recipe(recipe, "demo", [*overrides, "data.dataset=synthetic"])
    name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
    device = resolve_device(args.device)
    out = output_folder(args.out or f"runs/demo-{name}", args.resume)
    progress = not args.no_progress
    stages = {}

    require_items(make_task(cfg).dataset("test"), "test")  # the demo evaluates on it: checked before training
    resume = args.resume and (out / "checkpoints" / "LATEST").exists()
    print(f"[1/4] training {cfg.recipe} ({cfg.task} task, {cfg.train.max_steps} steps on {device}) into {out}"
          + (" (resuming)" if resume else ""), flush=True)
    t = time.perf_counter()
    result = train(cfg, out, resume=resume, device=str(device), progress=progress, test=False)
    stages["train"] = time.perf_counter() - t

    print(f"[2/4] evaluating on the held-out {cfg.data.dataset} test set", flush=True)
    t = time.perf_counter()
    task, model = load_trained(out, device, compile=cfg.train.compile)
    test_set = task.dataset("test")
    with torch.no_grad():
        rows = task.evaluate(model, test_set, progress=progress)
    if not rows:
        raise InputError(f"recipe {cfg.recipe!r}: its test set is empty; set data.synthetic.num_test >= 1")
    metrics_csv = write_rows(out / "test_metrics.csv", rows)
    summary = summarize(rows)
    print(format_summary(summary, len(rows)), flush=True)
    stages["eval"] = time.perf_counter() - t

    head = headline(task, summary)
    index = median_item(rows, head["metric"] if head else None)
    item = test_set[index]
    if item.get("id") != rows[index].get("id"):  # rows not in the data set's order: take the first item
        index, item = 0, test_set[0]
    which = f" (the median {head['label']})" if head and index == median_item(rows, head["metric"]) else ""
    print(f"[3/4] running the {task.name} task's inference on held-out test item {item.get('id', index)}{which}",
          flush=True)
    t = time.perf_counter()
    try:
        with torch.no_grad():
            example = task.example(model, item)
    except (NotImplementedError, ValueError) as exc:  # e.g. inference that needs a flag the demo cannot pick
        why = str(exc).splitlines()[0] if str(exc) else "not implemented"
        print(f"sepkit demo: no example from the {task.name} task ({why}); the report shows the curves alone",
              file=sys.stderr)
        example = {}
    example_id = item.get("id", str(index))
    shown = {head["metric"]: rows[index].get(head["metric"])} if head else {}
    audio = save_example(out / "example", example, task.sample_rate)
    stages["example"] = time.perf_counter() - t

    print("[4/4] writing the report", flush=True)
    t = time.perf_counter()
    try:
        ckpt = resolve_checkpoint(out)
    except CheckpointError:
        ckpt = None
    def rel(path) -> str:
        return os.path.relpath(Path(path).resolve(), out.resolve())

    files = {"report_md": "report.md", "report_json": "report.json", "report_png": "report.png",
             "metrics": "metrics.csv", "test_metrics": rel(metrics_csv),
             "checkpoint": rel(ckpt) if ckpt is not None else None, "audio": {k: rel(p) for k, p in audio.items()}}
    history = read_history(out)
    drawn = draw_report(out / "report.png", task, example, history, task.sample_rate,
                        title=f"sepkit demo: {cfg.recipe} ({task.name})")
    stages["report"] = time.perf_counter() - t
    report = build_report(recipe=cfg.recipe, task=task, model=model, steps=result["step"], stages=stages,
                          device=device, summary=summary, n_items=len(rows), panel=drawn, files=files,
                          example={"id": example_id, **shown})
    md, _ = write_report(out, report)
    total = sum(stages.values())
    print(f"report: {md} ({report['parameters']:,} parameters, {result['step']} steps, {total:.0f} s)")
    print(headline_text(report["headline"]))
    return 0
