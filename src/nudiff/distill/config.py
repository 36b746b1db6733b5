"""A SiD distillation's config section: ``distill``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiDConfig(_Strict):
    """SiD distillation of a teacher run into a one-step generator (:mod:`nudiff.distill.sid`);
    written by ``nudiff distill sid``. ``teacher``: the teacher's checkpoint folder.
    ``init_log_snr``: the generator's input level as a mean log-SNR (SiD's sigma_init = 2.5:
    ``-2 log 2.5``); ``alpha``, ``scale``: the generator loss's; ``t_max``, ``sigma_min``,
    ``sigma_max``, ``rho``: its noise levels (SiD's rho-7 scale); ``guidance``: classifier-free
    guidance of a class-conditional teacher in the generator loss."""

    method: Literal["sid"] = "sid"
    teacher: str
    alpha: float = Field(1.2, gt=0)
    scale: float = Field(100.0, gt=0)
    init_log_snr: float = -1.8325814637483102  # -2 log 2.5
    t_max: float = Field(0.8, gt=0, le=1)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0)
    guidance: float = Field(1.0, ge=0)
