"""Training machinery for MMDiT models, driven by Hugging Face Accelerate (see docs/training.md)."""

from .checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from .config import ConfigError, TrainingConfig
from .data import LengthBucketSampler, MultiStreamCollator, StreamColumns, resolve_columns, row_seconds
from .ema import EMA
from .resume import CheckpointError
from .stages import Stage, apply_stage, trainable_parameters
from .trainer import Trainer, build_dataset, build_model, check_tracker, make_accelerator

__all__ = [
    "EMA",
    "CheckpointError",
    "ConfigError",
    "LengthBucketSampler",
    "MultiStreamCollator",
    "Stage",
    "StreamColumns",
    "Trainer",
    "TrainingConfig",
    "apply_stage",
    "build_dataset",
    "build_model",
    "check_tracker",
    "latest_checkpoint",
    "list_checkpoints",
    "make_accelerator",
    "resolve_columns",
    "row_seconds",
    "save_checkpoint",
    "trainable_parameters",
]
