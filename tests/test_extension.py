"""Column-wise extension (nudiff.samplers.extension): exact on a Markov Gaussian field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny, train_args
from nudiff.bases import DCT, Identity
from nudiff.cli import main
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.samplers import SAMPLERS
from nudiff.samplers.extension import (
    _segment,
    column_windows,
    extend_columns,
    extension_seams,
    seam_statistics,
)
from nudiff.schedules import Sequential, SoftConditioning, VPCosine

SHAPE = (1, 2, 6)  # (C, H, W): two rows, a window of six columns
RHO = 0.8  # correlation between neighbouring columns
ROWS = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)


def field_covariance(width: int) -> torch.Tensor:
    """Covariance ``(2 W, 2 W)`` of a field ``(1, 2, W)`` flattened row-major: rows correlated
    by ``ROWS``, columns an AR(1) chain (Markov: the previous column says all about the past)."""
    cols = torch.arange(width, dtype=torch.float64)
    return torch.kron(ROWS, RHO ** (cols[:, None] - cols[None, :]).abs())


def sample_field(n: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(field_covariance(width))
    eps = torch.randn(n, 2 * width, generator=g, dtype=torch.float64)
    return (eps @ chol.T).view(n, 1, 2, width)


class WindowOracle(nn.Module):
    """The exact denoiser of a ``W``-column window of the field: for ``u_t = A x + S eps`` with
    ``x ~ N(0, K)``, ``E[x | u_t] = K A (A K A + S^2)^-1 u_t``."""

    def __init__(self, process: Process):
        super().__init__()
        self.process = process
        self.register_buffer("cov", field_covariance(process.shape[2]))

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.process.coefficients(t, u.double())
        a = alpha.expand(1, *self.process.shape).flatten().double()
        s2 = (sigma**2).expand(1, *self.process.shape).flatten().double()
        gain = torch.linalg.solve(
            a[:, None] * self.cov * a[None, :] + torch.diag(s2), a[:, None] * self.cov
        )  # (A K A + S^2)^-1 A K
        return (u.flatten(1).double() @ gain).view_as(u).to(u.dtype)


def column_process(overlap: float) -> Process:
    basis = Identity(SHAPE)
    return Process(basis, Sequential(basis.labels()["col"], overlap=overlap))


def test_column_windows_of_sequential_and_clipped_soft():
    cw = column_windows(column_process(0.5))
    # six windows of length L overlapping by half: L (1 + 5 / 2) = 1
    assert cw.width == 6 and cw.t0 == pytest.approx(0.0)
    assert cw.length == pytest.approx(1 / 3.5) and cw.shift == pytest.approx(0.5 / 3.5)
    assert cw.roll_time == pytest.approx(0.5 / 3.5)
    assert cw.max_stride == 5 and cw.regenerated == 1
    assert column_windows(column_process(0.0)).regenerated == 0
    basis = Identity(SHAPE)
    soft = SoftConditioning(basis.labels()["col"], softness=0.01, clip=True)
    cw = column_windows(Process(basis, soft))
    a, span = 100.0, 20.0  # 1 / softness, g_noise - g_denoise
    assert cw.shift == pytest.approx(a / (5 * (span + a)))
    assert cw.length == pytest.approx(span / (span + a))


@pytest.mark.parametrize(
    "process, match",
    [
        (Process(DCT(SHAPE), VPCosine()), "pixel basis"),
        (Process(Identity(SHAPE), VPCosine()), "noising window per column"),
        (
            Process(Identity(SHAPE), SoftConditioning(Identity(SHAPE).labels()["col"])),
            "without clip",
        ),
        (
            Process(Identity(SHAPE), Sequential(Identity(SHAPE).labels()["row"])),
            "depend on the column only",
        ),
        (
            Process(Identity(SHAPE), Sequential(Identity(SHAPE).labels()["col"], overlap=0.9)),
            "overlap too much",
        ),
        (
            Process(
                Identity(SHAPE),
                Sequential(Identity(SHAPE).labels()["col"]),
                Prior(SHAPE, scale=torch.arange(1.0, 13.0).view(SHAPE)),
            ),
            "same in every column",
        ),
    ],
)
def test_processes_without_column_windows_are_clear_errors(process, match):
    with pytest.raises(ValueError, match=match):
        column_windows(process)


def test_bad_inputs_are_clear_errors():
    process = column_process(0.5)
    oracle = WindowOracle(process)
    ddim = SAMPLERS["ddim"]
    with pytest.raises(ValueError, match="W_in >= 6"):
        extend_columns(oracle, process, torch.zeros(2, 1, 2, 4), 3, sampler=ddim)
    with pytest.raises(ValueError, match="stride must be in"):
        extend_columns(oracle, process, torch.zeros(2, 1, 2, 6), 3, sampler=ddim, stride=6)
    with pytest.raises(ValueError, match="columns must be >= 1"):
        extend_columns(oracle, process, torch.zeros(2, 1, 2, 6), 0, sampler=ddim)


@pytest.mark.parametrize("overlap, stride", [(0.0, 3), (0.5, 2)])
def test_extended_field_has_the_stationary_covariance(overlap, stride):
    """Input fields of the model's width, extended to twice it by sliding the window oracle:
    with a Markov field every entry of the covariance of the 12 columns (across the seam and
    between new columns) matches the stationary one within the Monte-Carlo floor."""
    n, w = 20_000, SHAPE[2]
    process = column_process(overlap)
    x = sample_field(n, w, seed=1).float()
    out = extend_columns(
        WindowOracle(process),
        process,
        x,
        w,
        sampler=SAMPLERS["dpmpp-2m"],
        steps=400,
        stride=stride,
    )
    assert out.images.shape == (n, 1, 2, 2 * w)
    assert out.kept == w - column_windows(process).regenerated
    assert torch.equal(out.images[..., : out.kept], x[..., : out.kept])
    cw = column_windows(process)  # one call per grid step in each round, one final denoising
    rounds = [stride] * (w // stride) + ([w % stride] if w % stride else [])
    ends = [cw.roll_time] * (len(rounds) - 1) + [0.0]
    assert out.nfe == 1 + sum(
        len(_segment(cw.roll_time + s * cw.shift, lo, 400, process.schedule.breakpoints())) - 1
        for s, lo in zip(rounds, ends, strict=True)
    )
    y = out.images.double().flatten(1)
    emp = y.T @ y / n  # the field has mean zero
    true = field_covariance(2 * w)
    se = ((torch.diag(true)[:, None] * torch.diag(true)[None, :] + true**2) / n).sqrt()
    z = (emp - true) / se
    assert z.abs().max() < 4.5, f"max |z| {z.abs().max():.2f}"
    # the seam carries the field's correlation: generating new columns independently would fail
    seam = emp.view(2, 2 * w, 2, 2 * w)[0, w - 1, 0, w]
    assert seam == pytest.approx(RHO, abs=0.03)
    # and so do the seam statistics: neighbouring columns differ by 2 (1 - RHO) in mean square
    # everywhere, across the input seam and the round seams too (overlap 0.5: one, where the
    # regenerated input column meets the new ones; disjoint windows write all six new columns
    # in the last round); unit variance in every column
    seams = extension_seams(process, w, w, stride)
    assert seams == ([w - 1, w] if overlap else [w])
    stats = seam_statistics(out.images, out.kept, seams)
    m = stats["msd"]
    for key in ("real", "seam", "generated", *(("rounds", "rounds_max") if overlap else ())):
        assert m[key] == pytest.approx(2 * (1 - RHO), rel=0.05), key
    assert stats["seam_ratio"] == pytest.approx(1, abs=0.05)
    assert stats["column_std"]["generated"] == pytest.approx(1, abs=0.02)
    assert stats["column_mean"]["generated"] == pytest.approx(0, abs=0.02)


def test_seam_statistics_of_a_known_case():
    """Columns ``0.1 p`` plus a jump of 0.5 where the generated columns start (column 4) and
    of 0.2 at a round seam (column 7), and an image offset of +-c that leaves the differences
    alone: every statistic is known in closed form."""
    w, kept, c = 10, 4, 0.3
    p = torch.arange(w, dtype=torch.float64)
    cols = 0.1 * p + 0.5 * (p >= kept) + 0.2 * (p >= 7)
    x = cols.expand(2, 1, 3, w) + torch.tensor([c, -c]).view(2, 1, 1, 1)
    stats = seam_statistics(x, kept, [kept, 7])
    m = stats["msd"]
    assert m["real"] == pytest.approx(0.01) and m["generated"] == pytest.approx(0.01)
    assert (m["real_min"], m["real_max"]) == pytest.approx((0.01, 0.01))
    assert m["seam"] == pytest.approx(0.6**2) and stats["seam_ratio"] == pytest.approx(36)
    assert m["rounds"] == pytest.approx(0.3**2) and m["rounds_max"] == pytest.approx(0.09)
    assert stats["column_mean"]["real"] == pytest.approx(0.15)
    assert stats["column_mean"]["generated"] == pytest.approx(float(cols[kept:].mean()))
    # per column: 6 values, three at +c and three at -c
    assert stats["column_std"]["real"] == pytest.approx(c * (6 / 5) ** 0.5)
    assert stats["seams"] == [4, 7] and len(stats["per_column"]["msd"]) == w - 1
    # without round seams every generated pair but the input seam counts as generated
    assert seam_statistics(x, kept)["msd"]["generated"] == pytest.approx((4 * 0.01 + 0.09) / 5)
    with pytest.raises(ValueError, match="kept"):
        seam_statistics(x, w)
    with pytest.raises(ValueError, match="seams must lie"):
        seam_statistics(x, kept, [2])


def test_extension_seams_are_where_the_blocks_start():
    # W = 6, overlap 0.5: the last input column is generated again (kept 5); 7 new columns in
    # rounds of 3, 3, 1 write columns 5, then 6, then 7-12
    assert extension_seams(column_process(0.5), 6, 7, 3) == [5, 6, 7]
    # disjoint windows keep the whole input; a new column leaves the window (finished) only
    # W columns later, so fewer than W new columns are all written by the last round (here
    # with the default stride, W // 4 = 1)
    assert extension_seams(column_process(0.0), 6, 3) == [6]
    assert extension_seams(column_process(0.0), 6, 12, 3) == [6, 9, 12]


def test_extension_is_batch_invariant_and_repeatable():
    process = column_process(0.5)
    oracle = WindowOracle(process)
    x = sample_field(6, SHAPE[2], seed=2).float()
    kw = dict(sampler=SAMPLERS["dpmpp-2m-sde"], steps=60, stochastic=True, seed=3)
    whole = extend_columns(oracle, process, x, 5, **kw).images
    parts = [extend_columns(oracle, process, x[i : i + 3], 5, start=i, **kw).images for i in (0, 3)]
    assert torch.allclose(whole, torch.cat(parts), atol=1e-6)
    # extending the extension keeps every column it was given but the regenerated one
    again = extend_columns(oracle, process, whole, 4, **kw)
    assert again.images.shape[-1] == SHAPE[2] + 9
    assert torch.equal(again.images[..., : again.kept], whole[..., : again.kept])


TINY = tiny(
    "data={name: shapes, resolution: 8, channels: 1, size: 64, max_shapes: 1}",
    "process={basis: {type: identity}, schedule: {type: sequential, label: col, overlap: 0.5}}",
    "model.sigma_data=0.5",
    steps=2,
    sample_steps=16,
)


def test_nudiff_extend_writes_images_twice_as_wide(tmp_path, capsys):
    import numpy as np

    run = str(tmp_path / "run")
    assert main(["train", *train_args(tmp_path, TINY), "--out", run]) == 0
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", x_train=x)
    png, npz = tmp_path / "ext.png", tmp_path / "ext.npz"
    args = ["extend", run, "--input", str(tmp_path / "in.npz"), "--columns", "8"]
    assert main([*args, "--out", str(png), "--npz", str(npz), "--stride", "3"]) == 0
    assert "3 images 8 -> 16 columns (the first 7 kept)" in capsys.readouterr().out
    out = np.load(npz)["x_train"]  # (N, H, W, C)
    assert out.shape == (3, 8, 16, 1) and png.is_file()
    assert (out[:, :, :7, 0] == x[:, :, :7]).all()
    # batches give the images of one batch
    assert (
        main([*args, "--out", str(png), "--npz", str(npz), "--stride", "3", "--batch-size", "2"])
        == 0
    )
    assert (np.load(npz)["x_train"] == out).all()
    # a model without column windows, and a wrong image size, are one-line errors
    capsys.readouterr()
    np.savez(tmp_path / "small.npz", x_train=x[:, :, :4])
    assert main(["extend", run, "--input", str(tmp_path / "small.npz"), "--columns", "2"]) == 2
    assert "W_in >= 8" in capsys.readouterr().err
    other = str(tmp_path / "vp")
    tiny = [s for s in TINY if not s.startswith("process")]
    assert main(["train", *train_args(tmp_path, tiny), "--out", other]) == 0
    capsys.readouterr()
    assert main(["extend", other, "--input", str(tmp_path / "in.npz"), "--columns", "2"]) == 2
    assert "needs the pixel basis" in capsys.readouterr().err


def test_nudiff_extend_panoramas_reports_the_seams(tmp_path, capsys):
    """A tiny column-wise model trained on the built-in panoramas extends held-out ones to
    three times their width; the seam statistics go to the output and to --json."""
    import json

    import numpy as np

    from nudiff.api import save_npz
    from nudiff.data import PanoramaDataset

    run = str(tmp_path / "run")
    data = "data={name: panorama, resolution: 8, channels: 3, size: 64, holdout: 8}"
    assert main(["train", *train_args(tmp_path, [*TINY, data]), "--out", run]) == 0
    x = PanoramaDataset(64, 8).batch(range(56, 60))  # held out
    save_npz(x, tmp_path / "in.npz")
    x = np.load(tmp_path / "in.npz")["x_train"]  # (N, H, W, C) uint8
    capsys.readouterr()
    report, npz = tmp_path / "seams.json", tmp_path / "ext.npz"
    args = ["extend", run, "--input", str(tmp_path / "in.npz"), "--columns", "16", "--steps", "8"]
    args += ["--out", str(tmp_path / "ext.png"), "--npz", str(npz), "--json", str(report)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 images 8 -> 24 columns (the first 7 kept)" in printed
    assert "adjacent-column MSD: real" in printed and "column std: real" in printed
    stats = json.loads(report.read_text())
    assert (stats["images"], stats["input_columns"], stats["columns"]) == (4, 8, 16)
    # stride 8 // 4 = 2: the rounds write column 7 (generated again), then two at a time
    assert stats["kept"] == 7 and stats["seams"] == [7, 8, 10, 12, 14, 16]
    assert len(stats["per_column"]["mean"]) == 24 and stats["nfe"] > 0
    # the real reference is the kept input
    out = np.load(npz)["x_train"]  # (N, H, W, C) uint8
    assert (out[:, :, :7] == x[:, :, :7]).all()
    real = torch.from_numpy(x[:, :, :7]).double() / 127.5 - 1
    d2 = (real[:, :, 1:] - real[:, :, :-1]).square().mean()
    assert stats["msd"]["real"] == pytest.approx(float(d2), rel=1e-6)
