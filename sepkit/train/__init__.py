"""Training, evaluation and inference: one trainer, one task per kind of training.

The trainer (:func:`train`) owns the loop: deterministic batches from DataLoader workers
(:mod:`sepkit.data.loading`; a task's ``collate`` runs in the workers, and its ``evaluate``
reads items through :func:`sepkit.train.evaluate.items`, which uses them too), gradient accumulation,
autocast, an EMA of the weights, atomic checkpoints, bit-for-bit resume on a CPU, torchrun DDP,
CSV/TensorBoard logs. What a step computes belongs to the recipe's task
(``task: <name>`` in the recipe, default ``separation``; ``task_args`` are its options), a
subclass of :class:`~sepkit.train.tasks.Task` in ``sepkit/train/tasks/<name>.py``::

    class MyTask(Task):
        name = "mytask"
        monitor, monitor_mode = "si_sdr", "max"   # what the plateau scheduler and BEST follow
        Options = MyOptions                        # dataclass of task_args (strict keys)

        def build_model(self) -> nn.Module: ...
        def dataset(self, which) -> Dataset: ...   # "train", "valid", "test"; items: dicts
        def training_step(self, model, batch) -> (loss, logs): ...
        def validate(self, model, dataset) -> dict: ...      # must hold `monitor`
        def evaluate(self, model, dataset, progress=False, max_items=None) -> list[dict]: ...
        def infer(self, model, waveform, sample_rate, **options) -> {name: waveform}: ...
        def param_groups(self, model) -> list[dict]: ...     # optional: per-group lr
        def frozen(self, model) -> tuple[str, ...]: ...      # optional: frozen submodules
        def prerequisites(self) -> list[Prerequisite]: ... # optional: runs trained first

    TASK = MyTask

Built in: ``separation`` (:class:`SeparationTask`: separators, PIT SI-SDR, SI-SDR(i)/SDR(i))
and ``enhancement`` (:class:`EnhancementTask`: one clean source, SI-SDR(i), PESQ, ESTOI); the
method recipes add theirs. ``sepkit eval`` and ``sepkit separate`` rebuild any task's model from
a checkpoint alone (:func:`load_trained`).
"""
from .checkpoint import CheckpointError, load_weights, read_meta, resolve_checkpoint, save_checkpoint
from .compiling import compile_model
from .config import ConfigError, RecipeConfig, load_recipe, resolve_recipe
from .evaluate import evaluate, summarize
from .inference import separate_waveform
from .restore import load_trained, read_config
from .tasks import EnhancementTask, SeparationTask, Task, get_task, make_task
from .trainer import train

__all__ = [
    "CheckpointError", "ConfigError", "EnhancementTask", "RecipeConfig", "SeparationTask", "Task", "compile_model", "evaluate",
    "get_task", "load_recipe", "load_trained", "load_weights", "make_task", "read_config", "read_meta",
    "resolve_checkpoint", "resolve_recipe", "save_checkpoint", "separate_waveform", "summarize", "train",
]
