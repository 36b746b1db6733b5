"""LPIPS from local weights: the formula written out independently, the file layouts of
torchvision + lpips and of a whole lpips model, and clear errors without weights."""

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from nudiff.eval.lpips import LPIPS, LPIPS_ENV, load_lpips, lpips_or_none

FEATURE_INDEX = (0, 3, 6, 8, 10)  # AlexNet's convolutions in torchvision's ``features``
SLICE = (1, 2, 3, 4, 5)


def random_weights(seed=0):
    """torchvision-style AlexNet features and lpips-style linear layers, random."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]
    alexnet, lins = {}, {}
    for j, (i, (o, c, k)) in enumerate(zip(FEATURE_INDEX, shapes, strict=True)):
        alexnet[f"features.{i}.weight"] = torch.randn(o, c, k, k, generator=g) / (c * k * k) ** 0.5
        alexnet[f"features.{i}.bias"] = 0.1 * torch.randn(o, generator=g)
        lins[f"lin{j}.model.1.weight"] = torch.rand(1, o, 1, 1, generator=g)
    alexnet["classifier.1.weight"] = torch.zeros(2, 2)  # present in the real file, unused
    return alexnet, lins


def reference_lpips(x, y, alexnet, lins):
    """The LPIPS formula, step by step (AlexNet: conv-relu, pool, conv-relu, pool, 3x conv-relu)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = 0
    ha, hb = (x - shift) / scale, (y - shift) / scale
    for j, i in enumerate(FEATURE_INDEX):
        w, b = alexnet[f"features.{i}.weight"], alexnet[f"features.{i}.bias"]
        stride, pad = (4, 2) if j == 0 else (1, w.shape[-1] // 2)
        if j in (1, 2):
            ha, hb = F.max_pool2d(ha, 3, 2), F.max_pool2d(hb, 3, 2)
        ha = F.relu(F.conv2d(ha, w, b, stride, pad))
        hb = F.relu(F.conv2d(hb, w, b, stride, pad))
        na = ha / (ha.norm(dim=1, keepdim=True) + 1e-10)
        nb = hb / (hb.norm(dim=1, keepdim=True) + 1e-10)
        weighted = F.conv2d((na - nb) ** 2, lins[f"lin{j}.model.1.weight"])  # (B, 1, h, w)
        total = total + weighted.mean((1, 2, 3))
    return total


def test_lpips_matches_the_formula_from_torchvision_and_lpips_files(tmp_path):
    alexnet, lins = random_weights()
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    model = load_lpips([tmp_path / "alexnet.pth", tmp_path / "alex.pth"])
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 3, 64, 64, generator=g)).clamp(-1, 1)
    d = model(x, y)
    assert d.shape == (3,)
    torch.testing.assert_close(d, reference_lpips(x, y, alexnet, lins), rtol=1e-5, atol=1e-7)
    assert torch.equal(model(x, x), torch.zeros(3))
    torch.testing.assert_close(model(y, x), d)  # symmetric
    assert (d > 0).all()


def test_lpips_reads_a_whole_model_state_dict_and_the_environment(tmp_path, monkeypatch):
    alexnet, lins = random_weights(2)
    whole = {}
    for k, v in alexnet.items():
        if k.startswith("features."):
            whole[
                k.replace(
                    "features.", f"net.slice{SLICE[FEATURE_INDEX.index(int(k.split('.')[1]))]}."
                )
            ] = v
    whole.update(lins)
    whole["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    safetensors.torch.save_file(whole, str(tmp_path / "lpips_alex.safetensors"))
    monkeypatch.setenv(LPIPS_ENV, str(tmp_path / "lpips_alex.safetensors"))
    model, why = lpips_or_none()
    assert why is None
    x = torch.rand(2, 1, 32, 32) * 2 - 1  # grey: repeated to RGB
    y = torch.rand(2, 1, 32, 32) * 2 - 1
    expected = reference_lpips(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1), alexnet, lins)
    torch.testing.assert_close(model(x, y), expected, rtol=1e-5, atol=1e-7)


def test_lpips_without_weights_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv(LPIPS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=LPIPS_ENV):
        load_lpips()
    model, why = lpips_or_none()
    assert model is None and "never downloads" in why
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lpips(tmp_path / "absent.pth")
    alexnet, _ = random_weights()
    torch.save(alexnet, tmp_path / "alexnet.pth")
    with pytest.raises(ValueError, match="missing lins.0"):
        load_lpips(tmp_path / "alexnet.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_lpips(tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="of one shape"):
        LPIPS()(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 16))


def test_lpips_upsamples_small_images_to_32_pixels(tmp_path):
    alexnet, lins = random_weights(3)
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    model = load_lpips([tmp_path / "alexnet.pth", tmp_path / "alex.pth"])
    x, y = torch.rand(2, 2, 3, 16, 12) * 2 - 1
    up = [F.interpolate(z, size=(48, 36), mode="bilinear", align_corners=False) for z in (x, y)]
    torch.testing.assert_close(
        model(x, y), reference_lpips(*up, alexnet, lins), rtol=1e-5, atol=1e-7
    )
