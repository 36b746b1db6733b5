"""``nudiff sample`` and ``nudiff extend``."""

from __future__ import annotations

import os

from nudiff.cli.common import (
    add_seed_device,
    command,
    is_main,
    ranks,
    sampler_options,
    single_process,
)
from nudiff.cli.vocabulary import ImageSize, add, deprecated


def _sample(args) -> None:
    if args.condition:
        return _sample_conditional(args)
    from nudiff.api import save_grid, save_npz
    from nudiff.run import sample_run
    from nudiff.samplers import BrickSkip

    if args.n_samples < 1 or args.batch_size < 1:
        raise ValueError(
            f"--n-samples and --batch-size must be >= 1, got {args.n_samples}, {args.batch_size}"
        )
    labels, n, nrow = _class_labels(args)
    with ranks(args.device) as device:
        result = sample_run(
            args.run,
            n=n,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            ema=args.ema,
            device=device,
            progress=is_main(),
            batch_size=args.batch_size,
            grid=args.grid,
            budgets=_ints(args.interval_steps, "--interval-steps"),
            options=sampler_options(args.opt),
            skip=BrickSkip.parse(args.skip) if args.skip else None,
            resolution=args.resolution,
            labels=labels,
            guidance=args.guidance,
            guidance_interval=_interval(args.guidance_interval),
            overrides=args.set,
        )
    if not is_main():
        return
    save_grid(result.images, args.out, nrow=nrow)
    if args.npz:
        save_npz(result.images, args.npz)
    skipped = f" ({result.skipped} with bricks skipped)" if args.skip else ""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    on = f" on {processes} processes" if processes > 1 else ""
    print(
        f"{n} samples, {result.nfe} NFE{skipped}, {result.seconds:.2f} s{on} "
        f"({n / result.seconds:.1f} samples/s) -> {args.out}"
        + (f", {args.npz}" if args.npz else "")
    )


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} takes integers separated by commas, got {text!r}") from None


def _class_labels(args):
    """``--class C``: ``--n-samples`` samples of class C; ``--classes A,B,..``: ``--n-samples``
    per class, one grid row per class. Returns (labels or None, number of samples, row length)."""
    import torch

    if args.class_label is not None and args.classes:
        raise ValueError("give --class or --classes, not both")
    if args.class_label is not None:
        return torch.full((args.n_samples,), args.class_label), args.n_samples, None
    if args.classes:
        classes = _ints(args.classes, "--classes")
        n = args.n_samples * len(classes)
        return torch.tensor(classes).repeat_interleave(args.n_samples), n, args.n_samples
    return None, args.n_samples, None


def _interval(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--guidance-interval takes LO,HI in [0, 1], got {text!r}") from None
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"--guidance-interval needs 0 <= LO < HI <= 1, got {text!r}")
    return lo, hi


def _sample_conditional(args) -> None:
    """``--condition``: per input, the condition, ``--per-input`` samples and the truth."""
    from nudiff.api import save_npz
    from nudiff.conditional import restoration_metrics
    from nudiff.conditional.inputs import comparison_grid, conditions
    from nudiff.data import save_image_grid
    from nudiff.data.images import read_images
    from nudiff.devices import resolve_device
    from nudiff.eval.lpips import LPIPS_ENV, lpips_or_none
    from nudiff.families.gaussian import sample_settings
    from nudiff.run import load_run, sample_conditional

    single_process("nudiff sample --condition")
    device = resolve_device(args.device)
    cfg, model = load_run(args.run, ema=args.ema, device=device, overrides=args.set)
    if cfg.conditional is None:
        raise ValueError(f"{args.run} is not a conditional model (no conditional section)")
    if args.per_input < 1:
        raise ValueError(f"--per-input must be >= 1, got {args.per_input}")
    y, truth = conditions(model.task, model.process.shape, read_images(args.condition))
    settings = sample_settings(cfg)
    if args.sampler not in (None, settings["sampler"]):
        settings.update(sampler=args.sampler, options={})
    if args.steps is not None:
        settings.update(steps=args.steps, budgets=None)
    if args.opt:
        settings.update(options=sampler_options(args.opt))
    out = sample_conditional(model, y, args.per_input, seed=args.seed, progress=True, **settings)
    samples = out.images.cpu().view(len(y), args.per_input, *out.images.shape[1:])
    grid, per_row = comparison_grid(model.task, y.cpu(), samples, truth)
    save_image_grid(grid, args.out, nrow=per_row)
    if args.npz:
        save_npz(out.images, args.npz)
    lpips, why = lpips_or_none(args.lpips) if truth is not None else (None, None)
    m = restoration_metrics(model.task, samples.clamp(-1, 1), truth, y.cpu(), lpips)
    scores = f"consistency MSE {m['consistency']:.3g}"
    if args.per_input > 1:
        scores += f", diversity {m['diversity']:.3g}"
    if truth is not None:
        scores += f", PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
        scores += f", LPIPS {m['lpips']:.3f}" if lpips is not None else " (no LPIPS weights)"
    print(
        f"{len(y)} inputs x {args.per_input} samples, {out.nfe} NFE, {out.seconds:.2f} s; "
        f"{scores} -> {args.out}"
    )
    if why and (args.lpips or os.environ.get(LPIPS_ENV)):  # weights were named but not found
        print(f"LPIPS: {why}")


