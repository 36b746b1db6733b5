"""Class-conditional models and classifier-free guidance: labels from the data to the backbone,
label dropout, the null label, guidance on the x0 estimate against exact Gaussian oracles,
sampling, evaluation, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_resume_exact, tiny, train_args, woken_model
from nudiff.bases import Identity
from nudiff.build import build_data, build_denoiser, build_loss, build_process
from nudiff.cli import main
from nudiff.config import ConfigError, load_config
from nudiff.data import Labelled, NpzDataset, build_dataset, dataset_labels, load_batch
from nudiff.losses import ClassLabels
from nudiff.models.denoiser import Denoiser
from nudiff.process import Process
from nudiff.run import load_run, sample_run
from nudiff.samplers import Guided, sample
from nudiff.schedules import VPCosine

# 8x8 single shapes: 6 classes (circle, box, triangle; light or dark background)
TINY = tiny(
    "data.resolution=8",
    "data.size=64",
    "data.max_shapes=1",
    "process.basis.type=identity",
    "process.schedule={type: vp-cosine}",
    "model.num_classes=6",
    "model.label_dropout=0.25",
)


# ------------------------------------------------------------------------------------ data
def test_labelled_data_pairs_images_with_their_classes(tmp_path):
    cfg = load_config(None, TINY)
    data = build_data(cfg, labelled=True)
    assert isinstance(data, Labelled) and len(data) == 64
    x, y = data[5]
    assert torch.equal(x, build_data(cfg)[5]) and 0 <= int(y) < 6
    assert torch.equal(load_batch(data, [1, 2]), load_batch(build_data(cfg), [1, 2]))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=np.arange(10) % 3)
    npz = build_dataset(
        {"name": "npz", "path": str(tmp_path / "d.npz"), "resolution": 8, "holdout": 4},
        num_classes=3,
    )
    assert npz.targets.tolist() == [0, 1, 2, 0, 1, 2]  # the training split's labels
    assert dataset_labels(NpzDataset(tmp_path / "d.npz"), [9]).tolist() == [0]
    with pytest.raises(ValueError, match="labels span 0..2"):
        build_dataset({"name": "npz", "path": str(tmp_path / "d.npz")}, num_classes=2)
    np.savez(tmp_path / "nolabels.npz", x_train=images)
    with pytest.raises(ValueError, match="no y_train labels"):
        build_dataset({"name": "npz", "path": str(tmp_path / "nolabels.npz")}, num_classes=3)


def test_label_dropout_is_drawn_at_its_rate_and_replaces_labels_by_the_null_label():
    cfg, model = woken_model(TINY)
    loss = build_loss(cfg, model.process, model)
    drop = loss.draw(20_000, torch.Generator().manual_seed(0))["drop"]
    assert abs(drop.float().mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20_000)
    noise = {**loss.draw(4, torch.Generator().manual_seed(1)), "labels": torch.tensor([0, 1, 2, 3])}
    noise["drop"] = torch.tensor([True, False, True, False])
    assert loss.piece(ClassLabels).labels(noise, torch.zeros(1))["labels"].tolist() == [6, 1, 6, 3]
    with pytest.raises(ValueError, match="needs labelled data"):
        loss(model, torch.zeros(4, 3, 8, 8), {k: v for k, v in noise.items() if k != "labels"})


# ------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("backbone", ["unet", "dit", "lego"])
def test_null_label_is_the_unconditional_model_and_guidance_one_the_conditional(backbone):
    extra = {
        "unet": [],
        "dit": ["model.backbone=dit", "model.dit={patch_size: 2, width: 16, depth: 1, heads: 2}"],
        "lego": [
            "model.backbone=lego",
            "model.lego={bricks: [[4, 2, 1, 16], [0, 2, 1, 16]], heads: 2}",
        ],
    }[backbone]
    cfg, model = woken_model([*TINY, *extra])
    u, t = torch.randn(4, 3, 8, 8), torch.tensor([0.1, 0.4, 0.7, 0.95])
    labels = torch.tensor([0, 5, 2, 2])
    with torch.no_grad():
        null = model(u, t, labels=torch.full((4,), 6))
        assert torch.equal(null, model(u, t))  # labels=None: the null label
        cond = model(u, t, labels=labels)
        assert not torch.allclose(cond, null)
        assert torch.equal(Guided(model, 1.0)(u, t, labels=labels), cond)
        guided = Guided(model, 3.0)(u, t, labels=labels)
        torch.testing.assert_close(guided, null + 3.0 * (cond - null), rtol=1e-5, atol=1e-5)
        # guided only inside the interval: rows at t outside it are conditional
        part = Guided(model, 3.0, (0.3, 0.8))(u, t, labels=labels)
        torch.testing.assert_close(part[[0, 3]], cond[[0, 3]], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(part[[1, 2]], guided[[1, 2]], rtol=1e-5, atol=1e-5)


class _Classes(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.num_classes = k


class ExactClassDenoiser(Denoiser):
    """The exact denoiser of per-class Gaussians ``N(means[c], var)`` in whitened components
    (null label: ``null_mean`` with the same variance, or the mixture of the classes), guided
    by :class:`~nudiff.samplers.Guided` like any :class:`Denoiser`."""

    def __init__(self, process, means, var, null_mean=None):
        super().__init__(process, _Classes(len(means)))
        self.means, self.var, self.null_mean = means, var, null_mean

    def _gaussian(self, u, alpha, sigma, mean):
        return mean + alpha * self.var * (u - alpha * mean) / (alpha**2 * self.var + sigma**2)

    def forward(self, u, t, labels=None, process=None, crop=None):
        alpha, sigma = self.process.coefficients(t, u)
        k = len(self.means)
        means = self.means.to(u)[labels.clamp(max=k - 1)]  # (B, C, H, W)
        out = self._gaussian(u, alpha, sigma, means)
        if self.null_mean is not None:
            null = self._gaussian(u, alpha, sigma, self.null_mean.to(u))
        else:  # the classes' equal-weight mixture: posterior class weights times their answers
            var = alpha**2 * self.var + sigma**2
            logp = torch.stack(
                [-((u - alpha * m) ** 2 / (2 * var)).flatten(1).sum(1) for m in self.means.to(u)]
            )
            w = logp.softmax(0)  # (K, B)
            answers = torch.stack([self._gaussian(u, alpha, sigma, m) for m in self.means.to(u)])
            null = (w[..., None, None, None] * answers).sum(0)
        return torch.where((labels == k).view(-1, 1, 1, 1), null, out)


def _process(shape=(1, 2, 2)):
    return Process(Identity(shape), VPCosine())


@pytest.mark.parametrize("w", [1.0, 2.0, 3.5])
def test_guided_samples_follow_the_closed_form_of_equal_variance_gaussians(w):
    """Class ``N(m_c, s^2)``, null ``N(m_0, s^2)``: the guided score is the score of
    ``N(m_0 + w (m_c - m_0), s^2)`` at every time, so guided sampling must end there."""
    process = _process()
    m_c, m_0, var = torch.tensor([[[1.0, -0.5], [0.25, 0.0]]]), torch.zeros(1, 2, 2), 0.09
    model = ExactClassDenoiser(process, m_c[None], var, null_mean=m_0)
    n = 4000
    out = sample(model, process, n, sampler="dpmpp-2m", steps=40, labels=torch.zeros(n), guidance=w)
    want = m_0 + w * (m_c - m_0)
    se = math.sqrt(var / n)
    assert (out.u.mean(0) - want).abs().max() < 4 * se
    torch.testing.assert_close(out.u.var(0), torch.full_like(want, var), rtol=0.08, atol=0)


def test_guidance_pushes_mixture_samples_towards_their_class():
    """Two classes at +-mu, null = their mixture: guided samples of class 0 move away from class
    1 as the guidance grows, with the mean beyond mu for w > 1."""
    process = _process((1, 1, 2))
    mu = torch.tensor([[[0.6, 0.0]]])
    model = ExactClassDenoiser(process, torch.stack([mu, -mu]), 0.16)
    n, means = 2000, []
    for w in (0.0, 1.0, 2.0, 4.0):
        out = sample(
            model,
            process,
            n,
            sampler="dpmpp-2m",
            steps=30,
            labels=torch.zeros(n),
            guidance=w,
            seed=1,
        )
        means.append(out.u[:, 0, 0, 0].mean().item())
    assert abs(means[0]) < 0.05  # w = 0: the mixture, centred
    assert abs(means[1] - 0.6) < 0.05  # w = 1: the class
    assert means[1] < means[2] < means[3]


# -------------------------------------------------------------------------- train / sample
def test_class_conditional_training_resumes_bit_identically_and_samples_classes(tmp_path):
    _, b = assert_resume_exact(tmp_path, None, TINY, keys=["*label_emb*"])
    labels = torch.tensor([0, 3, 5])
    one = sample_run(b, n=3, labels=labels, guidance=2.0)
    split = sample_run(b, n=3, labels=labels, guidance=2.0, batch_size=2)
    torch.testing.assert_close(one.images, split.images, rtol=1e-4, atol=1e-4)
    png = tmp_path / "rows.png"
    assert (
        main(["sample", str(b), "--classes", "0,1,2", "--n-samples", "2", "--out", str(png)]) == 0
    )
    assert png.is_file()
    with pytest.raises(ValueError, match="labels must lie in 0..5"):
        sample_run(b, n=1, labels=torch.tensor([6]))
    cfg, model = load_run(b)
    unconditional = sample(model, model.process, 2, steps=2)  # the null label
    assert torch.isfinite(unconditional.images).all()


def test_labels_and_guidance_need_a_class_conditional_model(tmp_path):
    with pytest.raises(ConfigError, match="sample.guidance needs a class-conditional"):
        load_config(None, ["sample.guidance=2"])
    with pytest.raises(ConfigError, match="guidance_interval"):
        load_config(None, [*TINY, "sample.guidance_interval=[0.5, 0.2]"])
    cfg = load_config(None, [t for t in TINY if not t.startswith("model.num_classes")])
    model = build_denoiser(cfg, build_process(cfg))
    with pytest.raises(ValueError, match="class-conditional model"):
        sample(model, model.process, 2, steps=2, labels=torch.zeros(2))


def test_eval_fd_scores_one_class_and_its_accuracy(tmp_path):
    """Feature net and reference with labels; a class-conditional run sampled for one class."""
    from nudiff.eval.commands import eval_fd
    from nudiff.eval.features import save_feature_net, train_feature_net

    tiny = train_args(tmp_path, TINY)
    assert main(["train", *tiny, "--out", str(tmp_path / "run")]) == 0
    cfg = load_config(None, TINY)
    data = build_data(cfg, labelled=True)
    x = ((load_batch(data, range(64)) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    y = data.targets.numpy()
    np.savez(tmp_path / "ref.npz", x_train=x, y_train=y)
    net, _ = train_feature_net(x, y, steps=5, seed=0)
    save_feature_net(net, tmp_path / "f.safetensors")
    c = int(y[0])
    n = int((y == c).sum())
    out = eval_fd(
        features=tmp_path / "f.safetensors",
        ref=tmp_path / "ref.npz",
        run=tmp_path / "run",
        n=n,
        class_label=c,
        guidance=2.0,
        progress=False,
    )
    assert out["class_label"] == c and 0.0 <= out["class_accuracy"] <= 1.0
    assert math.isfinite(out["fd"])
