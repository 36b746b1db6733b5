"""A SiD distillation's config section: ``distill``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiDConfig(_Strict):
    """SiD distillation of a teacher run into a one- or few-step generator
    (:mod:`nudiff.distill.sid`); written by ``nudiff distill sid``. ``teacher``: the teacher's
    checkpoint folder. ``init_log_snr``: the generator's input level as a mean log-SNR (SiD's
    sigma_init = 2.5: ``-2 log 2.5``); ``steps``: the generator's steps ``k``, at mean log-SNRs
    evenly spaced from ``init_log_snr`` to ``last_log_snr``; ``alpha``, ``scale``: the generator
    loss's; ``t_max``, ``sigma_min``, ``sigma_max``, ``rho``: its noise levels (SiD's rho-7
    scale); ``guidance``: classifier-free guidance of a class-conditional teacher in the
    generator loss; ``guidance_fake``: of the fake score in its training, and
    ``guidance_fake_eval`` (null: ``guidance_fake``) of its estimate in the generator loss
    (SiD-LSG's long and short guidance)."""

    method: Literal["sid"] = "sid"
    teacher: str
    alpha: float = Field(1.2, gt=0)
    scale: float = Field(100.0, gt=0)
    init_log_snr: float = -1.8325814637483102  # -2 log 2.5
    steps: int = Field(1, ge=1)
    last_log_snr: float = 3.0
    t_max: float = Field(0.8, gt=0, le=1)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0)
    guidance: float = Field(1.0, ge=0)
    guidance_fake: float = Field(1.0, ge=0)
    guidance_fake_eval: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _levels(self):
        if self.steps > 1 and not self.last_log_snr > self.init_log_snr:
            raise ValueError(
                f"distill.last_log_snr ({self.last_log_snr}) must be above distill.init_log_snr "
                f"({self.init_log_snr}) for a generator of {self.steps} steps: its steps go from "
                "the noisiest level to the least noisy"
            )
        return self

    @property
    def fake_eval_guidance(self) -> float:
        """The fake score's guidance in the generator loss (``guidance_fake_eval``, or
        ``guidance_fake`` when null)."""
        g = self.guidance_fake_eval
        return self.guidance_fake if g is None else g

    def step_log_snrs(self) -> list[float]:
        """The mean log-SNRs of the generator's ``steps`` steps, noisiest first: evenly spaced
        from ``init_log_snr`` to ``last_log_snr`` (both included; one step: ``init_log_snr``)."""
        k, lo, hi = self.steps, self.init_log_snr, self.last_log_snr
        if k == 1:
            return [lo]
        return [lo + (hi - lo) * i / (k - 1) for i in range(k)]
