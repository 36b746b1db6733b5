"""Neural Diffusion Models: identity reduces to the linear code paths, the JVP, the samplers, the
bound against the ODE NLL, config checks and one run through the trainer, CLI and evaluation."""

import math

import pytest
import torch

from conftest import sets, tiny
from nudiff.bases import DCT, Identity
from nudiff.config import ConfigError, load_config
from nudiff.eval.elbo import elbo_log_likelihood, elbo_weight
from nudiff.eval.likelihood import ode_log_likelihood
from nudiff.models.denoiser import Denoiser
from nudiff.models.mlp import MLP
from nudiff.ndm import NDM, IdentityTransform, LearnedTransform
from nudiff.ndm.bound import continuous_integrand, end_terms, ndm_elbo_log_likelihood
from nudiff.ndm.likelihood import ndm_ode_log_likelihood
from nudiff.ndm.loss import NDMLoss
from nudiff.ndm.sampler import ndm_velocity, sample_ndm_ddim
from nudiff.oracle import GaussianOracle, field_model
from nudiff.prior import Prior
from nudiff.process import Process
from nudiff.samplers import sample
from nudiff.samplers.exponential import sample_ddim
from nudiff.samplers.sde import sample_ancestral
from nudiff.schedules import VPCosine

SHAPE = (1, 4, 4)


def _process(basis=DCT, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    prior = Prior(
        SHAPE, 0.1 * torch.randn(SHAPE, generator=g), 0.5 + torch.rand(SHAPE, generator=g)
    )
    return Process(basis(SHAPE), VPCosine(), prior).to(dtype)


def _oracle_setup(n=16):
    process = _process()
    oracle = GaussianOracle(process, field_model(SHAPE, basis=process.basis))
    x = process.decode(oracle.sample_u0(n, torch.Generator().manual_seed(1)))
    return process, oracle, x


def _learned(process, scale=0.0, seed=0):
    """A learned transform with an MLP network; ``scale`` > 0 randomises its zero output layer."""
    torch.manual_seed(seed)
    net = MLP(SHAPE, width=32, depth=2, noise_features=1).to(process.prior.scale.dtype)
    if scale:
        with torch.no_grad():
            for p in net.out.parameters():
                p.normal_(0, scale)
    return LearnedTransform(process, net)


def test_identity_bound_equals_the_linear_elbo_term_by_term():
    """F = identity: the NDM bound is the linear continuous ELBO (same draws), term by term."""
    process, oracle, x = _oracle_setup()
    lin = elbo_log_likelihood(
        oracle, process, x, n_times=8, generator=torch.Generator().manual_seed(3)
    )
    model = NDM(oracle, IdentityTransform())
    ndm = ndm_elbo_log_likelihood(
        model, process, x, n_times=8, generator=torch.Generator().manual_seed(3)
    )
    for name in ("reconstruction", "prior", "diffusion", "log_prob"):
        a, b = getattr(lin, name), getattr(ndm, name)
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0, msg=name)


def test_zero_learned_transform_takes_the_jvp_path_to_the_same_terms():
    """A learned transform whose network outputs 0 is F = u with dF/dt = 0: the general
    integrand (JVPs at x and at x_hat, cross and dF/dt terms) equals the linear one to 1e-6,
    and so do the end terms and the training loss."""
    process, oracle, x = _oracle_setup()
    u0 = process.encode(x)
    g = torch.Generator().manual_seed(0)
    t = 0.02 + 0.96 * torch.rand(len(u0), generator=g, dtype=torch.float64)
    eps = torch.randn(u0.shape, generator=g, dtype=torch.float64)
    learned, ident = _learned(process), IdentityTransform()
    a = continuous_integrand(ident, oracle, process, u0, t, eps)
    b = continuous_integrand(learned, oracle, process, u0, t, eps)
    x0 = oracle(process.marginal(u0, t, eps), t)
    torch.testing.assert_close(a, elbo_weight(process, t, u0) * (x0 - u0) ** 2, rtol=0, atol=0)
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
    for ta, tb in zip(end_terms(ident, process, u0), end_terms(learned, process, u0), strict=True):
        torch.testing.assert_close(tb, ta, rtol=1e-6, atol=1e-9)
    loss = NDMLoss(process)
    noise = loss.draw(len(x), torch.Generator().manual_seed(5))
    noise = {k: v.double() if v.is_floating_point() else v for k, v in noise.items()}
    la = loss(NDM(oracle, ident), x, noise)
    lb = loss(NDM(oracle, learned), x, noise)
    torch.testing.assert_close(lb, la, rtol=1e-6, atol=0)


