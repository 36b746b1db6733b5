"""``nudiff`` command line: train | quickstart | distill | sample | extend | eval | features |
data | schedule | bench.

Every option comes from one vocabulary (:mod:`nudiff.cli.vocabulary`, printed in
``docs/cli.md``). Building the parser imports no torch, so ``nudiff --help`` answers at once;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

from nudiff import __version__
from nudiff.cli import bench, evaluate, sampling, tools, training
from nudiff.cli.vocabulary import HelpFormatter

COMMANDS = (training, sampling, evaluate, tools, bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nudiff",
        description="nudiff: non-uniform diffusion models. 'nudiff COMMAND --help' lists the "
        "options of a command, with their defaults.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"nudiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = bench.rename_deprecated(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as err:  # ConfigError is a ValueError
        print(f"nudiff {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a diverged run: the message names the step to resume
        print(f"nudiff {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
