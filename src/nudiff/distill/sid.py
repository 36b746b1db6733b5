"""Score identity Distillation (SiD, Zhou et al. 2024) of any nudiff denoiser, per component.

Three denoisers act on whitened components ``u`` (``(B, C, H, W)``): the frozen teacher ``f_phi``,
a fake score ``f_psi`` and a generator ``G_theta`` of ``k`` steps (default 1), the last two
initialised from the teacher. No data is used.

* **Generator**: step 1 is ``u_1 = D_theta(z, t_1)`` with ``z = sigma(t_1) * eps`` per
  component: the marginal at ``t_1 = t_init`` of data at the (whitened) mean. ``t_init`` is
  where the mean log-SNR over components equals ``init_log_snr``; the default ``-2 log 2.5`` is
  SiD's ``sigma_init = 2.5`` (``x + 2.5 eps``: log-SNR ``-2 log 2.5`` for data in [-1, 1]), so
  with a scalar schedule the generator sees SiD's input up to the schedule's scaling ``alpha``.
  A few-step generator (multistep SiD, Zhou et al. 2025) goes on at fixed times ``t_1 > ... >
  t_k``: step ``j`` re-noises ``u_{j-1}`` to ``t_j`` with fresh noise (the forward process,
  ``alpha(t_j) u_{j-1} + sigma(t_j) eps_j``) and denoises it with the same network.
* **Fake score** (phase ``fake``): the teacher's own denoising loss (its weighting, time
  sampling, multi-scale stages) on the generator's samples, detached; a few-step generator's
  sample of each row is the output of its own step ``j ~ U{1..k}`` (the uniform mixture of the
  steps' outputs, which few-step SiD matches to the data).
* **Generator** (phase ``generator``): ``u_g`` the output of step ``j ~ U{1..k}`` (one draw per
  update; the steps before ``j`` run without gradient), a time ``t`` on SiD's scale
  (``r ~ U(0, t_max)``,
  ``sigma = (sigma_max^(1/rho) + (1 - r)(sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
  log-SNR ``-2 log sigma`` mapped to ``t`` by the mean log-SNR), ``z_t = alpha(t) u_g +
  sigma(t) eps``, ``a = f_phi(z_t, t)``, ``b = f_psi(z_t, t)`` and

      L(u_g) = scale * sum_i (a_i - b_i) ((a_i - u_g,i) - alpha_sid (a_i - b_i)) / omega,
      omega = stopgrad(mean_i |u_g,i - a_i|).

  Gradients reach ``theta`` through ``u_g`` and through ``z_t`` into both denoisers' inputs;
  the denoisers' weights get none. With the pixel basis, a white prior and a scalar schedule
  every sum is SiD's sum over pixels, so the loss is SiD's (``scale = 100``).
* **Guidance** of a class-conditional teacher (SiD-LSG, Zhou et al. 2024, "long and short
  guidance"): ``x_null + w (x_label - x_null)`` with scale ``guidance`` for the teacher's ``a``
  (their kappa_4), ``guidance_fake`` for the fake score's output in its own training loss
  (kappa_1) and ``guidance_fake_eval`` for its ``b`` in the generator loss (kappa_2 =
  kappa_3). LSG at scale ``w`` sets all of them to ``w``.

Each step runs both phases with fresh noise (fake score first), each with its own Adam
optimiser (SiD: betas ``(0, 0.999)``); the trainer keeps an EMA of the generator.
"""

from __future__ import annotations

import math
import time
from functools import partial

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


