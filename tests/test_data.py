import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch.utils.data import DataLoader

from nudiff.data import (
    DataConfig,
    HuggingFaceDataset,
    ImageFolderDataset,
    NpzDataset,
    ShapesDataset,
    TorchvisionDataset,
    build_dataset,
    load_batch,
    random_hflip,
)
from nudiff.data.transforms import pad_to, to_channels, uint8_to_float

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


# --- shapes -----------------------------------------------------------------------------------


def test_shapes_deterministic_per_seed_and_index():
    a, b = ShapesDataset(size=100, seed=3), ShapesDataset(size=100, seed=3)
    assert torch.equal(a[7], b[7])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(a[7], ShapesDataset(size=100, seed=4)[7])
    # batched rendering gives exactly the per-item images, whatever the batch holds
    batch = a.batch([8, 7, 99])
    assert torch.equal(batch[1], a[7]) and torch.equal(batch[2], a[-1])


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_range_and_shape(channels):
    ds = ShapesDataset(size=1000, resolution=24, channels=channels)
    x = ds.batch(range(256))  # a few thousand per second: this is a few ms, not a timing test
    assert x.shape == (256, channels, 24, 24) and ds.shape == (channels, 24, 24)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    # every image has a plain background plus shapes covering a real part of it
    bg = x[:, :, :1, :1]
    covered = (x - bg).abs().amax(dim=1).gt(0.3).float().mean(dim=(1, 2))
    assert covered.min() > 0.03 and covered.mean() > 0.15


def test_shapes_index_errors_and_validation():
    ds = ShapesDataset(size=10)
    assert len(ds) == 10
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match="channels"):
        ShapesDataset(channels=2)
    with pytest.raises(ValueError, match="max_shapes"):
        ShapesDataset(min_shapes=3, max_shapes=2)


@pytest.mark.parametrize("lo, hi", [(1, 3), (1, 1), (2, 3)])
def test_shapes_count_is_configurable_and_labelled(lo, hi):
    ds = build_dataset(DataConfig(resolution=16, size=2000, min_shapes=lo, max_shapes=hi))
    assert (ds.min_shapes, ds.max_shapes) == (lo, hi)
    # kind (3) x count (hi - lo + 1) x background (2) classes, every one of them drawn
    labels = ds.labels(range(2000))
    assert sorted(set(labels.tolist())) == list(range(6 * (hi - lo + 1)))
    dark = labels >= 3 * (hi - lo + 1)
    x = ds.batch(range(2000)).mean(1)
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    # the border is mostly background (a large shape may cover much of it in a few images)
    looks_dark = border.median(dim=1).values < 0
    assert (looks_dark == torch.from_numpy(dark)).float().mean() > 0.98
    with pytest.raises(ValidationError, match="min_shapes"):
        DataConfig(min_shapes=3, max_shapes=2)


def test_dataloader_uses_batched_fetch():
    ds = ShapesDataset(size=64)
    assert torch.equal(next(iter(DataLoader(ds, batch_size=16))), ds.batch(range(16)))
    assert torch.equal(load_batch(ds, torch.tensor([3, 1])), torch.stack([ds[3], ds[1]]))


# --- transforms -------------------------------------------------------------------------------


def test_random_hflip_is_reproducible_and_per_sample():
    x = torch.arange(64 * 5, dtype=torch.float32).view(64, 1, 1, 5)
    a = random_hflip(x, torch.Generator().manual_seed(0))
    b = random_hflip(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    flipped = (a != x).flatten(1).any(1)
    assert 10 < flipped.sum() < 54
    assert torch.equal(a[flipped], x[flipped].flip(-1))


def test_pad_to_and_channels():
    x = torch.ones(1, 28, 28)
    y = pad_to(x, 32)
    assert y.shape == (1, 32, 32) and y[:, 2:30, 2:30].eq(1).all() and y.sum() == 28 * 28 - 240
    assert torch.equal(pad_to(torch.arange(16.0).view(4, 4), 2), torch.tensor([[5.0, 6], [9, 10]]))
    rgb = to_channels(x, 3)
    assert rgb.shape == (3, 28, 28)
    assert torch.allclose(to_channels(rgb, 1), x)
    with pytest.raises(ValueError, match="4 channels"):
        to_channels(torch.zeros(4, 2, 2), 3)


# --- npz --------------------------------------------------------------------------------------


def _digits(n=6, size=28):
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (n, size, size), dtype=np.uint8)


def test_npz_key_selection(tmp_path):
    imgs = _digits()
    np.savez(tmp_path / "a.npz", x_train=imgs, images=imgs[:2], y_train=np.arange(6))
    assert len(NpzDataset(tmp_path / "a.npz")) == 6  # x_train wins
    assert len(NpzDataset(tmp_path / "a.npz", key="images")) == 2
    np.savez(tmp_path / "b.npz", labels=np.arange(6), pics=imgs)
    assert len(NpzDataset(tmp_path / "b.npz")) == 6  # the only uint8 image array
    np.savez(tmp_path / "c.npz", a=imgs, b=imgs)
    with pytest.raises(ValueError, match=r"pass key=.*a \(6, 28, 28\) uint8"):
        NpzDataset(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4)), y=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="cannot pick.*y \\(2, 8, 8\\) float32"):
        NpzDataset(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="must be uint8 images"):
        NpzDataset(tmp_path / "d.npz", key="y")
    with pytest.raises(ValueError, match="no array 'z'"):
        NpzDataset(tmp_path / "d.npz", key="z")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        NpzDataset(tmp_path / "nope.npz")


