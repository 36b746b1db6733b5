"""High-level API: train a config into a run folder, load a run, sample from it."""

from __future__ import annotations

from pathlib import Path

import torch

from nudiff.build import build_data, build_denoiser, build_loss, build_process
from nudiff.config import Config, dump_config, parse_yaml, validate
from nudiff.data import load_batch, random_hflip
from nudiff.models.denoiser import Denoiser
from nudiff.samplers import BrickSkip, SampleResult, sample


def sample_settings(cfg: Config) -> dict:
    """The keywords of :func:`nudiff.samplers.sample` that the config's ``sample`` section sets."""
    s = cfg.sample
    return {
        "sampler": s.sampler,
        "steps": s.steps,
        "grid": s.grid,
        "budgets": s.budgets,
        "options": s.options,
        "skip": BrickSkip.from_config(s.skip),
        "guidance": s.guidance,
        "guidance_interval": s.guidance_interval,
    }


def make_sample_fn(cfg: Config, process, dataset=None):
    """Grid sampler for the trainer: the same seed every time, so grids are comparable (a
    conditional model is conditioned on the degraded first training images)."""

    def sample_fn(model: Denoiser, n: int, generator: torch.Generator) -> torch.Tensor:
        device = next(model.parameters()).device
        if cfg.process.family == "beta":
            from nudiff.beta.sampler import sample_beta

            out = sample_beta(model, n, steps=cfg.sample.steps, seed=cfg.train.seed, device=device)
            return out.images.clamp(-1, 1)
        if cfg.conditional is not None:
            from nudiff.data import load_batch

            x = load_batch(dataset, list(range(min(n, len(dataset))))).to(device)
            y = model.task.degrade(x, torch.arange(len(x)))
            out = sample_conditional(model, y, 1, **sample_settings(cfg), seed=cfg.train.seed)
            return out.images.clamp(-1, 1)
        # a class-conditional model: the classes in turn, guided as the config says
        labels = torch.arange(n) % cfg.model.num_classes if cfg.model.num_classes else None
        out = sample(
            model,
            model.process,
            n,
            **sample_settings(cfg),
            labels=labels,
            seed=cfg.train.seed,
            device=device,
        )
        return out.images.clamp(-1, 1)

    return sample_fn


def train(cfg: Config, run_dir: str | Path, resume: bool = False, device=None) -> dict:
    """Train ``cfg`` into ``run_dir`` (see :class:`nudiff.training.trainer.Trainer`) on
    ``device`` (None: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU)."""
    from nudiff.plots import plot_schedule
    from nudiff.training import distributed
    from nudiff.training.trainer import Trainer

    run_dir = Path(run_dir)
    dataset = build_data(cfg, labelled=True)
    process = build_process(cfg, dataset)
    torch.manual_seed(cfg.train.seed)  # the same initial weights for the same config
    model = build_denoiser(cfg, process, dataset)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
        if cfg.process.family == "gaussian" and (
            not resume or not (run_dir / "schedule.png").exists()
        ):
            plot_schedule(process, load_batch(dataset, [0])[0], run_dir / "schedule.png")
    augment = random_hflip if cfg.data.hflip else None
    trainer = Trainer(
        model,
        build_loss(cfg, process, model),
        dataset,
        cfg.train,
        run_dir,
        sample_fn=make_sample_fn(cfg, process, dataset),
        augment=augment,
        device=device,
        resolved_config=cfg.model_dump(mode="json", by_alias=True),
    )
    return trainer.fit(resume=resume)


