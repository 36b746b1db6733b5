"""Denoising losses made of pieces: a weighting, a time sampling, and batch pieces.

The loss is written on the x0 error of each whitened component, ``(D(u_t, t) - u_0)^2``, times
a per-component weight that says which objective it is (:class:`Weighting`):

* ``uniform``: uniform in the prediction target's space (for ``eps``: the SNR, EDM: ``1/c_out^2``);
* ``likelihood``: ``g^2 / sigma^2`` on the eps error, i.e. ``-lambda'(t) SNR`` for VP: summed
  over components and integrated over uniform t it is the continuous-time ELBO (up to 1/2);
* ``min-snr``: ``min(SNR, gamma)`` (Hang et al. 2023);

and ``band_weights`` multiplies the weight of each basis group. Fully noised components carry
no learnable signal (the denoiser answers them exactly) and get weight 0.

Training times come from a :class:`TimeSampling`. The features of a batch are
:class:`BatchPiece` s, each with its draws and its change to the batch: :class:`SoftnessRange`
(GUD), :class:`PatchCrops` (Patch Diffusion), :class:`ClassLabels` (label dropout for
classifier-free guidance), :class:`JointBricks` (LEGO's joint loss). A
:class:`DenoisingLoss` puts them together; :class:`MultiScaleLoss` trains one scale's
:class:`DenoisingLoss` per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nudiff.models.multiscale import MultiScaleDenoiser, pool_image
from nudiff.patch import Crop, PatchSizes, crop_alignment
from nudiff.process import Process
from nudiff.schedules.reference import ReferenceTime

#: the ways to draw training times (see :func:`sample_times`)
TIME_SAMPLING = ("uniform", "stratified", "interval", "log-normal")


class LogNormalTimes(nn.Module):
    """EDM's log-normal noise levels for any schedule: training times whose reference log-SNR
    (the mean over components, :class:`~nudiff.schedules.reference.ReferenceTime`) is normal,
    ``N(mean, std^2)``, truncated to the times drawn.

    EDM draws ``ln sigma ~ N(-1.2, 1.2^2)``, i.e. log-SNR ``-2 ln sigma ~ N(2.4, 2.4^2)``: the
    defaults. Training then spends its steps on the noise levels that decide what samples look
    like, rather than uniformly over a log-SNR range whose ends are almost pure data or noise.

    Call with uniforms ``r`` (any shape; stratified ``r`` gives stratified levels) and the
    interval ``[lo, hi]`` of times; returns float32 times of ``r``'s shape."""

    def __init__(self, process: Process, mean: float = 2.4, std: float = 2.4):
        super().__init__()
        if not std > 0:
            raise ValueError(f"the log-SNR std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)
        self.reference = ReferenceTime(process)
        self._ends: dict[tuple[float, float], tuple[float, float, float, float]] = {}

    @classmethod
    def for_mode(cls, mode: str, process: Process, mean: float, std: float):
        """The density of t-sampling ``mode``: a :class:`LogNormalTimes` for ``log-normal``,
        None for the modes that need none."""
        return cls(process, mean, std) if mode == "log-normal" else None

    def _truncation(self, lo: float, hi: float) -> tuple[float, float, float, float]:
        """Log-SNRs at ``hi`` and ``lo`` and the normal's CDF there, once per interval: a
        loss draws in one interval, so training steps reuse them without a device round trip."""
        if (lo, hi) not in self._ends:
            ref = self.reference
            ends = ref.log_snr(torch.tensor([hi, lo], dtype=torch.float64, device=ref.t.device))
            lam_lo, lam_hi = ends.tolist()
            cdf_lo, cdf_hi = (
                0.5 * math.erfc((self.mean - v) / (self.std * math.sqrt(2)))
                for v in (lam_lo, lam_hi)
            )
            self._ends[lo, hi] = (lam_lo, lam_hi, cdf_lo, cdf_hi)
        return self._ends[lo, hi]

    def forward(self, r: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        lam_lo, lam_hi, cdf_lo, cdf_hi = self._truncation(lo, hi)
        r = r.double()
        if cdf_hi - cdf_lo > 1e-12:
            lam = self.mean + self.std * torch.special.ndtri(cdf_lo + r * (cdf_hi - cdf_lo))
            lam = lam.clamp(lam_lo, lam_hi)  # ndtri is inf at the CDF's ends
        else:  # an interval far in a tail has no mass in float64: uniform in log-SNR there
            lam = lam_lo + r * (lam_hi - lam_lo)
        return self.reference.time(lam).clamp(lo, hi).float()


def _check_times(mode: str, interval: tuple[float, float] | None) -> None:
    if mode not in TIME_SAMPLING:
        raise ValueError(f"t sampling must be one of {', '.join(TIME_SAMPLING)}; got {mode!r}")
    if mode == "interval" and interval is None:
        raise ValueError("interval is required for mode='interval'")


def sample_times(
    n: int,
    mode: str,
    generator: torch.Generator,
    t_min: float = 0.0,
    interval: tuple[float, float] | None = None,
    density: LogNormalTimes | None = None,
) -> torch.Tensor:
    """Training times ``(n,)`` in ``[t_min, 1]``, or in ``interval`` when given: ``uniform``,
    ``stratified`` (one draw per ``1/n`` stratum, shuffled so any slice of the batch is spread
    over t), ``interval`` (uniform in ``interval``, which it requires) or ``log-normal``
    (stratified in ``density``, which it requires)."""
    _check_times(mode, interval)
    if mode == "log-normal" and density is None:
        raise ValueError("a LogNormalTimes density is required for mode='log-normal'")
    lo, hi = interval if interval is not None else (t_min, 1.0)
    device = generator.device  # draws happen where the trainer's generator lives
    r = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    if mode in ("stratified", "log-normal"):
        r = (torch.randperm(n, generator=generator, device=device).double() + r) / n
    if mode == "log-normal":
        return density(r, lo, hi)
    return (lo + (hi - lo) * r).float()


class TimeSampling(nn.Module):
    """The training times of a loss: ``times(n, generator)`` -> ``(n,)`` float32 in ``[t_min,
    1]`` or ``interval``, drawn by ``mode`` (see :func:`sample_times`); ``log-normal`` draws
    EDM's levels (:class:`LogNormalTimes` with ``log_snr_mean`` and ``log_snr_std``)."""

    def __init__(
        self,
        process: Process,
        mode: str = "stratified",
        interval: tuple[float, float] | None = None,
        log_snr_mean: float = 2.4,
        log_snr_std: float = 2.4,
    ):
        super().__init__()
        _check_times(mode, interval)
        self.mode, self.interval, self.t_min = mode, interval, process.t_min
        self.density = LogNormalTimes.for_mode(mode, process, log_snr_mean, log_snr_std)

    def forward(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_times(n, self.mode, generator, self.t_min, self.interval, self.density)


class Weighting(nn.Module):
    """The per-component weight on the squared x0 error (see the module docstring):
    ``weighting(t, like, process, crop=None)`` -> ``(B, C, H, W)`` or broadcastable, for the
    batch's ``process`` (its crops' with ``crop``).

    ``kind``: ``uniform``, ``likelihood`` or ``min-snr`` (``min_snr_gamma``); ``prediction``
    and ``sigma_data`` (the denoiser's per-component data std, or a scalar) say what
    ``uniform`` is; ``band_weights``: one factor per group of ``process.basis`` (None: 1)."""

    KINDS = ("uniform", "likelihood", "min-snr")

    def __init__(
        self,
        process: Process,
        kind: str = "uniform",
        prediction: str = "edm",
        sigma_data: float | torch.Tensor = 0.5,
        min_snr_gamma: float = 5.0,
        band_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"weighting must be uniform, likelihood or min-snr; got {kind!r}")
        self.kind, self.prediction, self.min_snr_gamma = kind, prediction, float(min_snr_gamma)
        # the denoiser's per-component data std (or a scalar): EDM's uniform weighting uses it
        self.register_buffer(
            "sigma_data", torch.as_tensor(sigma_data, dtype=torch.float32), persistent=False
        )
        index, names = process.basis.groups()
        bw = torch.ones(len(names)) if band_weights is None else torch.as_tensor(band_weights)
        if bw.numel() != len(names):
            raise ValueError(
                f"loss.band_weights needs one weight per basis group ({len(names)}: "
                f"{', '.join(names)}), got {bw.numel()}"
            )
        self.register_buffer("band_weight", bw.float()[index], persistent=False)

    def forward(
        self, t: torch.Tensor, like: torch.Tensor, process: Process, crop: Crop | None = None
    ) -> torch.Tensor:
        alpha, sigma = process.coefficients(t, like)
        snr = (alpha / sigma) ** 2
        band, sd = self.band_weight.to(like.dtype), self.sigma_data
        if crop is not None:
            band, sd = crop.components(band), crop.components(sd)
        if self.kind == "likelihood":
            f, g2 = process.sde(t, like)
            w = g2 / sigma**2 * snr
        elif self.kind == "min-snr":
            w = snr.clamp(max=self.min_snr_gamma)
        else:
            w = self._uniform(alpha, sigma, snr, sd)
        w = w * band
        return torch.where(process.inactive(t, like=like), 0.0, w)

    def _uniform(self, alpha, sigma, snr, sd):
        sd2 = sd.to(snr.dtype) ** 2
        if self.prediction == "eps":
            return snr
        if self.prediction == "v":
            return (alpha**2 + sigma**2) ** 2 / sigma**2
        if self.prediction == "x0":
            return torch.ones_like(snr) / sd2
        return (sigma**2 + alpha**2 * sd2) / (sigma**2 * sd2)  # edm: 1 / c_out^2


@dataclass
class Batch:
    """A training batch on its way through a :class:`DenoisingLoss`: the pieces adapt it in
    turn, then it is noised (``process.marginal(u0, t, eps)``), denoised and weighted."""

    noise: dict  # the batch's rows of the draws (and the data's labels, from the trainer)
    t: torch.Tensor
    eps: torch.Tensor
    u0: torch.Tensor  # the clean components (their crops, in patch training)
    process: Process  # the process that noises them (at the drawn softness; of the crops)
    kw: dict = field(default_factory=dict)  # the model's keywords: labels, process, crop
    crop: Crop | None = None
    #: ``(model, u_t, batch)`` -> the squared x0 error; None: that of ``model(u_t, t, **kw)``
    error: Callable | None = None

    def squared_error(self, model: Callable, ut: torch.Tensor) -> torch.Tensor:
        if self.error is not None:
            return self.error(model, ut, self)
        return (model(ut, self.t, **self.kw) - self.u0) ** 2


class BatchPiece:
    """One feature of the training batches: what it draws and how it changes a batch.

    :meth:`shape`: the shape ``eps`` is drawn at; :meth:`draw`: its entries of a step's draws
    (from the trainer's generator after ``t`` and ``eps``, in the order of the loss's pieces,
    so that resume and DDP replay them; or from a generator seeded by the step);
    :meth:`adapt`: its change to a :class:`Batch` before it is noised (in the same order);
    :meth:`batch_multiplier`: how many times the configured batch step ``step`` loads;
    :meth:`applies_to`: whether it applies to a denoiser (the scales of a multi-scale model)."""

    def shape(self, shape: tuple[int, ...], step: int) -> tuple[int, ...]:
        return shape

    def draw(self, n: int, generator: torch.Generator, step: int) -> dict:
        return {}

    def adapt(self, batch: Batch) -> None:
        pass

    def batch_multiplier(self, step: int) -> int:
        return 1

    def applies_to(self, denoiser: nn.Module) -> bool:
        return True


class SoftnessRange(BatchPiece):
    """One model over a range of softness ``(min, max)`` (a GUD soft-conditioning process).

    Each batch draws ``a = 1 / softness`` uniformly in ``[1 / max, 1 / min]`` (``max`` may be
    inf: standard diffusion) from a generator seeded by ``(seed, step)`` (a function of the
    step, so resume and DDP replay it; no device sync), and the batch is noised and denoised
    with the process at that softness (the model's ``process=`` keyword). One draw per batch,
    not per sample: the schedule is then one tensor per batch like any other, and the network
    tells softnesses apart through the group log-SNRs of its noise conditioning."""

    def __init__(self, process: Process, softness: tuple[float, float], seed: int = 0):
        if not hasattr(process.schedule, "with_softness"):
            raise ValueError("a softness range needs the soft-conditioning schedule")
        lo, hi = (float(v) for v in softness)
        if not 0 < lo <= hi:
            raise ValueError(f"softness needs 0 < min <= max, got {softness}")
        self.softness, self.seed = (lo, hi), int(seed)

    def softness_for_step(self, step: int) -> float:
        """The softness of step ``step``: ``1 / a``, ``a`` uniform in ``[1 / max, 1 / min]``."""
        lo, hi = 1 / self.softness[1], 1 / self.softness[0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        a = lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))
        return 1 / a if a > 0 else float("inf")  # a = 0: standard diffusion

    def draw(self, n: int, generator: torch.Generator, step: int) -> dict:
        return {"softness": self.softness_for_step(step)}

    def adapt(self, batch: Batch) -> None:
        if "softness" in batch.noise:
            p = batch.process
            batch.process = Process(
                p.basis, p.schedule.with_softness(batch.noise["softness"]), p.prior
            )
            batch.kw["process"] = batch.process


class PatchCrops(BatchPiece):
    """Patch Diffusion with patch ``sizes`` (a :class:`~nudiff.patch.PatchSizes`): each step
    draws one patch size ``p`` (a function of the step) and, per image, an aligned crop
    position from the trainer's generator; ``eps`` is drawn at the crop's shape. The images'
    components are cropped (:class:`~nudiff.patch.Crop`), noised with the crops of the process,
    denoised by the model called with ``crop=`` and weighted with the crops of the
    per-component weights. :meth:`batch_multiplier`: Patch Diffusion's ``(R / p)^2``."""

    def __init__(self, process: Process, sizes: PatchSizes):
        align = crop_alignment(process.basis)  # raises for global bases
        if sizes.resolution != process.shape[1] or process.shape[1] != process.shape[2]:
            raise ValueError(
                f"patch sizes are for {sizes.resolution}x{sizes.resolution} images, the "
                f"process's are {process.shape[1]}x{process.shape[2]}"
            )
        if sizes.align % align:
            raise ValueError(f"patch offsets must be multiples of {align} on this basis")
        self.sizes = sizes

    def shape(self, shape: tuple[int, ...], step: int) -> tuple[int, ...]:
        size = self.sizes.size_for_step(step)
        return (shape[0], size, size)

    def draw(self, n: int, generator: torch.Generator, step: int) -> dict:
        size = self.sizes.size_for_step(step)
        top, left = self.sizes.offsets(n, size, generator)
        return {"patch": size, "top": top, "left": left}

    def adapt(self, batch: Batch) -> None:
        noise = batch.noise
        if "patch" not in noise:
            return
        crop = Crop(batch.process.basis, noise["top"], noise["left"], noise["patch"])
        batch.u0, batch.kw["crop"] = crop.components(batch.u0), crop
        batch.process, batch.crop = crop.process(batch.process), crop

    def batch_multiplier(self, step: int) -> int:
        return self.sizes.multiplier_for_step(step)


class ClassLabels(BatchPiece):
    """A class-conditional model: the data's labels (``noise["labels"]``, put there by the
    trainer) are replaced by the null label ``num_classes`` on a ``dropout`` share of the
    rows (drawn like ``t`` and ``eps``, so resume and DDP stay exact), which trains the
    unconditional model of classifier-free guidance in the same network."""

    def __init__(self, num_classes: int, dropout: float = 0.0):
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {dropout}")
        self.num_classes, self.dropout = int(num_classes), float(dropout)

    def draw(self, n: int, generator: torch.Generator, step: int) -> dict:
        u = torch.rand(n, generator=generator, device=generator.device)
        return {"drop": u < self.dropout}

    def labels(self, noise: dict, like: torch.Tensor) -> dict:
        """The model's label keyword for a batch: its labels, the null label where dropped."""
        if "labels" not in noise:
            raise ValueError("a class-conditional model (model.num_classes) needs labelled data")
        labels = noise["labels"].to(like.device)
        return {"labels": torch.where(noise["drop"].to(like.device), self.num_classes, labels)}

    def adapt(self, batch: Batch) -> None:
        batch.kw.update(self.labels(batch.noise, batch.u0))


class JointBricks(BatchPiece):
    """LEGO's joint loss: the mean of every brick's own denoising error (every brick is a
    denoiser of its own, so sampling may stop after any of them), from the model's
    ``per_brick`` estimates (:meth:`~nudiff.models.denoiser.Denoiser.per_brick`). Applies to
    denoisers with a LEGO backbone."""

    def applies_to(self, denoiser: nn.Module) -> bool:
        return hasattr(getattr(denoiser, "backbone", None), "active_bricks")

    def adapt(self, batch: Batch) -> None:
        batch.error = self.error

    @staticmethod
    def error(model: Callable, ut: torch.Tensor, batch: Batch) -> torch.Tensor:
        every = through_forward(model, "per_brick", ut, batch.t, **batch.kw)
        return ((every - batch.u0) ** 2).mean(0)


def through_forward(model: Callable, method: str, *args, **kw):
    """``model.<method>(*args, **kw)``; when ``model`` only wraps the module that has the
    method (DDP: ``model.module``), through the wrapper's forward: DDP prepares the gradient
    all-reduce in its forward, which calling the inner module's method would bypass."""
    inner = getattr(model, "module", None)
    if hasattr(model, method) or not isinstance(inner, nn.Module):
        return getattr(model, method)(*args, **kw)
    inner.forward = getattr(inner, method)  # an instance attribute: the call runs it
    try:
        return model(*args, **kw)
    finally:
        del inner.forward


class DenoisingLoss(nn.Module):
    """Per-sample loss ``(B,)`` of a :class:`~nudiff.models.denoiser.Denoiser` on images.

    Follows the trainer's protocol: :meth:`draw` draws ``t`` (``times``, a
    :class:`TimeSampling`), ``eps`` (at the shape the pieces say) and the ``pieces``' own
    numbers for the global batch from the trainer's generator; :meth:`forward` evaluates a
    slice of it: the images are encoded, each piece adapts the batch (:class:`Batch`) in
    turn, and the weighted (``weighting``, a :class:`Weighting`) squared x0 error of the
    noised batch is averaged per sample.

    ``pieces`` (:class:`BatchPiece` s) act in their order: a piece that changes the process
    (:class:`SoftnessRange`) before one that crops it (:class:`PatchCrops`).
    """

    def __init__(
        self,
        process: Process,
        weighting: Weighting | None = None,
        times: TimeSampling | None = None,
        pieces: Sequence[BatchPiece] = (),
    ):
        super().__init__()
        self.process = process
        self.weighting = Weighting(process) if weighting is None else weighting
        self.times = TimeSampling(process) if times is None else times
        self.pieces = tuple(pieces)

    def piece(self, kind: type) -> BatchPiece | None:
        """The loss's piece of type ``kind`` (None without one)."""
        return next((p for p in self.pieces if isinstance(p, kind)), None)

    @property
    def patch(self) -> PatchSizes | None:
        """The patch sizes of patch training, None otherwise (the trainer then loads
        :meth:`batch_multiplier` times its batch)."""
        crops = self.piece(PatchCrops)
        return None if crops is None else crops.sizes

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict[str, torch.Tensor]:
        t = self.times(n, generator)
        shape = self.process.shape
        for piece in self.pieces:
            shape = piece.shape(shape, step)
        eps = torch.randn((n, *shape), generator=generator, device=generator.device)
        out = {"t": t, "eps": eps}
        for piece in self.pieces:
            out.update(piece.draw(n, generator, step))
        return out

    def batch_multiplier(self, step: int) -> int:
        """How many times the configured batch step ``step`` loads (patch training with
        ``batch_multiplier``: ``(R / p)^2``; otherwise 1)."""
        return math.prod(piece.batch_multiplier(step) for piece in self.pieces)

    def weight(
        self,
        t: torch.Tensor,
        like: torch.Tensor,
        process: Process | None = None,
        crop: Crop | None = None,
    ) -> torch.Tensor:
        """The weighting's weight for the batch's ``process`` (default: the loss's own)."""
        return self.weighting(t, like, process or self.process, crop)

    def elementwise(self, model: Callable, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """Weighted squared error per element ``(B, C, H, W)``."""
        t, eps = noise["t"].to(x0.device), noise["eps"].to(x0)
        batch = Batch(noise, t, eps, self.process.encode(x0), self.process)
        for piece in self.pieces:
            piece.adapt(batch)
        ut = batch.process.marginal(batch.u0, batch.t, batch.eps)
        err = batch.squared_error(model, ut)
        return self.weighting(batch.t, batch.u0, batch.process, batch.crop) * err

    def forward(self, model: Callable, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        return self.elementwise(model, x0, noise).flatten(1).mean(1)


class MultiScaleLoss(nn.Module):
    """Multi-scale training (MSDiff, MSF): each step trains one scale (stage) of a
    :class:`~nudiff.models.multiscale.MultiScaleDenoiser`.

    The scale of step ``k`` is ``k mod n_scales`` (``round-robin``) or drawn with probabilities
    ``scale_weights`` from a generator seeded by ``(seed, k)`` (``random``): a function of the
    step, so resuming replays it. ``losses[s]`` is the :class:`DenoisingLoss` of scale ``s``
    on its sub-process: its times in the scale's interval ``[T_{s-1}, T_s]`` (stratified,
    uniform, or EDM's ``log-normal`` levels of the sub-process truncated to it), the band
    weights of its bands; the bands finished at the scale are dropped (the network sees the
    ``2^d_s``-pooled image).

    Args:
        model: the multi-scale denoiser.
        losses: one :class:`DenoisingLoss` per scale, finest first.
        scale_sampling: ``round-robin`` or ``random``.
        scale_weights: probabilities of the scales (finest first) for ``random``; None: equal.
        seed: seeds the ``random`` scale draws.
    """

    def __init__(
        self,
        model: MultiScaleDenoiser,
        losses: Sequence[DenoisingLoss],
        scale_sampling: str = "round-robin",
        scale_weights: list[float] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        n = len(model.scales)
        if len(losses) != n:
            raise ValueError(f"need one loss per scale ({n}, finest first), got {len(losses)}")
        modes = {loss.times.mode for loss in losses}
        if not modes <= {"stratified", "uniform", "log-normal"}:
            raise ValueError(
                f"a multi-scale loss draws t stratified, uniform or log-normal in each scale's "
                f"interval, got {', '.join(sorted(modes))}"
            )
        if scale_sampling not in ("round-robin", "random"):
            raise ValueError(
                f"scale_sampling must be round-robin or random, got {scale_sampling!r}"
            )
        weights = torch.ones(n) if scale_weights is None else torch.as_tensor(scale_weights)
        if weights.shape != (n,) or not (weights >= 0).all() or not weights.sum() > 0:
            raise ValueError(
                f"scale_weights needs {n} non-negative weights (finest scale first), not all 0; "
                f"got {scale_weights}"
            )
        self.dropped = list(model.dropped)
        self.scale_sampling, self.seed = scale_sampling, int(seed)
        self.register_buffer("scale_weights", weights.double() / weights.sum(), persistent=False)
        self.losses = nn.ModuleList(losses)

    def scale_for_step(self, step: int) -> int:
        n = len(self.losses)
        if self.scale_sampling == "round-robin":
            return step % n
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return int(torch.multinomial(self.scale_weights.cpu(), 1, generator=g))

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict:
        scale = self.scale_for_step(step)
        return {**self.losses[scale].draw(n, generator, step), "scale": scale}

    def forward(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """``model`` is called as ``model(u_s, t, scale=s)`` (through DDP when distributed).
        A scale's loss gets the pooled batch, or the full one if it pools itself (conditional
        losses degrade the condition from the full image)."""
        s = noise["scale"]
        if not getattr(self.losses[s], "full_resolution", False):
            x0 = pool_image(x0, self.dropped[s])
        return self.losses[s](ScaleOf(model, s), x0, noise)


class ScaleOf:
    """Scale ``scale`` of a multi-scale model, called through ``model`` (which may be its DDP
    wrapper): ``model(u, t, scale=scale, **kw)``, and its :meth:`per_brick` estimates."""

    def __init__(self, model: Callable, scale: int):
        self.model, self.scale = model, scale

    def __call__(self, u: torch.Tensor, t, **kw) -> torch.Tensor:
        return self.model(u, t, scale=self.scale, **kw)

    def per_brick(self, u: torch.Tensor, t, **kw) -> torch.Tensor:
        return through_forward(self.model, "per_brick", u, t, scale=self.scale, **kw)
