"""The training loop of every separation recipe.

Deterministic by construction: the order of training items in epoch ``e`` is a permutation
seeded by ``(seed, e)``, crops and synthetic mixtures are seeded by ``(seed, epoch, index)``, and
a checkpoint stores the step and every RNG state, so ``resume`` continues bit-for-bit on a CPU.
With ``torchrun`` (WORLD_SIZE > 1) it runs DistributedDataParallel: each rank takes every
WORLD_SIZE-th batch of the shared permutation; rank 0 logs and saves.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from sepkit.data import collate

from .builders import build_dataset, build_loss, build_model, model_meta
from .checkpoint import CheckpointError, load_state, load_weights, read_meta, resolve_checkpoint, save_checkpoint, set_rng_state
from .config import ConfigError, RecipeConfig
from .evaluate import evaluate, format_summary, summarize, write_rows


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
    """metrics.csv (step, split, name, value) plus TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.csv"
        self.tb = None
        if enabled:
            new = not self.path.exists()
            self.file = open(self.path, "a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(["step", "split", "name", "value", "time"])
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tb = None
                print("sepkit train: tensorboard is not installed; metrics go to metrics.csv only "
                      "(pip install tensorboard to get TensorBoard logs)", file=sys.stderr)

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


def train(cfg: RecipeConfig, run_dir: str | os.PathLike, resume: bool = False, device: str | None = None,
          progress: bool = True, test: bool = True) -> dict:
    """Train ``cfg`` into ``run_dir``; returns {"step", "valid": summary, "test": summary}.

    ``resume``: continue from ``run_dir``'s newest checkpoint (same recipe required).
    """
    if cfg.train.precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {cfg.train.precision!r}")
    rank, world, local_rank = _distributed()
    main = rank == 0
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
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
    torch.manual_seed(cfg.train.seed)

    train_ds = build_dataset(cfg.data, "train", cfg.train.seed)
    valid_ds = build_dataset(cfg.data, "valid", cfg.train.seed)
    if cfg.data.segment is None and cfg.data.batch_size != 1:
        raise ConfigError("data.batch_size must be 1 when data.segment is None (whole utterances differ in length)")
    model = build_model(cfg.model, cfg.data).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    sched = build_scheduler(cfg, optimizer)
    scheduler, sched_kind = sched if sched else (None, None)
    loss_fn = build_loss(cfg)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" and device.type == "cuda" else None

    step = 0
    if resume:
        ckpt = resolve_checkpoint(run_dir)
        meta = read_meta(ckpt)
        if meta.get("model") != cfg.model.name.lower() or meta.get("args") != dict(cfg.model.args):
            raise CheckpointError(f"{ckpt} is a {meta.get('model')} model with other arguments than recipe "
                                  f"{cfg.recipe!r} builds; resume with the recipe it was trained with")
        load_weights(ckpt, model)
        state = load_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        if main:
            print(f"resumed from {ckpt} at step {step}")
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bare = model.module if world > 1 else model

    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = cfg.to_dict()
    meta = model_meta(cfg)
    log = MetricLog(run_dir, main)
    per_step = cfg.data.batch_size * world
    steps_per_epoch = len(train_ds) // per_step
    if steps_per_epoch == 0:
        raise ConfigError(f"the training set has {len(train_ds)} items, fewer than one batch of {per_step}")

    def batch_at(s: int) -> dict:
        epoch, pos = divmod(s, steps_per_epoch)
        if hasattr(train_ds, "set_epoch"):
            train_ds.set_epoch(epoch)
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch))
        start = pos * per_step + rank * cfg.data.batch_size
        return collate([train_ds[int(i)] for i in order[start:start + cfg.data.batch_size]])

    def validate(s: int) -> dict:
        rows = evaluate(bare, valid_ds, device, metrics=("si_sdr", "si_sdri"), max_items=cfg.train.max_valid_items)
        summary = {k: v[0] for k, v in summarize(rows).items()}
        log.log(s, "valid", summary)
        return summary

    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.train.max_steps, initial=step, desc=f"train {cfg.recipe}", unit="step", dynamic_ncols=True)
    last_valid = {}
    running, t0 = [], time.time()
    while step < cfg.train.max_steps:
        model.train()
        batch = batch_at(step)
        mix = batch["mixture"].to(device)
        ref = batch["sources"].to(device)
        with _autocast(cfg.train.precision, device):
            est = model(mix)
        loss, _ = loss_fn(est.float(), ref)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the loss is {loss.item()} (batch {batch['id']}); lower optim.lr "
                                     "or check the data")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.optim.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if sched_kind == "step":
            scheduler.step()
        step += 1
        running.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.2f}", **({"val_si_sdri": f"{last_valid['si_sdri']:.2f}"} if last_valid else {}))
        if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
            log.log(step, "train", {"loss": sum(running) / len(running), "lr": optimizer.param_groups[0]["lr"],
                                    "steps_per_s": len(running) / max(1e-9, time.time() - t0)})
            running, t0 = [], time.time()
        if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
            if main:
                last_valid = validate(step)
            if sched_kind == "plateau":
                scheduler.step(-last_valid.get("si_sdr", 0.0))
        if main and (step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps):
            save_checkpoint(run_dir, step, bare, meta, config_dict, optimizer, scheduler, keep=cfg.train.keep_checkpoints)
        if world > 1:
            torch.distributed.barrier()
    if bar is not None:
        bar.close()
    result = {"step": step, "valid": last_valid}
    if test and main:
        test_ds = build_dataset(cfg.data, "test", cfg.train.seed)
        rows = evaluate(bare, test_ds, device, progress=progress)
        write_rows(run_dir / "test_metrics.csv", rows)
        summary = summarize(rows)
        log.log(step, "test", {k: v[0] for k, v in summary.items()})
        result["test"] = summary
        print(format_summary(summary, len(rows)))
    log.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return result
