"""What every sampler shares: NFE counting, per-sample noise, progress and callbacks.

A sampler is a function ``sampler(model, process, u, ts, *, noise=None, callback=None,
progress=False) -> u0`` (k-diffusion style): ``model(u, t)`` returns the x0 estimate in whitened
components ``(B, C, H, W)`` for a 0-d time ``t`` (the wrapped denoiser gets it as ``(1,)`` and
must broadcast it over the batch) (a :class:`CountingDenoiser` around the user's
denoiser), ``u`` is the start state at ``ts[0]``, ``ts`` a decreasing time grid ``(N + 1,)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from nudiff.schedules import as_times


class CountingDenoiser:
    """Wraps a denoiser and counts its evaluations (one per batched call)."""

    def __init__(self, denoiser: Callable, extra: dict | None = None):
        self.denoiser, self.extra, self.nfe = denoiser, extra or {}, 0

    def __call__(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        # one shared time (1,): denoisers broadcast it, so per-component coefficients are
        # computed once per call instead of once per sample
        return self.denoiser(u, t.reshape(1), **self.extra)


class Guided:
    """Classifier-free guidance of a class-conditional denoiser: ``Guided(denoiser, w,
    interval)(u, t, labels=labels)`` is ``x_null + w (x_label - x_null)`` per component, with
    ``x_null`` the estimate at the null label (``denoiser.num_classes``).

    For fixed ``u_t`` the x0 estimate is affine in the eps estimate and in the score, so this
    is the usual guidance of eps or of the score, for every schedule and sampler. ``w = 1`` is
    the conditional model (one pass); otherwise the labelled and the null batch go through the
    network as one batch of ``2B`` (one NFE). ``interval (lo, hi)``: guide only at ``lo <= t <=
    hi``, the conditional model elsewhere (chosen per row on the device: no host sync).
    Without labels the denoiser is called as it is (a class-conditional model: its null label).

    A multi-scale model (one with ``scales`` and ``assemble``) is guided scale by scale, each on
    its own block: the bands it answers exactly are not the network's and stay exact.
    """

    def __init__(self, denoiser: Callable, guidance: float = 1.0, interval=None):
        self.denoiser, self.guidance, self.interval = denoiser, float(guidance), interval
        self.scales = None
        if callable(getattr(denoiser, "assemble", None)):
            self.scales = [Guided(s, guidance, interval) for s in denoiser.scales]

    @property
    def num_classes(self) -> int | None:
        return getattr(self.denoiser, "num_classes", None)

    def __call__(self, u: torch.Tensor, t, labels: torch.Tensor | None = None, **kw):
        if labels is None:
            return self.denoiser(u, t, **kw)
        if self.guidance == 1 and self.interval is None:
            return self.denoiser(u, t, labels=labels, **kw)
        if self.scales is not None:
            return self.denoiser.assemble(u, t, self.scales, labels=labels, **kw)
        if kw.get("crop") is not None:
            raise ValueError("guidance does not apply to patch training calls")
        t = as_times(t, u)
        null = torch.full_like(labels, self.num_classes)
        t2 = t if t.shape[0] == 1 else torch.cat([t, t])
        both = self.denoiser(torch.cat([u, u]), t2, labels=torch.cat([labels, null]), **kw)
        cond, uncond = both.chunk(2, dim=-4)
        w = torch.as_tensor(self.guidance, dtype=u.dtype, device=u.device)
        if self.interval is not None:
            lo, hi = self.interval
            w = torch.where((t >= lo) & (t <= hi), w, torch.ones_like(w)).view(-1, 1, 1, 1)
        return uncond + w * (cond - uncond)


class NoiseSource:
    """Per-sample Gaussian noise that does not depend on the batch a sample is drawn in.

    Samples are grouped in fixed blocks of ``block`` consecutive global indices; each block
    owns a generator seeded by ``(seed, block index)`` and always draws a whole block, of which
    a batch keeps the rows it holds. So sample ``k`` sees the same noise whatever the batch size
    or offset, at the cost of one generator call per block and step (not per sample).
    """

    def __init__(self, seed: int, start: int, n: int, device=None, block: int = 64):
        if n < 1 or start < 0:
            raise ValueError(f"need n >= 1 and start >= 0, got n={n}, start={start}")
        self.start, self.n, self.block = int(start), int(n), int(block)
        first, last = self.start // block, (self.start + n - 1) // block
        self.generators = [
            torch.Generator(device=device or "cpu").manual_seed(int(seed) * 1_000_003 + b)
            for b in range(first, last + 1)
        ]
        self.offset = self.start - first * block

    def __len__(self) -> int:
        return self.n

    def randn(self, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
        """``(n, *shape)`` standard normal noise, row ``k`` for sample ``start + k``."""
        blocks = [
            torch.randn((self.block, *shape), generator=g, dtype=dtype, device=g.device)
            for g in self.generators
        ]
        return torch.cat(blocks)[self.offset : self.offset + self.n]


def posterior_variance(alpha_t, sigma_t, alpha_s, sigma_s):
    """The DDPM posterior ``q(u_s | u_t, u_0)`` per component, ``s < t``: ``r^2 = sigma_t^2 -
    (alpha_t / alpha_s)^2 sigma_s^2``, the forward transition's variance (0 for a frozen
    component), and the posterior variance ``r^2 sigma_s^2 / sigma_t^2``."""
    a = alpha_t / alpha_s
    r2 = (sigma_t**2 - a**2 * sigma_s**2).clamp_min(0)
    return r2, r2 * sigma_s**2 / sigma_t**2


def check_grid(ts: torch.Tensor) -> torch.Tensor:
    ts = torch.as_tensor(ts)
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(
            f"ts must be a 1-D time grid with at least 2 entries, got {tuple(ts.shape)}"
        )
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError("ts must be strictly decreasing (from the prior towards the data)")
    return ts


def steps_iter(ts: torch.Tensor, progress: bool, desc: str):
    """Pairs ``(t, s)`` of consecutive grid times, with an optional progress bar."""
    pairs = list(zip(ts[:-1], ts[1:], strict=True))
    return tqdm(pairs, desc=desc, leave=False) if progress else pairs


def emit(callback, i: int, t, u, x0) -> None:
    if callback is not None:
        callback({"i": i, "t": t, "u": u, "x0": x0})