class SiDGenerator(nn.Module):
    """A generator of ``k`` steps at fixed times ``t_1 > ... > t_k`` (``times``; a float: one
    step, SiD's one-step generator ``G(z) = D(z, t_init)``), all made by one denoiser network.

    Step 1 (``forward``) denoises ``z = sigma(t_1) eps`` ``(B, C, H, W)`` at ``t_1 = t_init``;
    step ``j + 1`` (:meth:`step`) re-noises the output of step ``j`` to ``t_{j+1}`` with fresh
    noise (the forward process) and denoises it. Returns whitened components ``u``.

    Every component comes from the network, also those the process has fully noised at a
    step's time (a denoiser answers these with the prior's mean; a generator must produce
    them). ``refine(u, t, eps)`` re-noises a sample to any ``t`` and denoises it (untrained
    refinement beyond the ``k`` steps, see :func:`sample_one_step`)."""

    def __init__(self, network: nn.Module, times):
        super().__init__()
        times = [float(times)] if isinstance(times, (int, float)) else [float(t) for t in times]
        if not times or any(a <= b for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"a generator's step times must decrease, got {times}")
        self.network, self.process = network, network.process
        t = torch.tensor(times[:1])
        _, sigma = self.process.coefficients(t, torch.zeros(1, *self.process.shape))
        self.register_buffer("t_init", t)
        self.register_buffer("noise_std", sigma.float().clone())
        # the config gives the times: not in the checkpoint (one-step runs' checkpoints load)
        self.register_buffer("times", torch.tensor(times), persistent=False)

    @property
    def steps(self) -> int:
        """The number of trained steps ``k``."""
        return len(self.times)

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

    def step(self, u, j: int, eps: torch.Tensor, labels=None) -> torch.Tensor:
        """Step ``j + 1`` (``1 <= j < k``, 0-based index ``j`` into :attr:`times`): ``u`` (the
        output of step ``j``) re-noised to ``t_{j+1}`` with standard normal ``eps`` and
        denoised."""
        if not 1 <= j < self.steps:
            raise ValueError(f"step index must be in 1..{self.steps - 1}, got {j}")
        return self._renoise_denoise(u, self.times[j : j + 1].to(u.device), eps, labels)

    def chain(self, z, eps: list, labels=None) -> list[torch.Tensor]:
        """The outputs of steps ``1 .. len(eps) + 1`` from input ``z``; ``eps[i]`` re-noises
        before step ``i + 2``."""
        out = [self(z, labels)]
        for j, e in enumerate(eps, start=1):
            out.append(self.step(out[-1], j, e, labels))
        return out

    def refine(self, u, t: float, eps: torch.Tensor, labels=None) -> torch.Tensor:
        """Re-noise ``u`` to time ``t`` with ``eps`` and denoise it once."""
        return self._renoise_denoise(u, torch.tensor([float(t)], device=u.device), eps, labels)

    def _renoise_denoise(self, u, t: torch.Tensor, eps, labels) -> torch.Tensor:
        alpha, sigma = self.process.coefficients(t, u)
        return self.denoise(alpha * u + sigma * eps, t, labels)


#: the generator of a one-step run (``SiDGenerator`` with one time)
OneStepGenerator = SiDGenerator


class SiDModel(nn.Module):
    """The trainable part of SiD: ``generator`` (:class:`SiDGenerator`) and ``fake`` (a
    denoiser, or a multi-scale denoiser). ``model(fn)`` returns ``fn(model)``: a phase runs all
    its network calls inside one forward, so DDP sees one forward per backward."""

    #: each phase trains one of the two networks: DDP needs find_unused_parameters
    unused_parameters = True

    def __init__(self, generator: SiDGenerator, fake: nn.Module):
        super().__init__()
        self.generator, self.fake = generator, fake

    def forward(self, fn):
        return fn(self)


