"""Training, evaluation and inference for the separation recipes (configs, loop, checkpoints)."""
from .checkpoint import CheckpointError, load_weights, read_meta, resolve_checkpoint, save_checkpoint
from .config import ConfigError, RecipeConfig, load_recipe, resolve_recipe
from .evaluate import evaluate, summarize
from .inference import separate_waveform
from .trainer import train

__all__ = [
    "CheckpointError", "ConfigError", "RecipeConfig", "evaluate", "load_recipe", "load_weights", "read_meta",
    "resolve_checkpoint", "resolve_recipe", "save_checkpoint", "separate_waveform", "summarize", "train",
]
