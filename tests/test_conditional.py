"""Conditional estimators: exact Gaussian-field oracles through the conditional samplers,
training and sampling end to end, and clear errors."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nudiff.bases import Haar
from nudiff.cli import main
from nudiff.conditional import SuperResolution
from nudiff.conditional.estimators import ConditionalDenoiser
from nudiff.config import ConfigError, load_config
from nudiff.oracle import GaussianOracle, field_model
from nudiff.process import Process
from nudiff.run import sample_conditional
from nudiff.schedules import VPCosine

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)


class _Zero(nn.Module):
    def forward(self, x, c):
        return torch.zeros_like(x)


class GaussianSROracle(nn.Module):
    """Exact denoisers of a Gaussian random field (diagonal in the 1-level Haar basis) for x2
    super-resolution, where y = avg_pool(x, 2) is the Haar approximation band / 2.

    ``cde``: E[u_0 | u_t, y]: the approximation band is 2 y exactly, the detail bands are
    independent of y (the plain oracle). Joint estimators: E[u_0 | u_t, y_t] of the jointly
    Gaussian (u_0, y_t), whose approximation band is observed twice (u_t and y_t)."""

    def __init__(self, estimator):
        super().__init__()
        haar = Haar(SHAPE, 1)
        self.process = Process(haar, VPCosine()).double()
        self.data = field_model(SHAPE, basis=haar)
        self.oracle = GaussianOracle(self.process, self.data)
        self.task = SuperResolution(2)
        self.ref = ConditionalDenoiser(self.process, self.task, _Zero(), estimator)  # y schedule
        self.joint = self.ref.joint

    def forward(self, u, t, y, y_t=None, noise=None):
        x0 = self.oracle(u, t).clone()
        h = SHAPE[1] // 2
        if not self.joint:
            x0[..., :h, :h] = 2 * y
            return x0
        if y_t is None:
            eps = noise.randn(y.shape[1:], u.dtype).to(y)
            y_t = self.ref.diffuse_y(y, t, eps)
        alpha, sigma = self.process.coefficients(t, u)
        ay, sy = self.ref.y_coefficients(t, y)
        m, w = self.oracle.m[..., :h, :h], self.oracle.w[..., :h, :h]
        a, s = alpha[..., :1, :1], sigma[..., :1, :1]
        precision = 1 / w + a**2 / s**2 + (ay / 2) ** 2 / sy**2
        mean = m / w + a * u[..., :h, :h] / s**2 + (ay / 2) * y_t / sy**2
        x0[..., :h, :h] = mean / precision
        return x0


@pytest.mark.parametrize(
    ("estimator", "sampler", "steps"),
    [
        ("cde", "dpmpp-2m", 60),
        ("cde", "ancestral", 500),
        ("cmde", "ancestral", 500),
        ("cmde", "euler-maruyama", 500),
    ],
)
def test_conditional_samplers_reproduce_the_fine_band_variance(estimator, sampler, steps):
    """Per input, the detail bands' sample variance over many samples equals the exact
    conditional variance (independent of y here) within the Monte-Carlo floor; CDE also
    reproduces the condition exactly."""
    model = GaussianSROracle(estimator)
    g = torch.Generator().manual_seed(0)
    x = model.data.sample(4, g, dtype=torch.float64)
    y = model.task.degrade(x)
    k = 1000
    out = sample_conditional(model, y, k, sampler=sampler, steps=steps, seed=1, dtype=torch.float64)
    u = out.u.view(4, k, *SHAPE)
    h = SHAPE[1] // 2
    detail = torch.ones(SHAPE, dtype=torch.bool)
    detail[..., :h, :h] = False
    ratio = u.var(1)[:, detail] / model.oracle.w[detail]
    floor = math.sqrt(2 / (k * int(detail.sum()))) * math.sqrt(1 / 4)  # 4 inputs averaged
    assert abs(float(ratio.mean()) - 1) < 4 * floor + 0.02, float(ratio.mean())
    consistency = model.task.consistency(out.images, y.repeat_interleave(k, 0))
    if estimator == "cde":
        assert consistency.max() < 1e-10
    else:  # the joint estimator follows y through y_t: close, not exact
        assert consistency.mean() < 0.05 * model.task.degrade(x).var()


TINY = [
    "data.size=64",
    "model.multiscale=null",
    "process.basis={type: identity}",
    "process.schedule={type: vp-cosine}",
    "model.sigma_data=0.5",
    "model.unet={channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attn_levels: []}",
    "train.batch_size=8",
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.sample_every=2",
    "train.sample_n=4",
    "train.num_workers=0",
    "train.tensorboard=false",
    "train.max_minutes=null",
    "sample.steps=3",
]


@pytest.mark.parametrize(
    ("estimator", "task"), [("cde", "sr2"), ("cmde", "inpaint-boxes"), ("vs-cmde", "colorization")]
)
def test_train_and_sample_with_a_condition_end_to_end(tmp_path, capsys, estimator, task):
    run = tmp_path / "run"
    sets = [*TINY, f"conditional={{task: {task}, estimator: {estimator}, anneal_steps: 4}}"]
    args = ["train", str(ROOT / "configs" / "quickstart.yaml"), "--out", str(run)]
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 0
    assert (run / "samples" / "step_000002.png").is_file()
    truth = (np.random.default_rng(0).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "truth.npz", x_train=truth)
    out = tmp_path / "cond.png"
    assert (
        main(
            [
                "sample",
                str(run),
                "--condition",
                str(tmp_path / "truth.npz"),
                "--per-input",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "3 inputs x 2 samples" in capsys.readouterr().out
    w, h = Image.open(out).size
    assert h > 3 * 16 and w > 4 * 16  # condition, 2 samples, truth per row
    if task == "sr2":  # a low-resolution image alone is a condition
        Image.fromarray(truth[0, ::2, ::2]).save(tmp_path / "low.png")
        assert (
            main(["sample", str(run), "--condition", str(tmp_path / "low.png"), "--out", str(out)])
            == 0
        )
    if task == "colorization":  # so is a grey image
        Image.fromarray(truth[0, ..., 0]).save(tmp_path / "grey.png")
        assert (
            main(["sample", str(run), "--condition", str(tmp_path / "grey.png"), "--out", str(out)])
            == 0
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["conditional={estimator: cmdx}"], "conditional.estimator: must be"),
        (
            ["data.resolution=30", "model.unet.channel_mult=[1]", "conditional={task: sr4}"],
            "x4 super-resolution needs H and W divisible by 4, got 30x30",
        ),
        (["data.channels=1", "conditional={task: colorization}"], "colorization needs RGB"),
        (["model.sigma_data=data", "conditional={task: sr2}"], "numeric model.sigma_data"),
        (["conditional={task: sr2, estimator: cmde, y_log_snr_min: -20}"], None),
    ],
)
def test_bad_conditional_configs_are_clear_errors(overrides, message):
    base = [s for s in TINY if not s.startswith("model.sigma_data")] + ["model.sigma_data=0.5"]
    if message is None:  # caught when the model is built: y must diffuse slower than x
        from nudiff.build import build_denoiser, build_process

        cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*base, *overrides])
        with pytest.raises(ValueError, match="y must diffuse slower than x"):
            build_denoiser(cfg, build_process(cfg))
        return
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / "configs" / "quickstart.yaml", [*base, *overrides])
