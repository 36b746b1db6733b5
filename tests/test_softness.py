"""One model over a range of GUD softness: per-batch draws, the process of each batch, config
checks, exact resume, sampling at a softness inside the trained range."""

import math

import pytest
import torch

from conftest import assert_resume_exact, data_only_config, tiny
from nudiff.bases import Haar
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.losses import DenoisingLoss, SoftnessRange
from nudiff.models.denoiser import Denoiser
from nudiff.process import Process
from nudiff.schedules import SoftConditioning, VPCosine
from test_denoiser_loss import Constant

TINY = tiny(
    "data={name: shapes, resolution: 8, channels: 1, size: 64, max_shapes: 1}",
    "process={basis: {type: haar, levels: 2}, schedule: {type: soft, softness: 1.0}}",
    "loss.softness={min: 0.5, max: .inf}",
    "model.sigma_data=0.5",
)


def _process(softness=1.0):
    haar = Haar((1, 8, 8), 2)
    return Process(haar, SoftConditioning(haar.label(), softness)).double()


def test_with_softness_is_the_schedule_built_at_that_softness():
    process = _process(1.0)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    for s in (0.3, 2.0, math.inf):
        moved = process.schedule.with_softness(s)
        torch.testing.assert_close(moved.log_snr(t), _process(s).schedule.log_snr(t))
        assert moved.softness == s


def test_each_batch_is_noised_and_denoised_at_its_drawn_softness():
    process = _process(1.0)
    soft = SoftnessRange(process, (0.5, math.inf), seed=3)
    loss = DenoisingLoss(process, pieces=[soft])
    draws = [soft.softness_for_step(k) for k in range(2000)]
    assert draws == [soft.softness_for_step(k) for k in range(2000)]  # a function of the step
    a = torch.tensor([1 / s for s in draws])
    assert (a >= 0).all() and (a <= 2).all()
    assert abs(a.mean().item() - 1.0) < 0.05 and abs(a.var().item() - 4 / 12) < 0.03
    noise = loss.draw(4, torch.Generator().manual_seed(0), step=7)
    assert noise["softness"] == draws[7] and isinstance(noise["softness"], float)
    backbone = Constant()
    model = Denoiser(process, backbone).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    noise = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in noise.items()}
    loss(model, x, noise)
    # the network saw the conditioning of the process at the drawn softness, not the model's
    at = _process(draws[7])
    want = Denoiser(at, Constant()).double()
    t = noise["t"]
    torch.testing.assert_close(backbone.seen[0][1], want.condition(t, at.log_snr(t, x)))
    assert not torch.allclose(backbone.seen[0][1], model.condition(t, process.log_snr(t, x)))
    with pytest.raises(ValueError, match="soft-conditioning schedule"):
        SoftnessRange(Process(Haar((1, 8, 8), 2), VPCosine()), (0.5, 2.0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["process.schedule={type: multispeed}"], "loss.softness needs process.schedule.type"),
        (["loss.softness={min: 2, max: 1}"], "min <= max"),
        (["process.schedule.softness=0.25"], "outside the range the model is trained on"),
        (["model.noise_conditioning=t"], "log_snr_groups"),
        (["loss.softness={min: 0, max: 1}"], "greater than 0"),
    ],
)
def test_bad_softness_configs_are_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data_only_config(tmp_path), [*TINY, *overrides])


def test_softness_range_training_resumes_exactly_and_samples_inside_the_range(tmp_path, capsys):
    _, b = assert_resume_exact(tmp_path, None, TINY)
    run, png = str(b), str(tmp_path / "s.png")
    for softness in ("0.7", ".inf"):
        sets = ["--set", f"process.schedule.softness={softness}"]
        assert main(["sample", run, "--n-samples", "2", "--out", png, *sets]) == 0
    capsys.readouterr()
    sets = ["--set", "process.schedule.softness=0.3"]
    assert main(["sample", run, "--n-samples", "2", "--out", png, *sets]) == 2
    assert "outside the range the model is trained on" in capsys.readouterr().err
