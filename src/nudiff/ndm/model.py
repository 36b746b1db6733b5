"""A Neural Diffusion Model: a denoiser and a transform trained together, with the
samplers and likelihoods that use the transform."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from nudiff.ndm.likelihood import NDM_METHODS
from nudiff.ndm.sampler import NDM_SAMPLERS
from nudiff.process import Process


class NDM(nn.Module):
    """A denoiser and a transform trained together. Called like the denoiser (``x0`` estimate
    of the whitened components: ``x_hat`` is predicted directly, never reconstructed from an eps
    estimate through ``F``), so every tool that takes a denoiser takes it; the NDM samplers and
    likelihoods also use :attr:`transform`."""

    def __init__(self, denoiser: nn.Module, transform: nn.Module):
        super().__init__()
        self.denoiser, self.transform = denoiser, transform

    @property
    def process(self) -> Process:
        return self.denoiser.process

    @property
    def num_classes(self):
        return getattr(self.denoiser, "num_classes", None)

    @property
    def identity(self) -> bool:
        return bool(self.transform.identity)

    def forward(self, u: torch.Tensor, t, **kwargs) -> torch.Tensor:
        return self.denoiser(u, t, **kwargs)

    @property
    def likelihood_methods(self) -> dict:
        """The NDM bound and PF-ODE likelihoods (:func:`nudiff.eval.likelihood.nll_bpd`)."""
        return dict(NDM_METHODS)

    def sampler_for(self, name: str):
        """The NDM step function of sampler ``name`` (F at both ends of each step) for a
        learned transform; None for the identity, which the linear samplers sample exactly
        (:func:`nudiff.samplers.sample` asks this)."""
        if self.identity:
            return None
        if name not in NDM_SAMPLERS:
            raise ValueError(
                f"an NDM with a learned transform samples with {', '.join(NDM_SAMPLERS)}, not "
                f"{name!r}"
            )
        return partial(NDM_SAMPLERS[name], transform=self.transform)
