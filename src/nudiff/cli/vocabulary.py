"""The command line's vocabulary: every flag of every ``nudiff`` command, with one meaning.

A command adds its options with :func:`add`, which takes the flag's type, metavar and help
from :data:`FLAGS`; a command may say more in its own help (e.g. what ``--out`` holds there),
never something else. A benchmark that sweeps a setting takes a comma-separated list of the
same values (``--resolution 32,64``). ``docs/cli.md`` prints this table, and a test walks the
parser to check that every option is in it. Old spellings stay accepted for now through
:func:`deprecated`, which prints a one-line note.

Nothing here imports torch: ``nudiff --help`` has to answer at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

from nudiff.families import LINEAR_SAMPLERS

DEVICES = ("auto", "cpu", "cuda", "mps")
# the linear process's samplers plus the two family samplers (a test keeps them equal to
# nudiff.samplers.SAMPLERS and the families')
SAMPLER_NAMES = (*LINEAR_SAMPLERS, "beta", "onestep")
GRID_NAMES = ("auto", "uniform", "log-snr", "edm", "optimized")


def device_name(text: str) -> str:
    """argparse type of ``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown device {text!r}: use auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
    )


class CommaList:
    """argparse type of a swept setting: ``"32,64"`` -> ``[32, 64]`` of ``item``."""

    def __init__(self, item):
        self.item = item
        self.__name__ = f"list of {item.__name__}"

    def __call__(self, text: str) -> list:
        try:
            values = [self.item(v) for v in text.split(",") if v.strip()]
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {self.item.__name__} values, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
        return values

    def __eq__(self, other) -> bool:
        return isinstance(other, CommaList) and other.item is self.item

    def __hash__(self) -> int:
        return hash(("CommaList", self.item))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


positive_int.__name__ = "int"


