"""Helpers the command modules share: sub-command parsers, devices, ranks, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from nudiff.cli.vocabulary import HelpFormatter, add


def command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser with the help formatter that shows defaults."""
    return sub.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


def add_seed_device(p, seed_help: str | None = None, seed_default: int | None = 0) -> None:
    """``--seed`` and ``--device`` (default auto), which every command takes."""
    add(p, "--seed", seed_help, default=seed_default)
    add(p, "--device", default="auto")


def world_size() -> int:
    """Processes of this launch (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def single_process(what: str) -> None:
    """Refuse a command that does not split its work over torchrun's processes."""
    if world_size() > 1:
        raise ValueError(
            f"{what} runs in one process; launch it without torchrun (WORLD_SIZE={world_size()})"
        )


@contextlib.contextmanager
def ranks(device_name: str):
    """This process's device, joining torchrun's process group when there is one (gloo on the
    CPU, NCCL on CUDA); leaves the group at the end."""
    from nudiff.devices import resolve_device
    from nudiff.training import distributed

    device = resolve_device(device_name)
    if world_size() > 1 and device.type == "mps":
        raise ValueError("torchrun on mps is not supported: use --device cpu or cuda")
    try:
        yield distributed.setup(device)
    finally:
        distributed.cleanup()


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def print_result(result: dict, path: str | None, keys: tuple[str, ...]) -> None:
    """One line with ``keys`` of ``result``; the whole result as JSON at ``path``."""
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


def sampler_options(items: list[str] | None) -> dict | None:
    """``--opt eta=0.5 --opt order=2 --opt variant=bh1`` -> ``{"eta": 0.5, "order": 2,
    "variant": "bh1"}`` (values read as YAML scalars: numbers, true / false, or text)."""
    import yaml

    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--opt takes KEY=VALUE, got {item!r}")
        parsed = yaml.safe_load(value)
        if not isinstance(parsed, bool | int | float | str):
            raise ValueError(
                f"--opt takes KEY=VALUE with a number, true/false or a word, got {item!r}"
            )
        out[key.strip()] = parsed
    return out
