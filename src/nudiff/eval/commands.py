"""What ``nudiff eval nll``, ``nudiff eval fd`` and ``nudiff features train`` do, as functions
returning JSON-ready dicts (every figure with its sample count)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nudiff.data.transforms import float_to_uint8, pad_to, to_channels, uint8_to_float


def fit_images(images: np.ndarray | torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images, a numpy ``(N, H, W[, C])`` array or a tensor ``(N, C, H, W)`` -> uint8
    ``(N, *shape)``: grey <-> RGB as in training, centred on a background canvas or
    centre-cropped (MNIST 28 -> 32, as the ``pad`` data option), so pixel values stay exact."""
    from nudiff.eval.features import _uint8_nchw

    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        x = images
    else:
        x = _uint8_nchw(images)
    if x.shape[1:] == shape:
        return x.contiguous()
    return float_to_uint8(pad_to(to_channels(uint8_to_float(x), shape[0]), shape[1]))


def _npz_images(
    path: str | Path, n: int, last: bool = True, label: int | None = None
) -> np.ndarray:
    """The last (or first) ``n`` uint8 images (``x_train``) of an ``.npz``; with ``label``, of
    that class only (its ``y_train``)."""
    from nudiff.eval.features import load_images_npz

    images, labels = load_images_npz(path)
    if label is not None:
        if labels is None:
            raise ValueError(f"--class needs labels (y_train) in {path}")
        images = images[labels == label]
    if n > len(images):
        which = f" of class {label}" if label is not None else ""
        raise ValueError(f"{n} images asked for, but {path} holds {len(images)}{which}")
    return images[-n:] if last else images[:n]


def _eval_images(cfg, data: str | None, n: int) -> torch.Tensor:
    """The last ``n`` images of ``data`` (an .npz), or of the run's held-out split (for the
    procedural datasets without one: fresh draws), as uint8 ``(n, C, H, W)`` at the run's
    resolution."""
    from nudiff.data import build_dataset

    shape = cfg.data.image_shape
    if data is not None:
        return fit_images(_npz_images(data, n), shape)
    if cfg.data.holdout >= 1:
        split = build_dataset(cfg.data, "holdout")
    elif cfg.data.name in ("shapes", "fields"):
        # procedural data: fresh draws from another seed are images the run never saw
        split = build_dataset(cfg.data.model_copy(update={"seed": cfg.data.seed + 1}))
    else:
        raise ValueError("the run has no held-out split (data.holdout = 0): pass --data DATA.npz")
    if n > len(split):
        raise ValueError(f"--n-images {n} exceeds the run's {len(split)} held-out images")
    x = torch.stack([split[i] for i in range(len(split) - n, len(split))])
    return float_to_uint8(x)


def eval_nll(
    run: str | Path,
    *,
    data: str | None = None,
    n: int = 1000,
    batch_size: int = 64,
    ema: bool = True,
    device=None,
    seed: int = 0,
    divergence: str = "auto",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    n_probes: int = 1,
    progress: bool = True,
    method: str = "ode",
    n_times: int = 64,
    discrete_steps: int = 1000,
) -> dict:
    """NLL in bits/dim of a run on ``n`` images (see :func:`nudiff.eval.likelihood.nll_bpd`):
    ``method`` ``ode`` (PF-ODE; ``divergence``, ``rtol``, ``atol``, ``n_probes``) or ``elbo``
    (the variational bound with ``n_times`` denoiser calls per image) or ``elbo-discrete``
    (the ``discrete_steps``-step bound, ``n_times`` draws per image). An NDM run
    (``process.transform``) is scored with its own bound and PF-ODE."""
    from nudiff.eval.likelihood import nll_bpd
    from nudiff.run import load_run

    if n < 1 or batch_size < 1:
        raise ValueError(f"--n-images and --batch-size must be >= 1, got {n}, {batch_size}")
    from nudiff.families import family_of
    from nudiff.families.features import require

    cfg, model = load_run(run, ema=ema, device=device)
    require(cfg, "likelihood")  # a Beta model, a one-step generator: no density here
    images = _eval_images(cfg, data, n)
    if method == "elbo":
        settings = {"n_times": n_times}
    elif method == "elbo-discrete":
        settings = {"n_times": n_times, "steps": discrete_steps}
    else:
        settings = {"divergence": divergence, "rtol": rtol, "atol": atol, "n_probes": n_probes}
    out = nll_bpd(
        model,
        model.process,
        images,
        methods=family_of(cfg).likelihoods(model),
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        method=method,
        **settings,
    )
    return {
        "run": str(run),
        "data": data or "run holdout split",
        "ema": ema,
        "method": method,
        **settings,
        **out,
    }


