import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from nudiff.eval import (
    FeatureNet,
    extract_features,
    frechet_distance,
    gaussian_stats,
    inception_features,
    load_feature_net,
    load_images_npz,
    save_feature_net,
    train_feature_net,
)

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


@pytest.fixture(scope="module")
def tiny():
    """A tiny net trained for a few steps on random 8x8 grey images, and the images."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, 64)
    net, info = train_feature_net(
        images, labels, steps=3, batch_size=16, width=4, feature_dim=6, progress=False
    )
    return net, info, images, labels


def test_feature_net_shapes():
    net = FeatureNet(3, 5, 12, width=4, feature_dim=7)
    x = torch.rand(2, 3, 12, 12) * 2 - 1
    assert net(x).shape == (2, 5)
    f = net.features(x)
    assert f.shape == (2, 7) and f.dtype == torch.float32


def test_feature_net_input_errors():
    net = FeatureNet(1, 3, 8, width=4)
    with pytest.raises(ValueError, match="12x12 .* 8x8"):
        net(torch.zeros(1, 1, 12, 12))
    with pytest.raises(ValueError, match="3 channel.* takes 1"):
        net(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=">= 8"):
        FeatureNet(1, 3, 4)


def test_train_report_determinism_and_global_rng(tiny):
    net, info, images, labels = tiny
    assert set(info) == {"accuracy", "steps", "seconds", "n_train", "n_holdout", "train_loss"}
    assert (info["n_train"], info["n_holdout"], info["steps"]) == (58, 6, 3)
    assert 0 <= info["accuracy"] <= 1 and not net.training
    state = torch.get_rng_state()
    again, _ = train_feature_net(
        images, labels, steps=3, batch_size=16, width=4, feature_dim=6, progress=False
    )
    assert torch.equal(state, torch.get_rng_state())
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_train_input_errors():
    images = np.zeros((10, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        train_feature_net(images.astype(np.float32), np.zeros(10, int), steps=1)
    with pytest.raises(ValueError, match=r"labels .* \(10,\)"):
        train_feature_net(images, np.zeros(9, int), steps=1)
    with pytest.raises(ValueError, match="square"):
        train_feature_net(np.zeros((10, 8, 9), np.uint8), np.zeros(10, int), steps=1)


def test_extract_features_inputs(tiny):
    net, _, images, _ = tiny
    f = extract_features(net, images, batch_size=10)
    assert f.shape == (64, 6) and f.dtype == np.float64
    as_float = torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1
    np.testing.assert_allclose(extract_features(net, as_float), f, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="never converted silently"):
        extract_features(net, np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="16x16 .* 8x8"):
        extract_features(net, np.zeros((2, 16, 16), np.uint8))
    # uint8 tensors (N, C, H, W) give the features of the same numpy images
    as_uint8 = torch.from_numpy(images).unsqueeze(1)
    np.testing.assert_allclose(extract_features(net, as_uint8), f, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        extract_features(net, torch.from_numpy(images))
    with pytest.raises(TypeError, match="uint8 numpy array"):
        extract_features(net, torch.from_numpy(images).long().unsqueeze(1))


def test_save_load_round_trip(tiny, tmp_path):
    net, info, images, _ = tiny
    path = tmp_path / "sub" / "features.safetensors"
    save_feature_net(net, path, info)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    loaded = load_feature_net(path)
    assert not loaded.training and loaded.info == info
    np.testing.assert_array_equal(extract_features(loaded, images), extract_features(net, images))


def test_load_errors(tiny, tmp_path):
    net, info, _, _ = tiny
    with pytest.raises(FileNotFoundError, match="not found"):
        load_feature_net(tmp_path / "missing.safetensors")
    path = tmp_path / "net.safetensors"
    save_feature_net(net, path, info)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_feature_net(truncated)
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a nudiff feature net"):
        load_feature_net(other)


def test_inception_needs_local_weights(tmp_path, monkeypatch):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    monkeypatch.delenv("NUDIFF_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="NUDIFF_INCEPTION_WEIGHTS"):
        inception_features(images)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        inception_features(images, weights=tmp_path / "missing.pth")
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"not really weights")
    monkeypatch.setenv("NUDIFF_INCEPTION_WEIGHTS", str(weights))
    if importlib.util.find_spec("torch_fidelity") is None:
        with pytest.raises(ImportError, match="torch-fidelity"):
            inception_features(images)


def test_load_images_npz(tmp_path):
    x = np.zeros((4, 8, 8), np.uint8)
    np.savez(tmp_path / "train.npz", x_train=x, y_train=np.arange(4), extra=x)
    images, labels = load_images_npz(tmp_path / "train.npz")
    assert images.shape == (4, 8, 8) and labels.tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "one.npz", samples=np.zeros((3, 8, 8, 3), np.uint8), t=np.zeros(3))
    images, labels = load_images_npz(tmp_path / "one.npz")
    assert images.shape == (3, 8, 8, 3) and labels is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(ValueError, match="cannot pick"):
        load_images_npz(tmp_path / "two.npz")
    np.savez(tmp_path / "bad_labels.npz", x_train=x, y_train=np.arange(3))
    with pytest.raises(ValueError, match="y_train"):
        load_images_npz(tmp_path / "bad_labels.npz")
    with pytest.raises(FileNotFoundError):
        load_images_npz(tmp_path / "missing.npz")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_mnist_feature_distance_ranks_noise_and_blur():
    images, labels = load_images_npz(MNIST)
    start = time.perf_counter()
    net, info = train_feature_net(images[:20000], labels[:20000], steps=500, progress=False)
    print(f"feature net: {info}")
    assert info["accuracy"] > 0.95
    held_out = torch.from_numpy(images[-4000:]).float().unsqueeze(1) / 127.5 - 1
    a, b = held_out[:2000], held_out[2000:]
    noised = (b + 0.3 * torch.randn(b.shape, generator=torch.Generator().manual_seed(0))).clamp(
        -1, 1
    )
    blurred = F.avg_pool2d(F.pad(b, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    stats_a = gaussian_stats(extract_features(net, a))
    fd = {
        name: frechet_distance(*stats_a, *gaussian_stats(extract_features(net, other)))
        for name, other in [("clean", b), ("noised", noised), ("blurred", blurred)]
    }
    print(f"FD to held-out A: {fd} ({time.perf_counter() - start:.0f} s in all)")
    assert fd["noised"] > 5 * fd["clean"]
    assert fd["blurred"] > 5 * fd["clean"]
