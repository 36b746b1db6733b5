"""Distillation of trained nudiff models into fast generators (SiD: :mod:`nudiff.distill.sid`)."""

from nudiff.distill.sid import (
    OneStepGenerator,
    ReferenceTime,
    SiDGenerator,
    SiDLoss,
    SiDModel,
    TwoPassGuidance,
    sample_one_step,
    sid_generator_loss,
)

__all__ = [
    "OneStepGenerator",
    "ReferenceTime",
    "SiDGenerator",
    "SiDLoss",
    "SiDModel",
    "TwoPassGuidance",
    "sample_one_step",
    "sid_generator_loss",
]
