"""The ``train`` section of the config: optimiser, EMA, schedule of logs/checkpoints/samples."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PatchConfig(BaseModel):
    """Patch Diffusion training (:mod:`nudiff.patch`): each step one patch ``size`` from
    ``sizes`` (pixels, e.g. ``[R/4, R/2, R]``), every image cropped at its own random aligned
    position with its coordinates on the full canvas. ``schedule``: ``fixed`` draws the sizes
    with ``probs`` (null: equal) all along; ``progressive`` moves from the first size to the last
    over ``ramp_steps`` steps (a curriculum: at a fraction ``f`` of the ramp, the two sizes
    around position ``f (K - 1)`` of the ``K`` sizes share the draws), then stays at the last.
    ``batch_multiplier``: a step at size ``p`` loads ``(R / p)^2`` (``area``: about the pixels of
    a full-image batch, Patch Diffusion's paper), ``R / p`` (``side``: its code) or 1 (``none``)
    times ``train.batch_size`` images."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[int] = Field(min_length=1)
    probs: list[float] | None = None
    schedule: Literal["fixed", "progressive"] = "fixed"
    ramp_steps: int | None = Field(None, gt=0)
    batch_multiplier: Literal["area", "side", "none"] = "area"

    @field_validator("batch_multiplier", mode="before")
    @classmethod
    def _multiplier(cls, v):
        return {True: "area", False: "none"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _check(self) -> PatchConfig:
        if any(p < 1 for p in self.sizes):
            raise ValueError(f"train.patch.sizes must be >= 1, got {self.sizes}")
        if self.probs is not None:
            if len(self.probs) != len(self.sizes):
                raise ValueError(
                    f"train.patch.probs needs one probability per size ({len(self.sizes)}), got "
                    f"{len(self.probs)}"
                )
            if any(q < 0 for q in self.probs) or not sum(self.probs) > 0:
                raise ValueError("train.patch.probs must be >= 0 and not all 0")
        if self.schedule == "progressive":
            if self.ramp_steps is None:
                raise ValueError("train.patch.schedule: progressive needs train.patch.ramp_steps")
            if self.probs is not None:
                raise ValueError("train.patch.probs applies to schedule: fixed only")
            if self.sizes != sorted(self.sizes):
                raise ValueError(
                    f"train.patch.schedule: progressive needs increasing sizes, got {self.sizes}"
                )
        elif self.ramp_steps is not None:
            raise ValueError("train.patch.ramp_steps applies to schedule: progressive only")
        return self


class TrainConfig(BaseModel):
    """Training hyper-parameters. ``batch_size`` is the global batch (all ranks, all
    micro-batches); it must be divisible by ``world_size * grad_accum`` (checked when the
    trainer starts, see :meth:`check_world`)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200_000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(1_000, ge=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="after the warm-up: constant, or cosine decay to 0 at train.steps",
    )
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables")
    ema_halflife_images: float = Field(500_000, gt=0)
    ema_warmup_ratio: float | None = Field(
        0.05, gt=0, description="EDM's ramp-up: half-life <= ratio * images seen; null disables"
    )
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimiser step")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = Field(0, ge=0)
    log_every: int = Field(100, gt=0)
    checkpoint_every: int = Field(5_000, gt=0)
    keep_checkpoints: int = Field(3, gt=0)
    sample_every: int = Field(5_000, ge=0, description="0 disables sample grids")
    sample_n: int = Field(64, gt=0)
    num_workers: int = Field(2, ge=0)
    max_minutes: float | None = Field(
        None, gt=0, description="wall-clock budget of one run; stops with a checkpoint"
    )
    tensorboard: bool = True
    init_from: str | None = Field(
        None,
        description="start from the weights (model and EMA) of this run folder or checkpoint, "
        "with a fresh optimiser at step 0: fine-tuning; the architecture must match",
    )
    patch: PatchConfig | None = Field(
        None, description="Patch Diffusion: train on random crops (see PatchConfig)"
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_false(cls, v):
        # YAML 1.1 reads a bare `no` (e.g. --set train.mixed_precision=no) as false
        return "no" if v is False else v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"both betas must lie in [0, 1), got {list(v)}")
        return v

    def check_world(self, world_size: int) -> None:
        """One-line ``ValueError`` unless the global batch splits evenly over ranks and
        micro-batches."""
        parts = world_size * self.grad_accum
        if self.batch_size % parts:
            raise ValueError(
                f"train.batch_size={self.batch_size} must be divisible by world_size * "
                f"train.grad_accum = {world_size} * {self.grad_accum} = {parts}"
            )
