"""``nudiff data export`` and ``nudiff schedule plot``."""

from __future__ import annotations

from nudiff.cli.common import command, print_result, single_process
from nudiff.cli.vocabulary import add, deprecated

DATA_SEED = "the data's seed (data.seed: which procedural images; default: the config's)"


def _data_overrides(args) -> list[str]:
    return [*(args.set or []), *([f"data.seed={args.seed}"] if args.seed is not None else [])]


def _data_export(args) -> None:
    from nudiff.eval.commands import export_data

    single_process("nudiff data export")
    result = export_data(
        args.config, args.out, n=args.n_images, split=args.split, overrides=_data_overrides(args)
    )
    print_result(result, None, ("n", "shape", "labels", "out"))


def _schedule_plot(args) -> None:
    from nudiff.build import build_data, build_process
    from nudiff.config import load_config
    from nudiff.plots import plot_schedule

    single_process("nudiff schedule plot")
    cfg = load_config(args.config, _data_overrides(args))
    dataset = build_data(cfg)
    process = build_process(cfg, dataset)
    path = plot_schedule(process, dataset[args.index], args.out)
    print(f"wrote {path}")


def register(sub) -> None:
    data = command(sub, "data", "datasets")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    ex = command(data_sub, "export", "write a config's dataset to an .npz (uint8)")
    ex.add_argument("config", help="config whose data section to read (file or packaged name)")
    add(ex, "--out", "the .npz to write", required=True)
    add(ex, "--n-images", "the first N images of the split", required=True)
    deprecated(ex, "--n", "--n-images")
    add(ex, "--split", default="train", choices=["train", "holdout"])
    add(ex, "--set", "override a key of the config, e.g. data.size=1000")
    add(ex, "--seed", DATA_SEED, default=None)  # no --device: an export computes nothing
    ex.set_defaults(func=_data_export)

    sched = command(sub, "schedule", "inspect a config's schedule")
    sched_sub = sched.add_subparsers(dest="action", required=True, metavar="ACTION")
    plot = command(sched_sub, "plot", "log-SNR per component group and a noised strip")
    plot.add_argument("config", help="a YAML file or the name of a packaged config")
    add(plot, "--out", "the PNG to write", default="schedule.png")
    add(plot, "--index", default=0)
    add(plot, "--set")
    add(plot, "--seed", DATA_SEED, default=None)  # no --device: a plot runs no network
    plot.set_defaults(func=_schedule_plot)
