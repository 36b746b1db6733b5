"""SiD distillation: the scalar form, convergence on exact teachers, runs, resume, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import (
    QUICKSTART,
    ROOT,
    assert_resume_exact,
    sets,
    tiny,
    tiny_distill,
    train_args,
)
from nudiff.bases import Identity
from nudiff.cli import main
from nudiff.distill.sid import (
    SID_INIT_LOG_SNR,
    OneStepGenerator,
    ReferenceTime,
    SiDLoss,
    SiDModel,
    edm_sigma,
    sid_generator_loss,
)
from nudiff.losses import DenoisingLoss, TimeSampling, Weighting
from nudiff.oracle import DiagonalGaussian, GaussianOracle
from nudiff.process import Process
from nudiff.schedules import EDM, VPCosine
from nudiff.training.config import TrainConfig
from nudiff.training.trainer import Trainer


class ConvNet(nn.Module):
    """A small denoiser-shaped network ``(u, t) -> u`` for the exactness tests."""

    def __init__(self, process, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.process = process
        self.conv = nn.Conv2d(process.shape[0] + 1, process.shape[0], 3, padding=1)

    def forward(self, u, t, exact_inactive=True, **kw):
        t = (
            torch.as_tensor(t, dtype=u.dtype)
            .reshape(-1, 1, 1, 1)
            .expand(u.shape[0], 1, *u.shape[2:])
        )
        return u + torch.tanh(self.conv(torch.cat([u, t], 1)))


class LinearGenerator(nn.Module):
    """``u = b + exp(s) z`` per component: the family of a diagonal Gaussian."""

    def __init__(self, process):
        super().__init__()
        self.process = process
        self.log_scale = nn.Parameter(torch.zeros(process.shape))
        self.bias = nn.Parameter(torch.zeros(process.shape))

    def forward(self, z, t, exact_inactive=True, **kw):
        return self.bias + self.log_scale.exp() * z


class GaussianDenoiser(nn.Module):
    """The exact denoiser of a diagonal Gaussian with learnable mean and variance."""

    def __init__(self, process, mean, var):
        super().__init__()
        self.process = process
        self.mean = nn.Parameter(mean.float().clone())
        self.log_var = nn.Parameter(var.float().log().clone())

    def forward(self, u, t, **kw):
        alpha, sigma = self.process.coefficients(t, u)
        w = self.log_var.exp()
        return self.mean + alpha * w * (u - alpha * self.mean) / (alpha**2 * w + sigma**2)


def _train(model, loss, tmp_path, **cfg):
    defaults = dict(
        betas=(0.0, 0.999),
        warmup_steps=0,
        grad_clip=0.0,
        lr_schedule="cosine",
        log_every=100,
        checkpoint_every=10_000,
        sample_every=0,
        tensorboard=False,
        num_workers=0,
        ema_warmup_ratio=0.25,
    )
    trainer = Trainer(model, loss, None, TrainConfig(**{**defaults, **cfg}), tmp_path / "run")
    trainer.fit()
    return trainer


def test_reference_time_inverts_the_log_snr():
    process = Process(Identity((1, 4, 4)), VPCosine())
    ref = ReferenceTime(process)
    lam = torch.linspace(-12, 12, 41, dtype=torch.float64)
    t = ref.time(lam)
    back = process.schedule.log_snr(t).flatten()
    torch.testing.assert_close(back, lam, atol=1e-3, rtol=5e-4)


def test_generator_time_draws_follow_sids_noise_levels():
    """With alpha = 1 (EDM) the drawn t give sigma(t) = SiD's rho-7 levels of r ~ U(0, 0.8)."""
    process = Process(Identity((1, 4, 4)), EDM(sigma_min=0.001, sigma_max=100.0))
    teacher = ConvNet(process, 0)
    loss = SiDLoss(process, teacher, DenoisingLoss(process))
    noise = loss.draw(20_000, torch.Generator().manual_seed(0))
    _, sigma = process.coefficients(noise["t"].double(), torch.zeros(1, *process.shape))
    sigma = sigma.flatten()
    lo, hi = 0.002 ** (1 / 7), 80 ** (1 / 7)
    r = 1 - (sigma ** (1 / 7) - hi) / (lo - hi)  # invert edm_sigma
    assert r.min() > -1e-3 and r.max() < 0.8 + 1e-3
    se = 0.8 / math.sqrt(12 * len(r))
    assert abs(r.mean().item() - 0.4) < 4 * se
    assert abs((r < 0.4).double().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(len(r))
    torch.testing.assert_close(
        edm_sigma(torch.tensor([0.0]), 0.002, 80.0, 7.0), torch.tensor([0.002])
    )


def test_generator_loss_is_sids_scalar_form():
    """Pixel basis, white prior, EDM schedule (alpha = 1): the generator input is 2.5 eps and
    the loss and its gradient are SiD's, written out in pixel space as upstream does."""
    shape = (1, 8, 8)
    process = Process(Identity(shape), EDM(sigma_min=0.002, sigma_max=80.0))
    teacher, fake_net, gen_net = (ConvNet(process, s) for s in (1, 2, 3))
    ref = ReferenceTime(process)
    t_init = float(ref.time(torch.tensor(SID_INIT_LOG_SNR)))
    generator = OneStepGenerator(gen_net, t_init)
    torch.testing.assert_close(
        generator.noise_std.flatten(), torch.tensor([2.5]), rtol=1e-4, atol=0
    )
    model = SiDModel(generator, fake_net)
    loss = SiDLoss(process, teacher, DenoisingLoss(process), alpha=1.2, reference=ref)
    noise = loss.draw(6, torch.Generator().manual_seed(0))
    ours = loss(model, None, noise, phase="generator")
    ours.sum().backward()
    grads = [p.grad.clone() for p in gen_net.parameters()]
    assert all(p.grad is None for p in fake_net.parameters())  # the fake score is not trained

    # upstream's form: y = G(2.5 z, 2.5); x_t = y + sigma n; sum over pixels, x100
    gen_net.zero_grad()
    fake_net.requires_grad_(False)
    sigma_init = generator.noise_std.flatten()[0]
    y = gen_net(sigma_init * noise["z"], generator.t_init)
    _, sigma = process.coefficients(noise["t"], y)
    x_t = y + sigma * noise["eps"]
    y_real, y_fake = teacher(x_t, noise["t"]), fake_net(x_t, noise["t"])
    with torch.no_grad():
        wf = (y - y_real).abs().mean(dim=[1, 2, 3], keepdim=True).clip(min=1e-5)
    upstream = ((y_real - y_fake) * ((y_real - y) - 1.2 * (y_real - y_fake)) / wf).sum([1, 2, 3])
    upstream = 100 * upstream
    torch.testing.assert_close(ours.detach(), upstream.detach(), rtol=1e-5, atol=1e-5)
    upstream.sum().backward()
    for g, p in zip(grads, gen_net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_generator_loss_per_component_sum():
    u, a, b = (
        torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(i)) for i in (0, 1, 2)
    )
    per = sid_generator_loss(u, a, b, 0.5)
    omega = (u - a).abs().mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(per, ((a - b) * ((a - u) - 0.5 * (a - b)) / omega).sum((1, 2, 3)))


def test_fake_phase_trains_the_fake_score_on_detached_samples():
    process = Process(Identity((1, 4, 4)), VPCosine())
    teacher, fake_net, gen_net = (ConvNet(process, s) for s in (1, 2, 3))
    model = SiDModel(OneStepGenerator(gen_net, 0.5), fake_net)
    loss = SiDLoss(process, teacher, DenoisingLoss(process))
    noise = loss.draw(4, torch.Generator().manual_seed(0))
    loss(model, None, noise, phase="fake").mean().backward()
    assert all(p.grad is None for p in gen_net.parameters())
    assert all(p.grad is not None for p in fake_net.parameters())
    with pytest.raises(ValueError, match="unknown SiD phase"):
        loss(model, None, noise, phase="teacher")


def test_exact_gaussian_teacher_gives_the_data_variances(tmp_path):
    """Diagonal Gaussian data (variances 0.05 .. 2 per component) and its exact teacher: the
    distilled one-step generator's per-component variances are the data's within 5%."""
    shape = (1, 4, 4)
    process = Process(Identity(shape), VPCosine())
    g = torch.Generator().manual_seed(0)
    var = torch.empty(shape).uniform_(math.log(0.05), math.log(2.0), generator=g).exp()
    teacher = GaussianOracle(process, DiagonalGaussian(process.basis, None, var)).float()
    net = LinearGenerator(process)
    generator = OneStepGenerator(net, 0.5)
    with torch.no_grad():  # starts as N(0, I): the data's variances are 0.05x .. 2x that
        net.log_scale.copy_(-generator.noise_std.log().reshape(1, 1, 1))
    model = SiDModel(generator, GaussianDenoiser(process, teacher.m, teacher.w))
    fake_loss = DenoisingLoss(
        process, Weighting(process, "uniform", "x0", 1.0), TimeSampling(process, "uniform")
    )
    trainer = _train(
        model,
        SiDLoss(process, teacher, fake_loss),
        tmp_path,
        steps=2000,
        batch_size=1024,
        lr=2e-2,
        ema_halflife_images=200_000,
    )
    ema = trainer.ema.module.generator
    got = (ema.network.log_scale.exp() * ema.noise_std[0]) ** 2
    ratio = got / teacher.w
    assert ratio.min() > 0.95 and ratio.max() < 1.05, ratio.flatten()
    assert ema.network.bias.abs().max() < 0.05


class MixtureDenoiser(nn.Module):
    """The exact denoiser of a mixture of isotropic Gaussians in 2-D (components ``(2, 1, 1)``)
    with learnable means, log-variance and logits."""

    def __init__(self, process, means, var, logits=None):
        super().__init__()
        self.process = process
        self.means = nn.Parameter(means.float().clone())  # (K, 2)
        self.log_var = nn.Parameter(torch.tensor(math.log(var)))
        k = len(means)
        self.logits = nn.Parameter(torch.zeros(k) if logits is None else logits.clone())

    def forward(self, u, t, **kw):
        alpha, sigma = self.process.coefficients(t, u)
        a, s2 = alpha.reshape(-1, 1), sigma.reshape(-1, 1) ** 2
        x, w = u.reshape(-1, 2), self.log_var.exp()
        var = a**2 * w + s2  # (B, 1)
        d = x[:, None, :] - a[:, None] * self.means[None]  # (B, K, 2)
        logp = self.logits.log_softmax(0) - 0.5 * (d**2).sum(-1) / var  # (B, K)
        post = logp.softmax(1)
        mean_k = self.means[None] + (a * w / var)[:, None] * d  # (B, K, 2)
        return (post[..., None] * mean_k).sum(1).reshape(u.shape)


class MLPGenerator(nn.Module):
    def __init__(self, process):
        super().__init__()
        torch.manual_seed(0)
        self.process = process
        self.net = nn.Sequential(
            nn.Linear(2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2)
        )

    def forward(self, z, t, exact_inactive=True, **kw):
        return self.net(z.reshape(-1, 2)).reshape(z.shape)


def test_ring_of_eight_gaussians_every_mode_gets_its_mass(tmp_path):
    """8 modes on a ring with the exact mixture denoiser as teacher and a mixture-family fake
    score: an MLP generator that starts collapsed on two modes ends with 1/8 +- 0.05 of its
    mass nearest each mode, mostly close to the modes."""
    process = Process(Identity((2, 1, 1)), VPCosine())
    angles = torch.arange(8) * 2 * math.pi / 8
    means = torch.stack([angles.cos(), angles.sin()], 1) * 1.5
    teacher = MixtureDenoiser(process, means, 0.02).requires_grad_(False)
    fake = MixtureDenoiser(process, means, 0.02)
    model = SiDModel(OneStepGenerator(MLPGenerator(process), 0.5), fake)
    fake_loss = DenoisingLoss(
        process, Weighting(process, "uniform", "x0", 1.0), TimeSampling(process, "uniform")
    )
    trainer = _train(
        model,
        SiDLoss(process, teacher, fake_loss),
        tmp_path,
        steps=1500,
        batch_size=512,
        lr=2e-3,
        ema_halflife_images=50_000,
    )
    gen = trainer.ema.module.generator
    with torch.no_grad():
        z = gen.noise(torch.randn(8000, 2, 1, 1, generator=torch.Generator().manual_seed(1)))
        x = gen(z).reshape(-1, 2)
    nearest = torch.cdist(x, means).argmin(1)
    mass = torch.bincount(nearest, minlength=8).double() / len(x)
    assert (mass - 1 / 8).abs().max() < 0.05, mass
    close = torch.cdist(x, means).min(1).values < 0.5  # 3.5 mode std
    assert close.double().mean() > 0.7  # mostly on the modes (0 at the start)


TINY = tiny("data.size=64", steps=2)


def test_distilling_a_multiscale_teacher_resumes_exactly_and_samples(tmp_path):
    """A multi-scale teacher (the quick start's): 4 SiD steps == 2 steps + resume to 4
    (generator, fake score, EMA); sampling takes 1 NFE, and other samplers are errors."""
    teacher = tmp_path / "teacher"
    assert main(["train", QUICKSTART, "--out", str(teacher), *sets(TINY)]) == 0
    _, b = assert_resume_exact(
        tmp_path,
        teacher,
        tiny_distill(),
        command="distill sid",
        resume_overrides=[],
        keys=["generator.*", "fake.scales.2.*"],
    )
    log = (b / "log.csv").read_text().splitlines()
    assert log[0].endswith("loss_fake,loss_generator") and len(log) == 5
    png = tmp_path / "s.png"
    assert main(["sample", str(b), "--n-samples", "3", "--out", str(png)]) == 0
    assert png.is_file()

    from nudiff.run import load_run, sample_model

    cfg, gen = load_run(b)
    out = sample_model(cfg, gen, 5, batch_size=2)
    assert out.nfe == 1 and out.images.shape == (5, 3, 16, 16)
    torch.testing.assert_close(sample_model(cfg, gen, 5).images, out.images)  # batch-invariant
    assert sample_model(cfg, gen, 2, steps=2).nfe == 2
    assert main(["sample", str(b), "--n-samples", "2", "--sampler", "ddim"]) == 2
    with pytest.raises(ValueError, match=r"distill \(SiD\) does not support sample.budgets"):
        sample_model(cfg, gen, 2, grid="uniform", budgets=[1, 1, 1])


def test_distill_config_errors(tmp_path):
    from nudiff.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="onestep needs a distilled run"):
        load_config(QUICKSTART, ["sample.sampler=onestep"])
    with pytest.raises(ConfigError, match="samples with sample.sampler: onestep"):
        load_config(
            QUICKSTART,
            ["distill={teacher: x}", "sample.sampler=ddim"],
        )
    with pytest.raises(ConfigError, match="Neural Diffusion Model"):
        load_config(
            ROOT / "configs" / "mnist32_ndm.yaml",
            ["distill={teacher: x}", "sample.sampler=onestep"],
        )
    assert main(["distill", "sid", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_distilling_a_class_conditional_teacher(tmp_path):
    """Labels are drawn per sample for the generator, the teacher (guided) and the fake score;
    the generator samples the classes in turn, or the classes asked for."""
    teacher = tmp_path / "teacher"
    overrides = [
        "data.resolution=8",
        "model.num_classes=18",
        "process.basis.type=identity",
        "process.schedule={type: vp-cosine}",
        *TINY,
    ]
    assert main(["train", *train_args(tmp_path, overrides), "--out", str(teacher)]) == 0
    run = tmp_path / "sid"
    distil = ["train.steps=2", "train.batch_size=4", "distill.guidance=2", "train.sample_every=0"]
    assert main(["distill", "sid", str(teacher), "--out", str(run), *sets(distil)]) == 0

    from nudiff.run import load_run, sample_model

    cfg, gen = load_run(run)
    assert gen.num_classes == 18
    a = sample_model(cfg, gen, 4, labels=torch.tensor([0, 1, 2, 3]))
    b = sample_model(cfg, gen, 4, labels=torch.tensor([5, 5, 5, 5]))
    assert a.nfe == 1 and not torch.equal(a.images, b.images)  # the label matters
    torch.testing.assert_close(sample_model(cfg, gen, 4).images, a.images)  # classes in turn
