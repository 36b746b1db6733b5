"""PCA basis fitted from data."""

from __future__ import annotations

import torch

from nudiff.bases.base import Basis


class PCA(Basis):
    """Components are projections on the eigenvectors of the data covariance, by falling variance.

    Component ``r`` (flat index in ``(C, H, W)`` row-major order) is the ``r``-th principal
    component. The matrix and the variances are buffers, saved and loaded with the model's
    state dict. Construct with :meth:`fit`; a bare ``PCA(shape)`` is a placeholder (identity) to
    load a state dict into.
    """

    default_label = "rank"

    def __init__(self, shape, components: torch.Tensor | None = None, variances=None):
        super().__init__(shape)
        d = self.numel
        if components is None:
            components = torch.eye(d, dtype=torch.float64)
            variances = torch.ones(d, dtype=torch.float64)
        if components.shape != (d, d):
            raise ValueError(f"components must be ({d}, {d}), got {tuple(components.shape)}")
        # columns are eigenvectors; kept in float64, used in the input's dtype
        self.register_buffer("components", components.double())
        self.register_buffer("variances", torch.as_tensor(variances).double().flatten())

    @classmethod
    def fit(cls, data: torch.Tensor, shape=None) -> PCA:
        """Fit from images ``(N, C, H, W)``; needs ``N > C*H*W`` for a full-rank covariance."""
        if data.dim() != 4:
            raise ValueError(f"data must be (N, C, H, W), got shape {tuple(data.shape)}")
        shape = tuple(shape or data.shape[1:])
        n, d = data.shape[0], data[0].numel()
        if n <= d:
            raise ValueError(
                f"data: PCA needs more samples than dimensions ({d}) for a full-rank covariance, "
                f"got {n}"
            )
        x = data.reshape(n, d).double()
        x = x - x.mean(0)
        cov = x.T @ x / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        # deterministic signs: the largest-magnitude entry of each eigenvector is positive
        idx = evecs.abs().argmax(0)
        evecs = evecs * torch.sign(evecs[idx, torch.arange(d)])
        return cls(shape, evecs, evals)

    def _mat(self, x):
        return self.components.to(x.dtype)

    def _forward(self, x):
        return (x.flatten(1) @ self._mat(x)).view(x.shape)

    def _inverse(self, z):
        return (z.flatten(1) @ self._mat(z).T).view(z.shape)

    def labels(self):
        rank = torch.arange(self.numel, dtype=torch.float32).view(self.shape)
        # a stand-in "frequency" so frequency-ordered schedules work on PCA too
        return {"rank": rank, "frequency": 0.5 * rank / self.numel}

    def groups(self):
        # log-spaced rank groups: 1, 2-3, 4-7, ...
        rank = torch.arange(self.numel).view(self.shape)
        g = torch.floor(torch.log2(rank.double() + 1)).long()
        names = [f"rank {2**k - 1}-{2 ** (k + 1) - 2}" for k in range(int(g.max()) + 1)]
        return g, names
