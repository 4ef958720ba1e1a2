"""The one training loop: every recipe runs here, its task (:mod:`sepkit.train.tasks`) says
what a step computes.

Deterministic by construction: the order of training items in epoch ``e`` is a permutation
seeded by ``(seed, e)``, crops, synthetic mixtures and augmentations are seeded by
``(seed, epoch, index)``, and a checkpoint stores the step and every RNG state, so ``resume``
continues bit-for-bit on a CPU. Batches come from ``DataLoader`` workers
(:mod:`sepkit.data.loading`: ``data.num_workers``; the sampler, not the workers, fixes the
order, so every worker count gives the same batches); an item that fails to load ends the run
with the step, the item and the original message (the file for sepkit's readers).
With ``train.grad_accum = A`` an optimizer step sums the gradients of A consecutive micro-batches
(loss / A each). With ``torchrun`` (WORLD_SIZE > 1) it runs DistributedDataParallel over a module
wrapping the task's training step: each rank takes every WORLD_SIZE-th micro-batch of the shared
permutation; rank 0 validates (its summary is broadcast, so every rank's scheduler steps on the
same value), logs and saves. An EMA of the weights (``train.ema``) is updated after every
optimizer step, saved with each checkpoint and used for validation and the final test.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from sepkit.data.augment import augment_spec, check_augment
from sepkit.data.loading import Batches, EpochBatchSampler, Failure, Loaded, close_loader, make_loader
from sepkit.errors import DivergedError

from .checkpoint import (
    BEST,
    CheckpointError,
    load_state,
    load_weights,
    mark_best,
    read_meta,
    read_weights,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .builders import loader_options
from .checks import check_run_folder, is_run_folder, mark_run_folder, resolve_device
from .compiling import compile_training
from .config import ConfigError, RecipeConfig, check_ranges
from .ema import EMA
from .evaluate import format_summary, summarize, write_rows
from .prerequisites import ensure_prerequisites, portable
from .tasks import Task, make_task


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def build_optimizer(cfg: RecipeConfig, params):
    o = cfg.optim
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    raise ConfigError(f"optim.optimizer must be 'adam' or 'adamw', got {o.optimizer!r}")


def build_scheduler(cfg: RecipeConfig, optimizer):
    """None, or (scheduler, kind) where kind is "step" (stepped every step) or "plateau"."""
    name, args = cfg.optim.scheduler, dict(cfg.optim.scheduler_args)
    if name == "none":
        return None
    if name == "plateau":  # halve the rate when validation stops improving (Sepformer/ConvTasNet recipes)
        args.setdefault("factor", 0.5)
        args.setdefault("patience", 2)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **args), "plateau"
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **args), "step"
    if name in ("cosine", "warmup_cosine"):
        warmup = int(args.pop("warmup_steps", 0 if name == "cosine" else 1000))
        total = cfg.train.max_steps
        floor = float(args.pop("min_factor", 0.0))
        if args:
            raise ConfigError(f"optim.scheduler_args: unknown key(s) {sorted(args)} for {name}")

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
    raise ConfigError(f"optim.scheduler must be none, plateau, step, cosine or warmup_cosine; got {name!r}")


class MetricLog:
    """metrics.csv (step, split, name, value) plus TensorBoard when it is installed.

    ``resume_step``: the step of the checkpoint a resumed run continues from; rows logged after
    it (by the interrupted run) and the test rows of a finished run are dropped, so every step
    appears once. None (a fresh run): a ``metrics.csv`` left by a run that failed before its
    first checkpoint is started afresh."""

    HEADER = ["step", "split", "name", "value", "time"]

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.csv"
        self.tb = None
        if enabled:
            self._trim(resume_step)
            new = not self.path.exists()
            self.file = open(self.path, "a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(self.HEADER)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None
                print("sepkit train: tensorboard is not installed; metrics go to metrics.csv only "
                      "(pip install tensorboard to get TensorBoard logs)", file=sys.stderr)

    def _trim(self, resume_step: int | None) -> None:
        if not self.path.exists():
            return
        if resume_step is None:
            print(f"sepkit train: {self.path} of a run without a checkpoint is started afresh", file=sys.stderr)
            self.path.unlink()
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if len(r) == len(self.HEADER) and r[0].isdigit() and int(r[0]) <= resume_step
                and r[1] != "test"]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([self.HEADER, *kept])
        os.replace(tmp, self.path)

    def log(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        now = time.time()
        for k, v in values.items():
            self.writer.writerow([step, split, k, f"{v:.6g}", f"{now:.1f}"])
            if self.tb is not None:
                self.tb.add_scalar(f"{split}/{k}", v, step)
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _autocast(precision: str, device: torch.device):
    if precision == "fp32" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def to_device(batch, device: torch.device):
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class _Step(torch.nn.Module):
    """The task's training step as a module, so DistributedDataParallel sees its forward."""

    def __init__(self, task: Task, model: torch.nn.Module):
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch: dict):
        return self.task.training_step(self.model, batch)


