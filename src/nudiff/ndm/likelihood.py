"""NDM likelihoods: the bound (:mod:`nudiff.ndm.bound`) and the PF-ODE density (Hutchinson or
exact divergence of the NDM velocity, through :func:`nudiff.eval.likelihood.ode_log_likelihood`)."""

from __future__ import annotations

from functools import partial

import torch

from nudiff.eval.likelihood import Likelihood, ode_log_likelihood
from nudiff.ndm.bound import ndm_elbo_log_likelihood
from nudiff.ndm.sampler import ndm_velocity
from nudiff.ndm.transform import transform_of
from nudiff.process import Process


def ndm_ode_log_likelihood(model, process: Process, x: torch.Tensor, **kwargs) -> Likelihood:
    """Log-density (nats) of images ``x`` under the NDM's PF-ODE (``kwargs``: those of
    :func:`~nudiff.eval.likelihood.ode_log_likelihood`). The divergence differentiates through
    the denoiser and through ``F(x_hat, t)`` and its JVP in ``t``."""
    transform = transform_of(model)

    def velocity(z, t):
        return ndm_velocity(model, transform, process, z, t)

    return ode_log_likelihood(model, process, x, velocity=velocity, **kwargs)


NDM_METHODS = {
    "ode": ndm_ode_log_likelihood,
    "elbo": partial(ndm_elbo_log_likelihood, bound="continuous"),
    "elbo-discrete": partial(ndm_elbo_log_likelihood, bound="discrete"),
}
