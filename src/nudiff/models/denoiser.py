"""Preconditioning: the wrapper that keeps the parametrisation out of the backbone."""

from __future__ import annotations

import torch
from torch import nn

from nudiff.parametrization import to_x0
from nudiff.process import Process
from nudiff.schedules import as_times

NOISE_CONDITIONINGS = ("log_snr_groups", "t")


class Denoiser(nn.Module):
    """``D(u_t, t) -> E[u_0 | u_t]`` in whitened components, built around an image backbone.

    EDM's preconditioning written per component for any ``alpha``, ``sigma``, with the clean
    whitened components' mean ``m_i`` and standard deviation ``s_i`` (``data_mean``,
    ``data_std``: measured on training data, or ``0`` and a scalar ``sigma_data``):

    * input: ``u_t / sqrt(sigma^2 + alpha^2 s_rms^2)`` mapped to image space by the basis
      inverse, with ``s_rms`` the root mean square of ``s``: the backbone sees a unit-variance
      natural image whatever the per-component schedule;
    * output: the backbone's image ``F`` is mapped back to components and read as

      - ``edm``: ``x0 = m + c_skip (u_t - alpha m) + c_out F`` with ``n_i^2 = sigma^2 +
        alpha^2 s_i^2``, ``c_skip = alpha s_i^2 / n_i^2``, ``c_out = sigma s_i / n_i``. With
        ``F = 0`` this is the exact denoiser of the diagonal Gaussian with those moments, so the
        network only learns what is not Gaussian, and low-variance components (flat wavelet
        details, high frequencies) are denoised from the first step;
      - ``eps`` / ``v``: ``F`` is the eps / v prediction, converted exactly;
      - ``x0``: ``x0 = m + s F``.

    ``noise_conditioning``: ``log_snr_groups`` (default) conditions the backbone on ``t`` and
    the mean log-SNR of every basis group (so a per-component schedule's state is visible at a
    glance, and one network can serve several schedules), ``1 + absent_groups + n_groups``
    features: ``absent_groups`` leading features report groups this process leaves out as fully
    noised (a multi-scale model's coarse scales drop the finest Haar bands; a network shared
    across scales then sees one conditioning layout). ``t``: the scalar time alone (1 feature).

    Components that are fully noised at ``t`` (``process.inactive``) get the exact answer for a
    unit-variance prior, ``alpha u_t / (alpha^2 + sigma^2)``, i.e. the prior score, not the
    network's: no network needs to see them.

    Besides ``model(u, t)`` (:meth:`forward`): :meth:`per_brick`, every brick's estimate of a
    LEGO backbone (LEGO's joint loss), and :meth:`network_estimate`, the network's answer for
    every component (SiD's generator). Classifier-free guidance wraps the denoiser
    (:class:`~nudiff.samplers.base.Guided`).
    """

    def __init__(
        self,
        process: Process,
        backbone: nn.Module,
        prediction: str = "edm",
        sigma_data: float = 0.5,
        data_mean: torch.Tensor | None = None,
        data_std: torch.Tensor | None = None,
        absent_groups: int = 0,
        noise_conditioning: str = "log_snr_groups",
    ):
        super().__init__()
        if prediction not in ("edm", "eps", "x0", "v"):
            raise ValueError(f"prediction must be one of edm, eps, x0, v; got {prediction!r}")
        if noise_conditioning not in NOISE_CONDITIONINGS:
            raise ValueError(
                f"noise_conditioning must be one of {NOISE_CONDITIONINGS}, got "
                f"{noise_conditioning!r}"
            )
        self.noise_conditioning = noise_conditioning
        self.process, self.backbone = process, backbone
        self.prediction = prediction
        self.absent_groups = int(absent_groups)
        shape = process.shape
        mean = torch.zeros(shape) if data_mean is None else torch.as_tensor(data_mean)
        std = torch.full(shape, float(sigma_data)) if data_std is None else data_std
        std = torch.as_tensor(std)
        if mean.shape != shape or std.shape != shape or not (std > 0).all():
            raise ValueError(f"data_mean and data_std must have shape {shape}, data_std > 0")
        # persistent: fitted on data, saved with the weights
        self.register_buffer("data_mean", mean.float())
        self.register_buffer("data_std", std.float())
        index, names = process.basis.groups()
        onehot = torch.nn.functional.one_hot(index.flatten(), len(names)).float()
        # (D, G) averaging matrix from components to groups
        self.register_buffer("group_avg", onehot / onehot.sum(0), persistent=False)

    @staticmethod
    def noise_features(
        process: Process, absent_groups: int = 0, conditioning: str = "log_snr_groups"
    ) -> int:
        """The width of :meth:`condition`'s output."""
        if conditioning == "t":
            return 1
        return 1 + absent_groups + len(process.basis.groups()[1])

    def condition(self, t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
        """Noise conditioning ``(B, 1 + absent_groups + n_groups)``: ``t`` and group-mean
        log-SNR / 8 (absent groups at the schedule's fully-noised log-SNR); ``(B, 1)``, ``t``
        alone, with ``noise_conditioning="t"``."""
        if self.noise_conditioning == "t":
            return t.view(-1, 1).to(log_snr.dtype)
        lam = log_snr.clamp(-20, 20).expand(t.shape[0], *self.process.shape).flatten(1)
        groups = lam @ self.group_avg.to(lam.dtype)
        absent = max(-20.0, self.process.schedule.inactive_log_snr)
        pad = groups.new_full((t.shape[0], self.absent_groups), absent)
        return torch.cat([t.view(-1, 1).to(lam.dtype), pad / 8, groups / 8], dim=1)

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional backbone (label ``num_classes`` is the null label)."""
        return getattr(self.backbone, "num_classes", None)

    def forward(
        self,
        u: torch.Tensor,
        t,
        labels: torch.Tensor | None = None,
        process: Process | None = None,
        crop=None,
    ) -> torch.Tensor:
        """``u``: ``(B, C, H, W)`` noisy whitened components; ``t``: ``(B,)``, or ``(1,)`` for a
        time shared by the batch (samplers: the coefficients are then computed once, not per
        sample) -> x0 estimate ``(B, C, H, W)``.

        ``labels`` ``(B,)``: classes of a class-conditional backbone (None, or the label
        ``num_classes``: the null label, i.e. the unconditional model). Classifier-free
        guidance is a wrapper around the denoiser, :class:`~nudiff.samplers.base.Guided`.

        ``process``: the process of this call when it is not the model's own but one of its
        family with the same basis and prior (a model trained over a range of softness,
        ``loss.softness``, is called at the softness drawn for the batch).

        ``crop`` (a :class:`~nudiff.patch.Crop`, patch training): ``u`` holds the components of
        per-image crops ``(B, C, p, p)`` of the full canvas. The coefficients, prior and data
        moments are the crops of the full ones, the noise conditioning is the full process's
        (the state of the whole image at ``t``), the backbone sees the crops' coordinates on
        the full canvas. Sampling calls without a crop: the full canvas with the full grid."""
        return self._estimate(u, t, labels, process, crop, self._network)

    def per_brick(
        self,
        u: torch.Tensor,
        t,
        labels: torch.Tensor | None = None,
        process: Process | None = None,
        crop=None,
    ) -> torch.Tensor:
        """The estimate of every brick of a :class:`~nudiff.models.lego.LEGO` backbone,
        ``(K, B, C, H, W)``, each read through the same preconditioning (LEGO's joint loss
        trains every brick as a denoiser of its own); arguments as :meth:`forward`."""
        if not callable(getattr(self.backbone, "forward_all", None)):
            raise ValueError(
                f"per-brick estimates need a LEGO backbone, got {type(self.backbone).__name__}"
            )
        return self._estimate(u, t, labels, process, crop, self._bricks)

    def network_estimate(
        self,
        u: torch.Tensor,
        t,
        labels: torch.Tensor | None = None,
        process: Process | None = None,
        crop=None,
    ) -> torch.Tensor:
        """:meth:`forward` with the network's answer for every component, also those fully
        noised at ``t`` that :meth:`forward` answers exactly (a one-step generator,
        :mod:`nudiff.distill.sid`, must produce them)."""
        return self._estimate(u, t, labels, process, crop, self._network, exact_inactive=False)

    def _network(self, image, cond, kw: dict, basis, dtype) -> torch.Tensor:
        """The backbone's output in components ``(B, C, H, W)``."""
        return basis(self.backbone(image, cond, **kw).to(dtype))

    def _bricks(self, image, cond, kw: dict, basis, dtype) -> torch.Tensor:
        """Every brick's output in components ``(K, B, C, H, W)``."""
        outs = self.backbone.forward_all(image, cond, **kw)
        return basis(torch.cat(outs).to(dtype)).unflatten(0, (len(outs), -1))

    def _estimate(
        self,
        u: torch.Tensor,
        t,
        labels: torch.Tensor | None,
        process: Process | None,
        crop,
        network,
        exact_inactive: bool = True,
    ) -> torch.Tensor:
        """The preconditioned estimate from ``network`` (:meth:`_network`, :meth:`_bricks`)."""
        t = as_times(t, u)
        if t.shape[0] not in (1, u.shape[0]):
            raise ValueError(f"t must have shape (1,) or (B,) = ({u.shape[0]},), got {t.shape}")
        process = process or self.process
        m, sd = self.data_mean.to(u.dtype), self.data_std.to(u.dtype)
        # the input scale of the whole canvas, also for crops: training and sampling agree
        rms2 = sd.square().mean()
        kw = {} if labels is None else {"labels": labels}  # backbones without classes take none
        if crop is None:
            log_snr = process.log_snr(t, u)
            cond_log_snr = log_snr
        else:  # patch training: the crops' process, moments and coordinates
            cond_log_snr = process.log_snr(t, u)
            process = crop.process(process)
            log_snr = process.log_snr(t, u)
            m, sd = crop.components(m), crop.components(sd)
            kw["coords"] = crop.coords(u.dtype).to(u.device)
        alpha, sigma = process.coefficients(t, u)
        t = t.expand(u.shape[0])
        basis = process.basis
        image = basis.inverse(u * (sigma**2 + alpha**2 * rms2).rsqrt())
        out = network(image, self.condition(t, cond_log_snr), kw, basis, u.dtype)
        if self.prediction == "edm":
            n2 = sigma**2 + alpha**2 * sd**2
            x0 = m + (alpha * sd**2 / n2) * (u - alpha * m) + (sigma * sd * n2.rsqrt()) * out
        elif self.prediction == "x0":
            x0 = m + sd * out
        else:
            x0 = to_x0(out, self.prediction, u, alpha, sigma)
        if not exact_inactive:
            return x0
        # unconditional where: testing for any inactive component would sync with the device
        inactive = process.inactive_log_snr(log_snr)
        return torch.where(inactive, alpha * u / (alpha**2 + sigma**2), x0)