def test_npz_pad_resize_channels_indices(tmp_path):
    imgs = _digits()
    np.savez_compressed(tmp_path / "m.npz", x_train=imgs)
    ds = NpzDataset(tmp_path / "m.npz", resolution=32)
    x = ds[1]
    assert x.shape == (1, 32, 32) == ds.shape
    assert torch.equal(x[0, 2:30, 2:30], uint8_to_float(torch.from_numpy(imgs[1])))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert x[0][border].eq(-1).all()

    r = NpzDataset(tmp_path / "m.npz", resolution=32, resize="resize", channels=3)[1]
    assert r.shape == (3, 32, 32) and r.min() >= -1 and r.max() <= 1
    assert torch.equal(r[0], r[2]) and (r[0] > -1).float().mean() > 0.9  # fills the frame

    sub = NpzDataset(tmp_path / "m.npz", indices=slice(-2, None))
    assert len(sub) == 2 and torch.equal(sub[0], NpzDataset(tmp_path / "m.npz")[4])
    picked = NpzDataset(tmp_path / "m.npz", indices=np.array([5, 0]))
    assert torch.equal(picked.batch([0, 1]), NpzDataset(tmp_path / "m.npz").batch([5, 0]))


def test_npz_rgb_to_grey(tmp_path):
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    np.savez(tmp_path / "c.npz", x_train=rgb)
    ds = NpzDataset(tmp_path / "c.npz", channels=1)
    assert ds[0].shape == (1, 8, 8)
    assert torch.allclose(ds[0], torch.full((1, 8, 8), 0.587 * 2 - 1))
    assert NpzDataset(tmp_path / "c.npz")[0].shape == (3, 8, 8)


# --- folder -----------------------------------------------------------------------------------


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "sub/a.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, resolution=16)
    assert [p.name for p in ds.files] == ["b.png", "a.JPG"]
    assert ds[0].shape == ds[1].shape == (3, 16, 16)
    assert ImageFolderDataset(tmp_path, 8, channels=1)[0].shape == (1, 8, 8)
    ds.check()

    (tmp_path / "c.png").write_bytes(rng.bytes(100))
    ds = ImageFolderDataset(tmp_path, resolution=16)
    with pytest.raises(ValueError, match="c.png"):
        ds[1]
    with pytest.raises(ValueError, match=r"1 of 3 images .* unreadable: .*c\.png"):
        ds.check()


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderDataset(tmp_path / "missing", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files.*empty"):
        ImageFolderDataset(tmp_path / "empty", 16)


# --- config and factory -----------------------------------------------------------------------


def test_build_default_shapes_and_holdout():
    assert isinstance(build_dataset(DataConfig()), ShapesDataset)
    cfg = {"size": 100, "holdout": 10, "resolution": 16, "channels": 1}
    train, held = build_dataset(cfg), build_dataset(cfg, split="holdout")
    assert len(train) == 90 and len(held) == 10 and held.shape == (1, 16, 16)
    assert torch.equal(held[0], ShapesDataset(100, 16, 1)[90])
    assert torch.equal(load_batch(held, [1]), ShapesDataset(100, 16, 1).batch([91]))
    with pytest.raises(ValueError, match="holdout > 0"):
        build_dataset({"size": 10}, split="holdout")


def test_build_npz_and_folder(tmp_path):
    np.savez(tmp_path / "m.npz", x_train=_digits(n=8))
    cfg = DataConfig(name="npz", path=str(tmp_path / "m.npz"), channels=1, holdout=3)
    assert len(build_dataset(cfg)) == 5 and build_dataset(cfg)[0].shape == (1, 32, 32)
    assert len(build_dataset(cfg, split="holdout")) == 3
    with pytest.raises(ValueError, match="data.holdout"):
        build_dataset(cfg.model_copy(update={"holdout": 8}))
    Image.new("RGB", (10, 12)).save(tmp_path / "x.png")
    assert build_dataset({"name": "folder", "path": str(tmp_path)})[0].shape == (3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 2}, "data.resolution must be >= 4"),
        ({"channels": 2}, "data.channels"),
        ({"size": 0}, "data.size"),
        ({"holdout": -1}, "data.holdout must be >= 0"),
        ({"holdout": 5, "size": 5}, "data.holdout .* smaller than data.size"),
        ({"name": "npz"}, "data.path is required for data.name='npz'"),
        ({"name": "torchvision", "path": "x"}, "data.key"),
        ({"resize": "stretch"}, "resize"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        DataConfig(**kwargs)


@pytest.mark.skipif(
    importlib.util.find_spec("nudiff.data.fields") is None, reason="fields.py not written yet"
)
def test_build_fields():
    ds = build_dataset({"name": "fields", "size": 4, "resolution": 16, "channels": 1})
    assert len(ds) == 4 and ds[0].shape == (1, 16, 16)


def test_hub_import_errors_say_what_to_install():
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match="pip install torchvision"):
            TorchvisionDataset("CIFAR10", "data")
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(ImportError, match="pip install datasets"):
            HuggingFaceDataset("cifar10")


# --- real data --------------------------------------------------------------------------------


@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_real_mnist_padded():
    ds = NpzDataset(MNIST, resolution=32, channels=1)
    assert len(ds) == 60000 and ds.shape == (1, 32, 32)
    x = ds.batch(range(0, 60000, 600))
    assert x.min() >= -1 and x.max() <= 1 and x.max() == 1
    assert x[:, :, :2].eq(-1).all() and x[:, :, :, -2:].eq(-1).all()
    cfg = {"name": "npz", "path": str(MNIST), "channels": 1, "holdout": 5000}
    train, held = build_dataset(cfg), build_dataset(cfg, split="holdout")
    assert len(train) == 55000 and len(held) == 5000
    assert torch.equal(held[0], ds[55000])
