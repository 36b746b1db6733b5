"""The NDM variational bound: continuous time (dF/dt by forward-mode JVP) and T discrete steps.

Per whitened component ``i`` (indices dropped), with ``q(z_t | x) = N(m_x(t), sigma^2)``,
``m_x(t) = alpha(t) F(x, t)`` and the forward SDE's ``f = alpha' / alpha``,
``g^2 = 2 sigma sigma' - 2 f sigma^2`` (``Process.sde``), the conditional forward SDE
``dz = [f z + m_x' - f m_x] dt + g dw`` has the marginals ``q(z_t | x)``. The model's reverse
process is the same with ``x_hat(z_t, t)`` (the denoiser's output) in place of ``x``, its
reverse drift ``f z + m' - f m - g^2 grad log q(z | x_hat)`` evaluated at the frozen ``x_hat``.
Girsanov gives the diffusion term of ``-ELBO`` as ``int E[(d_x - d_x_hat)^2 / (2 g^2)] dt``
with the reverse drifts' difference (``f alpha = alpha'`` cancels the ``alpha' dF`` terms)

    Delta = alpha dDF - (g^2 alpha / sigma^2) DF,   DF = F(x, t) - F(x_hat, t),
                                                    dDF = dF/dt(x, t) - dF/dt(x_hat, t),

so the integrand is

    w DF^2 - (alpha^2 / sigma^2) dDF DF + alpha^2 / (2 g^2) dDF^2,   w = g^2 alpha^2 / (2 sigma^4),

whose first term is the linear model's (``eval/elbo.py``'s ``elbo_weight``, ``-1/2 SNR'``); with
``F = identity`` the other two vanish exactly. The end terms depend on ``F`` too:

    L_rec   = sum_i 1/2 log(2 pi e sigma_0^2 / alpha_0^2)
                    + alpha_0^2 (u - F(u, t_min))^2 / (2 sigma_0^2),
    L_prior = sum_i KL(N(alpha_1 F(u, 1), sigma_1^2) || N(0, alpha_1^2 + sigma_1^2)),

(the decoder ``p(u | z_tmin) = N(z / alpha_0, sigma_0^2 / alpha_0^2)`` of the linear bound;
``L_prior`` over all components), both exactly the linear bound's with ``F = identity``.

Discrete time (T steps ``t_k = t_min + (1 - t_min) k / T``): the reverse step is the NDM
posterior ``q(z_s | z_t, x) = N(alpha_s F(x, s) + c (z_t - alpha_t F(x, t)), v)`` with the DDPM
posterior variance ``v = sigma_s^2 r^2 / sigma_t^2``, ``r^2 = sigma_t^2 - (alpha_t / alpha_s)^2
sigma_s^2``, and ``c = sqrt(sigma_s^2 - v) / sigma_t`` (so that its marginal is ``q(z_s | x)``),
at ``x_hat`` for the model: ``L_diff = T E_k KL = T E_k[(mu_x - mu_x_hat)^2 / (2 v)]``. With
``F = identity`` it is the DDPM bound; as ``T -> inf`` it tends to the continuous one.
"""

from __future__ import annotations

import math

import torch

from nudiff.eval.elbo import Bound, elbo_weight, importance_times, time_density
from nudiff.process import Process
from nudiff.samplers.base import posterior_variance

BOUNDS = ("continuous", "discrete")


def end_terms(transform, process: Process, u0: torch.Tensor):
    """Per element ``(B, C, H, W)``: the reconstruction and prior terms of ``-ELBO``."""
    ones = torch.ones(u0.shape[0], dtype=u0.dtype, device=u0.device)
    t0 = ones * process.t_min
    if transform.identity:
        f0 = f1 = u0
    else:  # both ends in one call of the transform network
        f0, f1 = transform(torch.cat([u0, u0]), torch.cat([t0, ones])).chunk(2)
    alpha0, sigma0 = process.coefficients(t0, u0)
    rec = 0.5 * torch.log(2 * math.pi * math.e * sigma0**2 / alpha0**2)
    if not transform.identity:
        rec = rec + alpha0**2 * (u0 - f0) ** 2 / (2 * sigma0**2)
    alpha1, sigma1 = process.coefficients(ones, u0)
    var = process.prior_variance().to(u0)
    prior = 0.5 * ((sigma1**2 + alpha1**2 * f1**2) / var - 1 - torch.log(sigma1**2 / var))
    return rec.expand_as(u0), prior.expand_as(u0)


