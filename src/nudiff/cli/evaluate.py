"""``nudiff eval nll``, ``nudiff eval fd`` and ``nudiff features train``."""

from __future__ import annotations

from nudiff.cli.common import add_seed_device, command, is_main, print_result, ranks, single_process
from nudiff.cli.vocabulary import add, deprecated


def _eval_nll(args) -> None:
    from nudiff.eval.commands import eval_nll

    with ranks(args.device) as device:
        result = eval_nll(
            args.run,
            data=args.data,
            n=args.n_images,
            batch_size=args.batch_size,
            ema=args.ema,
            device=device,
            seed=args.seed,
            divergence=args.divergence,
            rtol=args.rtol,
            atol=args.atol,
            n_probes=args.probes,
            method=args.method,
            n_times=args.times,
            discrete_steps=args.discrete_steps,
            progress=is_main(),
        )
    if is_main():
        print_result(result, args.json, ("method", "nll_bpd", "stderr", "n", "nfe_mean", "seconds"))


def _eval_fd(args) -> None:
    from nudiff.eval.commands import eval_fd

    with ranks(args.device) as device:
        result = eval_fd(
            features=args.features,
            inception_weights=args.inception_weights,
            ref=args.ref,
            run=args.run,
            samples=args.samples,
            n=args.n_samples,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            ema=args.ema,
            device=device,
            batch_size=args.batch_size,
            class_label=args.class_label,
            guidance=args.guidance,
            progress=is_main(),
        )
    if is_main():
        print_result(result, args.json, ("fd", "kid", "kid_std", "n", "nfe", "class_accuracy"))


def _features_train(args) -> None:
    from nudiff.devices import resolve_device
    from nudiff.eval.commands import train_features

    single_process("nudiff features train")
    result = train_features(
        args.data,
        args.out,
        steps=args.train_steps,
        batch_size=args.batch_size,
        resolution=args.resolution,
        holdout=args.holdout,
        seed=args.seed,
        device=resolve_device(args.device),
    )
    print_result(result, args.json, ("accuracy", "n_train", "n_holdout", "seconds", "out"))


def register(sub) -> None:
    ev = command(sub, "eval", "likelihood (bits/dim) and Frechet distances (FID, KID)")
    ev_sub = ev.add_subparsers(dest="metric", required=True, metavar="METRIC")

    nll = command(
        ev_sub,
        "nll",
        "NLL in bits/dim: the probability-flow ODE's, or the variational bound "
        "(torchrun: the images split over the ranks)",
    )
    nll.add_argument("run", help="run folder or checkpoint folder")
    add(
        nll,
        "--data",
        ".npz of uint8 images, its last --n-images (default: the run's held-out split)",
    )
    add(nll, "--n-images", "images to score", default=1000)
    deprecated(nll, "--n", "--n-images")
    add(nll, "--batch-size", default=64)
    add(
        nll,
        "--method",
        "ode: the PF-ODE density (dopri5); elbo: the continuous-time variational bound (an "
        "upper bound); elbo-discrete: the --discrete-steps-step bound (NDM models use theirs)",
        default="ode",
        choices=["ode", "elbo", "elbo-discrete"],
    )
    add(nll, "--times", "elbo: denoiser calls per image", default=64)
    add(nll, "--discrete-steps", default=1000)
    add(nll, "--divergence", default="auto", choices=["auto", "exact", "hutchinson"])
    add(nll, "--probes", default=1)
    add(nll, "--rtol", default=1e-5)
    add(nll, "--atol", default=1e-5)

    fd = command(
        ev_sub,
        "fd",
        "Frechet distance and KID against reference images: FID with --features inception "
        "(torchrun: the samples split over the ranks)",
    )
    fd.add_argument("run", nargs="?", default=None, help="run to sample (or give --samples)")
    add(fd, "--samples")
    add(fd, "--ref", required=True)
    add(fd, "--features", required=True)
    add(fd, "--inception-weights")
    add(fd, "--n-samples", "generated and reference images", default=5000)
    deprecated(fd, "--n", "--n-samples")
    add(fd, "--sampler", "sampler (default: the run config's)")
    add(fd, "--steps", "sampler steps (default: the run config's)")
    add(fd, "--batch-size", default=256)
    add(
        fd,
        "--class",
        "class-conditional runs: sample this class, score it against the reference images of "
        "that class, and report the share classified as it",
        dest="class_label",
    )
    add(fd, "--guidance", "with --class (default: the config's)")
    for e in (nll, fd):
        add(e, "--ema", default=True)
        add(e, "--json")
        add_seed_device(e)
    nll.set_defaults(func=_eval_nll)
    fd.set_defaults(func=_eval_fd)

    feat = command(sub, "features", "the offline feature network for Frechet distances")
    feat_sub = feat.add_subparsers(dest="action", required=True, metavar="ACTION")
    ft = command(feat_sub, "train", "train a small classifier on labelled images")
    add(ft, "--data", ".npz with x_train and y_train", required=True)
    add(ft, "--out", "the feature network's .safetensors file", required=True)
    add(ft, "--train-steps", default=1500)
    add(ft, "--batch-size", default=128)
    add(ft, "--resolution", "centre pad/crop to this size (e.g. 32 for MNIST models at 32x32)")
    add(ft, "--holdout", default=0.1)
    add(ft, "--json")
    add_seed_device(ft)
    ft.set_defaults(func=_features_train)