def _frozen_call(module: nn.Module, *args, **kw):
    """``module(*args, **kw)`` with its parameters detached: gradients reach the inputs only."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, args, kw)


class TwoPassGuidance:
    """Classifier-free guidance of a denoiser-like callable ``model(u, t, labels=..., **kw)``
    by two calls: ``x_null + guidance (x_label - x_null)``, ``x_null`` at the null label
    ``null`` (the classes' count). Any keywords pass through (a multi-scale stage's ``scale``,
    a crop), and ``per_brick`` estimates (LEGO's joint loss) are guided brick by brick, so
    the fake score's own training loss can call it like the network. Without labels the model
    is called as it is."""

    def __init__(self, model, guidance: float, null: int):
        self.model, self.guidance, self.null = model, float(guidance), int(null)

    def __call__(self, u, t, labels=None, **kw):
        return self._guided(self.model, u, t, labels, kw)

    def per_brick(self, u, t, labels=None, **kw):
        from nudiff.losses import through_forward

        return self._guided(partial(through_forward, self.model, "per_brick"), u, t, labels, kw)

    def _guided(self, fn, u, t, labels, kw):
        cond = fn(u, t, labels=labels, **kw) if labels is not None else fn(u, t, **kw)
        if labels is None:
            return cond
        uncond = fn(u, t, labels=torch.full_like(labels, self.null), **kw)
        return uncond + self.guidance * (cond - uncond)


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
        alpha: SiD's alpha; ``scale``: the generator loss's multiplier (SiD: 100).
        t_max, sigma_min, sigma_max, rho: SiD's generator-loss noise levels.
        num_classes: class-conditional teacher: labels are drawn uniformly per sample.
        guidance: classifier-free guidance of the teacher's estimate in the generator loss.
        steps: the generator's steps ``k`` (the model's generator must have as many).
        guidance_fake: guidance of the fake score's output in its training loss.
        guidance_fake_eval: guidance of the fake score's estimate in the generator loss (None:
            ``guidance_fake``).
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
        steps: int = 1,
        guidance_fake: float = 1.0,
        guidance_fake_eval: float | None = None,
    ):
        super().__init__()
        if not 0 < t_max <= 1:
            raise ValueError(f"t_max must be in (0, 1], got {t_max}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        fake_eval = guidance_fake if guidance_fake_eval is None else guidance_fake_eval
        self.guidance, self.guidance_fake = float(guidance), float(guidance_fake)
        self.guidance_fake_eval = float(fake_eval)
        if num_classes is None and (self.guidance, self.guidance_fake, fake_eval) != (1, 1, 1):
            raise ValueError(
                "classifier-free guidance (guidance, guidance_fake, guidance_fake_eval other "
                "than 1) needs a class-conditional teacher (model.num_classes)"
            )
        self.process, self.fake_loss = process, fake_loss
        self.teacher = teacher.eval().requires_grad_(False)
        self.reference = reference if reference is not None else ReferenceTime(process)
        self.alpha, self.scale, self.t_max = float(alpha), float(scale), float(t_max)
        self.sigma_range, self.rho = (float(sigma_min), float(sigma_max)), float(rho)
        self.num_classes, self.steps = num_classes, int(steps)

    def phases(self, model: SiDModel) -> dict[str, list[nn.Parameter]]:
        """The parameters each phase trains, in the order the phases run."""
        return {
            "fake": [p for p in model.fake.parameters() if p.requires_grad],
            "generator": [p for p in model.generator.parameters() if p.requires_grad],
        }

    def draw(self, n: int, generator: torch.Generator, step: int = 0) -> dict:
        """A step's draws. A few-step generator's (``k > 1``) come last: ``j_fake`` ``(n,)``
        (0-based step of each fake-score sample), ``j`` (0-based step of the generator update:
        an int) and the re-noising noise of steps ``2..k`` of both chains, ``(n, k - 1, ...)``."""
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
        if self.steps > 1:
            k = self.steps
            out["j_fake"] = torch.randint(k, (n,), generator=g, device=dev)
            out["renoise_fake"] = torch.randn((n, k - 1, *shape), generator=g, device=dev)
            out["j"] = int(torch.randint(k, (1,), generator=g, device=dev).item())
            out["renoise"] = torch.randn((n, k - 1, *shape), generator=g, device=dev)
        return out

    def forward(self, model: nn.Module, x0, noise: dict, phase: str) -> torch.Tensor:
        if phase == "fake":
            return model(lambda m: self._fake_phase(m, noise))
        if phase == "generator":
            return model(lambda m: self._generator_phase(m, noise))
        raise ValueError(f"unknown SiD phase {phase!r}; phases: {self.PHASES}")

    def _fake_samples(self, m: SiDModel, noise: dict, labels) -> torch.Tensor:
        """The fake score's samples, without gradient: row ``i`` the output of its step
        ``j_fake[i]`` (one step: the generator's output)."""
        with torch.no_grad():
            u = m.generator(m.generator.noise(noise["z_fake"]), labels)
            if "j_fake" not in noise:
                return u
            j, eps = noise["j_fake"], noise["renoise_fake"]
            out = u
            for s in range(1, int(j.max()) + 1):  # rows of step s + 1 take its output
                u = m.generator.step(u, s, eps[:, s - 1], labels)
                out = torch.where((j == s).view(-1, *[1] * (u.dim() - 1)), u, out)
            return out

    def _fake_phase(self, m: SiDModel, noise: dict) -> torch.Tensor:
        inner = {k[5:]: v for k, v in noise.items() if k.startswith("fake_")}
        u_g = self._fake_samples(m, noise, inner.get("labels"))
        fake = m.fake
        if self.guidance_fake != 1:
            fake = TwoPassGuidance(m.fake, self.guidance_fake, self.num_classes)
        return self.fake_loss(fake, self.process.decode(u_g), inner)

    def _generator_sample(self, m: SiDModel, noise: dict, labels) -> torch.Tensor:
        """The output of step ``j + 1`` (0-based ``noise["j"]``; one step: ``G(z)``), with
        gradient through that step only."""
        z, j = m.generator.noise(noise["z"]), noise.get("j", 0)
        if j == 0:
            return m.generator(z, labels)
        with torch.no_grad():
            u = m.generator.chain(z, [noise["renoise"][:, s] for s in range(j - 1)], labels)[-1]
        return m.generator.step(u, j, noise["renoise"][:, j - 1], labels)

    def _generator_phase(self, m: SiDModel, noise: dict) -> torch.Tensor:
        labels = noise.get("labels")
        u_g = self._generator_sample(m, noise, labels)
        t, eps = noise["t"], noise["eps"]
        alpha, sigma = self.process.coefficients(t, u_g)
        z_t = alpha * u_g + sigma * eps
        kw = {} if labels is None else {"labels": labels}
        if self.guidance_fake_eval == 1:
            b = _frozen_call(m.fake, z_t, t, **kw)
        else:
            frozen = partial(_frozen_call, m.fake)
            b = TwoPassGuidance(frozen, self.guidance_fake_eval, self.num_classes)(z_t, t, **kw)
        a = Guided(self.teacher, self.guidance)(z_t, t, **kw)
        return self.scale * sid_generator_loss(u_g, a, b, self.alpha)


@torch.inference_mode()
def sample_one_step(
    generator: SiDGenerator,
    n: int,
    *,
    steps: int | None = None,
    seed: int = 0,
    start: int = 0,
    labels: torch.Tensor | None = None,
    device=None,
    reference: ReferenceTime | None = None,
):
    """``n`` samples of a distilled generator of ``k`` steps: its first ``steps`` steps
    (default all ``k``, one network call each; fewer: the output of step ``steps``, which the
    distillation trained as a sample too). ``steps > k`` adds ``steps - k`` untrained
    refinements after the ``k`` steps, each re-noising ``u`` to the next of ``steps - k``
    times spaced evenly in the mean log-SNR between ``t_k`` and +10 (exclusive) and denoising
    it with the generator's network (multistep consistency-style sampling: it helps only where
    the network still denoises well). Per-sample noise: the same images whatever ``n``'s
    batching (``start``: index of the first sample).

    Returns a :class:`~nudiff.samplers.SampleResult` (NFE = ``steps``)."""
    from nudiff.samplers import SampleResult
    from nudiff.samplers.base import NoiseSource

    k = generator.steps
    steps = k if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = device or next(generator.parameters()).device
    process = generator.process
    src = NoiseSource(seed, start, n, device)
    t0 = time.perf_counter()
    if labels is not None:
        labels = labels.to(device)
    u = generator(generator.noise(src.randn(process.shape)), labels)
    for j in range(1, min(steps, k)):
        u = generator.step(u, j, src.randn(process.shape), labels)
    if steps > k:
        ref = reference if reference is not None else ReferenceTime(process).to(device)
        lo = float(ref.log_snr(generator.times[-1:].double()).item())
        for lam in torch.linspace(lo, 10.0, steps - k + 2)[1:-1].tolist():
            t = float(ref.time(torch.tensor(lam)))
            u = generator.refine(u, t, src.randn(process.shape), labels)
    images = process.decode(u)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return SampleResult(u, images, steps, time.perf_counter() - t0)