def _extend(args) -> None:
    from nudiff.api import save_grid, save_npz
    from nudiff.data.images import read_images
    from nudiff.devices import resolve_device
    from nudiff.run import extend_run

    single_process("nudiff extend")
    if args.n_images is not None and args.n_images < 1:
        raise ValueError(f"--n-images must be >= 1, got {args.n_images}")
    images = read_images(args.input)[: args.n_images]
    out = extend_run(
        args.run,
        images,
        args.columns,
        sampler=args.sampler,
        steps=args.steps,
        stride=args.stride,
        options=sampler_options(args.opt),
        seed=args.seed,
        ema=args.ema,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        overrides=args.set,
        progress=True,
    )
    save_grid(out.images, args.out, nrow=args.nrow)
    if args.npz:
        save_npz(out.images, args.npz)
    w_in = images.shape[-1]
    print(
        f"{len(images)} images {w_in} -> {w_in + args.columns} columns (the first {out.kept} "
        f"kept), {out.nfe} NFE, {out.seconds:.2f} s -> {args.out}"
        + (f", {args.npz}" if args.npz else "")
    )
    _report_seams(args, out, w_in)


def _report_seams(args, out, w_in: int) -> None:
    """Print the seam statistics of an extension (``seam_statistics``: the kept input columns
    are the real reference) and write them, with the run's numbers, to ``--json``."""
    import json
    from pathlib import Path

    from nudiff.samplers.extension import seam_statistics

    stats = seam_statistics(out.images, out.kept, _run_seams(args, w_in))
    print(_seam_lines(stats))
    if args.json:
        result = {
            "run": str(args.run),
            "input": str(args.input),
            "images": len(out.images),
            "input_columns": w_in,
            "columns": args.columns,
            "kept": out.kept,
            "nfe": out.nfe,
            "seconds": out.seconds,
            "out": str(args.out),
            "npz": args.npz,
            **stats,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def _run_seams(args, w_in: int) -> list[int]:
    """The output columns where a generation round starts, from the run's config."""
    from nudiff.build import build_process
    from nudiff.config import load_config
    from nudiff.samplers.extension import extension_seams
    from nudiff.training.checkpoint import resolve_checkpoint

    cfg = load_config(resolve_checkpoint(args.run) / "config.yaml", args.set)
    return extension_seams(build_process(cfg), w_in, args.columns, args.stride)


def _seam_lines(stats: dict) -> str:
    """The seam statistics in two lines."""
    m, mean, std = stats["msd"], stats["column_mean"], stats["column_std"]

    def g(v) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    ratio = f" (x{stats['seam_ratio']:.2f} real)" if stats["seam_ratio"] is not None else ""
    rounds = f", across round seams {g(m['rounds'])} (max {g(m['rounds_max'])})"
    return (
        f"adjacent-column MSD: real {g(m['real'])} (pairs {g(m['real_min'])} to "
        f"{g(m['real_max'])}), across the input seam {g(m['seam'])}{ratio}"
        + (rounds if m["rounds"] is not None else "")
        + f", between other generated columns {g(m['generated'])}\n"
        f"column mean: real {g(mean['real'])}, generated {g(mean['generated'])}; "
        f"column std: real {g(std['real'])}, generated {g(std['generated'])}"
    )


def register(sub) -> None:
    sa = command(
        sub,
        "sample",
        "sample a trained run into a PNG grid (torchrun: the samples split over the ranks)",
    )
    sa.add_argument("run", help="run folder or checkpoint folder")
    add(sa, "--n-samples", "images to generate (with --classes: per class)", default=64)
    deprecated(sa, "--n", "--n-samples")
    add(sa, "--out", "PNG grid of the samples", default="samples.png")
    add(sa, "--npz")
    add(sa, "--sampler", "sampler (default: the run config's sample.sampler)")
    add(sa, "--steps", "sampler steps (default: the run config's)")
    add(sa, "--grid", "time grid (default: the run config's, normally auto)")
    add(sa, "--interval-steps")
    deprecated(sa, "--budgets", "--interval-steps")
    add(sa, "--opt")
    add(sa, "--set", "override a key of the run's config, e.g. process.schedule.softness=0.7")
    add(sa, "--ema", default=True)
    add(sa, "--batch-size", default=256)
    add(
        sa,
        "--resolution",
        "sample at another size than trained (pixel-space models): N (N x N) or HxW, e.g. 32x128",
        type=ImageSize(canvas=True),
        metavar="PX|HxW",
    )
    add(sa, "--class", dest="class_label")
    add(sa, "--classes")
    add(sa, "--guidance", "classifier-free guidance weight (1: conditional; default: the config's)")
    add(sa, "--guidance-interval", "guide only at t in [LO, HI] (default: the config's, else all)")
    add(sa, "--skip")
    add(sa, "--condition")
    add(sa, "--per-input", default=4)
    add(sa, "--lpips", "LPIPS weights for inputs with ground truth")
    add_seed_device(sa)
    sa.set_defaults(func=_sample)

    ex = command(sub, "extend", "extend images to the right with a column-wise run")
    ex.add_argument("run", help="run folder or checkpoint folder of a column-wise model")
    add(ex, "--input", required=True)
    add(ex, "--columns", required=True)
    add(ex, "--n-images", "extend only the first N images (default: all)")
    deprecated(ex, "--n", "--n-images")
    add(ex, "--stride")
    add(ex, "--sampler", "sampler (default: the run config's sample.sampler)")
    add(ex, "--steps", "sampler steps per unit time of each window (default: sample.steps)")
    add(ex, "--opt")
    add(ex, "--set", "override a key of the run's config")
    add(ex, "--out", "PNG grid of the extended images", default="extended.png")
    add(ex, "--nrow")
    add(ex, "--npz")
    add(ex, "--json", "also write the seam statistics and the run's numbers as JSON here")
    add(ex, "--ema", default=True)
    add(ex, "--batch-size", default=256)
    add_seed_device(ex)
    ex.set_defaults(func=_extend)
