"""Conversions between what a network predicts: eps, x0, v, score and the flow velocity.

Pure functions of the noisy components ``u`` ``(B, C, H, W)`` and the coefficients ``alpha``,
``sigma`` (and their t-derivatives for the flow velocity) broadcastable to ``u``, with
``u = alpha x0 + sigma eps``. ``v = alpha eps - sigma x0`` (Salimans & Ho; its definition is
schedule-agnostic); ``velocity = alpha' x0 + sigma' eps`` is the flow-matching target ``du/dt``.
"""

from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v", "score", "velocity")


def _check(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {kind!r}")


def to_x0(pred, kind: str, u, alpha, sigma, dalpha=None, dsigma=None) -> torch.Tensor:
    """The x0 implied by a prediction of type ``kind``."""
    _check(kind)
    if kind == "x0":
        return pred
    if kind == "eps":
        return (u - sigma * pred) / alpha
    if kind == "v":
        return (alpha * u - sigma * pred) / (alpha**2 + sigma**2)
    if kind == "score":
        return (u + sigma**2 * pred) / alpha
    # velocity: solve [alpha sigma; alpha' sigma'] [x0; eps] = [u; w]
    return (dsigma * u - sigma * pred) / (dsigma * alpha - sigma * dalpha)


def from_x0(x0, kind: str, u, alpha, sigma, dalpha=None, dsigma=None) -> torch.Tensor:
    """The prediction of type ``kind`` implied by ``x0``."""
    _check(kind)
    if kind == "x0":
        return x0
    eps = (u - alpha * x0) / sigma
    if kind == "eps":
        return eps
    if kind == "v":
        return alpha * eps - sigma * x0
    if kind == "score":
        return -eps / sigma
    return dalpha * x0 + dsigma * eps


def targets(x0, eps, kind: str, alpha, sigma, dalpha=None, dsigma=None) -> torch.Tensor:
    """Regression target of type ``kind`` for clean ``x0`` and noise ``eps``."""
    _check(kind)
    return {
        "x0": lambda: x0,
        "eps": lambda: eps,
        "v": lambda: alpha * eps - sigma * x0,
        "score": lambda: -eps / sigma,
        "velocity": lambda: dalpha * x0 + dsigma * eps,
    }[kind]()
