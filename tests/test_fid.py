"""FID / KID in Inception-v3 features, wired through torch-fidelity, with stand-in weights.

Tests cannot download the real weights: a randomly initialised network of the same
architecture, saved to a file, proves the wiring (loading, input handling, the metrics and
their agreement with torch-fidelity's own computation). torch-fidelity imports torchvision for
parts nudiff does not use; where no working torchvision is installed (a CPU build of torch),
a stand-in module lets it import (``make test`` installs torch-fidelity without dependencies).
"""

import importlib
import json
import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from nudiff.cli import main
from nudiff.eval import InceptionV3, frechet_distance, gaussian_stats, kid
from nudiff.eval.commands import eval_fd


def _import_torch_fidelity():
    try:
        return importlib.import_module("torch_fidelity")
    except ModuleNotFoundError as err:
        if err.name == "torch_fidelity":
            pytest.skip("torch-fidelity is not installed (make test installs it)")
    except RuntimeError:  # a torchvision built for another torch fails at import
        pass
    names = [
        "torchvision",
        "torchvision.datasets",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.models",
    ]
    saved = {name: sys.modules.get(name) for name in names}

    class Stub(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {})  # a class torch-fidelity names but nudiff never calls

    stubs = {name: Stub(name) for name in names}
    for name, module in stubs.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stubs[parent], child, module)
    try:
        sys.modules.update(stubs)
        return importlib.import_module("torch_fidelity")
    finally:  # torchvision stays absent for every other test
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised FID Inception-v3 saved as torch-fidelity's weights file is."""
    _import_torch_fidelity()
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", return_value=None),
    ):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(0)
    for m in net.modules():  # He init keeps activations at scale through the 90 layers
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.data = (
                torch.randn(m.weight.shape, generator=g) * (2 / m.weight[0].numel()) ** 0.5
            )
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(net.state_dict(), path)
    return path


class Code:
    """Pickled as a reference to this class: loading it would run this module's code."""


def _images(seed: int, n: int = 12, smooth: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float64)
    if smooth:  # another distribution: blurred, darker images
        x = 0.5 * (x + np.roll(x, 1, axis=1)) * 0.6
    return x.astype(np.uint8)


def test_features_are_the_pool3_features_of_torch_fidelity(weights):
    net = InceptionV3(weights)
    images = _images(0, n=4)
    f = net.features(images)
    assert f.shape == (4, 2048) and f.dtype == np.float64 and np.isfinite(f).all()
    assert f.std(0).mean() > 0  # not a dead network
    # the same images as a float tensor in [-1, 1] give the same features
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(net.features(x), f, rtol=1e-5, atol=1e-6)
    # grey images are repeated to RGB, as torch-fidelity reads grey files
    grey = images[..., :1]
    np.testing.assert_allclose(
        net.features(grey), net.features(np.repeat(grey, 3, axis=-1)), rtol=1e-6, atol=1e-7
    )


def test_fid_of_a_set_with_itself_is_zero_and_of_two_sets_is_not(weights, tmp_path):
    a, b = _images(1), _images(2, smooth=True)
    np.savez(tmp_path / "a.npz", x_train=a)
    np.savez(tmp_path / "b.npz", x_train=b)
    common = dict(features="inception", inception_weights=weights, n=12, device="cpu")
    same = eval_fd(samples=tmp_path / "a.npz", ref=tmp_path / "a.npz", **common)
    other = eval_fd(samples=tmp_path / "a.npz", ref=tmp_path / "b.npz", **common)
    assert abs(same["fd"]) < 1e-6 * other["fd"] and other["fd"] > 0
    # KID draws its subsets of each side independently: near 0, not 0
    assert abs(same["kid"]) < 0.01 * other["kid"]
    assert same["inception_weights"] == str(weights) and "class_accuracy" not in same


