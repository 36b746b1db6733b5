"""Run folders: train a config into one, load a run, sample from it.

Every step asks the config's family (:mod:`nudiff.families`) for what is its own (building,
loading, sampling); what is common (run folders, checkpoints, batching, several processes, the
settings a command gives) lives here."""

from __future__ import annotations

from pathlib import Path

import torch

from nudiff.config import Config, dump_config, parse_yaml, validate
from nudiff.families import family_name, family_of
from nudiff.samplers import SAMPLERS, BrickSkip, SampleResult, sample, sampler_options


def train(cfg: Config, run_dir: str | Path, resume: bool = False, device=None) -> dict:
    """Train ``cfg`` into ``run_dir`` (see :class:`nudiff.training.trainer.Trainer`) on
    ``device`` (None: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU). Whether the
    folder can take the run (no checkpoints, or resumable ones of the same model) is checked
    before anything is written: a refused run leaves the folder as it was."""
    from nudiff.plots import plot_schedule
    from nudiff.training import distributed
    from nudiff.training.trainer import Trainer

    run_dir = Path(run_dir)
    if cfg.data.width not in (None, cfg.data.resolution):
        from nudiff.config import ConfigError

        raise ConfigError(
            f"training takes square images: data.width must be null, got {cfg.data.width} "
            "(sample a trained model on an H x W canvas with nudiff sample --resolution HxW)"
        )
    parts = family_of(cfg).training_parts(cfg)
    check_run_folder(run_dir, cfg, parts["model"], resume)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        schedule = parts.get("schedule")
        if schedule is not None and (not resume or not (run_dir / "schedule.png").exists()):
            plot_schedule(*schedule, run_dir / "schedule.png")
    trainer = Trainer(
        parts["model"],
        parts["loss"],
        parts["dataset"],
        cfg.train,
        run_dir,
        sample_fn=parts["sample_fn"],
        augment=parts.get("augment"),
        device=device,
        resolved_config=cfg.model_dump(mode="json", by_alias=True),
    )
    return trainer.fit(resume=resume)


def check_run_folder(run_dir: Path, cfg: Config, model, resume: bool) -> None:
    """Refuse, before writing anything, a run folder whose checkpoints this run cannot use:
    checkpoints without ``resume``, or a checkpoint of another family or of a model whose
    weights do not fit ``model`` (another backbone, width, basis, ...)."""
    from nudiff.training.checkpoint import latest_valid_checkpoint, list_checkpoints, load_weights

    if not list_checkpoints(run_dir):
        return
    if not resume:
        raise ValueError(
            f"{run_dir / 'checkpoints'} already holds checkpoints; resume, or train into a new "
            "folder"
        )
    ckpt = latest_valid_checkpoint(run_dir)
    if ckpt is None:
        return  # the trainer starts from scratch, with a note
    saved = validate(parse_yaml((ckpt / "config.yaml").read_text(), str(ckpt / "config.yaml")))
    if family_name(saved) != family_name(cfg):
        raise ValueError(
            f"cannot resume {run_dir}: it holds a {family_of(saved).key} run, this config is "
            f"{family_of(cfg).key}; train into a new folder"
        )
    state, mine = load_weights(ckpt, ema=False), model.state_dict()
    missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
    shapes = sorted(k for k in set(mine) & set(state) if state[k].shape != mine[k].shape)
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise ValueError(
            f"cannot resume {run_dir}: its checkpoint does not fit this config's model "
            f"({len(missing)} missing, {len(extra)} unexpected, {len(shapes)} resized weights, "
            f"e.g. {first}); train into a new folder"
        )