def eval_fd(
    *,
    features: str | Path,
    ref: str | Path,
    run: str | Path | None = None,
    samples: str | Path | None = None,
    n: int = 5000,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    ema: bool = True,
    device="auto",
    batch_size: int = 256,
    kid_subsets: int = 100,
    progress: bool = True,
    class_label: int | None = None,
    guidance: float | None = None,
    inception_weights: str | Path | None = None,
) -> dict:
    """Frechet distance and KID between ``n`` generated (or ``samples``) images and the last
    ``n`` images of ``ref``, in the feature space ``features``: ``"inception"`` (FID proper:
    Inception-v3 pool3 with the weights file ``inception_weights``, see
    :mod:`nudiff.eval.inception`) or a feature network file (``nudiff features train``).

    ``class_label``: a class-conditional run samples that class (with classifier-free
    ``guidance``, default the run config's), the reference is the last ``n`` images of that class,
    and, with a feature network trained on the same labels, ``class_accuracy`` is the share of
    generated images it classifies as that class. Under torchrun the samples are drawn by all
    ranks (``n`` must split evenly over them) and scored on rank 0, which returns the
    single-process result (the other ranks return an empty dict)."""
    from nudiff.devices import resolve_device

    if (run is None) == (samples is None):
        raise ValueError("give exactly one of a run to sample and --samples SAMPLES.npz")
    if n < 2:
        raise ValueError(f"--n-samples must be >= 2, got {n}")
    device = resolve_device(device)
    net, shape, extract, kid_seed = _feature_space(features, inception_weights, device)
    ref_images = _npz_images(ref, n, label=class_label)
    if samples is not None:
        gen, info = _npz_images(samples, n, last=False), {}
    else:
        gen, info = _sample_images(
            run,
            n=n,
            sampler=sampler,
            steps=steps,
            seed=seed,
            ema=ema,
            device=device,
            progress=progress,
            batch_size=batch_size,
            labels=None if class_label is None else torch.full((n,), class_label),
            guidance=guidance,
        )
        if gen is None:  # not rank 0, which scores every rank's samples
            return {}
    if shape is not None:  # the feature network's own input size and channels
        ref_images, gen = fit_images(ref_images, shape), fit_images(gen, shape)
    if class_label is not None:
        info.update(class_label=class_label, guidance=guidance)
        if shape is not None:  # a feature network classifies the data's classes
            info["class_accuracy"] = _class_accuracy(net, gen, class_label)
    return {
        **_distances(extract(gen), extract(ref_images), kid_subsets, kid_seed),
        "n": n,
        "n_ref": n,
        "features": str(features),
        **({"inception_weights": str(net.path)} if shape is None else {}),
        "ref": str(ref),
        "source": str(samples) if samples is not None else str(run),
        **({"sampler": sampler, "steps": steps} if run is not None else {}),
        **info,
    }


def _feature_space(
    features: str | Path, inception_weights: str | Path | None, device: torch.device
) -> tuple[torch.nn.Module, tuple[int, int, int] | None, Callable, int]:
    """``(net, shape, extract, kid_seed)`` of :func:`eval_fd`'s ``features``: Inception-v3
    (``shape`` None: it resizes any image itself) or a feature network (its input ``shape``
    ``(C, R, R)``); ``extract``: uint8 images ``(N, C, H, W)`` -> features ``(N, D)``."""
    if str(features) == "inception":
        from nudiff.eval.inception import InceptionV3

        net = InceptionV3(inception_weights, device)
        return net, None, net.features, 2020  # torch-fidelity's seed: its KID subsets
    from nudiff.eval.features import extract_features, load_feature_net

    if inception_weights is not None:
        raise ValueError("--inception-weights goes with --features inception")
    net = load_feature_net(features).to(device)
    shape = (net.in_channels, net.resolution, net.resolution)
    return net, shape, functools.partial(extract_features, net), 0


