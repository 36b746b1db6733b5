"""Conditional generation: tasks (degradations and consistency) and restoration metrics."""

from nudiff.conditional.metrics import diversity, psnr, restoration_metrics, ssim
from nudiff.conditional.tasks import (
    Colorization,
    Inpainting,
    SuperResolution,
    Task,
    build_task,
)

__all__ = [
    "Colorization",
    "Inpainting",
    "SuperResolution",
    "Task",
    "build_task",
    "diversity",
    "psnr",
    "restoration_metrics",
    "ssim",
]
