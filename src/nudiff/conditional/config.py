"""A conditional model's config section: ``conditional``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConditionalConfig(_Strict):
    """Conditional generation (see :mod:`nudiff.conditional`): ``task`` builds ``y`` from each
    training image on the fly (``coverage``: missing fraction for inpainting); ``estimator``:
    ``cde`` (y clean), ``cdiffe`` (y diffuses with x), ``cmde`` (y slower, down to log-SNR
    ``y_log_snr_min`` at t = 1), ``vs-cmde`` (cmde with y's speed annealed from x's over
    ``anneal_steps`` training steps)."""

    task: Literal["sr2", "sr4", "inpaint-center", "inpaint-boxes", "colorization"] = "sr2"
    estimator: Literal["cde", "cdiffe", "cmde", "vs-cmde"] = "cde"
    coverage: float = Field(0.25, gt=0, lt=1)
    y_log_snr_min: float = -1.0
    anneal_steps: int = Field(0, ge=0)
