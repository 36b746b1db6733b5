"""A Neural Diffusion Model's config sections: ``process.transform`` and ``loss.ndm``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransformConfig(_Strict):
    """A Neural Diffusion Model's transform (:mod:`nudiff.ndm`): ``z_t = alpha(t) F(u, t) +
    sigma(t) eps`` per whitened component. ``identity``: ``F = u`` (the linear process, trained
    on the same NDM bound: the fixed-transform baseline); ``learned``: ``F(u, t) = u + t N(u,
    t)`` with ``N`` a ``backbone`` network (null: ``model.backbone``; unet, dit or mlp,
    configured by its ``model`` section) of base width ``width`` (null: that section's),
    conditioned on ``t``."""

    type: Literal["identity", "learned"] = "learned"
    backbone: Literal["unet", "dit", "mlp"] | None = None
    width: int | None = Field(None, ge=1)


class NDMLossConfig(_Strict):
    """The NDM objective (with ``process.transform``): ``bound`` ``continuous`` (``t`` drawn
    in the importance density of the ELBO evaluator, dF/dt by JVP) or ``discrete`` (the
    ``steps``-step bound). ``dequantize``: train on 8-bit images dequantised uniformly as the
    likelihood evaluation sees them (``(k + U) / 128 - 1``), not on the levels themselves."""

    bound: Literal["continuous", "discrete"] = "continuous"
    steps: int = Field(1000, ge=1)
    dequantize: bool = False
