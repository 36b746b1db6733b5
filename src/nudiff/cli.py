"""``nudiff`` command line: train | quickstart | sample | schedule plot."""

from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nudiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
