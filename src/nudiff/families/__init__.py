"""The families of models, registered by name and imported when first used.

A config belongs to exactly one family (:func:`family_name`); each family says which shared
features it supports (:mod:`nudiff.families.features`), and one generic check refuses every
other active feature with the same one-line error. Adding a family: write a
:class:`~nudiff.families.base.Family` in its own folder, add it to :data:`FAMILIES` and to
:func:`family_name` (``docs/architecture.md`` walks through it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nudiff.families.base import Family

if TYPE_CHECKING:
    from nudiff.config import Config

#: name -> the module whose ``FAMILY`` is the family (imported on first use)
FAMILIES = {
    "gaussian": "nudiff.families.gaussian",
    "ndm": "nudiff.ndm.family",
    "beta": "nudiff.beta.family",
    "sid": "nudiff.distill.family",
}
_LOADED: dict[str, Family] = {}

#: the samplers of the linear process (:data:`nudiff.samplers.SAMPLERS`; here, where the
#: command line reads them without importing torch)
LINEAR_SAMPLERS = (
    "dpmpp-2m",
    "dpmpp-3m",
    "dpmpp-2m-sde",
    "dpmpp-3m-sde",
    "unipc",
    "ddim",
    "ancestral",
    "euler",
    "heun",
    "dopri5",
    "euler-maruyama",
    "pc",
)


def family_name(cfg: Config) -> str:
    """The family of a config: a ``distill`` section makes a distilled generator, then
    ``process.family: beta`` Beta diffusion, then ``process.transform`` a Neural Diffusion
    Model; anything else is the linear Gaussian process."""
    if cfg.distill is not None:
        return "sid"
    if cfg.process.family == "beta":
        return "beta"
    if cfg.process.transform is not None:
        return "ndm"
    return "gaussian"


def get_family(name: str) -> Family:
    """The registered family ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; registered: {', '.join(FAMILIES)}")
    if name not in _LOADED:
        _LOADED[name] = importlib.import_module(FAMILIES[name]).FAMILY
    return _LOADED[name]


def family_of(cfg: Config) -> Family:
    return get_family(family_name(cfg))


__all__ = ["FAMILIES", "Family", "family_name", "family_of", "get_family"]
