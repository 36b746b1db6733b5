"""Image restoration metrics on ``(B, C, H, W)`` images in ``[-1, 1]`` (data range 2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DATA_RANGE = 2.0


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image ``(B,)``: ``10 log10(range^2 / MSE)``
    (``inf`` for identical images)."""
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(DATA_RANGE**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, ref: torch.Tensor, window: int = 11, sigma: float = 1.5):
    """Structural similarity per image ``(B,)`` (Wang et al. 2004) on intensities mapped from
    ``[-1, 1]`` to ``[0, 1]`` (SSIM's luminance term assumes non-negative intensities): Gaussian
    window (``window``, ``sigma``; shrunk to the image for small images), ``K1 = 0.01``,
    ``K2 = 0.03``, mean over the valid window positions and the channels."""
    if x.shape != ref.shape or x.dim() != 4:
        raise ValueError(f"x and ref must be (B, C, H, W) of one shape, got {x.shape}, {ref.shape}")
    x, ref = (x.double() + 1) / 2, (ref.double() + 1) / 2
    size = min(window, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    c = x.shape[1]
    w = _gaussian_window(size, sigma, x.dtype, x.device).expand(c, 1, size, size)

    def blur(z):
        return F.conv2d(z, w, groups=c)

    mu_x, mu_r = blur(x), blur(ref)
    var_x = blur(x * x) - mu_x**2
    var_r = blur(ref * ref) - mu_r**2
    cov = blur(x * ref) - mu_x * mu_r
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2)
    )
    return s.flatten(1).mean(1)


def diversity(samples: torch.Tensor) -> torch.Tensor:
    """Sample diversity per input ``(B,)`` from ``samples`` ``(B, K, C, H, W)`` (``K >= 2``
    samples per input): the mean over pixels of the standard deviation across the samples."""
    if samples.dim() != 5 or samples.shape[1] < 2:
        raise ValueError(f"samples must be (B, K >= 2, C, H, W), got {tuple(samples.shape)}")
    return samples.double().std(1).flatten(1).mean(1)


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error over a ``(N,)`` tensor (finite values only)."""
    v = values.double()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return math.nan, math.nan
    err = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else math.nan
    return float(v.mean()), err


def restoration_metrics(task, samples: torch.Tensor, truth, y: torch.Tensor, lpips=None) -> dict:
    """Means over all samples of ``samples`` ``(N, K, C, H, W)`` (``K`` per input) of ``N``
    inputs with conditions ``y`` ``(N, *y_shape)`` and, when given, ground truths ``truth``
    ``(N, C, H, W)``: ``consistency`` (the task's), ``diversity`` (0 for ``K = 1``), and with
    ``truth`` ``psnr``, ``ssim`` (with standard errors) and ``lpips`` (with an
    :class:`~nudiff.eval.lpips.LPIPS` model; else None)."""
    n, k = samples.shape[:2]
    flat = samples.flatten(0, 1)
    out = {
        "consistency": mean_and_stderr(task.consistency(flat, y.repeat_interleave(k, 0)))[0],
        "diversity": mean_and_stderr(diversity(samples))[0] if k > 1 else 0.0,
        "n_inputs": n,
        "n_samples": n * k,
    }
    if truth is None:
        return out
    truth = truth.to(flat).repeat_interleave(k, 0)
    out["psnr"], out["psnr_stderr"] = mean_and_stderr(psnr(flat, truth))
    out["ssim"], out["ssim_stderr"] = mean_and_stderr(ssim(flat, truth))
    out["lpips"] = None
    if lpips is not None:
        with torch.inference_mode():
            pairs = zip(flat.split(256), truth.split(256), strict=True)
            out["lpips"] = mean_and_stderr(torch.cat([lpips(a, b) for a, b in pairs]))[0]
    return out
