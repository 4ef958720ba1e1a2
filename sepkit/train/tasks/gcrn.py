"""The ``gcrn`` task: causal GCRN enhancement with the Wav2Vec2 variants (``model.args.variant``).

- ``base`` and ``concat``: the enhancement loss (``task_args.loss``, negative SI-SDR by default).
- ``distill``: the enhancement loss plus ``distill_weight`` x the L1 distance between the
  projected encoder output and the Wav2Vec2 embeddings of the clean speech.
- ``pretrain``: two stages. The prerequisite (:meth:`GCRNTask.prerequisites`) first trains the encoder and its projection
  for ``pretrain_steps`` steps to predict Wav2Vec2 embeddings (of the noisy input, or of the clean
  speech with ``pretrain_target: clean``) in ``<run>/prereq-pretrain`` (a run of this task with
  ``stage: pretrain``; resumed when interrupted, reused when complete), records it as ``model.args.encoder_ckpt``, and the
  main run fine-tunes the whole GCRN from that encoder for enhancement.

The Wav2Vec2 model is frozen (:meth:`GCRNTask.frozen`), left out of checkpoints and rebuilt from
``model.args.ssl_ckpt`` (or the seeded random initialisation when there is none).

Data: ``data.dataset: synthetic`` or ``spoken`` (the built-in data with noise: training SNRs uniform in
``train_snr``, validation and test at ``eval_snr``) or ``dns``: ``data.root/<split>`` is either a
``clean/`` + ``noise/`` pair mixed on the fly (:class:`~sepkit.data.dns.DNSMixtures`; training at
``train_snr``, validation and test at ``eval_snr``) or the synthesized test-set layout
``noisy/`` + ``clean/`` (:class:`~sepkit.data.dns.DNSTestSet`). Evaluation: SI-SDR, SI-SDRi,
PESQ (wide band), STOI and ESTOI. ``sepkit separate --stream`` runs the streaming enhancer (same
output) and prints its real-time factor.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sepkit.data import resample
from sepkit.data.dns import DNSMixtures, DNSTestSet
from sepkit.files import load_strict
from sepkit.metrics import stoi
from sepkit.models.gcrn import GCRN, VARIANTS
from sepkit.models.streaming import StreamingEnhancer

from ..builders import BUILTIN, build_dataset
from ..checkpoint import CheckpointError, read_weights, resolve_checkpoint
from ..config import ConfigError
from ..prerequisites import Prerequisite
from .common import have_module
from .enhancement import EnhancementTask

STAGES = ("enhance", "pretrain")


@dataclasses.dataclass
class GCRNOptions:
    """loss: enhancement loss, "si_sdr" (negative SI-SDR) or "l1"; perceptual: report PESQ, STOI
    and ESTOI in evaluation; train_snr: (low, high) dB of training mixtures; eval_snr: dB of
    validation and test mixtures (the paper evaluates at -5 dB); distill_weight: weight of the
    distillation L1; pretrain_steps: steps of the pretrain variant's first stage; pretrain_target:
    whose Wav2Vec2 embeddings the first stage predicts ("noisy" input or "clean" speech); stage:
    "enhance", or "pretrain" for the first stage's own run (set in the prerequisite); stream_chunk:
    seconds of audio per ``process`` call when ``sepkit separate --stream`` runs."""

    loss: str = "si_sdr"
    perceptual: bool = True
    train_snr: tuple = (-5.0, 5.0)
    eval_snr: float = -5.0
    distill_weight: float = 1.0
    pretrain_steps: int = 2000
    pretrain_target: str = "noisy"
    stage: str = "enhance"
    stream_chunk: float = 0.02


class GCRNTask(EnhancementTask):
    """GCRN enhancement and its Wav2Vec2 variants (see the module docstring)."""

    name = "gcrn"
    Options = GCRNOptions
    infer_options = ("stream",)

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.options.stage == "pretrain":  # the first stage follows its own loss
            self.monitor, self.monitor_mode = "embedding_l1", "min"

    # -- configuration ----------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.cfg.model.args.get("variant", "base")

    def check_config(self) -> None:
        super().check_config()
        o, data = self.options, self.cfg.data
        if self.cfg.model.name.lower() != "gcrn":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the gcrn task builds the GCRN; set model.name=gcrn")
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.args.variant={self.variant!r}: must be one of {VARIANTS}")
        if data.sample_rate != GCRN.sample_rate:
            raise ConfigError(f"data.sample_rate={data.sample_rate}: the GCRN runs at 16000 Hz; set data.sample_rate=16000")
        if data.dataset not in (*BUILTIN, "dns"):
            raise ConfigError(f"data.dataset={data.dataset!r}: the gcrn task reads 'synthetic', 'spoken' or 'dns'")
        if not (isinstance(o.train_snr, (list, tuple)) and len(o.train_snr) == 2 and o.train_snr[0] <= o.train_snr[1]):
            raise ConfigError(f"task_args.train_snr={o.train_snr!r}: must be [low, high] dB with low <= high")
        if o.stage not in STAGES:
            raise ConfigError(f"task_args.stage={o.stage!r}: must be one of {STAGES}")
        if o.stage == "pretrain" and self.variant != "pretrain":
            raise ConfigError(f"task_args.stage=pretrain needs model.args.variant=pretrain, got {self.variant!r}")
        if o.pretrain_target not in ("noisy", "clean"):
            raise ConfigError(f"task_args.pretrain_target={o.pretrain_target!r}: must be 'noisy' or 'clean'")
        if o.pretrain_steps < 1:
            raise ConfigError(f"task_args.pretrain_steps={o.pretrain_steps}: must be >= 1")
        if not o.distill_weight >= 0:
            raise ConfigError(f"task_args.distill_weight={o.distill_weight}: must be >= 0")
        if not o.stream_chunk > 0:
            raise ConfigError(f"task_args.stream_chunk={o.stream_chunk}: must be > 0 seconds")

    # -- building ---------------------------------------------------------------------------
    def prerequisites(self) -> list[Prerequisite]:
        """pretrain variant: the encoder stage (a run of this task with ``stage: pretrain`` for
        ``pretrain_steps`` steps) into ``model.args.encoder_ckpt``, unless that is given."""
        if self.variant != "pretrain" or self.options.stage != "enhance" or self.cfg.model.args.get("encoder_ckpt"):
            return []
        sub = copy.deepcopy(self.cfg)
        sub.recipe = f"{self.cfg.recipe}-pretrain"
        sub.task_args = {**sub.task_args, "stage": "pretrain"}
        steps = self.options.pretrain_steps
        sub.train = dataclasses.replace(sub.train, max_steps=steps, eval_every=min(sub.train.eval_every, steps),
                                        ckpt_every=min(sub.train.ckpt_every, steps), ema=None)
        return [Prerequisite("pretrain", sub, "model.args.encoder_ckpt",
                             what=f"stage 1: the encoder learns Wav2Vec2 embeddings, {steps} steps")]

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        encoder_ckpt = args.pop("encoder_ckpt", None)
        try:
            model = GCRN(**args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"model.args: {exc}") from None
        if encoder_ckpt:
            try:
                weights = read_weights(resolve_checkpoint(encoder_ckpt))
            except (CheckpointError, FileNotFoundError) as exc:
                raise ConfigError(f"model.args.encoder_ckpt={encoder_ckpt!r}: {exc}") from None
            others = tuple({k.split(".")[0] for k in model.state_dict()} - {"encoder", "embed_proj"})
            load_strict(model, weights, f"model.args.encoder_ckpt={encoder_ckpt!r} does not hold this GCRN's encoder",
                        exclude=others, strict=False)
        return model

    def frozen(self, model: nn.Module) -> tuple[str, ...]:
        return ("ssl",) if getattr(model, "ssl", None) is not None else ()

    def param_groups(self, model: nn.Module) -> list[dict]:
        if self.options.stage == "pretrain":
            return [{"params": [p for n, p in model.named_parameters() if n.startswith(("encoder.", "embed_proj."))]}]
        return super().param_groups(model)

    # -- data -------------------------------------------------------------------------------
    def dataset(self, which: str):
        data, o = self.cfg.data, self.options
        train = which == "train"
        snr = tuple(float(v) for v in o.train_snr) if train else (float(o.eval_snr),) * 2
        if data.dataset in BUILTIN:
            # training SNRs: train_snr unless data.synthetic sets them; evaluation: always eval_snr
            synthetic = {"noise": True, "snr_range": snr, **data.synthetic} if train else \
                {"noise": True, **data.synthetic, "snr_range": snr}
            return build_dataset(dataclasses.replace(data, synthetic=synthetic), which, self.cfg.train.seed)
        if not data.root:
            raise ConfigError("data.root is required for data.dataset='dns' (give data.root=PATH)")
        split = {"train": data.train_split, "valid": data.valid_split, "test": data.test_split}[which]
        folder = Path(data.root) / split
        segment = {"train": data.segment, "valid": data.valid_segment, "test": None}[which]
        if (folder / "noisy").is_dir():
            return DNSTestSet(folder, sample_rate=data.sample_rate)
        if (folder / "clean").is_dir() and (folder / "noise").is_dir():
            return DNSMixtures(folder / "clean", folder / "noise", segment=segment, snr_range=snr,
                               sample_rate=data.sample_rate, split=which, seed=self.cfg.train.seed,
                               dynamic_mixing=train and data.dynamic_mixing)
        raise ConfigError(f"data.{which}_split={split!r}: {folder} holds neither noisy/ + clean/ (a test-set layout) "
                          f"nor clean/ + noise/ (mixed on the fly)")

    # -- steps ------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict):
        noisy, clean = batch["mixture"], batch["sources"][:, 0]
        if self.options.stage == "pretrain":
            target = noisy if self.options.pretrain_target == "noisy" else clean
            l1 = model.embedding_loss(model.encoder_features(noisy), target)
            return l1, {"embedding_l1": float(l1.detach())}
        est, feats = model.forward_features(noisy)
        loss = self.loss(est, clean)
        if self.variant == "distill":
            l1 = model.embedding_loss(feats, clean)
            return loss + self.options.distill_weight * l1, {"enhance": float(loss.detach()),
                                                             "embedding_l1": float(l1.detach())}
        return loss, {}

    @torch.no_grad()
    def validate(self, model, dataset) -> dict:
        if self.options.stage != "pretrain":
            return super().validate(model, dataset)
        model.eval()
        device = self.model_device(model)
        total, n = 0.0, 0
        from ..evaluate import items

        for item in items(dataset, self.cfg.train.max_valid_items, False):
            noisy = item["mixture"].to(device).unsqueeze(0)
            target = noisy if self.options.pretrain_target == "noisy" else item["sources"][:1].to(device)
            total += float(model.embedding_loss(model.encoder_features(noisy), target))
            n += 1
        return {"embedding_l1": total / max(n, 1)}

    def metrics(self, estimate, clean, noisy, full: bool = True) -> dict:
        row = super().metrics(estimate, clean, noisy, full)
        if full and self.options.perceptual and have_module("pystoi"):
            row["stoi"] = float(stoi(estimate, clean, self.sample_rate))
        return row

    # -- inference --------------------------------------------------------------------------
    def stream(self, model: nn.Module, noisy: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Streaming enhancement of ``noisy`` (B, T) in chunks of ``stream_chunk`` seconds on one
        CPU thread (the on-device setting; per-frame work is too small to share between threads):
        (enhanced (B, T), real-time factor = processing time / audio duration)."""
        enhancer = StreamingEnhancer(model)
        n = max(1, round(self.options.stream_chunk * self.sample_rate))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            outs = [enhancer.process(noisy[:, i : i + n]) for i in range(0, noisy.shape[-1], n)]
            outs.append(enhancer.flush())
            elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
        return torch.cat(outs, dim=1), elapsed / (noisy.shape[-1] / self.sample_rate)

    def infer_in_chunks(self, options: dict) -> bool:
        """Offline inference goes chunk by chunk; ``stream`` runs the streaming enhancer over the
        whole recording."""
        return not options.get("stream")

    @torch.no_grad()
    def infer(self, model, waveform, sample_rate, chunk: float = 8.0, overlap: float = 1.0, stream=None, **options) -> dict:
        """Enhance ``waveform`` (T,) at ``sample_rate`` (resampled to 16 kHz with a notice and
        back): offline in chunks of ``chunk`` seconds overlapping by ``overlap`` seconds,
        cross-faded (:meth:`~.enhancement.EnhancementTask.infer`); ``stream=True`` runs the
        streaming enhancer over the whole recording (the offline model's output) and prints its
        RTF. Returns ``{"enhanced": (T,)}``."""
        self.check_options(model, {"stream": stream, **options})
        if not stream:
            return super().infer(model, waveform, sample_rate, chunk=chunk, overlap=overlap, **options)
        x = self.to_model_rate(waveform, sample_rate).to(self.model_device(model)).unsqueeze(0)
        model.eval()
        est, rtf = self.stream(model, x)
        print(f"sepkit: streamed {x.shape[-1] / self.sample_rate:.2f} s in {self.options.stream_chunk * 1e3:g} ms "
              f"chunks on one CPU thread: RTF {rtf:.3f} (hop {1e3 * model.hop_length / self.sample_rate:g} ms, "
              f"latency {1e3 * model.latency_samples / self.sample_rate:g} ms)", file=sys.stderr)
        est = est[0].float().cpu()
        return {"enhanced": resample(est, self.sample_rate, sample_rate)[: waveform.shape[-1]]}


TASK = GCRNTask
