"""Score identity Distillation (SiD, Zhou et al. 2024) of any nudiff denoiser, per component.

Three denoisers act on whitened components ``u`` (``(B, C, H, W)``): the frozen teacher ``f_phi``,
a fake score ``f_psi`` and a one-step generator ``G_theta``, the last two initialised from the
teacher. No data is used.

* **Generator**: ``u_g = G(z) = D_theta(z, t_init)`` with ``z = sigma(t_init) * eps`` per
  component: the marginal at ``t_init`` of data at the (whitened) mean. ``t_init`` is where the
  mean log-SNR over components equals ``init_log_snr``; the default ``-2 log 2.5`` is SiD's
  ``sigma_init = 2.5`` (``x + 2.5 eps``: log-SNR ``-2 log 2.5`` for data in [-1, 1]), so with a
  scalar schedule the generator sees SiD's input up to the schedule's scaling ``alpha``.
* **Fake score** (phase ``fake``): the teacher's own denoising loss (its weighting, time
  sampling, multi-scale stages) on the generator's samples, detached.
* **Generator** (phase ``generator``): a time ``t`` on SiD's scale (``r ~ U(0, t_max)``,
  ``sigma = (sigma_max^(1/rho) + (1 - r)(sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
  log-SNR ``-2 log sigma`` mapped to ``t`` by the mean log-SNR), ``z_t = alpha(t) u_g +
  sigma(t) eps``, ``a = f_phi(z_t, t)``, ``b = f_psi(z_t, t)`` and

      L(u_g) = scale * sum_i (a_i - b_i) ((a_i - u_g,i) - alpha_sid (a_i - b_i)) / omega,
      omega = stopgrad(mean_i |u_g,i - a_i|).

  Gradients reach ``theta`` through ``u_g`` and through ``z_t`` into both denoisers' inputs;
  the denoisers' weights get none. With the pixel basis, a white prior and a scalar schedule
  every sum is SiD's sum over pixels, so the loss is SiD's (``scale = 100``).

Each step runs both phases with fresh noise (fake score first), each with its own Adam
optimiser (SiD: betas ``(0, 0.999)``); the trainer keeps an EMA of the generator.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.func import functional_call

from nudiff.process import Process
from nudiff.samplers.base import Guided
from nudiff.schedules.reference import ReferenceTime

#: SiD's sigma_init = 2.5 as a log-SNR
SID_INIT_LOG_SNR = -2 * math.log(2.5)


def sid_generator_loss(
    u_g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.2
) -> torch.Tensor:
    """SiD's generator loss per sample ``(B,)``, summed over components (unscaled).

    ``u_g``: generator samples ``(B, C, H, W)``; ``a``, ``b``: the teacher's and the fake
    score's x0 estimates at ``z_t``. ``omega = mean |u_g - a|`` is a per-sample normaliser
    without gradient."""
    omega = (u_g - a).abs().flatten(1).mean(1).clamp_min(1e-5).detach()
    omega = omega.view(-1, *([1] * (u_g.dim() - 1)))
    return ((a - b) * ((a - u_g) - alpha * (a - b)) / omega).flatten(1).sum(1)


def edm_sigma(r: torch.Tensor, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """SiD's noise level of ``r`` in ``[0, 1]``: EDM's rho spacing, ``sigma_min`` at 0."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + (1 - r) * (lo - hi)) ** rho


