"""CDE, CDiffE, CMDE and VS-CMDE: conditional estimators as one joint diffusion of ``(x, y)``.

``x`` (the image) diffuses with the model's :class:`~nudiff.process.Process`, in whitened
components ``u``. The condition's values ``y`` (the task's degraded image; the inpainting mask is
side information and never diffuses) diffuse in pixel space with a scalar VP schedule of their
own, ``y_t = alpha_y(t) y + sigma_y(t) eps_y``:

* ``cde``: not at all. The network sees ``(u_t, y)`` and learns ``E[u_0 | u_t, y]``;
* ``cdiffe``: at the speed of ``x`` (``x``'s schedule must be scalar). The network learns the
  joint denoiser of ``(u_t, y_t)``; sampling draws ``y_t`` from the forward process of the
  observed ``y`` at every network call and uses the ``x`` part;
* ``cmde``: slower. ``y``'s log-SNR falls from ``x``'s maximum to ``y_log_snr_min`` at t = 1
  (VP cosine), so ``y`` is never fully noised (MSDiff: a small ``sigma_max`` for ``y``), and
  never below the log-SNR of ``x``'s slowest component (a per-component schedule such as
  MSDiff's multi-speed one keeps its coarse band cleaner than the cosine early on; ``y`` must
  stay at least as clean as what it observes, or the sampling approximation loses it);
* ``vs-cmde``: ``cmde`` whose ``y_log_snr_min`` is annealed during training from ``x``'s
  minimum (the speed of ``x``) to its target over ``anneal_steps`` steps, then held there.

One backbone takes ``concat(x image, y values, side channels)`` at the resolution of ``x``
(``y`` upsampled by the task) and outputs ``x``'s channels, plus ``y``'s for the joint
estimators (average-pooled back to ``y``'s resolution).

A multi-scale model (:class:`ConditionalMultiScale`) has one such denoiser per scale; each
sees the condition at its own resolution (:func:`condition_at`: ``y`` average-pooled to the
scale's image when it is finer), and the joint estimators diffuse that pooled ``y``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nudiff.conditional.tasks import Inpainting, Task
from nudiff.losses import ScaleOf, TimeSampling
from nudiff.models.multiscale import MultiScaleDenoiser, pool_image
from nudiff.process import Process
from nudiff.schedules import ScalarSchedule, VPCosine, as_times

ESTIMATORS = ("cde", "cdiffe", "cmde", "vs-cmde")


def split_condition(task: Task, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(values, side)``: the part of ``y`` that diffuses and the side channels (the mask)."""
    if isinstance(task, Inpainting):
        return y[:, :-1], y[:, -1:]
    return y, None


