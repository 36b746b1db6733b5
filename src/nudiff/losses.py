"""Denoising losses with a visible weighting, and the sampling of training times.

The loss is written on the x0 error of each whitened component, ``(D(u_t, t) - u_0)^2``, times
a per-component weight that says which objective it is:

* ``uniform``: uniform in the prediction target's space (for ``eps``: the SNR, EDM: ``1/c_out^2``);
* ``likelihood``: ``g^2 / sigma^2`` on the eps error, i.e. ``-lambda'(t) SNR`` for VP: summed
  over components and integrated over uniform t it is the continuous-time ELBO (up to 1/2);
* ``min-snr``: ``min(SNR, gamma)`` (Hang et al. 2023);

and ``band_weights`` multiplies the weight of each basis group. Fully noised components carry
no learnable signal (the denoiser answers them exactly) and get weight 0.
"""

from __future__ import annotations

import math

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
    if mode not in TIME_SAMPLING:
        raise ValueError(f"t sampling must be one of {', '.join(TIME_SAMPLING)}; got {mode!r}")
    if mode == "interval" and interval is None:
        raise ValueError("interval is required for mode='interval'")
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


class DenoisingLoss(nn.Module):
    """Per-sample loss ``(B,)`` of a :class:`~nudiff.models.denoiser.Denoiser` on images.

    Follows the trainer's protocol: :meth:`draw` draws ``t`` and ``eps`` for the global batch
    from the trainer's generator; :meth:`forward` evaluates a slice of it. ``t_sampling``: see
    :func:`sample_times`; ``log-normal`` draws EDM's levels (:class:`LogNormalTimes` with
    ``log_snr_mean`` and ``log_snr_std``) inside ``t_interval`` or ``[t_min, 1]``.

    ``joint``: the model is a LEGO denoiser and the loss is the mean of its bricks' losses
    (LEGO's joint loss: every brick is a denoiser of its own, so sampling may stop after any of
    them). ``num_classes``: the model is class-conditional; the data's labels
    (``noise["labels"]``, put there by the trainer) are replaced by the null label on a
    ``label_dropout`` share of the rows, which trains the unconditional model of classifier-free
    guidance in the same network.

    ``softness`` ``(min, max)`` (a GUD soft-conditioning process): one model over a range of
    softness. Each batch draws ``a = 1 / softness`` uniformly in ``[1 / max, 1 / min]`` (``max``
    may be inf: standard diffusion) from a generator seeded by ``(seed, step)`` (a function of
    the step, so resume and DDP replay it; no device sync), and the batch is noised and
    denoised with the process at that softness. One draw per batch, not per sample: the
    schedule is then one tensor per batch like any other, and the network tells softnesses
    apart through the group log-SNRs of its noise conditioning.

    ``patch`` (a :class:`~nudiff.patch.PatchSizes`, Patch Diffusion): each step draws one patch
    size ``p`` (a function of the step) and, per image, an aligned crop position from the
    trainer's generator; ``eps`` is drawn at the crop's shape. The images' components are
    cropped (:class:`~nudiff.patch.Crop`), noised with the crops of the process, denoised by
    the model called with ``crop=`` and weighted with the crops of the per-component weights.
    :meth:`batch_multiplier` tells the trainer how many times its batch the step loads.
    """

    def __init__(
        self,
        process: Process,
        weighting: str = "uniform",
        prediction: str = "edm",
        sigma_data: float | torch.Tensor = 0.5,
        min_snr_gamma: float = 5.0,
        band_weights: list[float] | None = None,
        t_sampling: str = "stratified",
        t_interval: tuple[float, float] | None = None,
        joint: bool = False,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
        softness: tuple[float, float] | None = None,
        log_snr_mean: float = 2.4,
        log_snr_std: float = 2.4,
        seed: int = 0,
        patch: PatchSizes | None = None,
    ):
        super().__init__()
        if patch is not None:
            align = crop_alignment(process.basis)  # raises for global bases
            if patch.resolution != process.shape[1] or process.shape[1] != process.shape[2]:
                raise ValueError(
                    f"patch sizes are for {patch.resolution}x{patch.resolution} images, the "
                    f"process's are {process.shape[1]}x{process.shape[2]}"
                )
            if patch.align % align:
                raise ValueError(f"patch offsets must be multiples of {align} on this basis")
        self.patch = patch
        if not 0.0 <= label_dropout <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1], got {label_dropout}")
        if softness is not None:
            if not hasattr(process.schedule, "with_softness"):
                raise ValueError("a softness range needs the soft-conditioning schedule")
            lo, hi = (float(v) for v in softness)
            if not 0 < lo <= hi:
                raise ValueError(f"softness needs 0 < min <= max, got {softness}")
            softness = (lo, hi)
        self.softness, self.seed = softness, int(seed)
        self.num_classes, self.label_dropout = num_classes, float(label_dropout)
        if weighting not in ("uniform", "likelihood", "min-snr"):
            raise ValueError(f"weighting must be uniform, likelihood or min-snr; got {weighting!r}")
        self.process, self.weighting, self.prediction = process, weighting, prediction
        self.min_snr_gamma = float(min_snr_gamma)
        # the denoiser's per-component data std (or a scalar): EDM's uniform weighting uses it
        self.register_buffer(
            "sigma_data", torch.as_tensor(sigma_data, dtype=torch.float32), persistent=False
        )
        self.t_sampling, self.t_interval, self.joint = t_sampling, t_interval, bool(joint)
        self.density = LogNormalTimes.for_mode(t_sampling, process, log_snr_mean, log_snr_std)
        index, names = process.basis.groups()
        bw = torch.ones(len(names)) if band_weights is None else torch.as_tensor(band_weights)
        if bw.numel() != len(names):
            raise ValueError(
                f"loss.band_weights needs one weight per basis group ({len(names)}: "
                f"{', '.join(names)}), got {bw.numel()}"
            )
        self.register_buffer("band_weight", bw.float()[index], persistent=False)

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict[str, torch.Tensor]:
        t = sample_times(
            n, self.t_sampling, generator, self.process.t_min, self.t_interval, self.density
        )
        shape = self.process.shape
        if self.patch is not None:
            size = self.patch.size_for_step(step)
            shape = (shape[0], size, size)
        eps = torch.randn((n, *shape), generator=generator, device=generator.device)
        out = {"t": t, "eps": eps}
        if self.patch is not None:
            top, left = self.patch.offsets(n, size, generator)
            out.update(patch=size, top=top, left=left)
        if self.num_classes is not None:
            # which rows train the null label: drawn like t and eps, so resume and DDP stay exact
            u = torch.rand(n, generator=generator, device=generator.device)
            out["drop"] = u < self.label_dropout
        if self.softness is not None:
            out["softness"] = self.softness_for_step(step)
        return out

    def batch_multiplier(self, step: int) -> int:
        """How many times the configured batch step ``step`` loads (patch training with
        ``batch_multiplier``: ``(R / p)^2``; otherwise 1)."""
        return 1 if self.patch is None else self.patch.multiplier_for_step(step)

    def crop_for(self, noise: dict) -> Crop | None:
        """The batch's crops (patch training), None otherwise."""
        if "patch" not in noise:
            return None
        return Crop(self.process.basis, noise["top"], noise["left"], noise["patch"])

    def softness_for_step(self, step: int) -> float:
        """The softness of step ``step``: ``1 / a``, ``a`` uniform in ``[1 / max, 1 / min]``."""
        lo, hi = 1 / self.softness[1], 1 / self.softness[0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        a = lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))
        return 1 / a if a > 0 else float("inf")  # a = 0: standard diffusion

    def process_for(self, noise: dict) -> Process:
        """The process of a batch: the loss's own, or at the batch's drawn softness."""
        if "softness" not in noise:
            return self.process
        p = self.process
        return Process(p.basis, p.schedule.with_softness(noise["softness"]), p.prior)

    def labels(self, noise: dict, like: torch.Tensor) -> dict:
        """The model's label keyword for a batch: its labels, the null label where dropped."""
        if self.num_classes is None:
            return {}
        if "labels" not in noise:
            raise ValueError("a class-conditional model (model.num_classes) needs labelled data")
        labels = noise["labels"].to(like.device)
        return {"labels": torch.where(noise["drop"].to(like.device), self.num_classes, labels)}

    def weight(
        self,
        t: torch.Tensor,
        like: torch.Tensor,
        process: Process | None = None,
        crop: Crop | None = None,
    ) -> torch.Tensor:
        """Weight on the squared x0 error, ``(B, C, H, W)`` or broadcastable; ``process`` the
        process of the batch (of its crops with ``crop``)."""
        process = process or self.process
        alpha, sigma = process.coefficients(t, like)
        snr = (alpha / sigma) ** 2
        band, sd = self.band_weight.to(like.dtype), self.sigma_data
        if crop is not None:
            band, sd = crop.components(band), crop.components(sd)
        if self.weighting == "likelihood":
            f, g2 = process.sde(t, like)
            w = g2 / sigma**2 * snr
        elif self.weighting == "min-snr":
            w = snr.clamp(max=self.min_snr_gamma)
        else:
            w = self._uniform(alpha, sigma, snr, sd)
        w = w * band
        return torch.where(process.inactive(t, like=like), 0.0, w)

    def _uniform(self, alpha, sigma, snr, sigma_data=None):
        sd = self.sigma_data if sigma_data is None else sigma_data
        sd2 = sd.to(snr.dtype) ** 2
        if self.prediction == "eps":
            return snr
        if self.prediction == "v":
            return (alpha**2 + sigma**2) ** 2 / sigma**2
        if self.prediction == "x0":
            return torch.ones_like(snr) / sd2
        return (sigma**2 + alpha**2 * sd2) / (sigma**2 * sd2)  # edm: 1 / c_out^2

    def elementwise(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """Weighted squared error per element ``(B, C, H, W)``."""
        t, eps = noise["t"].to(x0.device), noise["eps"].to(x0)
        process = self.process_for(noise)
        kw = self.labels(noise, x0)
        if process is not self.process:  # a model trained over a range of softness
            kw["process"] = process
        u0 = process.encode(x0)
        crop = self.crop_for(noise)
        if crop is not None:  # patch training: the crops of the components and of the process
            u0, kw["crop"] = crop.components(u0), crop
            process = crop.process(process)
        ut = process.marginal(u0, t, eps)
        if self.joint:  # LEGO: the mean of every brick's own denoising error
            err = ((model(ut, t, all_bricks=True, **kw) - u0) ** 2).mean(0)
        else:
            err = (model(ut, t, **kw) - u0) ** 2
        return self.weight(t, u0, process, crop) * err

    def forward(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        return self.elementwise(model, x0, noise).flatten(1).mean(1)


class MultiScaleLoss(nn.Module):
    """Multi-scale training (MSDiff, MSF): each step trains one scale (stage) of a
    :class:`~nudiff.models.multiscale.MultiScaleDenoiser`.

    The scale of step ``k`` is ``k mod n_scales`` (``round-robin``) or drawn with probabilities
    ``scale_weights`` from a generator seeded by ``(seed, k)`` (``random``): a function of the
    step, so resuming replays it. Its times are drawn in the scale's interval
    ``[T_{s-1}, T_s]`` (``t_sampling``: stratified, uniform, or EDM's ``log-normal`` levels
    of the scale's sub-process truncated to it), the bands finished at the scale are dropped (the
    network sees the ``2^d_s``-pooled image), and the loss is a :class:`DenoisingLoss` on the
    scale's sub-process with the band weights of its bands.

    Args:
        model: the multi-scale denoiser (its scales' processes and data stds are used).
        weighting, prediction, min_snr_gamma: as :class:`DenoisingLoss`.
        band_weights: one weight per band of the full basis (finest first), or None.
        scale_sampling: ``round-robin`` or ``random``.
        scale_weights: probabilities of the scales (finest first) for ``random``; None: equal.
        seed: seeds the ``random`` scale draws.
        joint: the scales with a LEGO backbone train the mean of every brick's loss (see
            :class:`DenoisingLoss`).
        num_classes, label_dropout: class-conditional scales (see :class:`DenoisingLoss`).
        t_sampling, log_snr_mean, log_snr_std: ``stratified``, ``uniform`` or ``log-normal``
            (see :class:`LogNormalTimes`), in each scale's interval.
    """

    def __init__(
        self,
        model: MultiScaleDenoiser,
        weighting: str = "uniform",
        prediction: str = "edm",
        min_snr_gamma: float = 5.0,
        band_weights: list[float] | None = None,
        scale_sampling: str = "round-robin",
        scale_weights: list[float] | None = None,
        seed: int = 0,
        joint: bool = False,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
        t_sampling: str = "stratified",
        log_snr_mean: float = 2.4,
        log_snr_std: float = 2.4,
    ):
        super().__init__()
        n = len(model.scales)
        if t_sampling not in ("stratified", "uniform", "log-normal"):
            raise ValueError(
                f"a multi-scale loss draws t stratified, uniform or log-normal in each scale's "
                f"interval, got {t_sampling!r}"
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
        bands = model.process.basis.levels + 1
        if band_weights is not None and len(band_weights) != bands:
            raise ValueError(
                f"loss.band_weights needs one weight per Haar band ({bands}, finest first), got "
                f"{len(band_weights)}"
            )
        self.dropped = list(model.dropped)
        self.scale_sampling, self.seed = scale_sampling, int(seed)
        self.register_buffer("scale_weights", weights.double() / weights.sum(), persistent=False)
        self.losses = nn.ModuleList(
            DenoisingLoss(
                d.process,
                weighting,
                prediction,
                d.data_std if hasattr(d, "data_std") else 0.5,
                min_snr_gamma,
                None if band_weights is None else list(band_weights[model.dropped[s] :]),
                t_sampling,
                model.interval(s),
                joint=joint and hasattr(getattr(d, "backbone", None), "active_bricks"),
                num_classes=num_classes,
                label_dropout=label_dropout,
                log_snr_mean=log_snr_mean,
                log_snr_std=log_snr_std,
            )
            for s, d in enumerate(model.scales)
        )

    def scale_for_step(self, step: int) -> int:
        n = len(self.losses)
        if self.scale_sampling == "round-robin":
            return step % n
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return int(torch.multinomial(self.scale_weights.cpu(), 1, generator=g))

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict:
        scale = self.scale_for_step(step)
        return {**self.losses[scale].draw(n, generator), "scale": scale}

    def forward(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """``model`` is called as ``model(u_s, t, scale=s)`` (through DDP when distributed)."""
        s = noise["scale"]

        def scale_model(u, t, **kw):
            return model(u, t, scale=s, **kw)

        return self.losses[s](scale_model, pool_image(x0, self.dropped[s]), noise)