class OneStepGenerator(nn.Module):
    """``G(z) = D(z, t_init)``: a denoiser called once, at ``t_init``, on ``z = sigma(t_init)
    eps`` ``(B, C, H, W)``; returns whitened components ``u``.

    Every component comes from the network, also those the process has fully noised at
    ``t_init`` (a denoiser answers these with the prior's mean; a generator must produce
    them). ``refine(u, t, eps)`` re-noises a sample to ``t`` and denoises it with the same
    network (multistep refinement, see :func:`sample_one_step`)."""

    def __init__(self, network: nn.Module, t_init: float):
        super().__init__()
        self.network, self.process = network, network.process
        t = torch.tensor([float(t_init)])
        _, sigma = self.process.coefficients(t, torch.zeros(1, *self.process.shape))
        self.register_buffer("t_init", t)
        self.register_buffer("noise_std", sigma.float().clone())

    @property
    def num_classes(self) -> int | None:
        return getattr(self.network, "num_classes", None)

    def noise(self, eps: torch.Tensor) -> torch.Tensor:
        """The generator input ``sigma(t_init) * eps`` for standard normal ``eps``."""
        return eps * self.noise_std.to(eps)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoise(z, self.t_init, labels)

    def denoise(self, z, t, labels=None) -> torch.Tensor:
        """The network's estimate of every component (a denoiser's
        :meth:`~nudiff.models.denoiser.Denoiser.network_estimate`; a network without one is
        called as it is)."""
        kw = {} if labels is None else {"labels": labels}
        estimate = getattr(self.network, "network_estimate", self.network)
        return estimate(z, t, **kw)

    def refine(self, u, t: float, eps: torch.Tensor, labels=None) -> torch.Tensor:
        """Re-noise ``u`` to time ``t`` with ``eps`` and denoise it once."""
        alpha, sigma = self.process.coefficients(torch.tensor([float(t)], device=u.device), u)
        return self.denoise(
            alpha * u + sigma * eps, torch.tensor([float(t)], device=u.device), labels
        )


class SiDModel(nn.Module):
    """The trainable part of SiD: ``generator`` (:class:`OneStepGenerator`) and ``fake`` (a
    denoiser, or a multi-scale denoiser). ``model(fn)`` returns ``fn(model)``: a phase runs all
    its network calls inside one forward, so DDP sees one forward per backward."""

    #: each phase trains one of the two networks: DDP needs find_unused_parameters
    unused_parameters = True

    def __init__(self, generator: OneStepGenerator, fake: nn.Module):
        super().__init__()
        self.generator, self.fake = generator, fake

    def forward(self, fn):
        return fn(self)


