"""The built-in panoramas (nudiff.data.panorama): deterministic, any resolution and width,
stationary along the width, with one-line errors."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from nudiff.data import DataConfig, PanoramaDataset, build_dataset, load_batch


def test_deterministic_per_seed_and_index():
    a, b = PanoramaDataset(size=100, seed=3), PanoramaDataset(size=100, seed=3)
    assert torch.equal(a[7], b[7])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], PanoramaDataset(size=100, seed=4)[7])
    # batched rendering gives exactly the per-item images, whatever the batch holds
    batch = a.batch([8, 7, 99])
    assert torch.equal(batch[1], a[7]) and torch.equal(batch[2], a[-1])


@pytest.mark.parametrize("channels", [1, 3])
def test_range_and_shape(channels):
    ds = PanoramaDataset(size=1000, resolution=24, channels=channels)
    x = ds.batch(range(64))
    assert x.shape == (64, channels, 24, 24) and ds.shape == (channels, 24, 24)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    # sky on top, ridges below: the rows differ, and the images differ
    assert (x[:, :, 0] - x[:, :, -1]).abs().mean() > 0.1
    assert x.std(0).mean() > 0.1


def test_wider_strips_continue_the_square_images():
    ds = PanoramaDataset(size=10, resolution=16)
    strip = ds.batch([2, 5], width=64)
    assert strip.shape == (2, 3, 16, 64)
    assert torch.equal(strip[..., :16], ds.batch([2, 5]))
    wide = PanoramaDataset(size=10, resolution=16, width=40)
    assert wide.shape == (3, 16, 40) and torch.equal(wide[5], strip[1, ..., :40])


def test_resolution_only_changes_the_sampling():
    fine, coarse = PanoramaDataset(size=8, resolution=64), PanoramaDataset(size=8, resolution=32)
    pooled = F.avg_pool2d(fine.batch(range(8)), 2)
    assert (pooled - coarse.batch(range(8))).abs().mean() < 0.03


def test_stationary_along_the_width():
    """Every column has the same law: the per-column mean and std over many strips agree
    within the Monte-Carlo error, far from the first column as near it."""
    x = PanoramaDataset(size=2000, resolution=16, channels=1).batch(range(2000), width=96)
    cols = x.transpose(0, 3).reshape(96, -1)
    mean, std = cols.mean(1), cols.std(1)
    assert (mean - mean.mean()).abs().max() < 0.03
    assert (std - std.mean()).abs().max() < 0.03
    # neighbouring columns are alike: a continuation has something to continue
    d2 = (x[..., 1:] - x[..., :-1]).square().mean()
    assert d2 < 0.1 * 2 * cols.var(1).mean()


def test_errors():
    ds = PanoramaDataset(size=10)
    assert len(ds) == 10
    with pytest.raises(IndexError, match="out of range"):
        ds[10]
    for kwargs, match in [
        ({"size": 0}, "size must be >= 1"),
        ({"resolution": 3}, "resolution must be >= 4"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"layers": 0}, "layers must be in 1..8"),
        ({"layers": 9}, "layers must be in 1..8"),
        ({"exponent": -1.0}, r"exponent must be in \[0, 6\]"),
        ({"exponent": float("nan")}, r"exponent must be in \[0, 6\]"),
        ({"width": 0}, "width must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            PanoramaDataset(**kwargs)
    with pytest.raises(ValueError, match="width must be >= 1"):
        ds.batch([0], width=0)


def test_config_builds_it_with_holdout_and_width():
    cfg = {"name": "panorama", "size": 100, "holdout": 10, "resolution": 16, "layers": 2}
    train, held = build_dataset(cfg), build_dataset(cfg, split="holdout")
    assert len(train) == 90 and len(held) == 10 and held.shape == (3, 16, 16)
    assert torch.equal(held[0], PanoramaDataset(100, 16, layers=2)[90])
    strips = build_dataset({**cfg, "width": 48}, split="holdout")
    assert torch.equal(load_batch(strips, [0])[..., :16], held[0][None])
    with pytest.raises(ValueError, match="data.width is for data.name=panorama only"):
        build_dataset({"name": "shapes", "width": 48})  # a config may say it, data cannot
    for kwargs, match in [
        ({"name": "panorama", "layers": 0}, "layers"),
        ({"name": "panorama", "width": 0}, "width"),
        ({"name": "panorama", "size": 5, "holdout": 5}, "smaller than data.size"),
    ]:
        with pytest.raises(ValidationError, match=match):
            DataConfig(**kwargs)