def load_run(
    path: str | Path,
    ema: bool = True,
    device="auto",
    resolution: int | None = None,
    overrides: list[str] | None = None,
) -> tuple[Config, Denoiser]:
    """Config and denoiser (EMA weights by default) from a run folder or checkpoint folder,
    on ``device`` (``auto``: CUDA, then MPS, then the CPU; see
    :func:`nudiff.devices.resolve_device`).

    ``resolution``: rebuild the model for ``resolution`` x ``resolution`` images (see
    :func:`at_resolution`); the returned config says the new resolution. ``overrides``:
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
    if resolution is not None and resolution != cfg.data.resolution:
        cfg, state = at_resolution(cfg, state, resolution)
    process = build_process(cfg)  # data-fitted buffers come from the state dict
    model = build_denoiser(cfg, process)
    if cfg.distill is not None:  # a distilled run: its one-step generator
        from nudiff.distill.run import load_generator

        if resolution is not None and resolution != cfg.data.resolution:
            raise ValueError("a distilled generator samples at its training resolution only")
        return cfg, load_generator(cfg, model, state).to(device).eval()
    model.load_state_dict(state)
    return cfg, model.to(device).eval()


def at_resolution(cfg: Config, state: dict, resolution: int) -> tuple[Config, dict]:
    """The config and weights of a pixel-space model moved to ``resolution``.

    Its network must run at any size (convolutions, or transformers whose positions are computed
    for the input: DiT, LEGO); its per-pixel tensors (data mean and std, prior moments) are
    resized bilinearly, which keeps the per-channel constants that they mostly are. LEGO keeps
    its trained region sizes in pixels, so its bricks tile the larger canvas (the coordinate
    channels tell each region where it is). Bases other than ``identity`` have per-component
    statistics that do not carry over between sizes."""
    import torch.nn.functional as F

    from nudiff.config import ConfigError

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
    from nudiff.config import lego_bricks

    old = cfg.data.resolution
    tree = cfg.model_dump(mode="json", by_alias=True)
    tree["data"]["resolution"] = int(resolution)
    if cfg.model.backbone == "lego":  # the trained regions, in pixels, tile the new canvas
        tree["model"]["lego"]["bricks"] = [list(b) for b in lego_bricks(cfg.model.lego, old)]
    new_cfg = validate(tree)  # says which backbone setting the new size breaks
    moved = {}
    for key, value in state.items():
        if value.dim() >= 2 and tuple(value.shape[-2:]) == (old, old):
            lead = value.shape[:-2]
            grid = value.reshape(-1, 1, old, old).float()
            grid = F.interpolate(grid, size=(resolution, resolution), mode="bilinear")
            value = grid.reshape(*lead, resolution, resolution).to(value.dtype)
        moved[key] = value
    return new_cfg, moved


def sample_run(
    path: str | Path,
    n: int,
    ema: bool = True,
    device="auto",
    resolution: int | None = None,
    overrides: list[str] | None = None,
    **settings,
) -> SampleResult:
    """Sample ``n`` images from a run (EMA weights by default); ``resolution``: another image
    size than trained (:func:`at_resolution`); ``overrides``: ``--set`` items for the run's
    config (:func:`load_run`); ``settings``: the keywords of :func:`sample_model` (sampler,
    steps, seed, batch size, skip, labels, guidance, ...)."""
    cfg, model = load_run(path, ema=ema, device=device, resolution=resolution, overrides=overrides)
    return sample_model(cfg, model, n, **settings)


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
) -> SampleResult:
    """Sample ``n`` images from a model loaded with :func:`load_run`, on ``device`` (default:
    the model's); batches of ``batch_size`` give the same images as one, and so does any number
    of torchrun processes (each draws its share; ``n`` must split evenly over them).

    Arguments left at None take the run config's ``sample`` section; ``options`` of another
    sampler than the config's replace the config's. ``skip``: LEGO brick skipping; ``labels``
    ``(n,)``: classes of a class-conditional model, with classifier-free ``guidance`` (default:
    the config's ``sample.guidance``) in ``guidance_interval``."""
    if cfg.conditional is not None:
        raise ValueError(
            "a conditional model samples from conditions: nudiff sample RUN --condition INPUT "
            "(in Python: nudiff.load(RUN).restore(y))"
        )
    if device is None:  # where the model is
        device = next(iter([*model.parameters(), *model.buffers()])).device
    # settings of the Gaussian samplers that a generator or the Beta sampler cannot honour
    gaussian_only = {"grid": grid, "budgets": budgets, "options": options, "skip": skip}
    gaussian_only.update(guidance=guidance, guidance_interval=guidance_interval)
    if cfg.distill is not None:
        _reject_settings("a distilled generator", gaussian_only)
        return _sample_generator(cfg, model, n, sampler, steps, seed, device, labels, batch_size)
    if sampler == "onestep":
        raise ValueError("sampler onestep needs a distilled run (nudiff distill sid)")
    if cfg.process.family == "beta":
        _reject_settings("the beta sampler", {**gaussian_only, "labels": labels})
        return _sample_beta(cfg, model, n, sampler, steps, seed, device, progress, batch_size)
    if sampler == "beta":
        raise ValueError("sampler beta needs a Beta-diffusion model (process.family: beta)")
    settings = sample_settings(cfg)
    if guidance is not None:
        settings.update(guidance=guidance)
    if guidance_interval is not None:
        settings.update(guidance_interval=guidance_interval)
    labels = _per_sample_labels(labels, n)
    if skip is not None:
        settings.update(skip=skip)
    if sampler not in (None, settings["sampler"]):
        settings.update(sampler=sampler, options={})
    if steps is not None:
        settings.update(steps=steps, budgets=None)
    if budgets is not None:
        settings.update(budgets=budgets)
    if grid is not None:
        settings.update(grid=grid)
    if options is not None:
        settings.update(options=options)
    return _in_batches(
        n,
        batch_size,
        lambda start, size: sample(
            model,
            model.process,
            size,
            **settings,
            labels=None if labels is None else labels[start : start + size],
            seed=seed,
            start=start,
            device=device,
            progress=progress,
        ),
    )


def _reject_settings(who: str, settings: dict) -> None:
    """A clear error naming the ``settings`` given (not None) that ``who`` does not take."""
    given = sorted(k for k, v in settings.items() if v is not None)
    if given:
        raise ValueError(f"{who} does not take {', '.join(given)}")


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


def _sample_generator(cfg, generator, n, sampler, steps, seed, device, labels, batch_size):
    """:func:`sample_model` for a distilled run: ``steps`` generator calls (1 by default)."""
    from nudiff.config import ConfigError
    from nudiff.distill.sid import sample_one_step
    from nudiff.schedules.reference import ReferenceTime

    if sampler not in (None, "onestep"):
        raise ConfigError(f"a distilled run samples with sampler 'onestep', not {sampler!r}")
    steps = steps or cfg.sample.steps
    if cfg.model.num_classes and labels is None:  # the classes in turn
        labels = torch.arange(n) % cfg.model.num_classes
    labels = _per_sample_labels(labels, n)
    ref = ReferenceTime(generator.process).to(device) if steps > 1 else None
    return _in_batches(
        n,
        batch_size,
        lambda start, size: sample_one_step(
            generator,
            size,
            steps=steps,
            seed=seed,
            start=start,
            labels=None if labels is None else labels[start : start + size],
            device=device,
            reference=ref,
        ),
    )


def _sample_beta(cfg, model, n, sampler, steps, seed, device, progress, batch_size):
    """:func:`sample_model` for a Beta-diffusion model: its own sampler only."""
    from nudiff.beta.sampler import SAMPLER, sample_beta
    from nudiff.config import ConfigError

    if sampler not in (None, SAMPLER):
        raise ConfigError(
            f"a Beta-diffusion model (process.family: beta) samples with sampler {SAMPLER!r}, "
            f"not the Gaussian sampler {sampler!r}"
        )
    steps = steps or cfg.sample.steps
    return _in_batches(
        n,
        batch_size,
        lambda start, size: sample_beta(
            model, size, steps=steps, seed=seed, start=start, device=device, progress=progress
        ),
    )


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
