"""``nudiff bench NAME``: the benchmarks of :mod:`nudiff.bench`, each a module with
``add_arguments(parser)`` and ``run(args) -> dict`` that imports torch only when it runs."""

from __future__ import annotations

import importlib
import sys

from nudiff.cli.common import add_seed_device, command
from nudiff.cli.vocabulary import add

# command name -> module of nudiff.bench
BENCHMARKS = {
    "train": "train",
    "samplers": "samplers",
    "multiscale": "multiscale",
    "multiscale-vs-uniform": "multiscale_vs_uniform",
    "conditional": "conditional",
    "quickstart": "quickstart",
    "lego": "lego",
    "guidance": "guidance",
    "msf": "msf",
    "softness": "softness",
    "patch": "patch",
    "beta-toy": "beta_toy",
    "beta-images": "beta_images",
    "sid": "sid",
    "ndm": "ndm",
    "end-to-end": "end_to_end",
    "schedules": "schedules",
}


def rename_deprecated(argv: list[str]) -> list[str]:
    """``nudiff bench multiscale_vs_uniform`` -> ``multiscale-vs-uniform``, with a note."""
    if len(argv) > 1 and argv[0] == "bench" and "_" in argv[1]:
        new = argv[1].replace("_", "-")
        if new in BENCHMARKS:
            print(f"nudiff: bench {argv[1]} is deprecated, use bench {new}", file=sys.stderr)
            argv = [argv[0], new, *argv[2:]]
    return argv


def _run(args) -> None:
    importlib.import_module(f"nudiff.bench.{BENCHMARKS[args.name]}").run(args)


def register(sub) -> None:
    bench = command(sub, "bench", "benchmarks (ratios against a baseline run in the same process)")
    bench_sub = bench.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"nudiff.bench.{module_name}")
        b = command(bench_sub, name, module.__doc__.splitlines()[0], module.__doc__)
        module.add_arguments(b)
        add(b, "--json")
        add_seed_device(b)
        b.set_defaults(func=_run)
