"""Neural Diffusion Models' time-dependent transforms ``F(u, t)`` and the model that pairs one
with a denoiser.

NDM (Bartosh et al. 2023) replaces the linear forward process by
``z_t = alpha(t) F(x, t) + sigma(t) eps``. In nudiff ``F`` acts on the whitened components
``u = encode(x)`` and the per-component schedule applies to the components of ``F``:

    z_t,i = alpha_i(t) F_i(u, t) + sigma_i(t) eps_i.

Transforms:

* :class:`IdentityTransform`: ``F(u, t) = u``, the linear process (``dF/dt = 0``);
* :class:`LearnedTransform`: ``F(u, t) = u + t N(u, t)`` with ``N`` any nudiff backbone run on
  the components laid out as an image (the basis inverse, as the denoiser's input) and
  conditioned on ``t`` alone. ``F(u, 0) = u`` holds exactly for every weight, so the data end of
  the process is the data; the backbones' output layers start at zero, so a fresh transform is
  the identity and training starts from the linear model.
"""

from __future__ import annotations

import torch
from torch import nn

from nudiff.process import Process
from nudiff.schedules import as_times

TRANSFORMS = ("identity", "learned")


def _batch_times(t, u: torch.Tensor) -> torch.Tensor:
    """Times ``(B,)`` in ``u``'s dtype (a shared ``(1,)`` or 0-d time expanded over the batch)."""
    return as_times(t, u).expand(u.shape[0]).to(u.dtype)


class IdentityTransform(nn.Module):
    """``F(u, t) = u``: NDM with this transform is the linear model."""

    identity = True

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        return u

    def with_time_derivative(self, u: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``F(u, t)`` and ``dF/dt(u, t)`` (zero)."""
        return u, torch.zeros_like(u)


class LearnedTransform(nn.Module):
    """``F(u, t) = u + t N(u, t)`` (see the module docstring). ``backbone(image, cond)`` is a
    nudiff backbone with one noise feature (``t``) and as many output as input channels."""

    identity = False

    def __init__(self, process: Process, backbone: nn.Module):
        super().__init__()
        # the process's basis maps components to the image layout the backbone sees; it is not
        # registered here (the denoiser owns the process and its buffers)
        self._process = [process]
        self.backbone = backbone

    @property
    def process(self) -> Process:
        return self._process[0]

    def forward(self, u: torch.Tensor, t) -> torch.Tensor:
        t = _batch_times(t, u)
        basis = self.process.basis
        out = basis(self.backbone(basis.inverse(u), t.view(-1, 1)).to(u.dtype))
        return u + t.view(-1, 1, 1, 1) * out

    def with_time_derivative(self, u: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``F(u, t)`` and ``dF/dt(u, t)``, the latter by forward-mode differentiation in ``t``
        (``torch.func.jvp``, one pass): differentiable in the weights and in ``u``. Attention
        (a DiT transform) runs as plain matrix products here: the fused kernels have no
        forward-mode derivative."""
        from torch.func import jvp
        from torch.nn.attention import SDPBackend, sdpa_kernel

        t = _batch_times(t, u).clone()  # a time shared by the batch is an expanded view
        with sdpa_kernel(SDPBackend.MATH):
            return jvp(lambda tt: self(u, tt), (t,), (torch.ones_like(t),))


def transform_of(model) -> nn.Module:
    """The transform of an NDM (:class:`~nudiff.ndm.model.NDM`, also through a wrapper with
    ``.denoiser``), else the identity (any other denoiser: the linear process)."""
    for m in (model, getattr(model, "denoiser", None)):
        transform = getattr(m, "transform", None)
        if isinstance(transform, IdentityTransform | LearnedTransform):
            return transform
    return IdentityTransform()