def test_fid_and_kid_equal_torch_fidelitys_on_the_same_features(weights):
    tf = _import_torch_fidelity()
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    del tf
    rng = np.random.default_rng(3)
    # well-conditioned features (N > D): the two FID formulas agree to rounding
    f1, f2 = rng.normal(size=(400, 32)), rng.normal(0.2, 1.3, size=(300, 32))
    theirs = fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(f1)),
        fid_features_to_statistics(torch.from_numpy(f2)),
        verbose=False,
    )["frechet_inception_distance"]
    ours = frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))
    assert ours == pytest.approx(theirs, rel=1e-9)
    theirs_kid = kid_features_to_metric(
        torch.from_numpy(f1),
        torch.from_numpy(f2),
        kid_subsets=20,
        kid_subset_size=100,
        rng_seed=7,
        verbose=False,
    )
    ours_kid = kid(f1, f2, subsets=20, subset_size=100, seed=7)
    assert ours_kid[0] == pytest.approx(theirs_kid["kernel_inception_distance_mean"], rel=1e-9)
    assert ours_kid[1] == pytest.approx(theirs_kid["kernel_inception_distance_std"], rel=1e-9)
    # and on Inception features of images (fewer images than features: looser, as
    # torch-fidelity's eigenvalues of a singular product carry rounding)
    net = InceptionV3(weights)
    g1, g2 = net.features(_images(4)), net.features(_images(5, smooth=True))
    theirs = fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(g1)),
        fid_features_to_statistics(torch.from_numpy(g2)),
        verbose=False,
    )["frechet_inception_distance"]
    assert frechet_distance(*gaussian_stats(g1), *gaussian_stats(g2)) == pytest.approx(
        theirs, rel=1e-4
    )


def test_eval_fd_command_prints_fid_and_kid(weights, tmp_path, capsys):
    np.savez(tmp_path / "gen.npz", x_train=_images(6))
    np.savez(tmp_path / "ref.npz", x_train=_images(7, smooth=True))
    js = tmp_path / "fid.json"
    args = [
        "eval",
        "fd",
        "--samples",
        str(tmp_path / "gen.npz"),
        "--ref",
        str(tmp_path / "ref.npz"),
    ]
    args += ["--features", "inception", "--inception-weights", str(weights), "--n-samples", "12"]
    assert main([*args, "--device", "cpu", "--json", str(js)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("fd ") and "kid " in line
    result = json.loads(js.read_text())
    assert result["features"] == "inception" and result["fd"] > 0 and result["n"] == 12


def test_inception_weights_errors_are_one_line(weights, tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "x.npz", x_train=_images(8, n=4))
    base = ["eval", "fd", "--samples", str(tmp_path / "x.npz"), "--ref", str(tmp_path / "x.npz")]
    base += ["--features", "inception", "--n-samples", "4", "--device", "cpu"]
    monkeypatch.delenv("NUDIFF_INCEPTION_WEIGHTS", raising=False)

    def error(*extra) -> str:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    assert "--inception-weights" in error() and "never downloads" in error()
    assert "not found" in error("--inception-weights", str(tmp_path / "missing.pth"))
    torch.save({"fc.weight": torch.zeros(10, 5)}, tmp_path / "small.pth")
    assert "not the FID Inception-v3" in error("--inception-weights", str(tmp_path / "small.pth"))
    partial = {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(partial, tmp_path / "partial.pth")
    assert "does not fit" in error("--inception-weights", str(tmp_path / "partial.pth"))
    (tmp_path / "truncated.pth").write_bytes(weights.read_bytes()[:1000])
    assert "without running code" in error("--inception-weights", str(tmp_path / "truncated.pth"))
    torch.save({"fc.weight": torch.zeros(1008, 2048), "x": Code()}, tmp_path / "code.pth")
    assert "without running code" in error("--inception-weights", str(tmp_path / "code.pth"))
    # the environment variable names the file when the flag does not
    monkeypatch.setenv("NUDIFF_INCEPTION_WEIGHTS", str(weights))
    assert main(base) == 0
    # a feature network file does not take Inception weights
    err = error("--features", "net.safetensors", "--inception-weights", str(weights))
    assert "--inception-weights goes with --features inception" in err


def test_a_missing_torch_fidelity_is_a_one_line_error(weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(ImportError, match=r"pip install 'nudiff\[fid\]'"):
        InceptionV3(weights)
