import numpy as np
import pytest
import torch
from PIL import Image

from nudiff.data.images import load_image, make_grid, open_image, save_image_grid, to_uint8
from nudiff.data.transforms import uint8_to_float


def test_to_uint8_round_trips_every_value():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    out = to_uint8(uint8_to_float(u))
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, u.permute(0, 2, 3, 1).numpy())


def test_to_uint8_clips_and_rejects_unbatched():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 5)
    np.testing.assert_array_equal(to_uint8(x).ravel(), [0, 0, 128, 255, 255])
    with pytest.raises(ValueError, match="B, C, H, W"):
        to_uint8(torch.zeros(3, 4, 4))


def test_make_grid_layout():
    x = torch.zeros(5, 3, 8, 6)
    x[4] = 0.5
    g = make_grid(x, nrow=3, padding=2, pad_value=1.0)
    # 2 rows x 3 columns of 8x6 cells with 2-pixel borders between and around
    assert g.shape == (3, 2 * 8 + 3 * 2, 3 * 6 + 4 * 2)
    assert g[:, 0].eq(1).all() and g[:, :, 0].eq(1).all()
    assert g[:, 2:10, 2:8].eq(0).all()  # image 0
    assert g[:, 12:20, 10:16].eq(0.5).all()  # image 4: row 1, column 1
    assert g[:, 12:20, 18:24].eq(1).all()  # empty last cell
    assert make_grid(torch.zeros(9, 1, 4, 4), padding=0).shape == (1, 12, 12)  # default 3x3


def test_save_image_grid_writes_readable_png(tmp_path):
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    path = save_image_grid(x, tmp_path / "a" / "b" / "grid.png", nrow=3)
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (3 * 10 + 2, 2 * 10 + 2)
        # the first image sits inside the 2-pixel border, exactly quantised
        np.testing.assert_array_equal(np.asarray(img)[2:10, 2:10], to_uint8(x[:1])[0])
    grey = save_image_grid(torch.zeros(2, 1, 4, 4), tmp_path / "grey.png")
    with Image.open(grey) as img:
        assert img.mode == "L"


def test_load_image_round_trip_and_conversion(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    x = load_image(tmp_path / "x.png")
    assert x.shape == (3, 10, 14) and x.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(x[None])[0], a)
    assert load_image(tmp_path / "x.png", channels=1).shape == (1, 10, 14)
    assert load_image(tmp_path / "x.png", resolution=8).shape == (3, 8, 8)


def test_open_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(ValueError, match="bad.png"):
        open_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        open_image(tmp_path / "missing.png")