def continuous_integrand(transform, denoiser, process: Process, u0, t, eps) -> torch.Tensor:
    """The diffusion term's integrand at times ``t`` ``(B,)`` per element ``(B, C, H, W)``, and
    the NFE spent (denoiser calls; the transform's JVPs are not counted)."""
    if transform.identity:
        x0 = denoiser(process.marginal(u0, t, eps), t)
        return elbo_weight(process, t, u0) * (x0 - u0) ** 2
    f_x, df_x = transform.with_time_derivative(u0, t)
    alpha, sigma = process.coefficients(t, u0)
    x0 = denoiser(alpha * f_x + sigma * eps, t)
    f_h, df_h = transform.with_time_derivative(x0, t)
    _, g2 = process.sde(t, u0)
    d, dd = f_x - f_h, df_x - df_h
    out = elbo_weight(process, t, u0) * d**2
    return out - (alpha / sigma) ** 2 * dd * d + alpha**2 / (2 * g2) * dd**2


def discrete_grid(process: Process, steps: int, k: torch.Tensor, like: torch.Tensor):
    """Times ``t_k`` and ``t_{k-1}`` ``(B,)`` of steps ``k`` in ``1..steps``."""
    t_min = process.t_min
    t = t_min + (1 - t_min) * k.double() / steps
    s = t_min + (1 - t_min) * (k.double() - 1) / steps
    return t.to(like.device, like.dtype), s.to(like.device, like.dtype)


def discrete_term(transform, denoiser, process: Process, u0, t, s, eps) -> torch.Tensor:
    """``KL(q(z_s | z_t, x) || q(z_s | z_t, x_hat))`` per element ``(B, C, H, W)``."""
    alpha_t, sigma_t = process.coefficients(t, u0)
    alpha_s, sigma_s = process.coefficients(s, u0)
    _, var = posterior_variance(alpha_t, sigma_t, alpha_s, sigma_s)
    c = (sigma_s**2 - var).clamp_min(0).sqrt() / sigma_t
    f_xt = transform(u0, t)
    x0 = denoiser(alpha_t * f_xt + sigma_t * eps, t)
    if transform.identity:
        diff = (alpha_s - c * alpha_t) * (u0 - x0)
    else:
        f_xs = transform(u0, s)
        f_h = transform(torch.cat([x0, x0]), torch.cat([t, s]))
        f_ht, f_hs = f_h.chunk(2)
        diff = alpha_s * (f_xs - f_hs) - c * alpha_t * (f_xt - f_ht)
    return diff**2 / (2 * var)


@torch.no_grad()
def ndm_elbo_log_likelihood(
    model,
    process: Process,
    x: torch.Tensor,
    *,
    n_times: int = 64,
    generator: torch.Generator | None = None,
    bound: str = "continuous",
    steps: int = 1000,
) -> Bound:
    """The NDM bound of images ``x`` ``(B, C, H, W)``: ``model`` an :class:`~nudiff.ndm.NDM`
    (or any denoiser: the identity transform). ``continuous``: ``n_times`` draws of ``t`` per
    image, stratified in the importance density of :func:`nudiff.eval.elbo.time_density` (the
    same draws as :func:`~nudiff.eval.elbo.elbo_log_likelihood`, which it equals with
    ``F = identity``); ``discrete``: the ``steps``-step bound, ``n_times`` stratified draws of
    the step per image."""
    from nudiff.ndm.transform import transform_of

    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if n_times < 1 or steps < 1:
        raise ValueError(f"n_times and steps must be >= 1, got {n_times}, {steps}")
    transform = transform_of(model)
    u0 = process.encode(x)
    b = u0.shape[0]
    rec, prior = (term.flatten(1).sum(1) for term in end_terms(transform, process, u0))
    density = time_density(process) if bound == "continuous" else None
    diffusion = torch.zeros(b, dtype=u0.dtype, device=u0.device)
    for k in range(n_times):
        v = (k + torch.rand(b, generator=generator, dtype=torch.float64)) / n_times
        if bound == "continuous":
            t64, weight = importance_times(density, v)
            t = t64.to(u0.device, u0.dtype)
            eps = torch.randn(u0.shape, generator=generator, dtype=u0.dtype).to(u0.device)
            err = continuous_integrand(transform, model, process, u0, t, eps)
            weight = weight / n_times
        else:
            step = (v * steps).floor().long().clamp(0, steps - 1) + 1
            t, s = discrete_grid(process, steps, step, u0)
            eps = torch.randn(u0.shape, generator=generator, dtype=u0.dtype).to(u0.device)
            err = discrete_term(transform, model, process, u0, t, s, eps)
            weight = torch.full((b,), steps / n_times, dtype=torch.float64)
        diffusion += weight.to(u0) * err.flatten(1).sum(1)
    log_det = process.prior.scale.to(u0).log().expand(process.shape).sum()
    log_prob = -(rec + prior + diffusion) - log_det
    return Bound(log_prob, rec, prior, diffusion, n_times)
