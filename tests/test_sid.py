"""SiD distillation: the scalar form, convergence on exact teachers, few-step generators, LSG
guidance, runs, resume, sampling."""

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
from nudiff.distill import sid as sid_module
from nudiff.distill.config import SiDConfig
from nudiff.distill.sid import (
    SID_INIT_LOG_SNR,
    OneStepGenerator,
    ReferenceTime,
    SiDGenerator,
    SiDLoss,
    SiDModel,
    edm_sigma,
    sample_one_step,
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


# ------------------------------------------------------------------------ few-step SiD, LSG
class CountingNet(ConvNet):
    """:class:`ConvNet` that counts its calls."""

    calls = 0

    def forward(self, u, t, exact_inactive=True, **kw):
        self.calls += 1
        return super().forward(u, t, exact_inactive, **kw)


def _few_step(k: int, times=(0.7, 0.5, 0.3, 0.2)):
    """Process, teacher, a ``k``-step model (generator and fake score) and its loss."""
    process = Process(Identity((1, 4, 4)), VPCosine())
    teacher, fake_net, gen_net = (ConvNet(process, s) for s in (1, 2, 3))
    model = SiDModel(SiDGenerator(gen_net, list(times[:k])), fake_net)
    return process, model, SiDLoss(process, teacher, DenoisingLoss(process), steps=k)


def test_few_step_generator_runs_its_steps_at_the_configured_levels():
    """The k step times sit at mean log-SNRs evenly spaced from init_log_snr to last_log_snr;
    step j + 1 re-noises step j's output to t_{j+1} (the forward process) and denoises it; a
    k-step generator samples with k network calls, its first s < k steps with s, and adds
    untrained refinements beyond k. The times are not checkpointed (one-step runs load)."""
    process = Process(Identity((1, 4, 4)), VPCosine())
    ref = ReferenceTime(process)
    d = SiDConfig(teacher="x", steps=4, init_log_snr=-2.0, last_log_snr=4.0)
    assert d.step_log_snrs() == pytest.approx([-2.0, 0.0, 2.0, 4.0])
    assert SiDConfig(teacher="x").step_log_snrs() == [SID_INIT_LOG_SNR]
    net = CountingNet(process, 0)
    gen = SiDGenerator(net, [float(ref.time(torch.tensor(lam))) for lam in d.step_log_snrs()])
    assert gen.steps == 4 and "times" not in gen.state_dict()
    lams = ref.log_snr(gen.times.double())
    torch.testing.assert_close(
        lams, torch.tensor([-2.0, 0.0, 2.0, 4.0]).double(), atol=2e-3, rtol=0
    )

    g = torch.Generator().manual_seed(0)
    z, *eps = (torch.randn(3, 1, 4, 4, generator=g) for _ in range(4))
    outs = gen.chain(gen.noise(z), eps)
    assert len(outs) == 4 and all(u.shape == (3, 1, 4, 4) for u in outs)
    alpha, sigma = process.coefficients(gen.times[2:3], outs[1])
    torch.testing.assert_close(outs[2], net(alpha * outs[1] + sigma * eps[1], gen.times[2:3]))

    from nudiff.samplers.base import NoiseSource

    for steps, nfe in ((None, 4), (2, 2), (6, 6)):
        net.calls = 0
        out = sample_one_step(gen, 5, steps=steps)
        assert out.nfe == nfe == net.calls and out.images.shape == (5, 1, 4, 4)
    src = NoiseSource(0, 0, 5)
    z, e = src.randn((1, 4, 4)), src.randn((1, 4, 4))
    torch.testing.assert_close(sample_one_step(gen, 5, steps=2).u, gen.chain(gen.noise(z), [e])[1])
    with pytest.raises(ValueError, match="must decrease"):
        SiDGenerator(net, [0.3, 0.5])


def test_few_step_training_draws_the_step_uniformly():
    """k = 3: each generator update draws one step j ~ U{1..3}; each fake-score sample its own;
    k = 1 draws exactly what one-step SiD draws (nothing more)."""
    _, _, loss = _few_step(3)
    g = torch.Generator().manual_seed(0)
    js = torch.tensor([loss.draw(1, g)["j"] for _ in range(1200)])
    noise = loss.draw(30_000, g)
    for draws in (js, noise["j_fake"]):
        share = torch.bincount(draws, minlength=3).double() / len(draws)
        assert len(share) == 3 and (share - 1 / 3).abs().max() < 4 * math.sqrt(2 / 9 / len(draws))
    assert noise["renoise"].shape == noise["renoise_fake"].shape == (30_000, 2, 1, 4, 4)
    _, _, one = _few_step(1)
    assert set(one.draw(2, g)) == {"z_fake", "fake_t", "fake_eps", "z", "t", "eps"}


def test_few_step_losses_use_the_drawn_steps_and_k_1_is_one_step_sid():
    """The generator loss of draw j is SiD's loss of step j's output, with gradient through
    step j only; j = 1 of a 3-step generator (and k = 1) is the one-step loss exactly. The
    fake score trains on each row's own step."""
    process, model, loss = _few_step(3)
    _, _, one = _few_step(1)
    noise = loss.draw(4, torch.Generator().manual_seed(0))
    gen, params = model.generator, list(model.generator.parameters())

    def value_and_grads(fn):
        model.zero_grad()
        value = fn()
        value.sum().backward()
        return value.detach(), [p.grad.clone() for p in params]

    def by_hand(j):
        with torch.no_grad():
            eps = [noise["renoise"][:, s] for s in range(j)]
            u = gen.chain(gen.noise(noise["z"]), eps[: j - 1])[-1] if j else None
        u_g = gen(gen.noise(noise["z"])) if j == 0 else gen.step(u, j, eps[j - 1])
        alpha, sigma = process.coefficients(noise["t"], u_g)
        z_t = alpha * u_g + sigma * noise["eps"]
        a, b = loss.teacher(z_t, noise["t"]), sid_module._frozen_call(model.fake, z_t, noise["t"])
        return 100 * sid_generator_loss(u_g, a, b, 1.2)

    for j in range(3):
        ours = value_and_grads(lambda j=j: loss(model, None, {**noise, "j": j}, "generator"))
        ref = value_and_grads(lambda j=j: by_hand(j))
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    one_step = {k: v for k, v in noise.items() if "j" not in k and "renoise" not in k}
    same = value_and_grads(lambda: one(model, None, one_step, "generator"))
    torch.testing.assert_close(
        value_and_grads(lambda: loss(model, None, {**noise, "j": 0}, "generator")),
        same,
        rtol=0,
        atol=0,
    )

    seen = {}
    loss.fake_loss = RecordingLoss(seen)
    loss(model, None, noise, "fake")
    with torch.no_grad():
        eps = [noise["renoise_fake"][:, s] for s in range(2)]
        steps = torch.stack(gen.chain(gen.noise(noise["z_fake"]), eps))
    torch.testing.assert_close(seen["x0"], steps[noise["j_fake"], torch.arange(4)])


class RecordingLoss(nn.Module):
    """A fake-score loss that records its images and the model's answer at them (``seen``)."""

    def __init__(self, seen: dict):
        super().__init__()
        self.seen = seen

    def draw(self, n, generator, step=0):
        return {}

    def forward(self, model, x0, noise):
        kw = {"labels": noise["labels"]} if "labels" in noise else {}
        out = model(x0, torch.full((len(x0),), 0.5), **kw)
        self.seen.update(x0=x0.detach(), out=out, labels=noise.get("labels"))
        return out.flatten(1).mean(1)


class LabelNet(nn.Module):
    """``0.5 u + e[label]``: a class-conditional denoiser whose answer shows its guidance."""

    def __init__(self, process, num_classes, seed):
        super().__init__()
        self.process, self.num_classes = process, num_classes
        g = torch.Generator().manual_seed(seed)
        self.e = nn.Parameter(torch.randn(num_classes + 1, generator=g))

    def forward(self, u, t, labels=None, **kw):
        labels = torch.full((len(u),), self.num_classes) if labels is None else labels
        return 0.5 * u + self.e[labels].view(-1, 1, 1, 1)


def test_lsg_guidance_scales_reach_their_places(monkeypatch):
    """SiD-LSG: ``guidance`` guides the teacher's estimate in the generator loss,
    ``guidance_fake`` the fake score's output in its own training (both labels' branches
    trained), ``guidance_fake_eval`` its estimate in the generator loss (default:
    ``guidance_fake``); guidance without class labels is an error."""
    process, k = Process(Identity((1, 4, 4)), VPCosine()), 5
    teacher, fake = LabelNet(process, k, 0), LabelNet(process, k, 1)
    model = SiDModel(SiDGenerator(ConvNet(process, 3), 0.5), fake)
    loss = SiDLoss(
        process,
        teacher,
        RecordingLoss(seen := {}),
        num_classes=k,
        guidance=3.0,
        guidance_fake=2.0,
        guidance_fake_eval=0.5,
    )
    captured = {}

    def capture(u_g, a, b, alpha):
        captured.update(u_g=u_g, a=a, b=b)
        return sid_generator_loss(u_g, a, b, alpha)

    monkeypatch.setattr(sid_module, "sid_generator_loss", capture)
    noise = loss.draw(6, torch.Generator().manual_seed(0))
    loss(model, None, noise, "generator").sum().backward()
    assert fake.e.grad is None and teacher.e.grad is None  # neither denoiser is trained here

    def guided(net, x, labels, w):
        cond, null = net.e[labels].view(-1, 1, 1, 1), net.e[k]
        return (0.5 * x + null + w * (cond - null)).detach()

    u_g, labels = captured["u_g"].detach(), noise["labels"]
    alpha, sigma = process.coefficients(noise["t"], u_g)
    z_t = alpha * u_g + sigma * noise["eps"]
    torch.testing.assert_close(captured["a"].detach(), guided(teacher, z_t, labels, 3.0))
    torch.testing.assert_close(captured["b"].detach(), guided(fake, z_t, labels, 0.5))

    loss(model, None, noise, "fake").sum().backward()
    fake_labels = noise["fake_labels"]
    torch.testing.assert_close(seen["out"].detach(), guided(fake, seen["x0"], fake_labels, 2.0))
    assert fake.e.grad[k] != 0 and fake.e.grad[fake_labels].ne(0).all()  # both branches

    assert (
        SiDLoss(
            process, teacher, RecordingLoss({}), num_classes=k, guidance_fake=2.0
        ).guidance_fake_eval
        == 2.0
    )
    with pytest.raises(ValueError, match="class-conditional teacher"):
        SiDLoss(process, teacher, RecordingLoss({}), guidance_fake=2.0)


def test_few_step_and_lsg_config_errors():
    from nudiff.config import ConfigError, load_config

    onestep = "sample.sampler=onestep"
    with pytest.raises(ConfigError, match="last_log_snr"):
        load_config(QUICKSTART, ["distill={teacher: x, steps: 2, last_log_snr: -3}", onestep])
    with pytest.raises(ConfigError, match="steps"):
        load_config(QUICKSTART, ["distill={teacher: x, steps: 0}", onestep])
    for key in ("guidance", "guidance_fake", "guidance_fake_eval"):
        with pytest.raises(ConfigError, match=f"distill.{key}: classifier-free guidance needs"):
            load_config(QUICKSTART, [f"distill={{teacher: x, {key}: 2}}", onestep])
    cfg = load_config(QUICKSTART, ["distill={teacher: x, steps: 3}", onestep])
    assert cfg.distill.step_log_snrs()[-1] == pytest.approx(cfg.distill.last_log_snr)


def test_few_step_lsg_run_resumes_exactly_and_samples_its_steps(tmp_path):
    """A 2-step generator with LSG guidance of a class-conditional teacher: 2 steps == 1 +
    resume to 2; it samples with its 2 steps (2 NFE) by default, its first step alone, or
    with an untrained refinement after its steps."""
    teacher = tmp_path / "teacher"
    overrides = [
        "data.resolution=8",
        "model.num_classes=18",
        "process.basis.type=identity",
        "process.schedule={type: vp-cosine}",
        *TINY,
        "train.steps=1",
    ]
    assert main(["train", *train_args(tmp_path, overrides), "--out", str(teacher)]) == 0
    lsg = tiny_distill("distill.steps=2", "distill.guidance=2", "distill.guidance_fake=1.5")
    _, b = assert_resume_exact(
        tmp_path,
        teacher,
        lsg,
        steps=2,
        stop_at=1,
        command="distill sid",
        resume_overrides=[],
        keys=["generator.*"],
    )
    from nudiff.run import load_run, sample_model

    cfg, gen = load_run(b)
    assert cfg.distill.steps == cfg.sample.steps == gen.steps == 2
    assert [sample_model(cfg, gen, 4, steps=s).nfe for s in (None, 1, 3)] == [2, 1, 3]
    png = tmp_path / "s.png"
    assert main(["sample", str(b), "--n-samples", "2", "--out", str(png)]) == 0
    assert png.is_file()
