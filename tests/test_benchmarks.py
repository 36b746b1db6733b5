"""Smoke runs of the quality benchmarks: their JSON holds the figures the README quotes."""

import json
import math
import shutil

import pytest

from conftest import DATA_DIR, ROOT, TINY_UNET, sets
from nudiff.cli import main

MNIST = DATA_DIR / "mnist.npz"
CIFAR = DATA_DIR / "cifar10.npz"


@pytest.mark.slow
def test_quickstart_benchmark_scores_the_full_and_the_half_budget(tmp_path):
    out, js = tmp_path / "bench", tmp_path / "q.json"
    extra = [TINY_UNET, "train.steps=4", "train.checkpoint_every=2", "sample.steps=3"]
    args = ["bench", "quickstart", "--out", str(out), "--json", str(js), "--n-samples", "40"]
    args += ["--n-feature-images", "200", "--feature-train-steps", "3", *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert r["steps"] == 4 and r["half_steps"] == 2 and r["stopped"] == "completed"
    for key in ("train_seconds", "fd", "floor_fd", "half_fd"):
        assert math.isfinite(r[key]) and r[key] >= 0, (key, r)
    for part in ("full", "half"):
        assert r[part]["n"] == 40 and r[part]["nfe"] == 4  # 3 steps over 3 scales + 1
        assert r[part]["fd_se"] > 0 and math.isfinite(r[part]["kid"])
    assert r["half_fd"] != r["fd"]  # two different checkpoints were scored
    assert (out / "full_samples.png").is_file() and (out / "half_samples.png").is_file()
    assert main(args) == 0  # a second call reuses the trained run


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_multiscale_vs_uniform_scores_both_models_at_every_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "m.json"
    extra = [TINY_UNET, "train.batch_size=8", "train.checkpoint_every=1000", "sample.steps=4"]
    args = ["bench", "multiscale-vs-uniform", "--train-minutes", "0.02,0.04", "--n-samples", "40"]
    args += ["--feature-train-steps", "3", "--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert r["budgets_minutes"] == [0.02, 0.04] and r["data_vs_data_fd"] >= 0
    rows = {(row["model"], row["budget_minutes"]): row for row in r["rows"]}
    assert sorted(rows) == sorted((m, b) for m in ("uniform", "multiscale") for b in (0.02, 0.04))
    for model in ("uniform", "multiscale"):
        first, second = rows[model, 0.02], rows[model, 0.04]
        # the second budget resumes the first: more steps, more training time
        assert 0 < first["steps"] < second["steps"]
        assert first["train_seconds"] < second["train_seconds"]
        for row in (first, second):
            assert row["n"] == 40 and math.isfinite(row["fd"]) and row["fd_se"] > 0
            assert row["ms_per_sample"] > 0
    assert [v["budget_minutes"] for v in r["verdicts"]] == [0.02, 0.04]
    assert all(isinstance(v["multiscale_not_worse"], bool) for v in r["verdicts"])
    # a second call reuses every stage and its scores, even where its checkpoint is gone
    for stage in (out / "uniform" / "checkpoints").iterdir():
        if stage.name != f"step_{rows['uniform', 0.04]['steps']:06d}":
            shutil.rmtree(stage)
    assert main(args) == 0
    again = json.loads(js.read_text())["rows"]
    assert [row["fd"] for row in again] == [row["fd"] for row in r["rows"]]


def test_multiscale_vs_uniform_budgets_are_checked():
    from nudiff.bench.multiscale_vs_uniform import parse_budgets as parse

    assert parse("5,10,20") == [5.0, 10.0, 20.0]
    for bad in ("10,5", "0,5", "5,x", "5,5"):
        with pytest.raises(ValueError, match="--train-minutes"):
            parse(bad)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_lego_benchmark_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "l.json"
    extra = [
        TINY_UNET,
        "model.dit={patch_size: 4, width: 16, depth: 1, heads: 2}",
        "model.lego={stacking: pg, width: 16, depth: [1, 1, 1], patch: 2, heads: 2}",
        "train.batch_size=8",
        "sample.steps=4",
    ]
    args = ["bench", "lego", "--train-minutes", "0.02", "--n-samples", "40"]
    args += ["--resolution", "32x64", "--n-samples-large", "8", "--feature-train-steps", "3"]
    args += ["--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    rows = {(row["backbone"], row["skip"], row["canvas"], row["n"]): row for row in r["rows"]}
    skip = "bricks=last,from=0.5"
    assert sorted(rows, key=str) == sorted(
        [
            ("unet", None, None, 40),
            ("dit", None, None, 40),
            ("lego", None, None, 40),
            ("lego", skip, None, 40),
            ("lego", None, "32x64", 16),  # 8 canvases of two 32x32 tiles each
            ("lego", None, None, 16),
        ],
        key=str,
    )
    full, skipped = rows["lego", None, None, 40], rows["lego", skip, None, 40]
    # 4 steps + the final denoising: steps 2, 3 and the final call skip the last brick
    assert full["brick_calls"] == [5, 5, 5] and skipped["brick_calls"] == [5, 5, 2]
    assert skipped["macs_per_sample"] < full["macs_per_sample"]
    wide = rows["lego", None, "32x64", 16]
    # two tiles' worth of bricks, less the per-image embedding shared by the canvas
    assert wide["n_canvases"] == 8
    assert 1.9 < wide["macs_per_sample"] / full["macs_per_sample"] <= 2
    for row in r["rows"]:
        assert math.isfinite(row["fd"]) and row["fd_se"] > 0 and row["ms_per_sample"] > 0
    assert set(r["skipping"]) == {"time_saving", "mac_saving", "fd_ratio", "target_met"}
    assert (out / "lego_32x64px_samples.png").is_file()
    bad = ["bench", "lego", "--resolution", "48", "--out", str(tmp_path / "bad"), *sets(extra)]
    assert main(bad) == 2 and "multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "unet").exists()  # refused before any training


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_guidance_benchmark_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config reads $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "g.json"
    extra = [TINY_UNET, "train.batch_size=8", "sample.steps=3"]
    args = ["bench", "guidance", "--train-minutes", "0.02", "--per-class", "3"]
    args += ["--guidance", "1,3", "--feature-train-steps", "3"]
    args += ["--out", str(out), "--json", str(js)]
    assert main([*args, *sets(extra)]) == 0
    r = json.loads(js.read_text())
    assert [row["guidance"] for row in r["rows"]] == [1.0, 3.0] and r["n_samples"] == 30
    for row in r["rows"]:
        assert 0 <= row["class_accuracy"] <= 1 and math.isfinite(row["fd"]) and row["n"] == 30
    assert r["best_fd_guidance"] in (1.0, 3.0) and isinstance(r["accuracy_rises"], bool)
    assert (out / "guidance_3.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_file(), reason=f"offline CIFAR-10 not found at {CIFAR}")
def test_msf_benchmark_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "m.json"
    extra = [TINY_UNET, "train.batch_size=8", "sample.steps=4", "sample.budgets=null"]
    args = ["bench", "msf", "--train-minutes", "0.02", "--n-samples", "40"]
    args += ["--feature-train-steps", "3", "--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    single, msf = r["rows"]
    assert (single["model"], msf["model"]) == ("single-stage", "msf")
    for row in r["rows"]:
        assert row["steps"] > 0 and row["train_minutes"] > 0 and row["nfe"] == 5
        assert math.isfinite(row["fd"]) and row["fd_se"] > 0 and row["ms_per_sample"] > 0
    # the hooks count every call: 5 full-resolution calls of the one UNet per sample
    from nudiff.run import load_run

    unet = load_run(out / "single-stage")[1].backbone
    assert single["macs_per_sample"] == 5 * unet.count_macs(32, 32)
    assert msf["budgets"] is None and 0 < r["comparison"]["mac_ratio"]
    assert set(r["comparison"]) == {
        "mac_ratio",
        "time_ratio",
        "fd_difference",
        "fd_se",
        "target_met",
    }
    assert (out / "msf_samples.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_softness_benchmark_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config reads $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "s.json"
    extra = [TINY_UNET, "train.batch_size=8", "sample.steps=3"]
    args = ["bench", "softness", "--train-minutes", "0.02", "--values", "0.5,inf"]
    args += ["--n-samples", "20", "--n-elbo", "4", "--n-ode", "2", "--times", "4"]
    args += ["--feature-train-steps", "3", "--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert [row["softness"] for row in r["rows"]] == [0.5, math.inf] and r["steps"] > 0
    for row in r["rows"]:
        assert {"basis", "softness", "elbo_bpd", "ode_bpd", "fd", "n_samples"} <= set(row)
        assert row["basis"] == "pca" and row["n_samples"] == 20 and row["n_elbo"] == 4
        assert all(math.isfinite(row[k]) for k in ("elbo_bpd", "ode_bpd", "fd"))
    assert (out / "softness_0.5.png").is_file() and (out / "softness_inf.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.is_file(), reason=f"offline CIFAR-10 not found at {CIFAR}")
def test_patch_benchmark_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config reads $NUDIFF_DATA
    out, js, png = tmp_path / "bench", tmp_path / "p.json", tmp_path / "p.png"
    unet = TINY_UNET.replace("attn_levels: []}", "attn_levels: [], coord_channels: 2}")
    extra = [unet, "train.batch_size=8", "sample.steps=3"]
    args = ["bench", "patch", "--train-minutes", "0.04", "--checkpoints", "2"]
    args += ["--n-samples", "40", "--n-train-images", "500", "--feature-train-steps", "3"]
    args += ["--modes", "full,patch,progressive", "--ramp-steps", "4"]
    args += ["--out", str(out), "--json", str(js), "--plot", str(png), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert r["train_size"] == 500 and len(r["rows"]) == 6 and png.is_file()
    assert r["modes"] == ["full", "patch", "progressive"]
    for mode in ("full", "patch", "progressive"):
        first, second = (row for row in r["rows"] if row["mode"] == mode)
        assert 0 < first["minutes"] < second["minutes"]
        assert 0 < first["images_seen"] < second["images_seen"]
        for row in (first, second):
            assert row["train_size"] == 500 and math.isfinite(row["fd"]) and row["fd_se"] > 0
    full = [row for row in r["rows"] if row["mode"] == "full"]
    assert all(row["images_seen"] == 8 * row["steps"] for row in full)  # no multiplier
    assert set(r["comparison"]) >= {"full_final_fd", "patch_final_fd", "progressive_final_fd"}
    from nudiff.config import load_config

    ramp = load_config(out / "progressive_n500" / "config.yaml").train.patch
    assert (ramp.schedule, ramp.ramp_steps, ramp.probs) == ("progressive", 4, None)
    assert main(args) == 0  # a second call reuses every segment


@pytest.mark.slow
def test_beta_toy_benchmark_scores_klub_elbo_and_gaussian_on_both_toys(tmp_path):
    out, js = tmp_path / "bench", tmp_path / "b.json"
    args = ["bench", "beta-toy", "--train-steps", "3", "--n-samples", "500", "--steps", "4"]
    args += ["--out", str(out), "--json", str(js), "--set", "model.mlp={width: 16, depth: 1}"]
    assert main(args) == 0
    r = json.loads(js.read_text())
    rows = {(row["data"], row["loss"]): row for row in r["rows"]}
    assert sorted(rows) == sorted(
        (d, l) for d in ("toy1", "toy2") for l in ("klub", "elbo", "gaussian")
    )
    for row in rows.values():
        assert row["steps"] == 3 and 0 <= row["jsd2"] <= 2 * math.log(2) + 1e-9
        assert 0 <= row["tv"] <= 1 and row["nfe"] >= 4
    assert rows["toy1", "klub"]["outside_01"] == 0  # Beta samples never leave (0, 1)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_beta_images_benchmark_scores_klub_elbo_and_gaussian(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "b.json"
    args = ["bench", "beta-images", "--train-minutes", "0.02", "--n-samples", "40"]
    args += ["--steps", "3", "--feature-train-steps", "3", "--out", str(out), "--json", str(js)]
    args += sets([TINY_UNET, "train.batch_size=8", "sample.steps=3"])
    assert main(args) == 0
    r = json.loads(js.read_text())
    rows = {row["loss"]: row for row in r["rows"]}
    assert sorted(rows) == ["elbo", "gaussian", "klub"]
    for row in rows.values():
        assert row["n"] == 40 and row["steps"] >= 1 and row["fd_se"] > 0
    assert rows["klub"]["nfe"] == rows["elbo"]["nfe"] == 3  # --steps, not the config's 200
    assert rows["gaussian"]["nfe"] == 4  # its own sampler: 3 steps + the final denoising
    assert set(r["comparison"]) == {"fd_elbo_minus_klub", "se", "winner"}
    assert (out / "klub_samples.png").is_file()


def test_beta_images_comparison_needs_two_standard_errors():
    from nudiff.bench.beta_images import compare

    def rows(klub, elbo):
        return [
            {"loss": "klub", "fd": klub, "fd_se": 0.3},
            {"loss": "elbo", "fd": elbo, "fd_se": 0.4},
        ]

    c = compare(rows(5.0, 6.1))
    assert c["fd_elbo_minus_klub"] == pytest.approx(1.1) and c["se"] == pytest.approx(0.5)
    assert c["winner"] == "klub"  # 1.1 > 2 x 0.5
    assert compare(rows(5.0, 5.9))["winner"] == "tie"
    assert compare(rows(6.1, 5.0))["winner"] == "elbo"
    assert compare(rows(5.0, 6.1)[:1]) is None


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_sid_benchmark_rows(tmp_path, monkeypatch):
    """One- and two-step distillations, each scored at 2 checkpoints (FD against iterations),
    then the final rows; a second call reuses every segment and its scores."""
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js, png = tmp_path / "bench", tmp_path / "s.json", tmp_path / "fd.png"
    teacher = [TINY_UNET, "train.batch_size=8", "sample.steps=4"]
    args = ["bench", "sid", "--teacher-train-minutes", "0.02", "--train-steps", "2"]
    args += ["--steps", "1,2", "--checkpoints", "2", "--plot", str(png)]
    args += ["--n-samples", "40", "--feature-train-steps", "3"]
    args += ["--out", str(out), "--json", str(js)]
    args += sum((["--teacher-set", s] for s in teacher), [])
    args += ["--set", "train.batch_size=4"]
    assert main(args) == 0
    r = json.loads(js.read_text())
    rows = {row["model"]: row for row in r["rows"]}
    assert list(rows) == ["teacher", "sid", "sid_k2"]
    assert [row["nfe"] for row in rows.values()] == [5, 1, 2]  # teacher: 4 steps + final call
    assert [(c["k"], c["checkpoint"], c["iterations"]) for c in r["curve"]] == [
        (1, 1, 1),
        (1, 2, 2),
        (2, 1, 1),
        (2, 2, 2),
    ]
    for row in [*rows.values(), *r["curve"]]:
        assert math.isfinite(row["fd"]) and row["fd_se"] > 0
    for name in ("sid", "sid_k2"):
        row = rows[name]
        assert row["iterations"] == 2 and row["distill_minutes"] > 0 and row["speedup"] > 0
        assert row["fd_ratio"] == pytest.approx(row["fd"] / rows["teacher"]["fd"])
        assert (out / f"{name}_samples.png").is_file()
    assert set(r["comparison"]) == {"fd_ratio", "speedup", "target_met"}
    assert png.is_file() and (out / "teacher_samples.png").is_file()
    assert main(args) == 0
    assert json.loads(js.read_text())["curve"] == r["curve"]  # reused, not retrained


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_ndm_benchmark_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "ndm.json"
    extra = [
        TINY_UNET,
        "process.transform.width=8",
        "train.batch_size=8",
        "model.stats_samples=64",
    ]
    args = ["bench", "ndm", "--train-steps", "2", "--n-elbo", "8", "--times", "2"]
    args += ["--n-ode", "4", "--ode-tolerance", "1e-2", "--n-samples", "20", "--steps", "2"]
    args += ["--feature-train-steps", "3", "--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert [row["transform"] for row in r["rows"]] == ["identity", "learned"]
    for row in r["rows"]:
        assert row["steps"] == 2 and row["n_nelbo"] == 8 and row["n_ode"] == 4
        assert row["n_fd"] == 20 and row["train_minutes"] > 0
        for key in ("nelbo_bpd", "nelbo_se", "ode_bpd", "ode_se", "fd", "fd_se"):
            assert math.isfinite(row[key]), (key, row)
    assert set(r["learned_minus_fixed"]) == {"nelbo_bpd", "ode_bpd", "fd"}


def test_sampler_benchmark_rows_carry_options_and_the_exact_map_error(tmp_path, capsys):
    js = tmp_path / "s.json"
    args = ["bench", "samplers", "--resolution", "8", "--image-channels", "1", "--json", str(js)]
    args += ["--schedules", "edm", "--nfe", "6,1000", "--n-samples", "64", "--min-samples", "64"]
    args += ["--samplers", "unipc:order=2+variant=bh1,heun:variable=t,ddim,euler-maruyama"]
    assert main(args) == 0
    rows = json.loads(js.read_text())["rows"]
    by = {(r["sampler"], r["nfe"]): r for r in rows}
    assert {s for s, _ in by} == {"unipc:order=2+variant=bh1", "heun:variable=t", "ddim"} | {
        "euler-maruyama"
    }
    assert by["euler-maruyama", 1000]["map_error"] is None  # stochastic: no closed form
    # deterministic: exact, and converged at 1000 NFE
    assert by["unipc:order=2+variant=bh1", 6]["map_error"] > 1e-3
    assert by["unipc:order=2+variant=bh1", 1000]["map_error"] < 1e-5
    assert by["heun:variable=t", 999]["map_error"] < 1e-3
    # --grid optimized: the deterministic runs get grids fitted to another spectrum
    opt = [
        "--grid",
        "optimized",
        "--nfe",
        "6",
        "--samplers",
        "unipc:order=2+variant=bh1,euler-maruyama",
    ]
    assert main([*args[:-2], *opt]) == 0
    fitted = {r["sampler"]: r for r in json.loads(js.read_text())["rows"]}
    unipc = "unipc:order=2+variant=bh1"
    assert fitted[unipc]["grid"] == "optimized" and fitted["euler-maruyama"]["grid"] == "auto"
    assert fitted[unipc]["map_error"] != by[unipc, 6]["map_error"]  # another grid
    for spec, message in [
        ("unipc:foo=1", "unknown option(s) ['foo'] for sampler 'unipc'"),
        ("unipc:order", "options are KEY=VALUE, got 'order'"),
        ("unipc:order=5", "order must be 1, 2 or 3, got 5"),
    ]:
        capsys.readouterr()
        assert main([*args[:-1], spec]) == 2
        assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A labelled ``.npz`` of built-in shapes and two tiny runs on it: uniform (pixels, VP) and
    multi-scale (two Haar levels, one UNet per scale), each holding out 16 images."""
    from conftest import QUICKSTART, tiny_quickstart

    root = tmp_path_factory.mktemp("runs")
    data = root / "shapes.npz"
    export = ["data", "export", QUICKSTART, "--out", str(data), "--n-images", "64"]
    assert main([*export, "--set", "data.resolution=16"]) == 0
    npz = [f"data={{name: npz, path: {data}, resolution: 16, channels: 3, holdout: 16}}"]
    uniform = [
        "process.basis={type: identity}",
        "process.schedule={type: vp-cosine}",
        "model.multiscale=null",
    ]
    runs = {}
    for name, extra in (("uniform", [*npz, *uniform]), ("multiscale", npz)):
        runs[name] = root / name
        args = ["train", QUICKSTART, "--out", str(runs[name])]
        assert main([*args, *sets(tiny_quickstart(*extra, steps=2))]) == 0
    return runs


def test_trained_sampler_benchmark_scores_every_sampler_grid_and_nfe(two_runs, tmp_path):
    js, png = tmp_path / "t.json", tmp_path / "t.png"
    runs = f"{two_runs['uniform']},{two_runs['multiscale']}"
    args = ["bench", "samplers", "--run", runs, "--samplers", "unipc:order=2,dpmpp-2m-sde"]
    args += ["--n-samples", "16", "--feature-train-steps", "3", "--out", str(tmp_path / "b")]
    args += ["--json", str(js)]
    assert main([*args, "--grid", "auto", "--nfe", "3,10,12", "--plot", str(png)]) == 0
    r = json.loads(js.read_text())
    keys = {(row["run"], row["sampler"], row["nfe_budget"]) for row in r["rows"]}
    # the multi-scale model cannot give each of its 3 scales a step at 3 NFE (2 steps)
    assert keys == {
        (run, s, nfe)
        for run in r["runs"]
        for s in ("unipc:order=2", "dpmpp-2m-sde")
        for nfe in (3, 10, 12)
        if not (run.endswith("multiscale") and nfe == 3)
    }
    for row in r["rows"]:
        assert math.isfinite(row["fd"]) and row["fd_se"] > 0 and row["nfe"] <= row["nfe_budget"]
        assert row["grid"] == "auto"
    for summary in r["summary"]:  # 10 NFE against the largest run, 12
        assert summary["largest_nfe"] == 12 and len(summary["pairs"]) == 2
        assert isinstance(summary["best_within_15pct_of_largest"], bool)
    assert png.is_file()
    # an optimized grid: fitted for the deterministic sampler only, and cached in the run
    args[3] = str(two_runs["uniform"])
    assert main([*args, "--grid", "optimized", "--nfe", "10"]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert [(row["sampler"], row["grid"], row["nfe"]) for row in rows] == [
        ("unipc:order=2", "optimized", 10)
    ]
    assert any((two_runs["uniform"] / "grids").iterdir())


def test_end_to_end_benchmark_compares_every_route_with_the_reference(two_runs, tmp_path):
    js, out = tmp_path / "e.json", tmp_path / "bench"
    args = ["bench", "end-to-end", "--uniform-run", str(two_runs["uniform"])]
    args += ["--multiscale-run", str(two_runs["multiscale"]), "--distill-minutes", "0.01"]
    args += ["--reference-steps", "12", "--nfe", "7", "--n-samples", "16"]
    args += ["--feature-train-steps", "3", "--out", str(out), "--json", str(js)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    routes = [(row["route"], row["model"], row["sampler"], row["nfe"]) for row in r["rows"]]
    assert routes == [
        ("a", "uniform", "euler-maruyama", 13),  # 12 steps + the final call
        ("b", "multiscale", "dpmpp-2m-sde", 4),  # the config's sampler, 3 steps + final call
        ("c", "multiscale", "unipc", 7),
        ("d", "sid", "onestep", 1),
    ]
    comparison = r["comparison"]
    assert [c["route"] for c in comparison["routes"]] == ["b", "c", "d"]
    for c in comparison["routes"]:
        assert c["speedup"] > 0 and c["equal_quality"] == (c["fd_ratio"] <= 1.1)
    assert isinstance(comparison["target_met"], bool)
    assert (out / "sid" / "train_summary.json").is_file()


def test_benchmark_figures_draw_their_result(tmp_path):
    """``--plot`` of multiscale-vs-uniform (FD against minutes) and guidance (FD and accuracy
    against the weight) draw a result as the benchmark writes it."""
    from nudiff.bench import guidance, multiscale_vs_uniform

    rows = [
        {"budget_minutes": b, "model": m, "fd": fd, "fd_se": 0.3}
        for b, m, fd in [(5, "uniform", 8.1), (5, "multiscale", 4.2), (10, "uniform", 4.8)]
    ]
    multiscale_vs_uniform.plot(
        {"rows": rows, "n_samples": 40, "data_vs_data_fd": 0.4}, tmp_path / "m.png"
    )
    rows = [
        {"guidance": w, "class_accuracy": a, "fd": w, "fd_se": 0.1} for w, a in [(1, 0.9), (2, 1)]
    ]
    guidance.plot({"rows": rows, "n_samples": 40, "data_vs_data_fd": None}, tmp_path / "g.png")
    assert (tmp_path / "m.png").stat().st_size > 1000 and (tmp_path / "g.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"offline MNIST not found at {MNIST}")
def test_schedules_benchmark_compares_processes_against_the_first(tmp_path, monkeypatch, capsys):
    """``nudiff bench schedules`` at a tiny step budget: one row per config, the same steps
    for each, FD against the first config in standard errors (0 for the first itself)."""
    monkeypatch.chdir(ROOT)  # the configs read $NUDIFF_DATA
    out, js = tmp_path / "bench", tmp_path / "s.json"
    extra = [TINY_UNET, "train.batch_size=8", "train.checkpoint_every=1000", "sample.steps=4"]
    args = ["bench", "schedules", "--configs", "mnist32_uniform,mnist32_blurring,mnist32_shifted"]
    args += ["--train-steps", "2", "--n-samples", "40", "--feature-train-steps", "3"]
    args += ["--out", str(out), "--json", str(js), *sets(extra)]
    assert main(args) == 0
    r = json.loads(js.read_text())
    assert r["budget"] == "2 steps" and r["data_vs_data_fd"] >= 0
    rows = r["rows"]
    assert [row["config"] for row in rows] == [
        "mnist32_uniform",
        "mnist32_blurring",
        "mnist32_shifted",
    ]
    assert rows[1]["process"].startswith("dct / blurring")
    assert rows[0]["fd_vs_first_in_se"] == 0
    for row in rows:
        assert row["train_steps"] == 2 and row["n"] == 40 and row["fd_se"] > 0
        assert math.isfinite(row["fd"]) and math.isfinite(row["fd_vs_first_in_se"])
        assert (out / f"{row['config']}_samples.png").is_file()
    assert main(["bench", "schedules", "--configs", "mnist32_uniform,mnist32_uniform"]) == 2
    assert "--configs must name different configs" in capsys.readouterr().err
