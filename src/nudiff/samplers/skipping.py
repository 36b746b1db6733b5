"""LEGO brick skipping: run only the first bricks of a LEGO denoiser late in sampling.

LEGO trains every brick as a denoiser of its own (the joint loss), so the output of brick ``k``
is usable on its own. Late in sampling (low noise) the last bricks change little; skipping them
for the final part of the trajectory saves their cost. Upstream LEGO's early exit is set to the
last brick, so its skipping never skips; here the skipped bricks are really not called (see
``brick_calls``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BrickSkip:
    """From the fraction ``start`` of the sampling steps on, run the first ``bricks`` bricks:
    ``"last"`` drops the last brick, an integer ``k`` keeps the first ``k``."""

    bricks: int | str = "last"
    start: float = 0.5

    def __post_init__(self):
        if self.bricks != "last" and not (isinstance(self.bricks, int) and self.bricks >= 1):
            raise ValueError(f"skip bricks must be 'last' or an integer >= 1, got {self.bricks!r}")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"skip from must be in [0, 1], got {self.start}")

    @classmethod
    def parse(cls, text: str) -> BrickSkip:
        """``"bricks=last,from=0.5"`` (either key may be left out) -> :class:`BrickSkip`."""
        kw = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in ("bricks", "from"):
                raise ValueError(f"--skip takes 'bricks=last|K,from=FRACTION', got {text!r}")
            value = value.strip()
            if key.strip() == "bricks":
                kw["bricks"] = value if value == "last" else _number(value, int, text)
            else:
                kw["start"] = _number(value, float, text)
        return cls(**kw)

    @classmethod
    def from_config(cls, skip) -> BrickSkip | None:
        """From a :class:`~nudiff.config.SkipConfig` (or None)."""
        return None if skip is None else cls(skip.bricks, skip.start)

    def keep(self, num_bricks: int) -> int:
        """Bricks run while skipping."""
        k = num_bricks - 1 if self.bricks == "last" else int(self.bricks)
        if not 1 <= k <= num_bricks:
            raise ValueError(
                f"skip bricks={self.bricks!r} leaves {k} of the model's {num_bricks} bricks; "
                f"keep between 1 and {num_bricks}"
            )
        return k

    def start_time(self, ts: torch.Tensor) -> float:
        """The time of the first skipped step on the grid ``ts`` ``(N + 1,)``: steps
        ``ceil(start * N) ...`` skip (``-inf``: none does)."""
        n = ts.numel() - 1
        first = math.ceil(self.start * n - 1e-9)
        return float(ts[first]) if first < n else -math.inf


def _number(value: str, kind, text: str):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"--skip {text!r}: {value!r} is not a number") from None


def lego_backbone(denoiser):
    """The LEGO backbone of ``denoiser``, or a ValueError."""
    from nudiff.models.lego import LEGO

    backbone = getattr(denoiser, "backbone", None)
    if not isinstance(backbone, LEGO):
        raise ValueError(
            "brick skipping needs a denoiser with a LEGO backbone (model.backbone: lego), got "
            f"{type(backbone or denoiser).__name__}"
        )
    return backbone


class SkippingDenoiser:
    """Calls ``denoiser`` with only the first ``skip.keep(K)`` bricks at times ``<= t_start``
    (the grid time of the first skipped step) and with all bricks before.

    The decision reads the (0-d) time on the host: one read per network call, not per pixel.
    ``full_calls`` and ``skipped_calls`` count the two kinds of call.
    """

    def __init__(self, denoiser, skip: BrickSkip, ts: torch.Tensor):
        self.denoiser, self.lego = denoiser, lego_backbone(denoiser)
        self.keep = skip.keep(self.lego.num_bricks)
        self.t_start = skip.start_time(ts.detach().cpu())
        self.full_calls = self.skipped_calls = 0

    @property
    def num_classes(self) -> int | None:
        return getattr(self.denoiser, "num_classes", None)

    def __call__(self, u: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
        if float(t.reshape(-1)[0]) > self.t_start:
            self.full_calls += 1
            return self.denoiser(u, t, **kw)
        self.skipped_calls += 1
        before, self.lego.active_bricks = self.lego.active_bricks, self.keep
        try:
            return self.denoiser(u, t, **kw)
        finally:
            self.lego.active_bricks = before

    def macs_per_sample(self, height: int, width: int) -> int:
        """Backbone multiply-accumulates per sample over the calls made so far."""
        full = self.lego.count_macs(height, width, bricks=self.lego.num_bricks)
        part = self.lego.count_macs(height, width, bricks=self.keep)
        return self.full_calls * full + self.skipped_calls * part
