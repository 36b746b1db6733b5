"""Conditional tasks (degradations, consistency) and restoration metrics."""

import math

import pytest
import torch

from nudiff.bases import Haar
from nudiff.conditional import (
    Colorization,
    Inpainting,
    SuperResolution,
    build_task,
    diversity,
    psnr,
    ssim,
)


@pytest.mark.parametrize("factor", [2, 4])
def test_super_resolution_is_average_pooling_and_the_haar_approximation(factor):
    x = torch.rand(3, 2, 16, 16, dtype=torch.float64) * 2 - 1
    task = SuperResolution(factor)
    y = task.degrade(x)
    assert y.shape == (3, *task.y_shape((2, 16, 16))) == (3, 2, 16 // factor, 16 // factor)
    block = x.unfold(2, factor, factor).unfold(3, factor, factor).mean((-1, -2))
    torch.testing.assert_close(y, block, rtol=0, atol=1e-15)
    levels = int(math.log2(factor))
    haar = Haar((2, 16, 16), levels)
    torch.testing.assert_close(haar.lowres(haar(x), levels), y, rtol=0, atol=1e-12)
    assert task.consistency(x, y).abs().max() == 0
    assert (task.consistency(x + 0.1, y) > 0.009).all()
    assert task.upsample(y, (2, 16, 16)).shape == (3, 2, 16, 16)


def test_colorization_takes_the_luma():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    y = Colorization().degrade(x)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(y[:, 0], expected)
    assert Colorization().consistency(x, y).abs().max() < 1e-12


@pytest.mark.parametrize("mask", ["center", "boxes"])
def test_inpainting_masks_cover_the_asked_fraction_and_are_per_image(mask):
    task = Inpainting(mask, coverage=0.25, seed=1)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    index = torch.arange(10, 16)
    y = task.degrade(x, index)
    assert y.shape == (6, 4, 32, 32)
    m = y[:, -1]
    cover = m.flatten(1).mean(1)
    assert ((cover >= 0.24) & (cover <= 0.5)).all(), cover
    if mask == "center":
        assert (cover - 0.25).abs().max() < 0.02 and torch.equal(m[0], m[1])
    else:
        assert not torch.equal(m[0], m[1])
        assert torch.equal(task.degrade(x, index), y)  # a function of (seed, index)
    assert torch.equal(y[:, :3] * m[:, None], torch.zeros_like(x))  # nothing leaks
    # consistency only looks at the observed pixels
    changed = x + 0.5 * m[:, None]
    assert task.consistency(changed, y).abs().max() < 1e-12
    assert (task.consistency(x + 0.1, y) > 0.009).all()


def test_naive_reconstructions_agree_with_their_condition():
    """The baselines: bilinear upsampling is exact on smooth (linear) images away from the
    border; grey-as-RGB and mean filling agree exactly with their condition."""
    ramp = torch.linspace(-1, 1, 16, dtype=torch.float64)
    x = (ramp.view(1, 1, 1, 16) + 0.5 * ramp.view(1, 1, 16, 1)).expand(2, 3, 16, 16)
    sr = SuperResolution(2)
    up = sr.naive(sr.degrade(x))
    assert up.shape == x.shape
    torch.testing.assert_close(up[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1], rtol=0, atol=1e-12)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    for task in (Colorization(), Inpainting("boxes", seed=2)):
        y = task.degrade(x, torch.arange(3))
        guess = task.naive(y)
        assert guess.shape == x.shape
        assert task.consistency(guess, y).abs().max() < 1e-12
    y = Inpainting("center").degrade(x)
    hole = y[:, -1:].bool().expand_as(x)
    fill = Inpainting("center").naive(y)
    keep = ~hole
    means = (x * keep).sum((-2, -1)) / keep.sum((-2, -1))
    torch.testing.assert_close(fill[:, :, 8, 8], means)  # the hole's centre: the observed mean


def test_tasks_that_do_not_fit_the_data_are_clear_errors():
    with pytest.raises(ValueError, match="x4 super-resolution needs H and W divisible by 4"):
        SuperResolution(4).y_shape((3, 30, 30))
    with pytest.raises(ValueError, match="power of 2"):
        SuperResolution(3)
    with pytest.raises(ValueError, match="colorization needs RGB"):
        Colorization().y_shape((1, 28, 28))
    with pytest.raises(ValueError, match="coverage must be in"):
        Inpainting(coverage=1.5)
    with pytest.raises(ValueError, match="task must be one of"):
        build_task("deblur")
    assert build_task("inpaint-boxes", coverage=0.3).coverage == 0.3


def test_psnr_and_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    noisy = x + 0.1 * torch.randn(x.shape, generator=g)
    # MSE 0.01 over a data range of 2: 10 log10(4 / 0.01) = 26.0 dB
    torch.testing.assert_close(
        psnr(noisy, x), torch.full((4,), 26.02, dtype=torch.float64), atol=0.15, rtol=0
    )
    torch.testing.assert_close(ssim(x, x), torch.ones(4, dtype=torch.float64))
    s1, s2 = ssim(noisy, x), ssim(x + 0.3 * torch.randn(x.shape, generator=g), x)
    assert (s1 < 1).all() and (s2 < s1).all()
    torch.testing.assert_close(ssim(noisy, x), ssim(x, noisy))
    # a constant offset lowers only the luminance term
    assert (ssim(x + 0.05, x) > 0.99).all()
    # small images shrink the window
    assert ssim(x[..., :8, :8], x[..., :8, :8]).shape == (4,)


def test_diversity_is_the_pixel_std_across_samples():
    base = torch.zeros(2, 5, 1, 4, 4)
    assert diversity(base).abs().max() == 0
    spread = base + torch.tensor([-1.0, 1.0, -1.0, 1.0, 0.0]).view(1, 5, 1, 1, 1)
    torch.testing.assert_close(diversity(spread), torch.full((2,), 1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="K >= 2"):
        diversity(base[:, :1])
