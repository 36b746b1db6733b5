import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import QUICKSTART, ROOT, assert_resume_exact, sets, tiny_quickstart
from nudiff.bases.haar import default_haar_levels
from nudiff.build import build_process
from nudiff.cli import main
from nudiff.config import ConfigError, load_config, parse_overrides, validate

# the quick start, tiny, with a sample grid every 2 steps
TINY = tiny_quickstart("train.sample_every=2", "train.sample_n=4")


@pytest.mark.parametrize("name", ["quickstart", "mnist32"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.data.resolution % 2 ** (len(cfg.model.unet.channel_mult) - 1) == 0


def test_unknown_key_lists_valid_choices():
    with pytest.raises(ConfigError) as err:
        validate({"process": {"schedule": {"type": "soft", "sofness": 1}}})
    msg = str(err.value)
    assert msg.startswith("process.schedule.sofness: unknown key (valid: ")
    assert "softness" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"^train.bogus: unknown key \(valid: batch_size"):
        validate({"train": {"bogus": 1}})


def test_wrong_types_and_choices_are_error_line():
    with pytest.raises(ConfigError, match="^train.batch_size: "):
        validate({"train": {"batch_size": "many"}})
    with pytest.raises(ConfigError, match="^process.schedule: .*'vp-cosine'") as err:
        validate({"process": {"schedule": {"type": "cosine"}}})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="^process.basis.type: must be 'identity', 'haar'"):
        validate({"process": {"basis": {"type": "wavelet"}}})


def test_sample_section_is_checked_against_the_samplers():
    with pytest.raises(ConfigError, match="sampler must be one of"):
        load_config(None, ["sample.sampler=dpm"])
    with pytest.raises(ConfigError, match=r"sample.options \['rtol'\] unknown for sampler"):
        load_config(None, ["sample.sampler=ddim", "sample.options={rtol: 0.1}"])
    cfg = load_config(None, ["sample.sampler=dopri5", "sample.options={rtol: 0.001}"])
    assert cfg.sample.options == {"rtol": 0.001}


def test_impossible_combinations():
    with pytest.raises(ConfigError, match="levels=4 needs data.resolution divisible by 16"):
        validate(
            {
                "data": {"resolution": 24},
                "process": {"basis": {"levels": 4}},
                "model": {"unet": {"channel_mult": [1]}},
            }
        )
    with pytest.raises(ConfigError, match="applies to the haar basis only"):
        validate({"process": {"basis": {"type": "dct", "levels": 2}}})
    with pytest.raises(ConfigError, match="needs data.resolution divisible by 4, got 30"):
        validate({"data": {"resolution": 30}, "process": {"basis": {"type": "dct"}}})
    with pytest.raises(ConfigError, match="loss.t_interval is required"):
        validate({"loss": {"t_sampling": "interval"}})


def test_overrides():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=x"]) == [("a.b", 1), ("c", [1, 2]), ("d", "x")]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["a.b"])
    cfg = load_config(
        None, ["process.schedule={type: vp-cosine, log_snr_min: -12}", "train.lr=0.01"]
    )
    assert cfg.process.schedule.log_snr_min == -12 and cfg.train.lr == 0.01


def test_default_haar_levels():
    assert default_haar_levels(32) == 3 and default_haar_levels(28) == 2
    assert default_haar_levels(4) == 0


@pytest.mark.parametrize(
    "schedule",
    [
        "{type: multispeed}",
        "{type: soft, softness: 0.5}",
        "{type: sequential, label: col}",
        "{type: edm}",
    ],
)
def test_every_schedule_builds(schedule):
    basis = "identity" if "col" in schedule else "haar"
    cfg = load_config(
        None, [f"process.schedule={schedule}", f"process.basis.type={basis}", "data.resolution=16"]
    )
    process = build_process(cfg)
    assert process.shape == (3, 16, 16)