def _sample_images(run: str | Path, **kw) -> tuple[torch.Tensor | None, dict]:
    """Images of ``run`` (:func:`nudiff.run.sample_run` with ``kw``) as uint8 ``(n, C, H, W)``
    on the CPU, and the sampling cost; under torchrun, ``(None, {})`` on ranks other than 0."""
    from nudiff.run import sample_run
    from nudiff.training import distributed

    result = sample_run(run, **kw)
    gen = float_to_uint8(result.images.clamp(-1, 1)).cpu()
    if not distributed.is_main():
        return None, {}
    return gen, {"nfe": result.nfe, "sampling_seconds": result.seconds}


def _class_accuracy(net: torch.nn.Module, images: torch.Tensor, label: int) -> float:
    """The share of uint8 ``images`` ``(N, C, H, W)`` the feature network puts in class
    ``label``."""
    from nudiff.eval.features import classify

    return float((classify(net, images) == label).mean())


def _distances(f_gen: torch.Tensor, f_ref: torch.Tensor, kid_subsets: int, kid_seed: int) -> dict:
    """Frechet distance and KID (mean and std over ``kid_subsets`` subsets) of features
    ``(N, D)``."""
    from nudiff.eval.frechet import frechet_distance, gaussian_stats, kid

    fd = frechet_distance(*gaussian_stats(f_gen), *gaussian_stats(f_ref))
    kid_mean, kid_std = kid(f_gen, f_ref, subsets=kid_subsets, seed=kid_seed)
    return {"fd": fd, "kid": kid_mean, "kid_std": kid_std}


def train_features(
    data: str | Path,
    out: str | Path,
    *,
    steps: int = 1500,
    batch_size: int = 128,
    resolution: int | None = None,
    holdout: float = 0.1,
    seed: int = 0,
    device="cpu",
) -> dict:
    """Train the offline feature network on the labelled images of ``data`` (.npz with
    ``y_train``), at ``resolution`` (centre pad/crop; default: the images' own), on
    ``device``."""
    from nudiff.eval.features import load_images_npz, save_feature_net, train_feature_net

    images, labels = load_images_npz(data)
    if labels is None:
        raise ValueError(f"{data} has no labels (y_train): the feature network is a classifier")
    if resolution is not None:
        channels = 1 if images.ndim == 3 else images.shape[-1]
        images = fit_images(images, (channels, resolution, resolution)).permute(0, 2, 3, 1)
        images = images.numpy()
    net, info = train_feature_net(
        images,
        labels,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        holdout=holdout,
        device=device,
    )
    info = {**info, "data": str(data)}
    save_feature_net(net, out, info)
    return {**info, "out": str(out)}


def export_data(
    config: str | Path | None,
    out: str | Path,
    *,
    n: int,
    split: str = "train",
    overrides: list[str] | None = None,
    batch_size: int = 500,
) -> dict:
    """Write the first ``n`` images of a config's dataset ``split`` to an .npz as ``x_train``
    (uint8 ``(n, H, W, C)``), with ``y_train`` when the dataset has labels (the built-in
    shapes do), e.g. to train the feature network on them or to use them as FD reference."""
    from nudiff.config import load_config
    from nudiff.data import build_dataset, to_uint8

    cfg = load_config(config, overrides)
    dataset = build_dataset(cfg.data, split)
    if not 1 <= n <= len(dataset):
        raise ValueError(f"--n-images must be in [1, {len(dataset)}] for this split, got {n}")
    base = getattr(dataset, "dataset", dataset)
    offset = dataset.indices[0] if base is not dataset else 0
    images = [
        to_uint8(torch.stack([dataset[i] for i in range(a, min(a + batch_size, n))]))
        for a in range(0, n, batch_size)
    ]
    arrays = {"x_train": np.concatenate(images)}
    if hasattr(base, "labels"):
        arrays["y_train"] = base.labels(range(offset, offset + n))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {
        "out": str(out),
        "n": n,
        "shape": list(arrays["x_train"].shape[1:]),
        "labels": "y_train" in arrays,
    }