def test_jvp_time_derivative_matches_finite_differences():
    process = _process()
    transform = _learned(process, scale=0.3)
    u = torch.randn(5, *SHAPE, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    f, df = transform.with_time_derivative(u, t)
    h = 1e-6
    fd = (transform(u, t + h) - transform(u, t - h)) / (2 * h)
    torch.testing.assert_close(f, transform(u, t))
    torch.testing.assert_close(df, fd, rtol=1e-6, atol=1e-7)
    assert df.abs().max() > 1e-2  # the network is not trivial
    # F(u, 0) = u for every weight
    torch.testing.assert_close(transform(u, torch.zeros(5, dtype=torch.float64)), u)


def test_identity_pf_ode_velocity_is_the_linear_one():
    process, oracle, x = _oracle_setup()
    z = process.marginal(process.encode(x), 0.4, torch.randn_like(x))
    t = torch.tensor([0.4], dtype=torch.float64)
    linear = process.pf_ode_velocity(z, t, oracle(z, t))
    for transform in (IdentityTransform(), _learned(process)):
        torch.testing.assert_close(ndm_velocity(oracle, transform, process, z, t), linear)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ndm_ddim_with_identity_equals_the_linear_samplers(eta):
    from nudiff.samplers.base import NoiseSource

    process, oracle, _ = _oracle_setup()
    ts = torch.linspace(1.0, process.t_min, 9, dtype=torch.float64)
    u1 = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def noise():
        return NoiseSource(0, 0, 6) if eta else None

    ndm = sample_ndm_ddim(
        oracle, process, u1, ts, transform=IdentityTransform(), noise=noise(), eta=eta
    )
    linear = sample_ddim(oracle, process, u1, ts, noise=noise(), eta=eta)
    torch.testing.assert_close(ndm, linear, rtol=1e-9, atol=1e-9)
    if eta:
        ancestral = sample_ancestral(oracle, process, u1, ts, noise=noise())
        torch.testing.assert_close(ndm, ancestral, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "dopri5"])
def test_sample_routes_learned_transforms_to_the_ndm_samplers(sampler):
    """``sample`` on an NDM with a learned transform uses the NDM sampler; with the network at
    zero it draws what the linear sampler draws; a nonzero F changes the samples."""
    process = _process(Identity, torch.float32)
    den = Denoiser(process, MLP(SHAPE, 32, 2, noise_features=1), "edm", noise_conditioning="t")
    with torch.no_grad():
        for p in den.backbone.out.parameters():
            p.normal_(0, 0.1)
    kw = {"sampler": sampler, "steps": 6, "seed": 1}
    if sampler == "dopri5":
        kw["options"] = {"rtol": 1e-3, "atol": 1e-3}
    linear = sample(den, process, 4, **kw).images
    zero = sample(NDM(den, _learned(process)), process, 4, **kw).images
    torch.testing.assert_close(zero, linear, rtol=1e-4, atol=1e-4)
    moved = sample(NDM(den, _learned(process, scale=0.05)), process, 4, **kw).images
    assert (moved - linear).abs().max() > 1e-3
    with pytest.raises(ValueError, match="learned transform samples with"):
        sample(NDM(den, _learned(process)), process, 4, sampler="dpmpp-2m", steps=4)


def _toy_data(n, g):
    """Two clusters in 4 dimensions (not Gaussian: the transform has something to do)."""
    sign = torch.randint(0, 2, (n, 1, 1, 1), generator=g) * 2 - 1
    return (0.5 * sign + 0.15 * torch.randn(n, *SHAPE, generator=g)).clamp(-1, 1)


