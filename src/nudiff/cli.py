"""``nudiff`` command line: train | quickstart | sample | extend | distill | eval | features |
data | schedule | bench."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nudiff.config import ConfigError


def _schedule_plot(args) -> None:
    from nudiff.build import build_data, build_process
    from nudiff.config import load_config
    from nudiff.plots import plot_schedule

    cfg = load_config(args.config, args.set)
    dataset = build_data(cfg)
    process = build_process(cfg, dataset)
    path = plot_schedule(process, dataset[args.index], args.out)
    print(f"wrote {path}")


def _device(name: str | None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _train(args) -> None:
    from nudiff.config import load_config
    from nudiff.run import train
    from nudiff.train import distributed

    cfg = load_config(args.config, args.set)
    out = args.out or f"runs/{Path(args.config).stem}"
    try:
        s = train(cfg, out, resume=args.resume)
    finally:
        distributed.cleanup()
    if distributed.is_main():
        print(
            f"run folder {out}: {s['steps']} steps ({s['stopped']}), final loss "
            f"{s['final_loss']:.4f}, {s['images_per_s']:.1f} images/s"
        )


def _distill_sid(args) -> None:
    from nudiff.config import load_config
    from nudiff.distill.run import distill, distill_config
    from nudiff.train import distributed

    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():  # the run's own config, as train --resume would use
        cfg = load_config(saved, args.set)
    else:
        cfg = distill_config(args.teacher, args.set)
    try:
        s = distill(cfg, args.out, resume=args.resume)
    finally:
        distributed.cleanup()
    if distributed.is_main():
        print(
            f"run folder {args.out}: {s['steps']} steps ({s['stopped']}), "
            f"{s['images_per_s']:.1f} generated images/s; sample it with nudiff sample "
            f"{args.out} (1 NFE)"
        )


def _quickstart(args) -> None:
    from nudiff.config import load_config
    from nudiff.run import sample_run, save_samples, train

    config = Path(__file__).parent / "configs" / "quickstart.yaml"
    cfg = load_config(config, args.set)
    if args.overwrite and (Path(args.out) / "checkpoints").is_dir():
        import shutil

        shutil.rmtree(args.out)
    summary = train(cfg, args.out)
    result = sample_run(args.out, n=64, progress=True)
    grid = Path(args.out) / "samples.png"
    save_samples(result.images, grid, None)
    trained = f"trained {summary['steps']} steps"
    if summary["stopped"] == "time limit":  # a slow machine: fewer steps, blurrier samples
        trained = (
            f"trained {summary['steps']} of {cfg.train.steps} steps (stopped by the "
            f"{cfg.train.max_minutes:g}-minute guard)"
        )
    print(
        f"{trained}; 64 samples with {cfg.sample.sampler}, "
        f"{result.nfe} NFE in {result.seconds:.1f} s -> {grid}"
    )
    print(f"loss curve: {Path(args.out) / 'loss.png'}; schedule: {Path(args.out) / 'schedule.png'}")


def _options(items: list[str] | None) -> dict | None:
    """``--opt eta=0.5 --opt rtol=1e-5`` -> ``{"eta": 0.5, "rtol": 1e-5}``."""
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ValueError(f"--opt takes KEY=NUMBER, got {item!r}")
    return out


def _sample(args) -> None:
    from nudiff.run import sample_run, save_samples
    from nudiff.samplers import BrickSkip

    if args.condition:
        return _sample_conditional(args)
    if args.n < 1 or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be >= 1, got {args.n}, {args.batch_size}")
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
    labels, n, nrow = _class_labels(args)
    result = sample_run(
        args.run,
        n=n,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        ema=args.ema,
        device=_device(args.device),
        progress=True,
        batch_size=args.batch_size,
        grid=args.grid,
        budgets=budgets,
        options=_options(args.opt),
        skip=BrickSkip.parse(args.skip) if args.skip else None,
        resolution=args.resolution,
        labels=labels,
        guidance=args.guidance,
        guidance_interval=_interval(args.guidance_interval),
        overrides=args.set,
    )
    save_samples(result.images, args.out, args.npz, nrow=nrow)
    skipped = f" ({result.skipped} with bricks skipped)" if args.skip else ""
    print(
        f"{n} samples, {result.nfe} NFE{skipped}, {result.seconds:.2f} s "
        f"({n / result.seconds:.1f} samples/s) -> {args.out}"
        + (f", {args.npz}" if args.npz else "")
    )


def _extend(args) -> None:
    from nudiff.data.images import read_images
    from nudiff.run import extend_run, save_samples

    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    images = read_images(args.input)[: args.n]
    out = extend_run(
        args.run,
        images,
        args.columns,
        sampler=args.sampler,
        steps=args.steps,
        stride=args.stride,
        options=_options(args.opt),
        seed=args.seed,
        ema=args.ema,
        device=_device(args.device),
        batch_size=args.batch_size,
        overrides=args.set,
        progress=True,
    )
    save_samples(out.images, args.out, args.npz, nrow=args.nrow)
    w_in = images.shape[-1]
    print(
        f"{len(images)} images {w_in} -> {w_in + args.columns} columns (the first {out.kept} "
        f"kept), {out.nfe} NFE, {out.seconds:.2f} s -> {args.out}"
        + (f", {args.npz}" if args.npz else "")
    )


def _class_labels(args):
    """``--class C``: ``--n`` samples of class C; ``--classes A,B,..``: ``--n`` per class, one
    grid row per class. Returns (labels or None, number of samples, grid row length)."""
    import torch

    if args.class_label is not None and args.classes:
        raise ValueError("give --class or --classes, not both")
    if args.class_label is not None:
        return torch.full((args.n,), args.class_label), args.n, None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise ValueError(
                f"--classes takes integers separated by commas, got {args.classes!r}"
            ) from None
        return torch.tensor(classes).repeat_interleave(args.n), args.n * len(classes), args.n
    return None, args.n, None


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
    from nudiff.conditional import restoration_metrics
    from nudiff.conditional.inputs import comparison_grid, conditions
    from nudiff.data import save_image_grid
    from nudiff.data.images import read_images
    from nudiff.eval.lpips import LPIPS_ENV, lpips_or_none
    from nudiff.run import load_run, sample_conditional, sample_settings, save_samples

    cfg, model = load_run(args.run, ema=args.ema, device=_device(args.device), overrides=args.set)
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
        settings.update(options=_options(args.opt))
    out = sample_conditional(model, y, args.per_input, seed=args.seed, progress=True, **settings)
    samples = out.images.cpu().view(len(y), args.per_input, *out.images.shape[1:])
    grid, per_row = comparison_grid(model.task, y.cpu(), samples, truth)
    save_image_grid(grid, args.out, nrow=per_row)
    save_samples(out.images, None, args.npz)
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


def _print_json(result: dict, path: str | None, keys: tuple[str, ...]) -> None:
    import json

    print(
        ", ".join(
            f"{k} {result[k]:.4g}" if isinstance(result[k], float) else f"{k} {result[k]}"
            for k in keys
            if k in result
        )
    )
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


def _eval_nll(args) -> None:
    from nudiff.eval.commands import eval_nll

    result = eval_nll(
        args.run,
        data=args.data,
        n=args.n,
        batch_size=args.batch_size,
        ema=args.ema,
        device=_device(args.device),
        seed=args.seed,
        divergence=args.divergence,
        rtol=args.rtol,
        atol=args.atol,
        n_probes=args.probes,
        method=args.method,
        n_times=args.times,
        discrete_steps=args.discrete_steps,
    )
    _print_json(result, args.json, ("method", "nll_bpd", "stderr", "n", "nfe_mean", "seconds"))


def _eval_fd(args) -> None:
    from nudiff.eval.commands import eval_fd

    result = eval_fd(
        features=args.features,
        ref=args.ref,
        run=args.run,
        samples=args.samples,
        n=args.n,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        ema=args.ema,
        device=_device(args.device),
        batch_size=args.batch_size,
        class_label=args.class_label,
        guidance=args.guidance,
    )
    _print_json(result, args.json, ("fd", "kid", "kid_std", "n", "nfe", "class_accuracy"))


def _features_train(args) -> None:
    from nudiff.eval.commands import train_features

    result = train_features(
        args.data,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        resolution=args.resolution,
        holdout=args.holdout,
        seed=args.seed,
    )
    _print_json(result, args.json, ("accuracy", "n_train", "n_holdout", "seconds", "out"))


def _data_export(args) -> None:
    from nudiff.eval.commands import export_data

    result = export_data(args.config, args.out, n=args.n, split=args.split, overrides=args.set)
    _print_json(result, None, ("n", "shape", "labels", "out"))


BENCHMARKS = (
    "train",
    "samplers",
    "multiscale",
    "multiscale_vs_uniform",
    "conditional",
    "quickstart",
    "lego",
    "guidance",
    "msf",
    "softness",
    "patch",
    "beta-toy",
    "sid",
    "ndm",
)


def _benchmark_module(name: str):
    """``benchmarks/<name>.py`` of the source checkout this package is installed from (``-`` in
    ``name`` read as ``_``)."""
    import importlib

    name = name.replace("-", "_")
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"nudiff bench needs the source checkout's benchmarks/ folder "
            f"(looked in {root / 'benchmarks'})"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"benchmarks.{name}")


def _bench(args) -> None:
    _benchmark_module(args.name).run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nudiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a config into a run folder")
    tr.add_argument("config")
    tr.add_argument("--out", help="run folder (default runs/<config name>)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    tr.set_defaults(func=_train)

    di = sub.add_parser("distill", help="distil a trained run into a fast generator")
    di_sub = di.add_subparsers(dest="method", required=True)
    sid = di_sub.add_parser(
        "sid", help="SiD: data-free one-step distillation (score identity distillation)"
    )
    sid.add_argument("teacher", help="the teacher's run folder or checkpoint folder")
    sid.add_argument("--out", required=True, help="run folder of the distilled generator")
    sid.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a key of the distilled config (e.g. train.lr, distill.alpha)",
    )
    sid.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    sid.set_defaults(func=_distill_sid)

    qs = sub.add_parser("quickstart", help="train + sample on the built-in data (CPU minutes)")
    qs.add_argument("--out", default="runs/quickstart")
    qs.add_argument("--set", action="append", metavar="KEY=VALUE")
    qs.add_argument("--overwrite", action="store_true", help="replace an earlier quick-start run")
    qs.set_defaults(func=_quickstart)

    sa = sub.add_parser("sample", help="sample a trained run")
    sa.add_argument("run", help="run folder or checkpoint folder")
    sa.add_argument("--n", type=int, default=64)
    sa.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a key of the run's config, e.g. process.schedule.softness=0.7",
    )
    sa.add_argument("--sampler", default=None, help="default: the run config's sample.sampler")
    sa.add_argument("--steps", type=int, default=None, help="default: the run config's")
    sa.add_argument(
        "--grid",
        default=None,
        choices=["auto", "uniform", "log-snr", "edm"],
        help="time grid (default: the run config's, normally auto)",
    )
    sa.add_argument(
        "--budgets",
        default=None,
        metavar="N1,N2,..",
        help="steps per interval between the schedule's breakpoints, from t = 1 down",
    )
    sa.add_argument(
        "--opt",
        action="append",
        metavar="KEY=VALUE",
        help="sampler option, e.g. eta=1 (ddim), rtol=1e-5 (dopri5), corrector_steps=2 (pc)",
    )
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--out", default="samples.png")
    sa.add_argument("--npz", default=None, help="also write uint8 images (x_train) here")
    sa.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    sa.add_argument("--batch-size", type=int, default=256)
    sa.add_argument("--device", default=None)
    sa.add_argument(
        "--condition",
        default=None,
        metavar="INPUT",
        help="conditional models: .npz, image folder or image file; full-size images are "
        "ground truth (degraded by the task), smaller or grey ones are conditions",
    )
    sa.add_argument(
        "--skip",
        default=None,
        metavar="bricks=last,from=0.5",
        help="LEGO models: from this fraction of the steps on, run only the first bricks "
        "('last' drops the last one, an integer K keeps K)",
    )
    sa.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="sample at another size than trained (pixel-space models; LEGO coordinates span "
        "the larger canvas)",
    )
    sa.add_argument(
        "--class",
        dest="class_label",
        type=int,
        default=None,
        help="class-conditional models: sample this class",
    )
    sa.add_argument(
        "--classes",
        default=None,
        metavar="A,B,..",
        help="class-conditional models: --n samples of each class, one grid row per class",
    )
    sa.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance weight (1: conditional; default: the config's)",
    )
    sa.add_argument(
        "--guidance-interval",
        default=None,
        metavar="LO,HI",
        help="guide only at times in [LO, HI] (default: the config's, else all times)",
    )
    sa.add_argument("--per-input", type=int, default=4, help="samples per condition")
    sa.add_argument(
        "--lpips",
        default=None,
        help="LPIPS weights for inputs with ground truth (default: $NUDIFF_LPIPS_WEIGHTS)",
    )
    sa.set_defaults(func=_sample)

    ex = sub.add_parser(
        "extend", help="extend images to the right with a column-wise run (sliding window)"
    )
    ex.add_argument("run", help="run folder or checkpoint folder of a column-wise model")
    ex.add_argument("--input", required=True, help=".npz (x_train), image folder or image file")
    ex.add_argument("--columns", type=int, required=True, help="new columns to generate")
    ex.add_argument("--n", type=int, default=None, help="extend only the first N images")
    ex.add_argument(
        "--stride", type=int, default=None, help="columns added per window (default W / 4)"
    )
    ex.add_argument("--sampler", default=None, help="default: the run config's sample.sampler")
    ex.add_argument(
        "--steps", type=int, default=None, help="steps per unit time (default: sample.steps)"
    )
    ex.add_argument("--opt", action="append", metavar="KEY=VALUE", help="sampler option")
    ex.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a run key")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", default="extended.png")
    ex.add_argument("--nrow", type=int, default=None, help="images per grid row")
    ex.add_argument("--npz", default=None, help="also write uint8 images (x_train) here")
    ex.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    ex.add_argument("--batch-size", type=int, default=256)
    ex.add_argument("--device", default=None)
    ex.set_defaults(func=_extend)

    bench = sub.add_parser("bench", help="benchmarks (ratios against an in-process baseline)")
    bench_sub = bench.add_subparsers(dest="name", required=True)
    for name in BENCHMARKS:
        module = _benchmark_module(name)
        b = bench_sub.add_parser(name, help=module.__doc__.splitlines()[0])
        b.add_argument("--json", default=None, help="write the result here")
        module.add_arguments(b)
        b.set_defaults(func=_bench)

    ev = sub.add_parser("eval", help="likelihood (bits/dim) and Frechet distances")
    ev_sub = ev.add_subparsers(dest="metric", required=True)
    nll = ev_sub.add_parser(
        "nll", help="NLL in bits/dim: the probability-flow ODE's, or the variational bound"
    )
    nll.add_argument("run", help="run folder or checkpoint folder")
    nll.add_argument(
        "--data",
        default=None,
        help=".npz of uint8 images (its last --n images; default: the run's held-out split)",
    )
    nll.add_argument("--n", type=int, default=1000)
    nll.add_argument("--batch-size", type=int, default=64)
    nll.add_argument(
        "--method",
        default="ode",
        choices=["ode", "elbo", "elbo-discrete"],
        help="ode: the PF-ODE density (dopri5); elbo: the continuous-time variational bound (an "
        "upper bound); elbo-discrete: the --discrete-steps-step bound (NDM models use theirs)",
    )
    nll.add_argument("--times", type=int, default=64, help="elbo: denoiser calls per image")
    nll.add_argument(
        "--discrete-steps", type=int, default=1000, help="elbo-discrete: the bound's steps T"
    )
    nll.add_argument("--divergence", default="auto", choices=["auto", "exact", "hutchinson"])
    nll.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image")
    nll.add_argument("--rtol", type=float, default=1e-5)
    nll.add_argument("--atol", type=float, default=1e-5)
    fd = ev_sub.add_parser("fd", help="feature Frechet distance and KID against reference data")
    fd.add_argument("run", nargs="?", default=None, help="run to sample (or give --samples)")
    fd.add_argument("--samples", default=None, help=".npz of generated uint8 images")
    fd.add_argument("--ref", required=True, help=".npz of reference images (its last --n)")
    fd.add_argument("--features", required=True, help="feature network (nudiff features train)")
    fd.add_argument("--n", type=int, default=5000)
    fd.add_argument("--sampler", default=None)
    fd.add_argument("--steps", type=int, default=None)
    fd.add_argument("--batch-size", type=int, default=256)
    fd.add_argument(
        "--class",
        dest="class_label",
        type=int,
        default=None,
        help="class-conditional runs: sample this class, score it against the reference images"
        " of that class, and report the share classified as it",
    )
    fd.add_argument("--guidance", type=float, default=None, help="with --class (default: config)")
    for e in (nll, fd):
        e.add_argument("--seed", type=int, default=0)
        e.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
        e.add_argument("--device", default=None)
        e.add_argument("--json", default=None, help="write the result here")
    nll.set_defaults(func=_eval_nll)
    fd.set_defaults(func=_eval_fd)

    feat = sub.add_parser("features", help="the offline feature network for Frechet distances")
    feat_sub = feat.add_subparsers(dest="action", required=True)
    ft = feat_sub.add_parser("train", help="train a small classifier on labelled images")
    ft.add_argument("--data", required=True, help=".npz with x_train and y_train")
    ft.add_argument("--out", required=True, help="FEATURES.safetensors")
    ft.add_argument("--steps", type=int, default=1500)
    ft.add_argument("--batch-size", type=int, default=128)
    ft.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="centre pad/crop to this size (e.g. 32 for MNIST models at 32x32)",
    )
    ft.add_argument("--holdout", type=float, default=0.1, help="fraction for the accuracy")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--json", default=None)
    ft.set_defaults(func=_features_train)

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="action", required=True)
    ex = data_sub.add_parser("export", help="write a config's dataset to an .npz (uint8)")
    ex.add_argument("config", help="config whose data section to read")
    ex.add_argument("--out", required=True)
    ex.add_argument("--n", type=int, required=True, help="the first N images of the split")
    ex.add_argument("--split", default="train", choices=["train", "holdout"])
    ex.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. data.seed=1")
    ex.set_defaults(func=_data_export)

    sched = sub.add_parser("schedule", help="inspect a config's schedule")
    sched_sub = sched.add_subparsers(dest="action", required=True)
    plot = sched_sub.add_parser("plot", help="log-SNR per component group and a noised strip")
    plot.add_argument("config")
    plot.add_argument("--out", default="schedule.png")
    plot.add_argument("--index", type=int, default=0, help="dataset item to noise")
    plot.add_argument("--set", action="append", metavar="KEY=VALUE")
    plot.set_defaults(func=_schedule_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"nudiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a diverged run: the message names the step to resume
        print(f"nudiff {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
