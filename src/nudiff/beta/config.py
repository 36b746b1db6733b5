"""Beta diffusion's config sections: ``process.beta`` and ``loss.beta``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BetaProcessConfig(_Strict):
    """Beta diffusion's process (:class:`nudiff.beta.process.BetaProcess`): data mapped to
    ``x0 = shift + scale (x + 1) / 2`` inside (0, 1), concentration ``eta``, ``logit alpha_t``
    from ``logit_alpha_max`` at t = 0 to ``logit_alpha_min`` at t = 1 (as ``t^power``)."""

    eta: float = Field(10_000.0, gt=0)
    scale: float = Field(0.39, gt=0, lt=1)
    shift: float = Field(0.60, gt=0, lt=1)
    logit_alpha_max: float = 10.0
    logit_alpha_min: float = -13.0
    power: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> BetaProcessConfig:
        if self.shift + self.scale >= 1:
            raise ValueError(
                f"needs shift + scale < 1 (x0 inside (0, 1)), got {self.shift} + {self.scale}"
            )
        if self.logit_alpha_min >= self.logit_alpha_max:
            raise ValueError("needs logit_alpha_min < logit_alpha_max")
        return self


class BetaLossConfig(_Strict):
    """Beta diffusion's objective: ``type`` ``klub`` (KL upper bounds) or ``elbo`` (the same
    KLs with swapped arguments), ``w_cond`` x the conditional KL at ``s = s_ratio t`` plus
    ``w_marg`` x the marginal KL, ``t`` uniform in ``[t_min, 1]``."""

    type: Literal["klub", "elbo"] = "klub"
    w_cond: float = Field(0.99, ge=0)
    w_marg: float = Field(0.01, ge=0)
    s_ratio: float = Field(0.95, gt=0, lt=1)
    t_min: float = Field(1e-5, ge=0, lt=1)