def load_run(
    path: str | Path,
    ema: bool = True,
    device="auto",
    resolution: int | tuple[int, int] | None = None,
    overrides: list[str] | None = None,
) -> tuple[Config, torch.nn.Module]:
    """Config and model (EMA weights by default: the denoiser, or a distilled run's
    generator) from a run folder or checkpoint folder, on ``device`` (``auto``: CUDA, then
    MPS, then the CPU; see :func:`nudiff.devices.resolve_device`).

    ``resolution``: rebuild the model for another image size, ``N`` (``N`` x ``N``) or
    ``(H, W)`` (see :func:`at_resolution`); the returned config says the new size
    (``data.resolution: H``, ``data.width: W``). ``overrides``:
    ``--set`` items applied to the run's config before the model is built (e.g.
    ``process.schedule.softness=0.7`` for a model trained over a softness range; the config's
    checks apply, and weights that do not fit the changed model are an error)."""
    from nudiff.config import parse_overrides, set_key
    from nudiff.devices import resolve_device
    from nudiff.training.checkpoint import load_weights, resolve_checkpoint

    device = resolve_device(device)
    ckpt = resolve_checkpoint(path)
    path = ckpt / "config.yaml"
    tree = parse_yaml(path.read_text(), str(path)) or {}
    for key, value in parse_overrides(overrides):
        set_key(tree, key, value)
    cfg = validate(tree)
    state = load_weights(ckpt, ema=ema)
    if resolution is not None and canvas_size(resolution) != cfg.data.image_shape[1:]:
        from nudiff.families.features import require

        require(cfg, "resolution")
        cfg, state = at_resolution(cfg, state, resolution)
    return cfg, family_of(cfg).load(cfg, state, device)


def canvas_size(resolution) -> tuple[int, int]:
    """``(height, width)`` of an image size given as ``N`` (``N`` x ``N``) or ``(H, W)``."""
    from numbers import Integral

    pair = isinstance(resolution, tuple | list)
    size = tuple(resolution) if pair else (resolution, resolution)
    if len(size) != 2 or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in size):
        raise ValueError(f"an image size is N or (H, W) in pixels, got {resolution!r}")
    if min(size) < 1:
        raise ValueError(f"an image size must be positive, got {resolution!r}")
    return int(size[0]), int(size[1])


def at_resolution(
    cfg: Config, state: dict, resolution: int | tuple[int, int]
) -> tuple[Config, dict]:
    """The config and weights of a pixel-space model moved to ``resolution``: ``N`` for
    ``N`` x ``N`` images or ``(H, W)`` for an ``H`` x ``W`` canvas (config ``data.resolution:
    H``, ``data.width: W``; null when square).

    Its network must run at any size (convolutions, or transformers whose positions are computed
    for the input: DiT, LEGO): the UNet needs ``H`` and ``W`` divisible by its downsampling
    factor, DiT by its patch; DiT's sin-cos positions extend to the larger token grid. Its
    per-pixel tensors (data mean and std, prior moments) are resized bilinearly, which keeps
    the per-channel constants that they mostly are. LEGO keeps its trained region sizes in
    pixels, so its bricks tile the larger canvas (the coordinate channels tell each region where
    it is): every region must divide ``H`` and ``W``. Bases other than ``identity`` have
    per-component statistics that do not carry over between sizes."""
    import torch.nn.functional as F

    from nudiff.config import ConfigError

    height, width = canvas_size(resolution)
    if cfg.process.basis.type != "identity":
        raise ConfigError(
            f"--resolution needs process.basis.type: identity (pixels), got "
            f"{cfg.process.basis.type!r}: per-component statistics of that basis do not carry "
            "over to another size"
        )
    if cfg.model.multiscale is not None or cfg.conditional is not None:
        raise ConfigError("--resolution does not apply to multi-scale or conditional models")
    if cfg.process.prior.type != "white":
        raise ConfigError("--resolution needs process.prior.type: white")
    if cfg.model.backbone == "mlp":
        raise ConfigError("--resolution needs a backbone that runs at any size: not the mlp")
    from nudiff.models.config import lego_bricks

    old = cfg.data.image_shape[1:]
    tree = cfg.model_dump(mode="json", by_alias=True)
    tree["data"].update(resolution=height, width=None if width == height else width)
    if cfg.model.backbone == "lego":  # the trained regions, in pixels, tile the new canvas
        bricks = lego_bricks(cfg.model.lego, *old)
        tree["model"]["lego"]["bricks"] = [list(b) for b in bricks]
    new_cfg = validate(tree)  # says which backbone setting the new size breaks
    moved, pixels = {}, (cfg.data.channels, *old)
    for key, value in state.items():
        if tuple(value.shape) == pixels:  # per pixel; no network weight is (C, H, W)
            grid = F.interpolate(value[None].float(), size=(height, width), mode="bilinear")
            value = grid[0].to(value.dtype)
        moved[key] = value
    return new_cfg, moved


