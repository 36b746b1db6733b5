"""Beta diffusion: the maths (Gamma draws, Beta KL, forward moments), the loss, the sampler
(with the exact denoiser of a discrete toy), config errors, training, exact resume and the CLI."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_resume_exact, tiny
from nudiff.beta.denoiser import BetaDenoiser
from nudiff.beta.gamma import NORMALS_PER_GAMMA, log_gamma
from nudiff.beta.kl import kl_beta, kl_gamma
from nudiff.beta.loss import BetaDiffusionLoss
from nudiff.beta.process import BetaProcess
from nudiff.beta.sampler import alpha_grid, sample_beta
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.data.toy import ToyDataset, toy_values
from nudiff.models.mlp import MLP

TOY_DATA = ["data.name=toy", "data.resolution=1", "data.channels=1", "data.size=512"]
TOY = tiny(
    *TOY_DATA,
    "process.family=beta",
    "process.basis.type=identity",
    "process.beta={scale: 0.8, shift: 0.1}",
    "model.backbone=mlp",
    "model.mlp={width: 16, depth: 1}",
    "model.stats_samples=64",
    "sample.sampler=beta",
    "train.lr=1e-3",
    "train.warmup_steps=1",
    batch_size=32,
    sample_steps=4,
    unet=False,
)


def _beta_log_density(y, a, b):
    """Density of ``logit p`` for ``p ~ Beta(a, b)`` at ``y`` (float64)."""
    lbeta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return a * F.logsigmoid(y) + b * F.logsigmoid(-y) - lbeta


class ExactToyDenoiser(torch.nn.Module):
    """The posterior mean of ``x0`` under a discrete prior on ``atoms`` (unit range)."""

    def __init__(self, process, atoms):
        super().__init__()
        self.process = process
        self.atoms = torch.as_tensor(atoms, dtype=torch.float64)
        self.register_buffer("data_mean", torch.full(process.shape, float(self.atoms.mean())))

    def forward(self, logit_z, logit_alpha):
        alpha = torch.sigmoid(logit_alpha.double()).reshape(-1, 1, 1, 1, 1)
        a, b = self.process.marginal(self.atoms, alpha)
        w = torch.softmax(_beta_log_density(logit_z.double()[..., None], a, b), -1)
        return (w * self.atoms).sum(-1)


# ------------------------------------------------------------------------------------ maths
@pytest.mark.parametrize(
    "a, b, c, d",
    [
        (2.0, 3.0, 2.5, 2.8),
        (0.5, 0.7, 0.6, 0.9),
        (50.0, 80.0, 55.0, 75.0),
        (3e3, 7e3, 3.05e3, 6.9e3),
    ],
)
def test_beta_kl_matches_numerical_integration(a, b, c, d):
    a, b, c, d = (torch.tensor(v, dtype=torch.float64) for v in (a, b, c, d))
    # in logit space the densities are smooth and decay exponentially at both ends
    y = torch.linspace(-60, 60, 1_200_001, dtype=torch.float64)
    lp, lq = _beta_log_density(y, a, b), _beta_log_density(y, c, d)
    numeric = torch.trapezoid(lp.exp() * (lp - lq), y)
    assert kl_beta(a, b, c, d).item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-10)


def test_kls_are_zero_for_equal_arguments_and_finite_at_extreme_shapes():
    shapes = torch.tensor([1e-30, 1e-12, 1e-4, 1.0, 1e4, 1e7], dtype=torch.float64)
    assert torch.equal(kl_gamma(shapes, shapes), torch.zeros_like(shapes))
    a, c = torch.meshgrid(shapes, shapes, indexing="ij")
    for kl in (kl_gamma(a, c), kl_beta(a, c, c, a), kl_beta(a, a, c, c)):
        assert torch.isfinite(kl).all() and (kl >= 0).all()


@pytest.mark.parametrize("k", [0.05, 0.7, 1.0, 4.0, 300.0])
def test_log_gamma_draws_have_the_gamma_mean_and_variance(k, gen):
    n = 200_000
    g = log_gamma(torch.full((n,), k), torch.randn(n, NORMALS_PER_GAMMA, generator=gen)).exp()
    se = math.sqrt(k / n)
    assert abs(g.mean().item() - k) < 5 * se
    assert g.var().item() == pytest.approx(k, rel=0.05)


def test_log_gamma_is_finite_at_extreme_shapes(gen):
    shapes = torch.tensor([0.0, 1e-300, 1e-30, 1e-8, 1e6, 1e9], dtype=torch.float64)
    normals = torch.randn(1000, len(shapes), NORMALS_PER_GAMMA, generator=gen) * 3
    out = log_gamma(shapes, normals)
    assert torch.isfinite(out).all()
    assert (out[:, -1] - math.log(1e9)).abs().max() < 1e-3  # concentrated at the shape


def test_forward_mean_is_alpha_x0_by_monte_carlo(gen):
    p = BetaProcess((1, 1, 1), eta=50.0, scale=0.8, shift=0.1)
    n = 100_000
    for x0 in (0.15, 0.5, 0.85):
        for t in (0.05, 0.4, 0.7):
            alpha = p.alpha(torch.tensor(t))
            x = torch.full((n, 1, 1, 1), x0, dtype=torch.float64)
            z = torch.sigmoid(p.draw(x, alpha, torch.randn(p.noise_shape(n), generator=gen)))
            m = (alpha * x0).item()
            se = math.sqrt(m * (1 - m) / (p.eta + 1) / n)
            assert abs(z.mean().item() - m) < 4 * se, (x0, t)
            assert z.var().item() == pytest.approx(m * (1 - m) / (p.eta + 1), rel=0.05)


def test_logit_moments_standardise_the_input(gen):
    p = BetaProcess((1, 1, 1), eta=1e4, scale=0.39, shift=0.6)
    n = 200_000
    x0 = p.shift + p.scale * torch.rand(n, 1, 1, 1, generator=gen, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9, 1.0):
        alpha = p.alpha(torch.tensor(t))
        logit_z = p.draw(x0, alpha, torch.randn(p.noise_shape(n), generator=gen))
        mean, std = p.logit_moments(alpha)
        u = (logit_z - mean) / std
        assert abs(u.mean().item()) < 0.02 and u.std().item() == pytest.approx(1, abs=0.02), t


def test_reverse_step_is_the_multiplicative_update_in_logit_space(gen):
    z = torch.rand(1000, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    q = torch.rand(1000, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    out = torch.sigmoid(BetaProcess.step(torch.logit(z), torch.logit(q)))
    torch.testing.assert_close(out, z + (1 - z) * q)
    # far in the tails the logits stay finite where z itself would be 0 or 1
    extreme = BetaProcess.step(torch.tensor([-800.0, 700.0]), torch.tensor([-900.0, 5.0]))
    assert torch.isfinite(extreme).all() and extreme[0] < -799 and extreme[1] > 700


# ------------------------------------------------------------------------------------- loss
def test_loss_vanishes_for_a_perfect_prediction_and_not_otherwise(gen):
    p = BetaProcess((1, 4, 4))
    x = torch.rand(8, 1, 4, 4, generator=gen) * 2 - 1
    for objective in ("klub", "elbo"):
        loss = BetaDiffusionLoss(p, objective)
        noise = loss.draw(8, gen)
        assert noise["t"].shape == (8,) and noise["normals"].shape == p.noise_shape(8)
        perfect = loss(lambda lz, la: p.to_unit(x), x, noise)
        assert perfect.shape == (8,) and perfect.abs().max() < 1e-9
        off = loss(lambda lz, la: (p.to_unit(x) + 0.01).clamp(max=p.shift + p.scale), x, noise)
        assert (off > 0).all()
        cond, marg = loss.terms(p.to_unit(x), p.to_unit(x) * 0.99 + 0.006, noise["t"])
        assert (cond >= 0).all() and (marg > 0).all()
    # KLUB and the ELBO are the same KLs with swapped arguments: different values
    x0, x0_hat, t = p.to_unit(x), p.to_unit(x) * 0.9 + 0.09, noise["t"]
    klub, elbo = BetaDiffusionLoss(p, "klub"), BetaDiffusionLoss(p, "elbo")
    assert not torch.allclose(klub.terms(x0, x0_hat, t)[1], elbo.terms(x0, x0_hat, t)[1])


def test_loss_draw_is_reproducible_and_gradients_are_finite_at_the_ends(gen):
    p = BetaProcess((1, 2, 2))
    loss = BetaDiffusionLoss(p)
    a = loss.draw(6, torch.Generator().manual_seed(3))
    b = loss.draw(6, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = BetaDenoiser(p, MLP((1, 2, 2), width=16, depth=1))
    torch.nn.init.normal_(model.backbone.out.weight, std=0.5)
    a["t"] = torch.tensor([0.0, 1e-5, 0.5, 0.999, 1.0, 1.0], dtype=torch.float64)
    x = torch.rand(6, 1, 2, 2, generator=gen) * 2 - 1
    loss(model, x, a).sum().backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters())


# ---------------------------------------------------------------------------------- sampler
def test_sampler_with_the_exact_denoiser_reproduces_toy1():
    p = BetaProcess((1, 1, 1), eta=1e4, scale=0.8, shift=0.1)
    atoms = [p.shift + p.scale * k / 7 for k in range(1, 6)]
    out = sample_beta(ExactToyDenoiser(p, atoms), 2000, steps=100)
    v = (out.images.double().flatten() + 1) / 2
    nearest = (v[:, None] - torch.arange(1, 6) / 7).abs().min(1).values
    assert nearest.max() < 2e-3  # every sample on an atom
    counts = torch.bincount((v * 7).round().long(), minlength=6)[1:]
    assert counts.min() > 330 and counts.max() < 470  # five equal weights (400 +- ~4 se)
    assert out.nfe == 100


def test_samples_are_inside_the_unit_interval_and_batch_invariant():
    torch.manual_seed(0)
    # an untrained network with a large random output layer: extreme predictions
    p = BetaProcess((1, 4, 4), eta=1e4, logit_alpha_min=-20)
    model = BetaDenoiser(p, MLP((1, 4, 4), width=16, depth=1))
    torch.nn.init.normal_(model.backbone.out.weight, std=20.0)
    out = sample_beta(model, 24, steps=16, seed=5)
    assert torch.isfinite(out.u).all() and out.u.shape == (24, 1, 4, 4)
    assert (out.u > 0).all() and (out.u < 1).all()
    assert (out.u >= p.shift).all() and (out.u <= p.shift + p.scale).all()
    assert out.images.min() >= -1 and out.images.max() <= 1
    part = sample_beta(model, 8, steps=16, seed=5, start=16)
    torch.testing.assert_close(part.u, out.u[16:])


def test_alpha_grid_ends_at_one_and_rises():
    grid = alpha_grid(-13.0, 5)
    assert grid[0] == pytest.approx(1 / (1 + math.exp(13))) and grid[-1] == 1.0
    assert all(b > a for a, b in zip(grid, grid[1:], strict=False))


# ------------------------------------------------------------------------------ data, config
def test_toy_data():
    v1 = toy_values("toy1", 10_000)
    assert set(np.round(v1 * 7).astype(int)) == {1, 2, 3, 4, 5}
    assert np.allclose(v1 * 7, np.round(v1 * 7))
    v2 = toy_values("toy2", 10_000)
    assert v2.min() >= 0.1 and v2.max() <= 0.875 and np.mean(v2 == 0.725) > 0.15
    d = ToyDataset("toy1", 100, seed=2)
    assert d[0].shape == (1, 1, 1) and torch.equal(d[3], ToyDataset("toy1", 100, seed=2)[3])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["process.basis.type=haar"], "beta does not support process.basis.type: haar"),
        (["sample.sampler=ddim"], "sample.sampler: beta"),
        (["model.multiscale={}"], "model.multiscale"),
        (["model.num_classes=3"], "model.num_classes"),
        (["process.beta={scale: 0.5, shift: 0.6}"], r"shift \+ scale < 1"),
        (["data.resolution=4"], "resolution must be 1"),
        (
            ["process.family=gaussian", "process.beta=null", "loss.beta=null"],
            "needs process.family",
        ),
        (
            ["process.family=gaussian", "process.beta=null", "sample.sampler=heun"]
            + ["loss.beta={type: elbo}"],
            "loss.beta need",
        ),
        (["loss.beta={type: kl}"], "loss.beta.type"),
    ],
)
def test_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*TOY, *extra])


def test_gaussian_family_is_the_default_and_takes_the_mlp_on_toy_data():
    cfg = load_config(None, ["process.basis.type=identity"])
    assert cfg.process.family == "gaussian" and cfg.process.beta is None and cfg.loss.beta is None
    toy = [*TOY_DATA, "process.basis.type=identity", "process.schedule={type: vp-cosine}"]
    with pytest.raises(ConfigError, match="channel_mult"):  # a UNet cannot halve 1x1
        load_config(None, toy)
    assert load_config(None, [*toy, "model.backbone=mlp"]).data.resolution == 1


# -------------------------------------------------------------------- training, resume, CLI
def test_beta_training_resumes_bit_identically_and_samples(tmp_path, capsys):
    """4 steps == 2 steps + resume to 4 (weights, EMA, data mean); then ``nudiff sample``
    writes a grid and an npz; a Gaussian sampler on the beta run is a one-line error."""
    from safetensors.torch import load_file

    a, _ = assert_resume_exact(tmp_path, None, TOY, keys=["data_mean"])
    # the sampler's start needs only the saved per-pixel mean of the toy (0.1 + 0.8 * 3/7)
    mean = load_file(a / "checkpoints" / "step_000004" / "model.safetensors")
    assert mean["data_mean"].item() == pytest.approx(0.1 + 0.8 * 3 / 7, abs=0.03)
    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    run = str(a)
    assert main(["sample", run, "--out", str(png), "--npz", str(npz), "--n-samples", "8"]) == 0
    assert png.is_file() and np.load(npz)["x_train"].shape[0] == 8
    assert "8 samples, 4 NFE" in capsys.readouterr().out
    assert main(["sample", run, "--out", str(png), "--n-samples", "8", "--sampler", "ddim"]) == 2
    err = capsys.readouterr().err
    assert "samples with sample.sampler: beta, not the Gaussian sampler 'ddim'" in err
    assert main(["eval", "nll", run, "--n-images", "2"]) == 2
    assert "process.family: beta does not support nudiff eval nll" in capsys.readouterr().err
    from nudiff.run import sample_run

    with pytest.raises(ValueError, match="beta does not support sample.guidance"):
        sample_run(run, 2, labels=[0, 1], guidance=2.0)
    with pytest.raises(ValueError, match="class labels need a class-conditional model"):
        sample_run(run, 2, labels=[0, 1])