def freeze(model: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Turn off gradients of the submodules ``names`` and put them in eval mode."""
    for name in names:
        try:
            sub = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"the task names a frozen submodule {name!r} that the model does not have") from None
        sub.requires_grad_(False)
        sub.eval()


def check_train_config(cfg: RecipeConfig) -> None:
    """Value ranges (also checked when a recipe loads, again here for configs built in code),
    and the folders and packages ``data.augment`` needs."""
    check_ranges(cfg)
    if cfg.data.segment is None and cfg.data.batch_size != 1:
        raise ConfigError("data.batch_size must be 1 when data.segment is None (whole utterances differ in length)")
    spec = augment_spec(cfg.data.augment)
    if spec.enabled:
        check_augment(spec, cfg.data.sample_rate)


def _built(what: str, build):
    """``build()``, with a constructor's ValueError/TypeError turned into a ConfigError naming
    the recipe section it came from."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


# what a resumed run must share with its checkpoint: (meta key, recipe key shown, default of old checkpoints)
RESUME_KEYS = (("task", "task", "separation"), ("model", "model.name", None), ("args", "model.args", None),
               ("n_src", "data.n_src", None), ("sample_rate", "data.sample_rate", None))


def check_resumable(saved: dict, now: dict, ckpt: Path, recipe: str) -> None:
    """Refuse to resume when the task, model, its arguments, the number of sources or the
    sample rate differ from the checkpoint's (other overrides, such as train.max_steps, logging
    and evaluation cadence, are allowed)."""
    for key, shown, default in RESUME_KEYS:
        if saved.get(key, default) != now.get(key):
            raise CheckpointError(f"{ckpt} was trained with {shown}={saved.get(key, default)!r} but recipe {recipe!r} now "
                                  f"has {shown}={now.get(key)!r}, other arguments than it was trained with; resume "
                                  "with the recipe it was trained with")


def require_items(dataset, which: str) -> None:
    """ConfigError when the ``which`` data set is empty (before any training)."""
    if len(dataset) == 0:
        raise ConfigError(f"data (the {which} set): no items; check the data section (e.g. "
                          f"data.synthetic.num_{which}, data.{which}_split or data.root)")


def resume_point(run_dir: Path) -> Path | None:
    """The checkpoint ``--resume`` continues from: the newest of ``run_dir``; None for a run
    interrupted before its first checkpoint (it starts from the beginning; its prerequisites
    resume); CheckpointError for a folder that holds no run."""
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "LATEST").is_file():
        return resolve_checkpoint(run_dir)
    if not is_run_folder(run_dir):
        raise CheckpointError(f"--resume: {run_dir} holds no sepkit run to resume (nothing was saved there); "
                              "drop --resume to start one")
    print(f"sepkit train: {run_dir} has no checkpoint yet (interrupted before the first one); starting from "
          "step 0", file=sys.stderr)
    return None


def clean_stale(ckpt_root: Path) -> None:
    """Remove the temporary folders an interrupted checkpoint write left behind."""
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.is_dir() and (p.name.startswith(".step-") or p.name.startswith(".old-")):
                shutil.rmtree(p, ignore_errors=True)