class ImageSize:
    """argparse type of ``--resolution``: ``N`` pixels a side (an int); with ``canvas`` (a
    command that draws images of any shape, ``nudiff sample``) also ``HxW``, height by width
    (e.g. ``32x128``) -> ``(H, W)``. Every ``--resolution`` is this type, equal whatever
    ``canvas`` says (a command may take more shapes, never another meaning)."""

    __name__ = "size"

    def __init__(self, canvas: bool = False):
        self.canvas = canvas

    def __call__(self, text: str) -> int | tuple[int, int]:
        parts = text.lower().split("x")
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            sizes = []
        if len(sizes) == 2 and self.canvas and min(sizes) >= 1:
            return sizes[0], sizes[1]
        if len(sizes) == 1 and sizes[0] >= 1:
            return sizes[0]
        shapes = "N (N x N) or HxW, e.g. 32x128" if self.canvas else "N (N x N images)"
        raise argparse.ArgumentTypeError(f"expected a size in pixels, {shapes}; got {text!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, ImageSize)

    def __hash__(self) -> int:
        return hash("ImageSize")


@dataclass(frozen=True)
class Flag:
    """One option of the vocabulary. ``type`` None: a string; ``action``: ``store_true``,
    ``append`` (repeatable) or ``bool`` (``--x`` / ``--no-x``)."""

    group: str
    help: str
    type: object = None
    metavar: str | None = None
    action: str | None = None
    choices: tuple | None = None


def _f(group, help, type=None, metavar=None, action=None, choices=None) -> Flag:
    return Flag(group, help, type, metavar, action, choices)


FLAGS: dict[str, Flag] = {
    # -------------------------------------------------------------------------- everywhere
    "--seed": _f("common", "random seed: the same seed gives the same result", int, "INT"),
    "--device": _f(
        "common",
        "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps",
        device_name,
        "{auto,cpu,cuda,mps}",
    ),
    "--out": _f("common", "where the command writes its output (folder or file)", None, "PATH"),
    "--json": _f("common", "also write the result as JSON here", None, "FILE"),
    "--plot": _f("common", "also draw the result as a PNG figure here", None, "PNG"),
    "--set": _f("common", "override a config key (repeatable)", None, "KEY=VALUE", "append"),
    "--config": _f("common", "config: a YAML file or the name of a packaged config", None, "YAML"),
    "--configs": _f(
        "common", "configs to compare: YAML files or names of packaged configs", None, "A,B,.."
    ),
    "--data": _f("common", "an .npz of uint8 images (x_train, y_train) to use", None, "NPZ"),
    "--resume": _f("common", "continue from the run's newest checkpoint", action="store_true"),
    "--overwrite": _f("common", "replace an earlier run in --out", action="store_true"),
    "--ema": _f("common", "use the EMA weights (--no-ema: the raw weights)", action="bool"),
    "--batch-size": _f("common", "images per batch (results do not depend on it)", int, "INT"),
    # ------------------------------------------------------------------------------ counts
    "--n-samples": _f("counts", "images to generate", int, "N"),
    "--n-images": _f("counts", "data images to use (the first or the last N)", int, "N"),
    "--n-elbo": _f("counts", "held-out images scored by the variational bound", int, "N"),
    "--n-ode": _f("counts", "held-out images scored by the probability-flow ODE", int, "N"),
    "--n-samples-large": _f("counts", "images generated at the larger --resolution", int, "N"),
    "--n-feature-images": _f("counts", "images the feature network trains on", int, "N"),
    "--n-train-images": _f("counts", "train on the first N images of the data only", int, "N"),
    "--min-samples": _f("counts", "the fewest samples any setting gets", int, "N"),
    "--per-input": _f("counts", "samples per condition (conditional models)", int, "N"),
    "--per-class": _f("counts", "samples per class", int, "N"),
    "--checkpoints": _f("counts", "evenly spaced checkpoints to score", int, "N"),
    "--rounds": _f("counts", "interleaved timing rounds", int, "N"),
    "--reps": _f("counts", "calls per timing round", int, "N"),
    "--floor-repeats": _f("counts", "repeats of the exact reference run (noise floor)", int, "N"),
    # ----------------------------------------------------------------------------- budgets
    "--train-minutes": _f("budgets", "wall-clock minutes of training per model", float, "MIN"),
    "--train-steps": _f("budgets", "optimiser steps of training per model", int, "STEPS"),
    "--feature-train-steps": _f("budgets", "training steps of the feature network", int, "STEPS"),
    "--teacher-train-minutes": _f("budgets", "minutes of training of the teacher", float, "MIN"),
    # ---------------------------------------------------------------------------- sampling
    "--sampler": _f("sampling", "sampler", None, None, choices=SAMPLER_NAMES),
    "--samplers": _f("sampling", "samplers to compare", None, "A,B,.."),
    "--steps": _f("sampling", "sampler steps (the NFE follows from the sampler)", int, "STEPS"),
    "--nfe": _f("sampling", "network evaluations per sample", int, "NFE"),
    "--interval-steps": _f(
        "sampling",
        "sampler steps per interval between the schedule's breakpoints, from t = 1 down",
        None,
        "N1,N2,..",
    ),
    "--grid": _f("sampling", "time grid of the sampler", None, None, choices=GRID_NAMES),
    "--opt": _f(
        "sampling",
        "sampler option, e.g. eta=1 (ddim), order=2 (unipc), form=damped (dpmpp-3m), "
        "variable=t (heun)",
        None,
        "KEY=VALUE",
        "append",
    ),
    "--class": _f("sampling", "class-conditional models: sample this class", int, "C"),
    "--classes": _f(
        "sampling",
        "class-conditional models: one grid row of --n-samples per class",
        None,
        "A,B,..",
    ),
    "--guidance": _f("sampling", "classifier-free guidance weight (1: conditional)", float, "W"),
    "--guidance-interval": _f("sampling", "guide only at times t in [LO, HI]", None, "LO,HI"),
    "--skip": _f(
        "sampling",
        "LEGO models: from this fraction of the steps on, run only the first bricks ('last' "
        "drops the last one, an integer K keeps K)",
        None,
        "bricks=last,from=0.5",
    ),
    "--condition": _f(
        "sampling",
        "conditional models: .npz, image folder or image file; full-size images are ground "
        "truth (degraded by the task), smaller or grey ones are conditions",
        None,
        "INPUT",
    ),
    "--npz": _f("sampling", "also write the images as uint8 x_train to this .npz", None, "NPZ"),
    "--nrow": _f("sampling", "images per row of the PNG grid", int, "N"),
    "--input": _f(
        "sampling", ".npz (x_train), image folder or image file to start from", None, "INPUT"
    ),
    "--columns": _f("sampling", "new columns to generate on the right", int, "N"),
    "--stride": _f("sampling", "columns added per sliding window (default W / 4)", int, "N"),
    # ------------------------------------------------------------------------ image shapes
    "--resolution": _f(
        "shapes",
        "image size in pixels: N (N x N); nudiff sample also takes HxW (height x width)",
        ImageSize(),
        "PX",
    ),
    "--image-channels": _f("shapes", "image channels (1 grey, 3 RGB)", int, "C"),
    "--width": _f("shapes", "the network's base width (channels of its first level)", int, "C"),
    "--channel-mult": _f("shapes", "the UNet's width multipliers per level", None, "A,B,.."),
    "--attn-levels": _f("shapes", "the UNet levels with attention", None, "A,B,.."),
    "--levels": _f("shapes", "Haar levels (scales below the full resolution)", int, "L"),
    "--channels-last": _f("shapes", "weights in channels-last memory format", action="bool"),
    # -------------------------------------------------------------------------- evaluation
    "--features": _f(
        "evaluation",
        "feature space of Frechet distances: 'inception' (FID proper, Inception-v3 pool3) or "
        "a feature network file from 'nudiff features train'",
        None,
        "inception|FILE",
    ),
    "--inception-weights": _f(
        "evaluation",
        "Inception-v3 FID weights file (default: $NUDIFF_INCEPTION_WEIGHTS); never downloaded",
        None,
        "FILE",
    ),
    "--ref": _f("evaluation", ".npz of reference images (its last --n-samples)", None, "NPZ"),
    "--samples": _f(
        "evaluation", ".npz of generated uint8 images (its first --n-samples)", None, "NPZ"
    ),
    "--method": _f("evaluation", "likelihood method", None, None),
    "--times": _f("evaluation", "the bound's denoiser calls (times t) per image", int, "N"),
    "--discrete-steps": _f("evaluation", "steps T of the discrete-time bound", int, "T"),
    "--divergence": _f("evaluation", "divergence of the ODE drift", None, None),
    "--probes": _f("evaluation", "Hutchinson probes per image", int, "N"),
    "--rtol": _f("evaluation", "relative tolerance of the adaptive ODE solver", float, "TOL"),
    "--atol": _f("evaluation", "absolute tolerance of the adaptive ODE solver", float, "TOL"),
    "--ode-tolerance": _f("evaluation", "dopri5 tolerance (rtol = atol)", float, "TOL"),
    "--lpips": _f("evaluation", "LPIPS weights (default: $NUDIFF_LPIPS_WEIGHTS)", None, "FILE"),
    "--holdout": _f(
        "evaluation", "fraction of the images held out to measure accuracy", float, "F"
    ),
    "--split": _f("evaluation", "which split of the config's data", None, None),
    "--index": _f("evaluation", "index of the dataset item to show", int, "I"),
    # ---------------------------------------------------------------- benchmark-specific
    "--teacher": _f(
        "benchmarks", "a trained teacher's run folder (default: train one)", None, "RUN"
    ),
    "--teacher-set": _f(
        "benchmarks",
        "override a key of the teacher's config (repeatable)",
        None,
        "KEY=VALUE",
        "append",
    ),
    "--run": _f("benchmarks", "trained run folders (or checkpoints)", None, "RUN,.."),
    "--uniform-run": _f(
        "benchmarks", "a trained uniform model's run folder (default: train one)", None, "RUN"
    ),
    "--multiscale-run": _f(
        "benchmarks", "a trained multi-scale model's run folder (default: train one)", None, "RUN"
    ),
    "--sid-run": _f(
        "benchmarks", "a SiD distillation's run folder (default: distil one)", None, "RUN"
    ),
    "--distill-minutes": _f("budgets", "wall-clock minutes of distillation", float, "MIN"),
    "--reference-steps": _f("sampling", "steps of the reference sampler", int, "STEPS"),
    "--fast-sampler": _f(
        "sampling", "the few-step sampler, as NAME:KEY=VALUE+KEY=VALUE", None, "SAMPLER"
    ),
    "--uniform-config": _f(
        "benchmarks", "config of the uniform (single-scale) model", None, "YAML"
    ),
    "--multiscale-config": _f("benchmarks", "config of the multi-scale model", None, "YAML"),
    "--single-config": _f("benchmarks", "config of the single-stage model", None, "YAML"),
    "--msf-config": _f("benchmarks", "config of the MSF model", None, "YAML"),
    "--backbones": _f("benchmarks", "backbones to train and score", None, "A,B,.."),
    "--transforms": _f("benchmarks", "NDM transforms to train and score", None, "A,B,.."),
    "--estimators": _f("benchmarks", "conditional estimators to train and score", None, "A,B,.."),
    "--tasks": _f("benchmarks", "conditional tasks", None, "A,B,.."),
    "--toys": _f("benchmarks", "1-D toy data sets", None, "A,B,.."),
    "--losses": _f("benchmarks", "training losses to compare", None, "A,B,.."),
    "--modes": _f("benchmarks", "training modes to compare", None, "A,B,.."),
    "--ramp-steps": _f("benchmarks", "steps of a progressive schedule's ramp", int, "STEPS"),
    "--schedules": _f("benchmarks", "schedules to compare", None, "A,B,.."),
    "--values": _f("benchmarks", "values of the swept setting", None, "A,B,.."),
    "--basis": _f("benchmarks", "bases of the components to compare", None, "A,B,.."),
    "--exponent": _f("benchmarks", "exponent of the power-law spectrum", float, "P"),
    "--fit-exponent": _f(
        "benchmarks", "exponent of the spectrum that optimized grids are fitted to", float, "P"
    ),
    "--msdiff-widths": _f(
        "benchmarks", "width factors per scale, finest first, of the MSDiff row", None, "A,B,.."
    ),
    "--no-msdiff": _f("benchmarks", "leave out MSDiff's setting", action="store_true"),
}

# old spelling -> (new flag, what the value means there): kept working with a note
_DEPRECATED_NOTE = "nudiff: {old} is deprecated, use {new}"


class HelpFormatter(argparse.HelpFormatter):
    """Help with defaults: ``(default: X)`` after every option whose default is set."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" not in text
            and action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
            and not isinstance(action, argparse._VersionAction)
        ):
            default = action.default
            if isinstance(default, list):
                default = ",".join(str(v) for v in default)
            text += f" (default: {str(default).replace('%', '%%')})"
        return text


def add(parser: argparse.ArgumentParser, name: str, help: str | None = None, many=False, **kw):
    """Add the vocabulary's option ``name`` to ``parser``: its type, metavar, choices and
    help from :data:`FLAGS` (``help`` replaces the general text with what the option means
    in this command); ``many``: a comma-separated list of values (a swept setting); other
    keywords (``default``, ``required``, ``choices``) go to argparse."""
    flag = FLAGS[name]
    kw.setdefault("help", help or flag.help)
    if flag.action == "bool":
        kw.setdefault("action", argparse.BooleanOptionalAction)
    elif flag.action == "store_true":
        kw.setdefault("action", flag.action)
    elif flag.action == "append":
        kw.setdefault("action", flag.action)
        kw.setdefault("metavar", flag.metavar)
    else:
        if flag.type is not None:
            kw.setdefault("type", CommaList(flag.type) if many else flag.type)
        elif many:
            kw.setdefault("type", CommaList(str))
        if flag.choices is not None and not many:
            kw.setdefault("choices", flag.choices)
        if flag.metavar is not None:
            kw.setdefault("metavar", flag.metavar)
    dest = kw.pop("dest", None) or name.lstrip("-").replace("-", "_")
    return parser.add_argument(name, dest=dest, **kw)


class _Deprecated(argparse.Action):
    """An old spelling: stores into the new option's destination after a one-line note."""

    def __init__(self, option_strings, dest, new: str, convert=None, **kw):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_DEPRECATED_NOTE.format(old=option_string, new=self.new), file=sys.stderr)
        if self.nargs == 0:
            values = True
        elif self.convert is not None:
            values = self.convert(values)
        if isinstance(getattr(namespace, self.dest, None), list) and not isinstance(values, list):
            values = [*getattr(namespace, self.dest), values]  # an appended option
        setattr(namespace, self.dest, values)


