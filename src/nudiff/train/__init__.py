"""The generic training engine: :class:`Trainer`, its config, EMA, checkpoints, logs, DDP."""

from nudiff.train.checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from nudiff.train.config import TrainConfig
from nudiff.train.ema import EMA
from nudiff.train.protocols import Augment, Loss, SampleFn
from nudiff.train.trainer import Trainer

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