def _broadcast(obj, world: int):
    if world <= 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def train(cfg: RecipeConfig, run_dir: str | os.PathLike, resume: bool = False, device: str | None = None,
          progress: bool = True, test: bool = True) -> dict:
    """Train ``cfg`` into ``run_dir``; returns {"step", "valid": summary, "lr": per group,
    "test": summary}.

    ``resume``: continue from ``run_dir``'s newest checkpoint (same task, model and arguments
    required).
    """
    check_train_config(cfg)
    task = make_task(cfg)
    check_run_folder(run_dir, resume)
    rank, world, local_rank = _distributed()
    main = rank == 0
    device = resolve_device(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_flush_denormal(True)  # recurrent states decaying over padding are slow as denormals
    if cfg.train.precision != "fp32" and device.type != "cuda" and main:
        print(f"sepkit train: precision {cfg.train.precision} needs CUDA; training in fp32 on {device}", file=sys.stderr)
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    if not resume and (ckpt_root / "LATEST").exists():
        raise CheckpointError(f"{run_dir} already holds a training run; pass --resume to continue it or choose "
                              "another --out (nothing was overwritten)")
    ckpt = resume_point(run_dir) if resume else None
    task.run_dir = run_dir
    task.derive_arguments()
    needs = task.prerequisites()
    if ckpt is not None:  # refused before any work, prerequisites included
        planned = [{"arg": p.arg, "path": p.folder} for p in needs]
        check_resumable(read_meta(ckpt), portable(task.model_meta(), planned), ckpt, cfg.recipe)
    # the data first, and the model when no prerequisite feeds it, so that a broken set or a wrong
    # argument fails before anything trains; the model starts from the random state after the
    # data sets, as it always did
    torch.manual_seed(cfg.train.seed)
    train_ds = _built("data (train)", lambda: task.dataset("train"))
    valid_ds = _built("data (valid)", lambda: task.dataset("valid"))
    test_ds = _built("data (test)", lambda: task.dataset("test")) if test and main else None
    for which, ds in (("train", train_ds), ("valid", valid_ds), ("test", test_ds)):
        if ds is not None:
            require_items(ds, which)
    model = None
    if not any(p.arg.startswith("model.args.") for p in needs):
        model = _built("model.args", task.build_model)
    rng = torch.get_rng_state()
    records = ensure_prerequisites(task, run_dir, device, progress) if main else None
    if world > 1:
        records = _broadcast(records, world)
        for r in records:
            task.set_argument(r["arg"], str((run_dir / r["path"]).resolve()))
    cfg = task.cfg
    torch.set_rng_state(rng)
    if model is None:
        model = _built("model.args", task.build_model)
    loading = loader_options(cfg.data, cfg.train.seed)
    valid_ds = Loaded(valid_ds, loading, "valid item", device)
    if ckpt is None:
        task.initialize(model)
    model = model.to(device)
    frozen = tuple(task.frozen(model))
    freeze(model, frozen)
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in task.param_groups(model)]
    optimizer = build_optimizer(cfg, [g for g in groups if g["params"]])
    sched = build_scheduler(cfg, optimizer)
    scheduler, sched_kind = sched if sched else (None, None)
    ema = EMA(model, cfg.train.ema, exclude=frozen) if cfg.train.ema is not None else None
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" and device.type == "cuda" else None

    step, best = 0, None
    if ckpt is not None:
        load_weights(ckpt, model, exclude=frozen)
        state = load_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            try:
                ema.load_state_dict(read_weights(ckpt, "ema.safetensors"))
            except (CheckpointError, KeyError) as exc:
                raise CheckpointError(f"{ckpt}: cannot resume the EMA of the weights ({exc})") from None
        set_rng_state(state["rng"])
        step, best = int(state["step"]), state.get("best")
        if main:
            print(f"resumed from {ckpt} at step {step}")
    stepper = _Step(task, model)
    compile_training(stepper, model, cfg.train.compile)  # in place: state-dict keys unchanged
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        stepper = DistributedDataParallel(stepper, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=cfg.train.find_unused_parameters)

    if main:
        mark_run_folder(run_dir, cfg.recipe, task.name)  # the first file a run writes
        clean_stale(ckpt_root)
    meta = dict(portable(task.model_meta(), records), prerequisites=records)
    saved_config = portable(cfg.to_dict(), records)
    log = MetricLog(run_dir, main, resume_step=step if ckpt is not None else None)
    try:
        accum = cfg.train.grad_accum
        per_micro = cfg.data.batch_size * world
        if len(train_ds) // per_micro == 0:
            raise ConfigError(f"the training set has {len(train_ds)} items, fewer than one batch of {per_micro}")
        # micro-batch m of this rank, from step * accum on (a resumed run continues the same order)
        sampler = EpochBatchSampler(len(train_ds), cfg.data.batch_size, cfg.train.seed, rank, world,
                                    start=step * accum, stop=max(step, cfg.train.max_steps) * accum)
        batches = iter(make_loader(Batches(train_ds, task.collate, cfg.train.seed, "train item"), sampler, loading,
                                   device))

        def next_batch(s: int) -> dict:
            batch = next(batches)
            if isinstance(batch, Failure):
                batch.throw(f"step {s}")
            return batch

        def averaged():
            return ema.swapped(model) if ema is not None else nullcontext()

        def validate(s: int) -> dict:
            summary = None
            if main:
                valid_ds.context = f"step {s}: validation"
                model.eval()
                with torch.no_grad(), averaged():
                    summary = task.validate(model, valid_ds)
                if task.monitor not in summary:
                    raise ConfigError(f"task {task.name}: validation reports {sorted(summary)}, not its monitor {task.monitor!r}")
                log.log(s, "valid", summary)
            return _broadcast(summary, world)

        def improved(value: float) -> bool:
            return best is None or (value > best if task.monitor_mode == "max" else value < best)

        bar = None
        if progress and main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.train.max_steps, initial=step, desc=f"train {cfg.recipe}", unit="step", dynamic_ncols=True)
        last_valid = {}
        running, running_logs, t0 = [], {}, time.time()
        try:
            while step < cfg.train.max_steps:
                model.train()
                freeze(model, frozen)
                optimizer.zero_grad(set_to_none=True)
                total, logs = 0.0, {}
                for micro in range(accum):
                    batch = next_batch(step)
                    sync = nullcontext() if world == 1 or micro == accum - 1 else stepper.no_sync()
                    with sync:
                        with _autocast(cfg.train.precision, device):
                            loss, micro_logs = stepper(to_device(batch, device))
                        if not torch.isfinite(loss):
                            raise DivergedError(f"step {step}: the loss is {loss.item()} (batch {batch.get('id')}); lower "
                                                     "optim.lr or check the data")
                        scaled = loss / accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    total += loss.item() / accum
                    for k, v in micro_logs.items():
                        logs[k] = logs.get(k, 0.0) + float(v) / accum
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if cfg.optim.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.optim.clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if sched_kind == "step":
                    scheduler.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                running.append(total)
                for k, v in logs.items():
                    running_logs.setdefault(k, []).append(v)
                if bar is not None:
                    bar.update(1)
                    shown = {task.monitor: f"{last_valid[task.monitor]:.2f}"} if last_valid else {}
                    bar.set_postfix(loss=f"{total:.3g}", **shown)
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    extra = {k: sum(v) / len(v) for k, v in running_logs.items()}
                    log.log(step, "train", {"loss": sum(running) / len(running), "lr": optimizer.param_groups[0]["lr"],
                                            "steps_per_s": len(running) / max(1e-9, time.time() - t0), **extra})
                    running, running_logs, t0 = [], {}, time.time()
                new_best = False
                if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
                    last_valid = validate(step)
                    value = float(last_valid[task.monitor])
                    if sched_kind == "plateau":  # mode "min": a "larger is better" monitor steps negated
                        scheduler.step(-value if task.monitor_mode == "max" else value)
                    if improved(value):
                        best, new_best = value, True
                if main and (step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps):
                    best_name = (ckpt_root / BEST).read_text().strip() if (ckpt_root / BEST).is_file() else None
                    save_checkpoint(run_dir, step, model, meta, saved_config, optimizer, scheduler,
                                    extra={"best": best}, keep=cfg.train.keep_checkpoints, exclude=frozen,
                                    ema=ema.state_dict() if ema is not None else None,
                                    protect=() if new_best or best_name is None else (best_name,))
                    if new_best:
                        mark_best(run_dir, step)
                if world > 1:
                    torch.distributed.barrier()
        finally:
            close_loader(batches)
            valid_ds.close()
        if bar is not None:
            bar.close()
        result = {"step": step, "valid": last_valid, "lr": [g["lr"] for g in optimizer.param_groups]}
        if test and main:
            test_ds = Loaded(test_ds, loading, "test item", device)
            test_ds.context = f"step {step}: test"
            try:
                with torch.no_grad(), averaged():
                    rows = task.evaluate(model, test_ds, progress=progress)
            finally:
                test_ds.close()
            write_rows(run_dir / "test_metrics.csv", rows)
            summary = summarize(rows)
            log.log(step, "test", {k: v[0] for k, v in summary.items()})
            result["test"] = summary
            print(format_summary(summary, len(rows)))
    finally:
        log.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return result