def deprecated(parser: argparse.ArgumentParser, old: str, new: str, convert=None) -> None:
    """Accept ``old`` for the already added option ``new`` of ``parser`` (hidden from
    ``--help``); ``convert`` maps the old value to the new one where the meaning changed."""
    target = next(a for a in parser._actions if new in a.option_strings)
    nargs = 0 if target.nargs == 0 else None
    parser.add_argument(
        old,
        dest=target.dest,
        action=_Deprecated,
        new=new,
        convert=convert,
        type=None if nargs == 0 else target.type,
        nargs=nargs,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def is_deprecated(action: argparse.Action) -> bool:
    return isinstance(action, _Deprecated)


GROUPS = {
    "common": "Everywhere",
    "counts": "Counts",
    "budgets": "Training budgets",
    "sampling": "Sampling",
    "shapes": "Images and networks",
    "evaluation": "Evaluation",
    "benchmarks": "Benchmarks",
}


def markdown_table() -> str:
    """The vocabulary as Markdown tables, one per group, as ``docs/cli.md`` holds them."""
    out, group = [], None
    for name, flag in FLAGS.items():
        if flag.group != group:
            group = flag.group
            out += ["", f"### {GROUPS[group]}", "", "| flag | value | meaning |", "|---|---|---|"]
        if flag.action in ("store_true", "bool"):
            value = "" if flag.action == "store_true" else f"`--no-{name[2:]}` to turn off"
        elif flag.choices:
            value = "`" + "`, `".join(flag.choices) + "`"
        else:
            value = f"`{flag.metavar}`" if flag.metavar else "text"
        out.append(f"| `{name}` | {value} | {flag.help} |")
    return "\n".join(out[1:]) + "\n"
