"""The generic training engine: :class:`Trainer`, its config, EMA, checkpoints, logs, DDP."""

from nudiff.training.checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from nudiff.training.config import TrainConfig
from nudiff.training.ema import EMA
from nudiff.training.protocols import Augment, Loss, SampleFn
from nudiff.training.trainer import Trainer

__all__ = [
    "EMA",
    "Augment",
    "CheckpointError",
    "Loss",
    "SampleFn",
    "TrainConfig",
    "Trainer",
    "latest_valid_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
]
