"""``nudiff train``, ``nudiff quickstart`` and ``nudiff distill sid``."""

from __future__ import annotations

from pathlib import Path

from nudiff.cli.common import add_seed_device, command, is_main
from nudiff.cli.vocabulary import add

SEED_HELP = "the run's train.seed: initial weights, data order and noise (default: the config's)"


def _overrides(args) -> list[str]:
    return [*(args.set or []), *([f"train.seed={args.seed}"] if args.seed is not None else [])]


def _train(args) -> None:
    from nudiff.config import load_config
    from nudiff.devices import resolve_device
    from nudiff.run import train

    cfg = load_config(args.config, _overrides(args))
    out = args.out or f"runs/{Path(args.config).stem}"
    s = train(cfg, out, resume=args.resume, device=resolve_device(args.device))
    if is_main():
        print(
            f"run folder {out}: {s['steps']} steps ({s['stopped']}), final loss "
            f"{s['final_loss']:.4f}, {s['images_per_s']:.1f} images/s"
        )


def _distill_sid(args) -> None:
    from nudiff.config import load_config
    from nudiff.devices import resolve_device
    from nudiff.distill.run import distill, distill_config

    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file():  # the run's own config, as train --resume would use
        cfg = load_config(saved, _overrides(args))
    else:
        cfg = distill_config(args.teacher, _overrides(args))
    s = distill(cfg, args.out, resume=args.resume, device=resolve_device(args.device))
    if is_main():
        print(
            f"run folder {args.out}: {s['steps']} steps ({s['stopped']}), "
            f"{s['images_per_s']:.1f} generated images/s; sample it with nudiff sample "
            f"{args.out} ({cfg.distill.steps} NFE)"
        )


def _quickstart(args) -> None:
    import shutil

    from nudiff.api import save_grid
    from nudiff.config import load_config
    from nudiff.devices import resolve_device
    from nudiff.run import sample_run, train

    cfg = load_config("quickstart", _overrides(args))
    if args.overwrite and (Path(args.out) / "checkpoints").is_dir():
        shutil.rmtree(args.out)
    device = resolve_device(args.device)
    summary = train(cfg, args.out, device=device)
    result = sample_run(args.out, n=64, progress=True, device=device, seed=args.seed or 0)
    grid = save_grid(result.images, Path(args.out) / "samples.png")
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


def register(sub) -> None:
    tr = command(sub, "train", "train a config into a run folder (torchrun: DDP on all ranks)")
    tr.add_argument("config", help="a YAML file or the name of a packaged config")
    add(tr, "--out", "run folder (default: runs/<config name>)")
    add(tr, "--set")
    add(tr, "--resume")
    add_seed_device(tr, SEED_HELP, seed_default=None)
    tr.set_defaults(func=_train)

    qs = command(
        sub,
        "quickstart",
        "train the multi-scale model on the built-in shapes and sample it (CPU minutes)",
    )
    add(qs, "--out", "run folder", default="runs/quickstart")
    add(qs, "--set")
    add(qs, "--overwrite")
    add_seed_device(qs, SEED_HELP, seed_default=None)
    qs.set_defaults(func=_quickstart)

    di = command(sub, "distill", "distil a trained run into a fast generator")
    di_sub = di.add_subparsers(dest="method", required=True, metavar="METHOD")
    sid = command(
        di_sub,
        "sid",
        "SiD: data-free one- or few-step distillation (score identity distillation)",
    )
    sid.add_argument("teacher", help="the teacher's run folder or checkpoint folder")
    add(sid, "--out", "run folder of the distilled generator", required=True)
    add(sid, "--set", "override a key of the distilled config (e.g. train.lr, distill.alpha)")
    add(sid, "--resume")
    add_seed_device(sid, SEED_HELP, seed_default=None)
    sid.set_defaults(func=_distill_sid)