def test_train_resume_sample_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", QUICKSTART, "--out", str(run), *sets(TINY)]) == 0
    assert (run / "config.yaml").is_file() and (run / "schedule.png").is_file()
    assert (run / "checkpoints" / "step_000004" / "manifest.json").is_file()
    assert (run / "samples" / "step_000004.png").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 4 and saved["data"]["resolution"] == 16
    # resume to a later step
    assert (
        main(
            [
                "train",
                str(run / "config.yaml"),
                "--out",
                str(run),
                "--resume",
                "--set",
                "train.steps=6",
            ]
        )
        == 0
    )
    assert (run / "checkpoints" / "step_000006").is_dir()
    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                str(run),
                "--n-samples",
                "5",
                "--steps",
                "3",
                "--sampler",
                "euler",
                "--out",
                str(png),
                "--npz",
                str(npz),
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    images = np.load(npz)["x_train"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    assert Image.open(png).size[0] > 64  # small images are enlarged in the grid
    # NFE is per sample (3 Euler steps + the final denoising), not summed over batches
    assert "5 samples, 4 NFE" in capsys.readouterr().out
    # sampler options, grids and per-interval budgets from the command line
    args = ["sample", str(run), "--n-samples", "2", "--out", str(png)]
    assert main([*args, "--sampler", "ddim", "--steps", "3", "--opt", "eta=1"]) == 0
    assert "2 samples, 4 NFE" in capsys.readouterr().out
    # the quick start's model has 3 scales: one Heun step each (2 NFE) + the final denoising
    assert main([*args, "--sampler", "heun", "--grid", "edm", "--steps", "3"]) == 0
    assert "2 samples, 7 NFE" in capsys.readouterr().out
    assert main([*args, "--sampler", "heun", "--steps", "2"]) == 2
    assert "a multi-scale model with 3 scales needs >= 3 steps" in capsys.readouterr().err
    assert main([*args, "--sampler", "dpmpp-2m", "--interval-steps", "2,1,1"]) == 0
    assert "2 samples, 5 NFE" in capsys.readouterr().out
    assert main([*args, "--sampler", "heun", "--opt", "eta=1"]) == 2
    assert "unknown option(s) ['eta'] for sampler 'heun'" in capsys.readouterr().err
    assert main([*args, "--opt", "eta"]) == 2
    assert "--opt takes KEY=VALUE" in capsys.readouterr().err


def test_cli_reports_config_errors(tmp_path, capsys):
    code = main(["train", QUICKSTART, "--out", str(tmp_path), "--set", "train.bogus=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("nudiff train: error: train.bogus: unknown key")


def test_schedule_plot(tmp_path):
    out = tmp_path / "schedule.png"
    assert main(["schedule", "plot", QUICKSTART, "--out", str(out), "--set", "data.size=8"]) == 0
    assert Image.open(out).size[0] > 500


def test_diffusion_training_resumes_bit_identically(tmp_path):
    """The real loss, denoiser and data through the CLI: 4 steps == 2 steps + resume to 4."""
    assert_resume_exact(tmp_path, QUICKSTART, tiny_quickstart("data.hflip=true"))


def _error_line(err: str) -> str:
    """The one line of stderr that reports the error (a progress bar may precede it)."""
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: shapes\n  resolution: [16, 32\ntrain:\n  steps: 4\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    line = _error_line(capsys.readouterr().err)
    # the flow sequence opened on line 3 is never closed: PyYAML stops at line 4, column 6
    assert line.startswith(f"nudiff train: error: {bad}:4:6: malformed YAML: expected"), line
    assert not (tmp_path / "run").exists()
    # a malformed --set value names the option
    args = ["train", QUICKSTART, "--out", str(tmp_path / "r2")]
    assert main([*args, "--set", "model.unet={channels: 8"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("nudiff train: error: --set model.unet={channels: 8:1:"), line
    assert "malformed YAML" in line


def test_nan_loss_is_one_line_naming_the_step_and_last_good_checkpoint(
    tmp_path, capsys, monkeypatch
):
    from nudiff.losses import MultiScaleLoss

    forward, calls = MultiScaleLoss.forward, []

    def nan_at_third_step(self, model, x0, noise):
        calls.append(1)
        out = forward(self, model, x0, noise)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(MultiScaleLoss, "forward", nan_at_third_step)
    run = tmp_path / "run"
    code = main(["train", QUICKSTART, "--out", str(run), *sets(TINY)])
    assert code == 1
    line = _error_line(capsys.readouterr().err)
    good = run / "checkpoints" / "step_000002"
    assert line.startswith("nudiff train: error: non-finite loss (nan) at step 3;"), line
    assert f"last good checkpoint: {good}" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002"]


def test_quickstart_says_when_the_time_guard_stopped_it(tmp_path, capsys):
    guard = ["train.steps=1000", "train.max_minutes=0.0001", "train.checkpoint_every=1000"]
    args = ["quickstart", "--out", str(tmp_path / "qs")]
    assert main([*args, *sets([*TINY, *guard])]) == 0
    out = capsys.readouterr().out
    assert "of 1000 steps (stopped by the 0.0001-minute guard); 64 samples" in out
    assert (tmp_path / "qs" / "samples.png").is_file()


def test_noise_conditioning_t_builds_a_one_feature_backbone(tmp_path):
    from nudiff.build import build_denoiser, build_process

    for conditioning, width in (("t", 1), ("log_snr_groups", 1 + 3)):
        cfg = load_config(
            QUICKSTART,
            [f"model.noise_conditioning={conditioning}", "model.sigma_data=0.5"],
        )
        process = build_process(cfg)
        model = build_denoiser(cfg, process)
        u = torch.randn(2, *process.shape)
        for d in model.scales:  # every scale: the full process's layout, or t alone
            t = torch.rand(2)
            assert d.condition(t, d.process.log_snr(t)).shape == (2, width)
        assert model(u, torch.tensor([0.9])).shape == u.shape
    with pytest.raises(ConfigError, match="noise_conditioning"):
        load_config(QUICKSTART, ["model.noise_conditioning=sigma"])