def condition_at(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The condition ``y`` ``(B, C_y, h, w)`` at most ``size`` ``(H, W)``: average-pooled by the
    (integer) factor when it is finer, as is; the inpainting mask becomes the missing
    fraction of each pooled pixel."""
    h, w = y.shape[-2:]
    if h <= size[0] and w <= size[1]:
        return y
    if h % size[0] or w % size[1]:
        raise ValueError(f"cannot pool a {h}x{w} condition to {size[0]}x{size[1]}")
    return F.avg_pool2d(y, (h // size[0], w // size[1]))


class ConditionalDenoiser(nn.Module):
    """``D(u_t, t, y) -> x0`` estimate ``(B, C, H, W)`` in whitened components.

    Args:
        process: the process of ``x``.
        task: the degradation; gives ``y``'s shape and how to upsample it.
        backbone: ``(B, C + C_y, H, W), (B, F) -> (B, C [+ C_y values], H, W)``.
        estimator: one of :data:`ESTIMATORS`.
        y_log_snr_min: ``y``'s log-SNR at t = 1 for ``cmde`` / ``vs-cmde``.
        sigma_data: standard deviation of the clean whitened ``x`` components and of ``y``
            (EDM preconditioning).
        data_std: per-component standard deviations of ``x`` ``(C, H, W)`` measured on data,
            in place of ``sigma_data`` for ``x`` (``sigma_data`` then serves ``y`` only):
            Haar components of natural images differ in scale by band.
        image_shape: the shape of the images the task degrades (default ``process.shape``);
            a multi-scale model's scale has a smaller ``process`` and sees ``y`` pooled to it.
    """

    def __init__(
        self,
        process: Process,
        task: Task,
        backbone: nn.Module,
        estimator: str = "cde",
        y_log_snr_min: float = -1.0,
        sigma_data: float = 0.5,
        anneal_steps: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        data_std: torch.Tensor | None = None,
    ):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
        image_shape = tuple(image_shape or process.shape)
        task.check(image_shape)
        self.process, self.task, self.backbone = process, task, backbone
        self.estimator, self.sigma_data = estimator, float(sigma_data)
        # measured stds are part of the model (saved); a numeric one is not, as before
        std = torch.full(process.shape, self.sigma_data) if data_std is None else data_std
        if tuple(std.shape) != tuple(process.shape) or not (std > 0).all():
            raise ValueError(f"data_std must be positive with shape {process.shape}")
        self.register_buffer("data_std", std.float(), persistent=data_std is not None)
        #: the condition's shape as given, and as this denoiser sees it (pooled to its scale)
        self.y_shape = task.y_shape(image_shape)
        self.condition_shape = tuple(
            condition_at(torch.zeros(1, *self.y_shape), process.shape[-2:]).shape[1:]
        )
        self.joint = estimator != "cde"
        self.anneal_steps = int(anneal_steps)
        x_sched = process.schedule
        if estimator == "cdiffe" and not isinstance(x_sched, ScalarSchedule):
            raise ValueError("cdiffe diffuses y at the speed of x: x's schedule must be scalar")
        lam_max = float(process.log_snr(torch.tensor([process.t_min])).max())
        lam_min = float(process.log_snr(torch.ones(1)).min())
        if estimator in ("cmde", "vs-cmde") and not y_log_snr_min > lam_min:
            raise ValueError(
                f"{estimator}: y must diffuse slower than x, i.e. y_log_snr_min > x's final "
                f"log-SNR {lam_min:.3g}; got {y_log_snr_min}"
            )
        self.lam_max, self.lam_min, self.y_log_snr_min = lam_max, lam_min, float(y_log_snr_min)
        # y's schedule for the current training step (vs-cmde anneals its final log-SNR); a
        # Python value, so network calls never read a device tensor
        self.set_step(None)

    # ------------------------------------------------------------------------ y schedule
    def _target_final(self, step: int | None) -> float:
        if self.estimator == "vs-cmde" and step is not None and self.anneal_steps > 0:
            frac = min(1.0, step / self.anneal_steps)  # clamped at the target (upstream was not)
            return self.lam_min + frac * (self.y_log_snr_min - self.lam_min)
        return self.y_log_snr_min

    def set_step(self, step: int | None) -> None:
        """The training step (``vs-cmde``'s annealing of ``y``'s speed); None: the target."""
        self.y_final = self._target_final(step)
        self.y_schedule = VPCosine(log_snr_min=self.y_final, log_snr_max=self.lam_max)

    def y_coefficients(self, t, like: torch.Tensor):
        """``alpha_y, sigma_y`` ``(B, 1, 1, 1)`` of ``y`` at times ``t``."""
        t = as_times(t, like)
        if self.estimator == "cdiffe":
            alpha, sigma = self.process.schedule.alpha_sigma(t)
            return alpha.to(like), sigma.to(like)
        lam = self.y_schedule.log_snr(t).to(like)
        slowest = self.process.log_snr(t, like).flatten(1).amax(1).view(-1, 1, 1, 1)
        lam = torch.maximum(lam, slowest.to(like))
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def diffuse_y(self, y_values: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.y_coefficients(t, y_values)
        return alpha * y_values + sigma * eps

    # --------------------------------------------------------------------------- forward
    def forward(self, u, t, y, y_t=None, noise=None, return_y: bool = False):
        """``u``: ``(B, C, H, W)`` noisy components at ``t`` ``(B,)`` or ``(1,)``; ``y``: the clean
        condition ``(B, *y_shape)``; ``y_t``: its diffused values (joint estimators; drawn from
        the forward process of ``y`` when None, with ``noise`` (a NoiseSource) if given).
        Returns the x0 estimate, and with ``return_y`` also ``y``'s (joint estimators). ``y``
        may be given at its own shape or at :attr:`condition_shape`; ``y_t`` at the latter."""
        t = as_times(t, u)
        values, side = split_condition(self.task, condition_at(y, self.process.shape[-2:]))
        if self.joint and y_t is None:
            eps = noise.randn(values.shape[1:], u.dtype) if noise is not None else None
            eps = torch.randn_like(values) if eps is None else eps.to(values)
            y_t = self.diffuse_y(values, t, eps)
        alpha, sigma = self.process.coefficients(t, u)
        sd, xd = self.sigma_data, self.data_std.to(u.dtype)
        image = self.process.basis.inverse(u * (sigma**2 + alpha**2 * xd**2).rsqrt())
        if self.joint:
            ay, sy = self.y_coefficients(t, values)
            y_in = y_t * (sy**2 + ay**2 * sd**2).rsqrt()
        else:
            ay = sy = None
            y_in = values / sd
        parts = [image, self.task.upsample(y_in, self.process.shape)]
        if side is not None:
            parts.append(self.task.upsample(side, self.process.shape))
        lam = self.process.log_snr(t, u).flatten(1).mean(1, keepdim=True)
        cond = torch.cat([t.expand(u.shape[0]).view(-1, 1).to(u), lam.expand(u.shape[0], 1) / 8], 1)
        out = self.backbone(torch.cat(parts, 1), cond).to(u.dtype)
        c = self.process.shape[0]
        x0 = _edm(self.process.basis(out[:, :c]), u, alpha, sigma, xd)
        if not return_y:
            return x0
        if not self.joint:
            return x0, None
        y_out = out[:, c:]
        if y_out.shape[-2:] != values.shape[-2:]:  # back to y's resolution (super-resolution)
            y_out = F.adaptive_avg_pool2d(y_out, values.shape[-2:])
        return x0, _edm(y_out, y_t, ay, sy, sd)


def _edm(out, z, alpha, sigma, sd):
    """EDM's x0 from the network output ``out`` at ``z = alpha x0 + sigma eps`` (data std sd)."""
    n2 = sigma**2 + alpha**2 * sd**2
    return (alpha * sd**2 / n2) * z + (sigma * sd * n2.rsqrt()) * out


class ConditionalMultiScale(MultiScaleDenoiser):
    """A conditional multi-scale model: one :class:`ConditionalDenoiser` per scale of a Haar /
    band-window process (see :class:`~nudiff.models.multiscale.MultiScaleDenoiser`), each on
    its scale's sub-process and seeing the condition pooled to its resolution. It is called
    like a :class:`ConditionalDenoiser` (``model(u, t, y=y)``) and sampled coarse to fine."""

    def __init__(self, process: Process, scales):
        super().__init__(process, scales)
        first = scales[0]
        self.task, self.estimator, self.joint = first.task, first.estimator, first.joint
        self.y_shape, self.sigma_data = first.y_shape, first.sigma_data

    def set_step(self, step: int | None) -> None:
        for scale in self.scales:
            scale.set_step(step)


class ConditionalLoss(nn.Module):
    """Denoising loss of a :class:`ConditionalDenoiser` on images; ``y`` is the task's
    degradation of the batch, drawn on the fly (random masks from the drawn ``mask_seed``).

    EDM's weighting ``1 / c_out^2`` on the squared x0 error of every element; the joint
    estimators add ``y``'s elements to the mean (the loss summed over the x and y parts).

    For one scale of a :class:`ConditionalMultiScale` (inside a
    :class:`~nudiff.losses.MultiScaleLoss`), ``interval`` is the scale's time interval and
    ``dropped`` its finished Haar levels: ``y`` is degraded from the full image, and the
    scale learns the ``2^dropped``-pooled image given ``y`` pooled to it.
    """

    #: a multi-scale loss passes the full-resolution batch (``y`` is degraded from it)
    full_resolution = True

    def __init__(
        self,
        model: ConditionalDenoiser,
        t_sampling: str = "stratified",
        log_snr_mean: float = 2.4,
        log_snr_std: float = 2.4,
        interval: tuple[float, float] | None = None,
        dropped: int = 0,
    ):
        super().__init__()
        self.times = TimeSampling(model.process, t_sampling, interval, log_snr_mean, log_snr_std)
        self.process, self.task, self.dropped = model.process, model.task, int(dropped)
        values = split_condition(model.task, torch.zeros(1, *model.condition_shape))[0]
        self.y_values_shape = values.shape[1:]
        self.joint = model.joint

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict:
        dev = generator.device
        t = self.times(n, generator)
        out = {
            "t": t,
            "eps": torch.randn((n, *self.process.shape), generator=generator, device=dev),
            "mask_index": torch.randint(0, 2**31 - 1, (n,), generator=generator, device=dev),
            "step": step,
        }
        if self.joint:
            out["eps_y"] = torch.randn((n, *self.y_values_shape), generator=generator, device=dev)
        return out

    def forward(self, model: nn.Module, x0: torch.Tensor, noise: dict) -> torch.Tensor:
        """``x0``: the full-resolution batch ``(B, C, H, W)``; ``model`` the denoiser (or its
        DDP wrapper), or one scale of a multi-scale one (:class:`~nudiff.losses.ScaleOf`)."""
        inner = _denoiser_of(model)
        inner.set_step(noise["step"])
        t = noise["t"].to(x0.device)
        y = self.task.degrade(x0, noise["mask_index"])  # boxes move it to the CPU; others ignore it
        y = condition_at(y, self.process.shape[-2:])
        u0 = self.process.encode(pool_image(x0, self.dropped))
        ut = self.process.marginal(u0, t, noise["eps"].to(x0))
        sd, xd = inner.sigma_data, inner.data_std.to(u0.dtype)
        alpha, sigma = self.process.coefficients(t, u0)
        w = (sigma**2 + alpha**2 * xd**2) / (sigma**2 * xd**2)
        if not self.joint:
            return (w * (model(ut, t, y=y) - u0) ** 2).flatten(1).mean(1)
        values, _ = split_condition(self.task, y)
        y_t = inner.diffuse_y(values, t, noise["eps_y"].to(x0))
        x_hat, y_hat = model(ut, t, y=y, y_t=y_t, return_y=True)
        ay, sy = inner.y_coefficients(t, values)
        wy = (sy**2 + ay**2 * sd**2) / (sy**2 * sd**2)
        total = (w * (x_hat - u0) ** 2).flatten(1).sum(1) + (wy * (y_hat - values) ** 2).flatten(
            1
        ).sum(1)
        return total / (math.prod(u0.shape[1:]) + math.prod(values.shape[1:]))


def _denoiser_of(model) -> ConditionalDenoiser:
    """The :class:`ConditionalDenoiser` behind ``model``: itself, its DDP wrapper's module, or
    the scale of a multi-scale model that a :class:`~nudiff.losses.ScaleOf` calls."""
    scale = None
    if isinstance(model, ScaleOf):
        model, scale = model.model, model.scale
    model = model.module if hasattr(model, "module") else model  # DDP
    return model if scale is None else model.scales[scale]
