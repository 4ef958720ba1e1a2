"""The :class:`Task` interface: what one kind of training computes, apart from the loop.

A task says how to build its model and data, what one training step computes, how to validate,
evaluate and infer, and which parameters train; the trainer (:mod:`sepkit.train.trainer`) owns
the loop, resume, checkpoints, DDP, precision, gradient accumulation, EMA and logging.

A task lives in ``sepkit/train/tasks/<module>.py`` and exposes ``TASK = MyTask``; a recipe names
it with ``task: <module>`` and passes its options in ``task_args`` (checked against the task's
``Options`` dataclass; an unknown key is an error naming it).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

from sepkit.data import collate as default_collate
from sepkit.data import resample
from sepkit.errors import InputError

from ..config import ConfigError, RecipeConfig, build_options
from ..evaluate import summarize


@dataclasses.dataclass
class NoOptions:
    """A task without options: ``task_args`` must be empty."""


class Task:
    """Base class of the training tasks.

    Attributes:
        name: the module name recipes use (``task: <name>``).
        monitor: key of :meth:`validate`'s summary that the plateau scheduler and "best" follow.
        monitor_mode: ``"max"`` (larger is better) or ``"min"``.
        infer_options: the ``sepkit separate`` flags :meth:`infer` supports (``target_slot``,
            ``stream``, ``steps``).
        Options: dataclass of the task's ``task_args``.
        cfg: the recipe (:class:`RecipeConfig`); ``options``: the parsed ``task_args``.
        run_dir: the run folder when the task trains or was rebuilt from a run (None otherwise):
            where outputs a task writes by default go.
    """

    name = "task"
    infer_options: tuple[str, ...] = ()
    #: whether :meth:`infer` runs chunk by chunk through :meth:`infer_chunk` (then files are
    #: separated block by block, :func:`~sepkit.train.inference.infer_file`)
    chunked = False
    monitor = "loss"
    monitor_mode = "min"
    Options = NoOptions

    def __init__(self, cfg: RecipeConfig):
        self.cfg = cfg
        self.run_dir: Path | None = None
        self.options = build_options(self.Options, cfg.task_args, "task_args")
        self.check_config()

    # -- configuration -------------------------------------------------------------------
    def check_config(self) -> None:
        """Validate the recipe beyond types (raise ConfigError naming the key); runs at
        construction, before any model or data is built."""

    @property
    def sample_rate(self) -> int:
        """The model's sample rate in Hz (``data.sample_rate``)."""
        return int(self.cfg.data.sample_rate)

    def model_meta(self) -> dict:
        """What a checkpoint records besides the full config (shown by tools, checked on resume)."""
        return {"task": self.name, "model": self.cfg.model.name.lower(), "args": dict(self.cfg.model.args),
                "n_src": self.cfg.data.n_src, "sample_rate": self.sample_rate, "recipe": self.cfg.recipe}

    # -- building ------------------------------------------------------------------------
    def prerequisites(self) -> list:
        """The runs this task needs trained first (:class:`~sepkit.train.prerequisites.Prerequisite`:
        name, recipe, the argument that receives the run folder), for the arguments the recipe
        leaves to be trained; default none. The trainer trains, resumes or reuses each under
        one rule (:mod:`sepkit.train.prerequisites`) and sets its argument with
        :meth:`set_argument` before :meth:`build_model`. Depends on the recipe alone (no side
        effects): a declared argument that is set is no longer declared."""
        return []

    def derive_arguments(self) -> None:
        """Fill in recipe arguments that follow from files the recipe names (e.g. the network
        size of a ``task_args.init`` checkpoint) before the model is built for training; what it
        sets is saved with the checkpoints, so rebuilding a trained model never repeats it.
        Called by the trainer on every rank after the prerequisites. Default: nothing."""

    def set_argument(self, arg: str, value) -> None:
        """Set ``model.args.KEY`` or ``task_args.KEY`` of the recipe (and the parsed options)."""
        key = arg.rsplit(".", 1)[1]
        if arg.startswith("task_args."):
            self.cfg.task_args[key] = value
            self.options = build_options(self.Options, self.cfg.task_args, "task_args")
        elif arg.startswith("model.args."):
            self.cfg.model.args[key] = value
        else:
            raise ConfigError(f"{arg}: a task argument is model.args.KEY or task_args.KEY")

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def initialize(self, model: nn.Module) -> None:
        """Start the weights of a fresh run from pretrained ones (e.g. a ``task_args.init`` file).

        Called by the trainer after :meth:`build_model`, before the EMA copies the weights, only
        when a run starts (not on ``--resume``, not when a checkpoint is rebuilt), so the file is
        needed once. Default: nothing (the model keeps its initialisation)."""

    def dataset(self, which: str):
        """The ``which`` ("train", "valid" or "test") data set: items are dicts of tensors and an
        ``id``."""
        raise NotImplementedError

    def collate(self, items: list[dict]) -> dict:
        """Batch items (default: equal-length ``mixture``/``sources`` stacking)."""
        return default_collate(items)

    def frozen(self, model: nn.Module) -> tuple[str, ...]:
        """Names of submodules of ``model`` that do not train: the trainer turns their gradients
        off, keeps them in eval mode, leaves them out of the optimizer and out of checkpoints
        (``build_model`` loads them itself)."""
        return ()

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups (default: one group of every trainable parameter). A group
        may set its own ``lr`` or ``weight_decay``."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        """(scalar loss, logs of floats) for one batch already on the model's device."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset, progress: bool = False, max_items: int | None = None) -> list[dict]:
        """One row per item: ``id`` and the task's metrics."""
        raise NotImplementedError

    def validate(self, model: nn.Module, dataset) -> dict:
        """Summary of the validation set (means of :meth:`evaluate`'s metrics, at most
        ``train.max_valid_items`` items); must contain :attr:`monitor`."""
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items)
        return {k: v[0] for k, v in summarize(rows).items()}

    def infer(self, model: nn.Module, waveform: torch.Tensor, sample_rate: int, **options) -> dict:
        """What ``sepkit separate`` writes for one mono recording ``waveform`` (T,) at
        ``sample_rate`` Hz: ``{name: waveform (T,)}`` at the same rate, written as
        ``<stem>_<name>.wav``. ``options`` are the command's flags the user set; one the task does
        not support raises ValueError."""
        raise NotImplementedError

    def infer_chunk(self, model: nn.Module, piece: torch.Tensor, sample_rate: int, **options) -> torch.Tensor:
        """A :attr:`chunked` task's inference of one chunk ``piece`` (L,) at ``sample_rate`` with
        :meth:`infer`'s ``options``: its outputs (len(output_names()), L) at that rate, on the
        CPU; the chunks are joined by :class:`~sepkit.train.inference.ChunkJoiner` (outputs
        aligned across chunks, cross-faded on the overlap)."""
        raise NotImplementedError

    def infer_in_chunks(self, options: dict) -> bool:
        """Whether :meth:`infer` with ``options`` goes chunk by chunk through :meth:`infer_chunk`
        (then a file is read and written block by block, memory bounded by the chunk): the
        class's :attr:`chunked` unless an option needs the whole recording at once."""
        return self.chunked

    @torch.no_grad()
    def infer_chunks(self, model: nn.Module, waveform: torch.Tensor, sample_rate: int, chunk: float = 8.0,
                     overlap: float = 1.0, **options) -> torch.Tensor:
        """The outputs (len(output_names()), T) of ``waveform`` (T,) at ``sample_rate``: chunks of
        ``chunk`` seconds overlapping by ``overlap`` seconds at that rate, each through
        :meth:`infer_chunk`, joined by :func:`~sepkit.train.inference.join_chunks` (the same
        chunks ``sepkit separate`` reads from a file)."""
        from ..inference import join_chunks

        self.note_rate(sample_rate)
        model.eval()
        parts = join_chunks(lambda piece: self.infer_chunk(model, piece, sample_rate, **options),
                            lambda s, n: waveform[s:s + n], waveform.shape[-1], int(chunk * sample_rate),
                            int(overlap * sample_rate))
        return torch.cat(list(parts), dim=1)

    def output_names(self) -> list[str]:
        """Names of :meth:`infer`'s outputs (so the command can refuse to overwrite first)."""
        return [f"s{k + 1}" for k in range(self.cfg.data.n_src)]

    # -- the demo's example (``sepkit demo``) --------------------------------------------
    @torch.no_grad()
    def example(self, model: nn.Module, item: dict) -> dict:
        """What the model makes of one held-out test ``item``, for ``sepkit demo``'s report.

        Returns ``{name: value}``: every 1-D float tensor (T,) is a waveform at the model's rate
        (``data.sample_rate``), written as ``example/<name>.wav``; other values (e.g. an
        embedding matrix) are data for :meth:`plot_example` only. The default: the item's
        ``mixture`` as ``"input"`` and each output of :meth:`infer` under its name (the input
        alone when :meth:`output_names` is empty); ``{}`` for items without a mixture. A task
        whose inference needs options the demo cannot choose raises ValueError (the demo then
        reports without an example)."""
        mixture = item.get("mixture")
        if not isinstance(mixture, torch.Tensor) or mixture.dim() != 1:
            return {}
        mixture = mixture.float()
        if not self.output_names():  # a task without audio outputs (embeddings, a frontend)
            return {"input": mixture}
        outputs = self.infer(model, mixture, self.sample_rate)
        return {"input": mixture, **{name: wave.float().cpu() for name, wave in outputs.items()}}

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """Draw the task's panel of ``example`` (from :meth:`example`, plus ``"history"``: the
        run's curves, ``{(split, name): (steps, values)}``) into the matplotlib figure or
        subfigure ``fig``; ``sample_rate`` in Hz. Returns whether a panel was drawn: the base
        draws nothing (False), and ``sepkit demo``'s picture then shows the curves alone.
        :mod:`sepkit.train.report` has the drawing helpers (:func:`~sepkit.train.report.plot_signals`)."""
        return False

    def check_options(self, model: nn.Module, options: dict) -> None:
        """Validate :meth:`infer`'s options before any work (ValueError naming the flag): by
        default, only :attr:`infer_options` are allowed. Overrides check values too (e.g. a
        target slot against the model's slot count)."""
        bad = sorted(k for k, v in options.items() if v is not None and k not in self.infer_options)
        if bad:
            flags = lambda names: ", ".join("--" + n.replace("_", "-") for n in names)  # noqa: E731
            raise InputError(f"{flags(bad)} not supported by the {self.name} task; it supports "
                             f"{flags(self.infer_options) or 'no such options'}")

    # -- helpers for subclasses ----------------------------------------------------------
    def to_model_rate(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """``waveform`` (..., T) resampled from ``sample_rate`` to the model's rate, with a
        one-line notice on stderr when the rates differ (:meth:`note_rate`)."""
        self.note_rate(sample_rate)
        return resample(waveform, int(sample_rate), self.sample_rate)

    def note_rate(self, sample_rate: int) -> None:
        """The one-line notice on stderr that audio at ``sample_rate`` is resampled to the model's
        rate and back (nothing when the rates agree)."""
        if int(sample_rate) != self.sample_rate:
            print(f"sepkit: resampling {sample_rate} Hz -> {self.sample_rate} Hz (the model's rate); "
                  "outputs are resampled back", file=sys.stderr)

    @staticmethod
    def model_device(model: nn.Module) -> torch.device:
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