def test_bound_is_above_the_ode_nll_on_a_trained_toy():
    """A small NDM (MLP denoiser and transform) trained on a 4-D two-cluster toy: its bound is
    >= its PF-ODE NLL (exact divergence) up to Monte-Carlo error; the discrete bound is finite."""
    torch.manual_seed(0)
    process = Process(Identity(SHAPE), VPCosine())
    den = Denoiser(process, MLP(SHAPE, 64, 2, noise_features=1), "edm", noise_conditioning="t")
    model = NDM(den, LearnedTransform(process, MLP(SHAPE, 32, 2, noise_features=1)))
    loss = NDMLoss(process)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x = _toy_data(128, g)
        value = loss(model, x, loss.draw(128, g)).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    assert torch.isfinite(value)
    x = _toy_data(128, torch.Generator().manual_seed(9))
    with torch.no_grad():
        bound = ndm_elbo_log_likelihood(model, process, x, n_times=32, generator=g)
        discrete = ndm_elbo_log_likelihood(
            model, process, x, n_times=8, generator=g, bound="discrete", steps=1000
        )
    ode = ndm_ode_log_likelihood(model, process, x, divergence="exact", rtol=1e-4, atol=1e-4)
    gap = ode.log_prob - bound.log_prob  # >= 0 in expectation for a good model
    se = gap.std() / math.sqrt(len(gap))
    assert gap.mean() > -3 * se, (gap.mean(), se)
    assert torch.isfinite(discrete.log_prob).all()
    # the transform learned something: F(x, 1/2) is not x
    assert (model.transform(x, 0.5) - x).abs().mean() > 1e-3
    # with F = identity the ODE likelihood is the linear one
    lin = ode_log_likelihood(den, process, x[:8], divergence="exact", rtol=1e-5, atol=1e-5)
    ident = ndm_ode_log_likelihood(
        NDM(den, IdentityTransform()), process, x[:8], divergence="exact", rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(ident.log_prob, lin.log_prob)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["process.schedule={type: multispeed}"], "learned needs a schedule"),
        (["sample.sampler=dpmpp-2m"], "samples with sample.sampler"),
        (["model.num_classes=10"], "does not support model.num_classes"),
        (
            [
                "model.multiscale={}",
                "process.basis.type=haar",
                "process.schedule={type: multispeed}",
            ],
            "does not support model.multiscale",
        ),
    ],
)
def test_config_rejects_what_ndm_does_not_support(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config("configs/mnist32_ndm.yaml", sets)


def test_config_defaults_and_other_families():
    cfg = load_config("configs/mnist32_ndm.yaml")
    assert cfg.process.transform.type == "learned" and cfg.loss.ndm.bound == "continuous"
    fixed = load_config("configs/mnist32_ndm_fixed.yaml")
    assert fixed.process.transform.type == "identity"
    assert fixed.model == cfg.model and fixed.train == cfg.train and fixed.loss == cfg.loss
    with pytest.raises(ConfigError, match="loss.ndm needs process.transform"):
        load_config("configs/mnist32.yaml", ["loss.ndm={bound: discrete}"])
    with pytest.raises(ConfigError, match="beta does not support process.transform"):
        load_config("configs/mnist32_beta.yaml", ["process.transform={type: learned}"])
    # an identity transform takes any schedule and sampler (it is the linear model)
    load_config(
        "configs/mnist32_ndm_fixed.yaml",
        ["process.schedule={type: multispeed}", "sample.sampler=dpmpp-2m"],
    )


@pytest.mark.slow
def test_train_sample_and_evaluate_an_ndm_run(tmp_path, monkeypatch):
    """Through the trainer, ``nudiff sample`` and ``nudiff eval nll`` (all three methods)."""
    import json
    from pathlib import Path

    from nudiff.cli import main

    root = Path(__file__).resolve().parents[1]
    if not (root.parent / "shared" / "data" / "mnist.npz").is_file():
        pytest.skip("offline MNIST not found")
    monkeypatch.chdir(root)
    overrides = tiny(
        "process.transform.width=8",
        "train.sample_every=2",
        "train.sample_n=4",
        "model.stats_samples=64",
        steps=2,
    )
    run = tmp_path / "run"
    assert main(["train", "configs/mnist32_ndm.yaml", "--out", str(run), *sets(overrides)]) == 0
    png = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                str(run),
                "--n-samples",
                "4",
                "--sampler",
                "ancestral",
                "--steps",
                "3",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert png.is_file()
    for method in ("elbo", "elbo-discrete", "ode"):
        js = tmp_path / f"{method}.json"
        extra = ["--rtol", "1e-2", "--atol", "1e-2"] if method == "ode" else ["--times", "2"]
        args = ["eval", "nll", str(run), "--n-images", "4", "--method", method, "--json", str(js)]
        assert main(args + extra) == 0
        out = json.loads(js.read_text())
        assert out["n"] == 4 and math.isfinite(out["nll_bpd"]), out


def test_dequantised_training_images_stay_in_their_8_bit_cell():
    """``loss.ndm.dequantize``: the loss sees ``(k + U) / 128 - 1``, inside the level's cell."""
    process = Process(Identity(SHAPE), VPCosine())
    den = Denoiser(process, MLP(SHAPE, 16, 1), "edm", noise_conditioning="t")
    model = NDM(den, IdentityTransform())
    levels = torch.randint(0, 256, (8, *SHAPE))
    x = levels.float() / 127.5 - 1
    seen = []
    model.denoiser.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    loss = NDMLoss(process, dequantize=True)
    noise = loss.draw(8, torch.Generator().manual_seed(0))
    plain = NDMLoss(process)(model, x, noise)
    value = loss(model, x, noise)
    assert torch.isfinite(value).all() and not torch.equal(value, plain)
    alpha, sigma = process.coefficients(noise["t"], x)
    u = (seen[-1] - sigma * noise["eps"]) / alpha  # the dequantised image the loss noised
    cell = (u + 1) * 128 - levels
    assert cell.min() > -1e-3 and cell.max() < 1 + 1e-3
    assert load_config("configs/mnist32_ndm.yaml", ["loss.ndm.dequantize=true"]).loss.ndm.dequantize
