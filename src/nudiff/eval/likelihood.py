"""Log-likelihood from the probability-flow ODE, and NLL in bits per dimension.

For any basis and per-component schedule, the PF-ODE ``du/dt = v(u, t)`` carries the model's
density at ``t_min`` to the prior at t = 1 with the instantaneous change of variables

    log p_tmin(u_0) = log p_prior(u_1) + integral_{t_min}^1 div v(u_t, t) dt,

integrated with adaptive dopri5 (torchdiffeq) together with the state. The divergence is exact
(one backward pass per dimension, for small images) or Hutchinson's unbiased estimate
``E[eps^T (dv/du) eps]`` with probes fixed along each trajectory (Rademacher or Gaussian).

Images are whitened components away from pixels: ``u = (B(x) - mean) / scale`` with an
orthonormal ``B``, so ``log p(x) = log p(u) - sum log scale``. uint8 data are dequantised
uniformly, ``x = (k + U) / 128 - 1`` with ``U ~ U[0, 1)``, so ``x`` covers ``[-1, 1)`` and the
bits per dimension of the discrete data are bounded by ``-log2 p(x) / D + 7`` (``7 = log2 128``
is the Jacobian of the dequantised ``[0, 256)`` -> ``[-1, 1)`` scaling).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nudiff.process import Process

DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class Likelihood:
    log_prob: torch.Tensor  # (B,) nats, of the continuous images x
    nfe: int  # velocity evaluations of the solver (each with its divergence)


def _divergence_exact(fn: Callable, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v(u)`` and ``tr(dv/du)`` per sample, one backward pass per dimension."""
    with torch.enable_grad():
        u = u.detach().requires_grad_(True)
        v = fn(u)
        flat_v, d = v.flatten(1), v[0].numel()
        div = torch.zeros(u.shape[0], dtype=v.dtype, device=v.device)
        for i in range(d):
            (g,) = torch.autograd.grad(flat_v[:, i].sum(), u, retain_graph=i < d - 1)
            div = div + g.flatten(1)[:, i]
    return v.detach(), div


def _divergence_hutchinson(fn: Callable, u: torch.Tensor, probes: torch.Tensor):
    """``v(u)`` and ``mean_k eps_k^T (dv/du) eps_k`` for probes ``(K, B, C, H, W)``."""
    k = probes.shape[0]
    with torch.enable_grad():
        uk = u.detach().repeat(k, 1, 1, 1).requires_grad_(True)
        v = fn(uk)
        eps = probes.flatten(0, 1)
        (g,) = torch.autograd.grad(v, uk, eps)
    div = (g * eps).flatten(1).sum(1).view(k, -1).mean(0)
    return v[: u.shape[0]].detach(), div.detach()