def _frozen_call(module: nn.Module, *args, **kw):
    """``module(*args, **kw)`` with its parameters detached: gradients reach the inputs only."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, args, kw)


class SiDLoss(nn.Module):
    """The two-phase SiD objective on the trainer's multi-optimiser protocol.

    :meth:`draw` draws every random number of a step (both phases) for the global batch;
    :meth:`phases` names the phases and the parameters each trains; ``loss(model, None, noise,
    phase=name)`` is a phase's per-sample loss ``(B,)``.

    Args:
        process: the teacher's (full) process.
        teacher: the teacher denoiser (frozen here); called at full resolution (a multi-scale
            teacher through its wrapper).
        fake_loss: the teacher's training loss, used for the fake score on generator samples.
        init_log_snr: the generator's input level (see the module docstring).
        alpha: SiD's alpha; ``scale``: the generator loss's multiplier (SiD: 100).
        t_max, sigma_min, sigma_max, rho: SiD's generator-loss noise levels.
        num_classes: class-conditional teacher: labels are drawn uniformly per sample.
        guidance: classifier-free guidance of the teacher's estimate in the generator loss.
    """

    PHASES = ("fake", "generator")

    def __init__(
        self,
        process: Process,
        teacher: nn.Module,
        fake_loss: nn.Module,
        alpha: float = 1.2,
        scale: float = 100.0,
        t_max: float = 0.8,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        num_classes: int | None = None,
        guidance: float = 1.0,
        reference: ReferenceTime | None = None,
    ):
        super().__init__()
        if not 0 < t_max <= 1:
            raise ValueError(f"t_max must be in (0, 1], got {t_max}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.process, self.fake_loss = process, fake_loss
        self.teacher = teacher.eval().requires_grad_(False)
        self.reference = reference if reference is not None else ReferenceTime(process)
        self.alpha, self.scale, self.t_max = float(alpha), float(scale), float(t_max)
        self.sigma_range, self.rho = (float(sigma_min), float(sigma_max)), float(rho)
        self.num_classes, self.guidance = num_classes, float(guidance)

    def phases(self, model: SiDModel) -> dict[str, list[nn.Parameter]]:
        """The parameters each phase trains, in the order the phases run."""
        return {
            "fake": [p for p in model.fake.parameters() if p.requires_grad],
            "generator": [p for p in model.generator.parameters() if p.requires_grad],
        }

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict:
        g, dev, shape = generator, generator.device, self.process.shape
        out = {"z_fake": torch.randn((n, *shape), generator=g, device=dev)}
        for k, v in self.fake_loss.draw(n, g, step=step).items():
            out[f"fake_{k}"] = v
        out["z"] = torch.randn((n, *shape), generator=g, device=dev)
        r = torch.rand(n, generator=g, dtype=torch.float64, device=dev) * self.t_max
        sigma = edm_sigma(r, *self.sigma_range, self.rho)
        out["t"] = self.reference.time(-2 * sigma.log()).float()
        out["eps"] = torch.randn((n, *shape), generator=g, device=dev)
        if self.num_classes is not None:
            out["fake_labels"] = torch.randint(self.num_classes, (n,), generator=g, device=dev)
            out["labels"] = torch.randint(self.num_classes, (n,), generator=g, device=dev)
        return out

    def forward(self, model: nn.Module, x0, noise: dict, phase: str) -> torch.Tensor:
        if phase == "fake":
            return model(lambda m: self._fake_phase(m, noise))
        if phase == "generator":
            return model(lambda m: self._generator_phase(m, noise))
        raise ValueError(f"unknown SiD phase {phase!r}; phases: {self.PHASES}")

    def _fake_phase(self, m: SiDModel, noise: dict) -> torch.Tensor:
        inner = {k[5:]: v for k, v in noise.items() if k.startswith("fake_")}
        with torch.no_grad():
            u_g = m.generator(m.generator.noise(noise["z_fake"]), inner.get("labels"))
        return self.fake_loss(m.fake, self.process.decode(u_g), inner)

    def _generator_phase(self, m: SiDModel, noise: dict) -> torch.Tensor:
        labels = noise.get("labels")
        u_g = m.generator(m.generator.noise(noise["z"]), labels)
        t, eps = noise["t"], noise["eps"]
        alpha, sigma = self.process.coefficients(t, u_g)
        z_t = alpha * u_g + sigma * eps
        kw = {} if labels is None else {"labels": labels}
        b = _frozen_call(m.fake, z_t, t, **kw)
        a = Guided(self.teacher, self.guidance)(z_t, t, **kw)
        return self.scale * sid_generator_loss(u_g, a, b, self.alpha)


@torch.inference_mode()
def sample_one_step(
    generator: OneStepGenerator,
    n: int,
    *,
    steps: int = 1,
    seed: int = 0,
    start: int = 0,
    labels: torch.Tensor | None = None,
    device=None,
    reference: ReferenceTime | None = None,
):
    """``n`` samples of a distilled generator: ``u = G(z)`` (1 NFE), then ``steps - 1``
    refinements, each re-noising ``u`` to the next of ``steps - 1`` times spaced evenly in the
    mean log-SNR between ``t_init`` and +10 (exclusive) and denoising it with the generator's
    network (multistep consistency-style sampling; the generator was trained at ``t_init``
    only, so refinement helps only where its network still denoises well). Per-sample noise:
    the same images whatever ``n``'s batching (``start``: index of the first sample).

    Returns a :class:`~nudiff.samplers.SampleResult` (NFE = ``steps``)."""
    from nudiff.samplers import SampleResult
    from nudiff.samplers.base import NoiseSource

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = device or next(generator.parameters()).device
    process = generator.process
    src = NoiseSource(seed, start, n, device)
    t0 = time.perf_counter()
    if labels is not None:
        labels = labels.to(device)
    u = generator(generator.noise(src.randn(process.shape)), labels)
    if steps > 1:
        ref = reference if reference is not None else ReferenceTime(process).to(device)
        lo = float(ref.log_snr(generator.t_init.double()).item())
        for lam in torch.linspace(lo, 10.0, steps + 1)[1:-1].tolist():
            t = float(ref.time(torch.tensor(lam)))
            u = generator.refine(u, t, src.randn(process.shape), labels)
    images = process.decode(u)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return SampleResult(u, images, steps, time.perf_counter() - t0)
