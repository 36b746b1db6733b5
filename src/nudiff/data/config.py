"""``DataConfig``: which images to train on, validated early with one-line errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NEEDS_PATH = ("npz", "folder", "torchvision", "huggingface")


class DataConfig(BaseModel):
    """Data source and preprocessing; ``nudiff.data.build_dataset`` turns it into a dataset.

    Sources (``name``):
        shapes: procedural coloured shapes (``size``, ``seed``, ``min_shapes`` to
            ``max_shapes`` per image); the default, needs no files.
        fields: procedural Gaussian random fields with power spectrum ``~ 1/f**exponent``.
        panorama: procedural mountain panoramas (``layers`` ridge silhouettes against a sky,
            ridge lines with power spectrum ``~ 1/f**exponent``), stationary along the width:
            the data for column-wise generation and extension. ``width`` (default:
            ``resolution``) makes wider strips whose first ``resolution`` columns are the
            square images, e.g. held-out strips with their true continuation
            (``nudiff data export ... --set data.width=128``).
        toy: the 1-D toys of Beta diffusion (``key``: ``toy1``, the default, or ``toy2``) as
            ``(1, 1, 1)`` images: ``resolution: 1``, ``channels: 1``.
        npz: uint8 images from ``path``, array ``key`` (default ``x_train``); ``resize`` says
            how to reach ``resolution`` ("pad": centre on a background of -1, e.g. MNIST
            28 -> 32; "resize": centre-crop and bicubic resize).
        folder: image files under ``path``, centre-cropped and resized.
        torchvision: ``torchvision.datasets.<key>`` stored (or downloaded) in ``path``.
        huggingface: ``datasets.load_dataset(path)``, image column ``key`` (default: the first).

    Every source yields ``(channels, resolution, resolution)`` images (``panorama``:
    ``(channels, resolution, width)``) in ``[-1, 1]``, converting
    grey <-> RGB as needed (so MNIST wants ``channels: 1``). A relative ``path`` is relative to the
    current working directory; an ``npz`` file not found there is also looked for under
    ``$NUDIFF_DATA`` (so the packaged configs' ``mnist.npz`` can live in one data folder). The
    last ``holdout`` images form the validation split and are excluded from training;
    ``limit`` keeps only the first ``limit`` training images (a data-efficiency study; the
    holdout split is unchanged). ``hflip`` is not applied by the
    dataset: the trainer calls ``nudiff.data.random_hflip(batch, generator)`` so flips are
    reproducible from its seed.

    ``width`` is also the width of the images a model makes: training takes square images
    (null), and a square model sampled on an ``H x W`` canvas (``nudiff sample --resolution
    HxW``) has ``resolution: H`` and ``width: W`` in its config. Only ``panorama`` loads
    non-square data.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal[
        "shapes", "fields", "panorama", "npz", "folder", "torchvision", "huggingface", "toy"
    ] = "shapes"
    resolution: int = 32
    channels: int = 3
    size: int = 50_000
    seed: int = 0
    path: str | None = None
    key: str | None = None
    resize: Literal["pad", "resize"] = "pad"
    hflip: bool = False
    holdout: int = 0
    limit: int | None = Field(
        None, ge=1, description="train on the first `limit` images of the training split only"
    )
    exponent: float = 2.0
    layers: int = Field(
        3, ge=1, le=8, description="`panorama`: ridge silhouettes per image, far to near"
    )
    width: int | None = Field(
        None,
        ge=1,
        description="image width in pixels (null: `resolution`, square images); `panorama` "
        "renders strips this wide, which continue the square images; the other sources are "
        "square (a model sampled on an H x W canvas says its width here)",
    )
    min_shapes: int = Field(1, ge=1)
    max_shapes: int = Field(3, ge=1)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int, info) -> int:
        if info.data.get("name") == "toy":
            if v != 1:
                raise ValueError(f"data.resolution must be 1 for the 1-D toy data, got {v}")
            return v
        if v < 4:
            raise ValueError(f"data.resolution must be >= 4, got {v}")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int) -> int:
        if v not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grey) or 3 (RGB), got {v}")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"data.size must be >= 1, got {v}")
        return v

    @field_validator("seed", "holdout")
    @classmethod
    def _non_negative(cls, v: int, info) -> int:
        if v < 0:
            raise ValueError(f"data.{info.field_name} must be >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if self.name in _NEEDS_PATH and not self.path:
            raise ValueError(f"data.path is required for data.name={self.name!r}")
        if self.name == "torchvision" and not self.key:
            raise ValueError("data.key must name the torchvision dataset class, e.g. 'CIFAR10'")
        if self.min_shapes > self.max_shapes:
            raise ValueError(
                f"data.min_shapes ({self.min_shapes}) must not exceed data.max_shapes "
                f"({self.max_shapes})"
            )
        if self.name == "toy":
            from nudiff.data.toy import TOYS

            if self.key not in (None, *TOYS) or self.channels != 1:
                raise ValueError(
                    f"data.name=toy takes data.key in {list(TOYS)} and data.channels: 1, got "
                    f"key={self.key!r}, channels={self.channels}"
                )
        if self.name in ("shapes", "fields", "panorama", "toy") and self.holdout >= self.size:
            raise ValueError(
                f"data.holdout ({self.holdout}) must be smaller than data.size ({self.size})"
            )
        return self

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the images: ``resolution`` high, ``width`` (null:
        ``resolution``) wide."""
        return (self.channels, self.resolution, self.width or self.resolution)