def ode_log_likelihood(
    denoiser,
    process: Process,
    x: torch.Tensor,
    *,
    divergence: str = "auto",
    probes: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    exact_max_dim: int = 256,
    velocity: Callable | None = None,
) -> Likelihood:
    """Model log-density (nats) of continuous images ``x`` ``(B, C, H, W)`` -> ``(B,)``.

    ``denoiser(u, t)`` returns the x0 estimate of whitened components (a trained
    :class:`~nudiff.models.Denoiser`, or the exact :class:`~nudiff.oracle.GaussianOracle`).
    ``divergence="auto"`` is exact up to ``exact_max_dim`` dimensions, Hutchinson above.
    ``velocity(u, t)``: the PF-ODE's ``du/dt`` at time ``t`` ``(1,)`` (default: the linear
    process's, :meth:`~nudiff.process.Process.pf_ode_velocity` of the denoiser's estimate;
    an NDM's is :func:`nudiff.ndm.sampler.ndm_velocity`).
    """
    from torchdiffeq import odeint

    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if probes not in PROBES:
        raise ValueError(f"probes must be one of {PROBES}, got {probes!r}")
    if n_probes < 1 or not (rtol > 0 and atol > 0):
        raise ValueError(f"need n_probes >= 1, rtol > 0, atol > 0; got {n_probes}, {rtol}, {atol}")
    u0 = process.encode(x)
    dim = u0[0].numel()
    exact = divergence == "exact" or (divergence == "auto" and dim <= exact_max_dim)
    if not exact:
        shape = (n_probes, *u0.shape)
        eps = torch.randn(shape, generator=generator, dtype=u0.dtype, device=u0.device)
        if probes == "rademacher":
            eps = eps.sign()
    nfe = 0

    def dynamics(t, state):
        nonlocal nfe
        nfe += 1
        u = state[0]

        def field(z):
            if velocity is not None:
                return velocity(z, t.view(1))
            return process.pf_ode_velocity(z, t.view(1), denoiser(z, t.view(1)))

        v, div = _divergence_exact(field, u) if exact else _divergence_hutchinson(field, u, eps)
        return v, div

    t0 = torch.tensor(process.t_min, dtype=u0.dtype, device=u0.device)
    span = torch.stack([t0, torch.ones_like(t0)])
    jumps = [b for b in process.schedule.breakpoints() if process.t_min < b < 1]
    options = {"jump_t": torch.tensor(jumps, dtype=u0.dtype)} if jumps else {}
    state = (u0, torch.zeros(u0.shape[0], dtype=u0.dtype, device=u0.device))
    with torch.no_grad():
        u_t, integral = odeint(
            dynamics, state, span, rtol=rtol, atol=atol, method="dopri5", options=options
        )
    u1, div_integral = u_t[-1], integral[-1]
    log_prob = process.prior_log_prob(u1) + div_integral
    # whitening is a diagonal affine map: log |d u / d x| = -sum log scale
    log_prob = log_prob - process.prior.scale.to(log_prob).log().expand(process.shape).sum()
    return Likelihood(log_prob, nfe)


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images ``(B, C, H, W)`` -> ``(k + U) / 128 - 1`` in ``[-1, 1)``, float32."""
    if images.dtype != torch.uint8:
        raise ValueError(f"dequantize takes uint8 images, got {images.dtype}")
    noise = torch.rand(images.shape, generator=generator, dtype=torch.float32)
    return (images.float() + noise.to(images.device)) / 128 - 1


def bits_per_dim(log_prob: torch.Tensor, dim: int) -> torch.Tensor:
    """Bits per dimension of dequantised uint8 data from ``log p(x)`` on the ``[-1, 1)`` scale."""
    return -log_prob / (dim * math.log(2)) + 7.0


def nll_bpd(
    denoiser,
    process: Process,
    images: torch.Tensor,
    *,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    method: str = "ode",
    methods: dict | None = None,
    **kwargs,
) -> dict:
    """NLL in bits/dim of uint8 images ``(N, C, H, W)``: mean, standard error over images, the
    NFE per batch and the time. ``method``: ``ode`` (the PF-ODE density; ``kwargs`` go to
    :func:`ode_log_likelihood`), ``elbo`` (the variational bound, an upper bound on the
    SDE model's NLL; ``kwargs`` go to :func:`nudiff.eval.elbo.elbo_log_likelihood`).
    ``methods``: name -> log-likelihood function, the model family's own (e.g. a Neural
    Diffusion Model's bound and PF-ODE, or the T-step bound ``elbo-discrete``: see
    :meth:`nudiff.families.base.Family.likelihoods`); default: the model's
    ``likelihood_methods`` if it has them, else ``ode`` and ``elbo``.

    Batch ``k`` (of ``batch_size`` images) draws its dequantisation noise, times and probes from
    the seed ``(seed, k)``; under torchrun the ranks share the batches and every rank returns
    the single-process result."""
    from tqdm.auto import tqdm

    if methods is None:  # a model with likelihoods of its own (an NDM's) says so
        methods = getattr(denoiser, "likelihood_methods", None)
    if methods is None:
        from nudiff.eval.elbo import elbo_log_likelihood

        methods = {"ode": ode_log_likelihood, "elbo": elbo_log_likelihood}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")

    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    if tuple(images.shape[1:]) != process.shape:
        raise ValueError(f"images are {tuple(images.shape[1:])}, the model is {process.shape}")
    from nudiff.training import distributed

    device = process.prior.scale.device
    batches = list(enumerate(images.split(batch_size)))
    # under torchrun the ranks take the batches in turn; every batch has its own seed, so the
    # values do not depend on how many processes share the work
    mine = batches[distributed.rank() :: distributed.world_size()]
    values = []
    began = time.perf_counter()
    for k, batch in tqdm(mine, desc="nll", leave=False) if progress else mine:
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        x = dequantize(batch, g).to(device)
        out = methods[method](denoiser, process, x, generator=g, **kwargs)
        bpd = bits_per_dim(out.log_prob.double().cpu(), math.prod(process.shape))
        values.append((k, bpd, out.nfe))
    values = sorted(sum(distributed.all_gather_objects(values), []), key=lambda v: v[0])
    nfes = [nfe for _, _, nfe in values]
    values = [bpd for _, bpd, _ in values]
    bpd = torch.cat(values).numpy()
    n = len(bpd)
    return {
        "nll_bpd": float(bpd.mean()),
        "stderr": float(bpd.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "n": n,
        "nfe_mean": float(np.mean(nfes)),
        "seconds": time.perf_counter() - began,
    }