def sample_run(
    path: str | Path,
    n: int,
    ema: bool = True,
    device="auto",
    resolution: int | tuple[int, int] | None = None,
    overrides: list[str] | None = None,
    **settings,
) -> SampleResult:
    """Sample ``n`` images from a run (EMA weights by default); ``resolution``: another image
    size than trained, ``N`` or ``(H, W)`` (:func:`at_resolution`); ``overrides``: ``--set``
    items for the run's config (:func:`load_run`); ``settings``: the keywords of
    :func:`sample_model` (sampler, steps, seed, batch size, skip, labels, guidance, ...)."""
    cfg, model = load_run(path, ema=ema, device=device, resolution=resolution, overrides=overrides)
    settings.setdefault("grid_cache", grid_folder(path))
    return sample_model(cfg, model, n, **settings)


def grid_folder(path: str | Path) -> Path:
    """Where the run of ``path`` (a run or checkpoint folder) keeps its optimized time grids:
    ``RUN/grids``."""
    from nudiff.training.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    return (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt) / "grids"


def extend_run(
    path: str | Path,
    images: torch.Tensor,
    columns: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    stride: int | None = None,
    options: dict | None = None,
    seed: int = 0,
    ema: bool = True,
    device="auto",
    batch_size: int = 256,
    overrides: list[str] | None = None,
    progress: bool = False,
):
    """``images`` ``(N, C, H, W_in)`` in ``[-1, 1]`` extended by ``columns`` columns on the
    right by a column-wise run (:func:`nudiff.samplers.extension.extend_columns`; ``steps``:
    per unit time, default the config's ``sample.steps``; ``sampler`` and ``options`` default
    to the config's). Batches of ``batch_size`` give the same images as one."""
    from nudiff.samplers import SAMPLERS, STOCHASTIC, sampler_options
    from nudiff.samplers.extension import ExtensionResult, extend_columns

    cfg, model = load_run(path, ema=ema, device=device, overrides=overrides)
    if cfg.model.multiscale is not None or cfg.conditional is not None or cfg.model.num_classes:
        raise ValueError("column-wise extension takes an unconditional single-scale model")
    name = sampler or cfg.sample.sampler
    opts = dict(
        options if options is not None else cfg.sample.options if name == cfg.sample.sampler else {}
    )
    unknown = sorted(set(opts) - set(sampler_options(name)))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}")
    images = torch.as_tensor(images, dtype=torch.float32)
    parts = [
        extend_columns(
            model,
            model.process,
            images[i : i + batch_size],
            columns,
            sampler=SAMPLERS[name],
            steps=steps or cfg.sample.steps,
            stride=stride,
            seed=seed,
            start=i,
            stochastic=name in STOCHASTIC,
            options=opts,
            progress=progress,
        )
        for i in range(0, len(images), batch_size)
    ]
    return ExtensionResult(
        torch.cat([p.images for p in parts]).cpu(),
        parts[0].kept,
        parts[0].nfe,
        sum(p.seconds for p in parts),
    )


def sample_model(
    cfg: Config,
    model,
    n: int,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    device=None,
    progress: bool = False,
    batch_size: int = 256,
    grid: str | None = None,
    budgets: list[int] | None = None,
    options: dict | None = None,
    skip: BrickSkip | None = None,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
    grid_cache: str | Path | None = None,
) -> SampleResult:
    """Sample ``n`` images from a model loaded with :func:`load_run`, on ``device`` (default:
    the model's); batches of ``batch_size`` give the same images as one, and so does any number
    of torchrun processes (each draws its share; ``n`` must split evenly over them).

    Arguments left at None take the run config's ``sample`` section; the others replace it and
    go through the config's checks like the config itself (a value the config would refuse, or
    a setting the run's family does not support, is an error naming its ``sample.*`` key).
    ``options`` of another sampler than the config's replace the config's. ``skip``: LEGO
    brick skipping; ``labels`` ``(n,)``: classes of a class-conditional model, with
    classifier-free ``guidance`` (default: the config's ``sample.guidance``) in
    ``guidance_interval``. ``grid_cache``: where an ``optimized`` grid is kept (a run
    folder's ``grids/``), so that it is fitted once per run and sampler setting."""
    if cfg.conditional is not None:
        raise ValueError(
            "a conditional model samples from conditions: nudiff sample RUN --condition INPUT "
            "(in Python: nudiff.load(RUN).restore(y))"
        )
    cfg = with_sample_settings(
        cfg,
        sampler=sampler,
        steps=steps,
        grid=grid,
        budgets=budgets,
        options=options,
        skip=skip,
        guidance=guidance,
        guidance_interval=guidance_interval,
    )
    family = family_of(cfg)
    if device is None:  # where the model is
        device = next(iter([*model.parameters(), *model.buffers()])).device
    if labels is None:
        labels = family.default_labels(cfg, n)
    labels = _per_sample_labels(labels, n)
    if labels is not None and cfg.model.num_classes is None:
        raise ValueError("class labels need a class-conditional model (model.num_classes)")
    if cfg.sample.grid == "optimized":  # fitted once here (or read from the cache), not per batch
        from nudiff.samplers import time_grid

        s = cfg.sample
        args = (None, s.steps, "optimized", s.budgets, s.sampler, dict(s.options))
        time_grid(model, model.process, *args, cache_dir=grid_cache)
    return _in_batches(
        n,
        batch_size,
        lambda start, size: family.sample(
            cfg,
            model,
            size,
            seed=seed,
            start=start,
            device=device,
            labels=None if labels is None else labels[start : start + size],
            progress=progress,
        ),
    )


