"""The Python front door: train a config, load a run, sample it, save what it drew.

::

    import nudiff

    run = nudiff.load("runs/quickstart")                  # device="auto", EMA weights
    images = run.sample(16, sampler="dpmpp-2m", steps=20, seed=0)   # (16, C, H, W) in [-1, 1]
    run.save_grid(images, "grid.png")
    pictures = nudiff.to_pil(images)                       # a list of PIL images

    run = nudiff.train("quickstart", "runs/qs", overrides=["train.steps=200"])

Everything a run's config says (sampler, steps, guidance, brick skipping, ...) is the default
of :meth:`Run.sample`; the arguments given replace it. The lower-level functions behind it are
:func:`nudiff.run.sample_model` and :func:`nudiff.samplers.sample`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from nudiff.config import Config
from nudiff.devices import resolve_device


class Run:
    """A trained run, loaded: its ``config``, its ``model`` (the denoiser, or a distilled
    generator) on ``device``, and the ``path`` it came from. Build it with :func:`load`."""

    def __init__(self, path: Path, config: Config, model, device: torch.device):
        self.path, self.config, self.model, self.device = path, config, model, device
        self.summary: dict | None = None  # training summary, set by :func:`train`

    @property
    def process(self):
        """The diffusion process the model was trained on."""
        return self.model.process

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.config.data.image_shape))
        return f"Run({str(self.path)!r}, {shape}, device={self.device})"

    def sample(
        self,
        n: int,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int = 0,
        labels: int | Sequence[int] | torch.Tensor | None = None,
        guidance: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        batch_size: int = 256,
        progress: bool = False,
        **settings,
    ) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in ``[-1, 1]`` on the CPU.

        ``sampler`` and ``steps`` default to the run config's; ``labels``: a class for all
        samples or one per sample (class-conditional runs; default the classes in turn), with
        classifier-free ``guidance`` in ``guidance_interval``. Sample ``k`` depends only on
        ``(seed, k)``, never on ``batch_size``. ``settings``: the other keywords of
        :func:`nudiff.run.sample_model` (``grid``, ``budgets``, ``options``, ``skip``)."""
        from nudiff.run import grid_folder, sample_model

        settings.setdefault("grid_cache", grid_folder(self.path))
        if isinstance(labels, int):
            labels = torch.full((n,), labels)
        elif labels is None and self.num_classes and self.config.distill is None:
            labels = torch.arange(n) % self.num_classes
        result = sample_model(
            self.config,
            self.model,
            n,
            sampler=sampler,
            steps=steps,
            seed=seed,
            device=self.device,
            progress=progress,
            batch_size=batch_size,
            labels=labels,
            guidance=guidance,
            guidance_interval=guidance_interval,
            **settings,
        )
        return result.images.clamp(-1, 1).cpu()

    def restore(
        self, condition: torch.Tensor, per_input: int = 1, *, seed: int = 0, **settings
    ) -> torch.Tensor:
        """Conditional runs: ``per_input`` samples ``(B * per_input, C, H, W)`` for each
        condition in ``condition`` ``(B, *y_shape)`` (e.g. the low-resolution images of a
        super-resolution run), the samples of input ``b`` at rows ``b * per_input, ...``."""
        from nudiff.families.gaussian import sample_settings
        from nudiff.run import sample_conditional

        if self.config.conditional is None:
            raise ValueError(f"{self.path} is not a conditional run: use sample()")
        merged = {**sample_settings(self.config), **settings}
        out = sample_conditional(self.model, condition, per_input, seed=seed, **merged)
        return out.images.clamp(-1, 1).cpu()

    def save_grid(self, images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None):
        """:func:`save_grid`."""
        return save_grid(images, path, nrow=nrow)


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = "auto",
    *,
    ema: bool = True,
    resolution: int | tuple[int, int] | None = None,
    overrides: list[str] | None = None,
) -> Run:
    """A run folder (its newest checkpoint) or a checkpoint folder, on ``device`` (``auto``:
    CUDA, then MPS, then the CPU; the command line's rule). ``ema``: the EMA weights;
    ``resolution``: rebuild a pixel-space model for another image size, ``N`` (``N`` x ``N``)
    or ``(H, W)`` (an ``H`` x ``W`` canvas, e.g. ``(32, 128)`` for panoramas; see
    :func:`nudiff.run.at_resolution`), whose :meth:`Run.sample` then draws images of that size;
    ``overrides``: ``KEY=VALUE`` items applied to the run's config first."""
    from nudiff.run import load_run

    device = resolve_device(device)
    cfg, model = load_run(path, ema=ema, device=device, resolution=resolution, overrides=overrides)
    return Run(Path(path), cfg, model, device)


def train(
    config: str | os.PathLike | Config,
    out: str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    device: str | torch.device | None = "auto",
) -> Run:
    """Train ``config`` (a YAML file, a packaged config's name such as ``"quickstart"``, or a
    :class:`~nudiff.config.Config`) with ``overrides`` into the run folder ``out``; returns the
    trained run loaded on ``device``, its training summary in ``run.summary``."""
    from nudiff.config import load_config, validate
    from nudiff.run import train as train_run

    if isinstance(config, Config):
        if overrides:
            from nudiff.config import parse_overrides, set_key

            tree = config.model_dump(mode="json", by_alias=True)
            for key, value in parse_overrides(overrides):
                set_key(tree, key, value)
            config = validate(tree)
    else:
        config = load_config(config, overrides)
    device = resolve_device(device)
    summary = train_run(config, out, resume=resume, device=device)
    run = load(out, device)
    run.summary = summary
    return run


def to_pil(images: torch.Tensor) -> list:
    """Images ``(B, C, H, W)`` in ``[-1, 1]`` (1 or 3 channels) as a list of PIL images (mode
    ``L`` or ``RGB``), rounded to uint8 exactly as the PNG grids and ``.npz`` files are."""
    from PIL import Image

    from nudiff.data import to_uint8

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    arrays = to_uint8(images)
    if arrays.shape[-1] == 1:
        arrays = arrays[..., 0]
    return [Image.fromarray(a) for a in arrays]


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Images ``(B, C, H, W)`` in ``[-1, 1]`` as one PNG grid (``nrow`` per row; small images
    enlarged to at least 64 pixels, pixels kept sharp); written atomically, returns the path."""
    from nudiff.data import save_image_grid

    return save_image_grid(images.clamp(-1, 1), path, nrow=nrow, min_size=64)


def save_npz(images: torch.Tensor, path: str | os.PathLike) -> Path:
    """Images ``(B, C, H, W)`` in ``[-1, 1]`` as uint8 ``x_train`` ``(B, H, W, C)`` in an
    ``.npz`` (the layout ``nudiff eval fd --samples`` and the data loaders read)."""
    import numpy as np

    from nudiff.data import to_uint8

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, x_train=to_uint8(images))
    os.replace(tmp, path)  # readers never see a half-written file
    return path