def with_sample_settings(cfg: Config, **given) -> Config:
    """``cfg`` with the sampling settings ``given`` (None: keep the config's) in its ``sample``
    section, validated as a whole: command-line values meet the config's own checks. A new
    sampler drops the old one's options; new ``steps`` drop the config's ``budgets``."""
    if all(v is None for v in given.values()):
        return cfg
    s = cfg.sample.model_dump(mode="json", by_alias=True)
    if given["sampler"] is not None and given["sampler"] != s["sampler"]:
        s.update(sampler=given["sampler"], options={})
    if given["steps"] is not None:
        s.update(steps=given["steps"], budgets=None)
    if given["skip"] is not None:
        s["skip"] = {"bricks": given["skip"].bricks, "from": given["skip"].start}
    if given["guidance_interval"] is not None:
        s["guidance_interval"] = list(given["guidance_interval"])
    for key in ("grid", "budgets", "options", "guidance"):
        if given[key] is not None:
            s[key] = given[key]
    if given["options"] is not None and s["sampler"] in SAMPLERS:  # named as --opt names them
        allowed = sampler_options(s["sampler"])
        unknown = sorted(set(given["options"]) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for sampler {s['sampler']!r}; it takes "
                f"{sorted(allowed)}"
            )
    tree = cfg.model_dump(mode="json", by_alias=True)
    tree["sample"] = s
    return validate(tree)


def _per_sample_labels(labels, n: int) -> torch.Tensor | None:
    """``labels`` as a long tensor ``(n,)`` (None stays None)."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"need one label per sample ({n}), got {labels.numel()}")
    return labels


def _in_batches(n: int, batch_size: int, draw) -> SampleResult:
    """``draw(start, size) -> SampleResult`` over consecutive batches of ``n`` samples,
    concatenated. Samplers seed each sample by ``(seed, start + i)``, so the result does not
    depend on ``batch_size``, nor on how many processes share the work: under torchrun each
    rank draws its contiguous share of the samples and all ranks get them all back, the same
    images as one process draws. NFE counts network evaluations per sample, the same for
    every batch."""
    from nudiff.training import distributed

    first, count = distributed.shard(n)
    parts = [
        draw(start, min(batch_size, first + count - start))
        for start in range(first, first + count, batch_size)
    ]
    u, images = torch.cat([p.u for p in parts]), torch.cat([p.images for p in parts])
    u, images = distributed.gather_rows(u), distributed.gather_rows(images)
    return SampleResult(u, images, parts[0].nfe, sum(p.seconds for p in parts), parts[0].skipped)


def sample_conditional(
    model,
    y: torch.Tensor,
    per_input: int = 1,
    *,
    seed: int = 0,
    start: int = 0,
    progress: bool = False,
    **settings,
) -> SampleResult:
    """``per_input`` samples for each condition ``y`` ``(B, *y_shape)`` from a conditional
    model: images ``(B * per_input, C, H, W)``, the samples of input ``b`` at rows
    ``b * per_input ...``. The joint estimators draw ``y_t`` from the forward process of ``y``
    at every network call, from per-sample noise (batch-invariant like the samplers')."""
    from nudiff.samplers import NoiseSource

    device = next(iter([*model.parameters(), *model.buffers()])).device
    y = y.to(device).repeat_interleave(per_input, 0)
    extra = {"y": y}
    if model.joint:
        extra["noise"] = NoiseSource(seed + 1_000_003, start, len(y), device)
    return sample(
        model,
        model.process,
        len(y),
        **settings,
        seed=seed,
        start=start,
        extra=extra,
        progress=progress,
        device=device,
    )
