"""Beta diffusion on the 1-D toys: KLUB vs the ELBO vs a Gaussian diffusion of the same MLP.

Trains the packaged ``beta_toy1.yaml`` (``--config``) on Toy1 and Toy2 (``--toys``) three ways
(``--losses``):
Beta diffusion with KLUB, Beta diffusion with the swapped-argument ELBO, and a Gaussian
diffusion (VP cosine on the pixel basis, EDM preconditioning, the same MLP and training
budget), each for ``--train-steps`` steps through the normal trainer, or reuses the runs under
``--out``. Then ``--n-samples`` samples of each (Beta: ``--steps`` multiplicative steps;
Gaussian: as many DPM-Solver++(2M) SDE steps) are compared with as many fresh draws of the toy
on 100 bins over [0, 1]: ``jsd2 = KL(p || m) + KL(q || m)`` (twice the Jensen-Shannon
divergence, the paper's metric; natural logs) and total variation. Gaussian samples outside
[0, 1] are clipped into the end bins. Writes ``--json`` with rows ``data, loss, steps, jsd2,
tv`` (and timings).
"""

from __future__ import annotations

from pathlib import Path

from nudiff.bench.common import environment, train_or_reuse, write_json
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR

BINS = 100
TOYS = ("toy1", "toy2")
LOSSES = ("klub", "elbo", "gaussian")
GAUSSIAN = [
    "process.family=gaussian",
    "process.beta=null",
    "loss.beta=null",
    "process.schedule={type: vp-cosine}",
    "model.prediction=edm",
    "model.sigma_data=data",
    "sample.sampler=dpmpp-2m-sde",
]


def add_arguments(p) -> None:
    # --steps meant the training steps before the one vocabulary: now --train-steps
    add(p, "--train-steps", default=6000)
    add(p, "--toys", f"1-D toy data sets: {', '.join(TOYS)}", many=True, default=list(TOYS))
    losses = "klub and elbo: Beta diffusion with that loss; gaussian: a Gaussian diffusion"
    add(p, "--losses", losses, many=True, default=list(LOSSES))
    add(p, "--n-samples", "samples per model, and fresh draws of the toy", default=100_000)
    add(p, "--steps", "sampler steps (Beta: multiplicative steps)", default=200)
    deprecated(p, "--sample-steps", "--steps")
    add(p, "--config", default=str(CONFIG_DIR / "beta_toy1.yaml"))
    add(p, "--out", "folder of the runs", default="runs/beta_toy")
    add(p, "--set")


def histogram(values):
    """Probabilities of ``BINS`` equal bins over [0, 1] (values outside in the end bins)."""
    import numpy as np

    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=BINS, range=(0.0, 1.0))
    return counts / counts.sum()


def jsd2(p, q) -> float:
    """``KL(p || m) + KL(q || m)`` with ``m = (p + q) / 2`` (natural logs; 0 log 0 = 0)."""
    import numpy as np

    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return kl(p) + kl(q)


def total_variation(p, q) -> float:
    return float(0.5 * abs(p - q).sum())


def config_for(args, toy: str, loss: str):
    from nudiff.config import load_config

    sets = [f"data.key={toy}", f"train.steps={args.train_steps}", f"train.seed={args.seed}"]
    sets += ["train.sample_every=0", "train.tensorboard=false", f"sample.steps={args.steps}"]
    if loss == "gaussian":
        sets += GAUSSIAN
    else:
        sets.append(f"loss.beta.type={loss}")
    return load_config(args.config, [*sets, *(args.set or [])])


def run(args) -> dict:
    import numpy as np

    from nudiff.data.toy import toy_values
    from nudiff.devices import resolve_device
    from nudiff.run import sample_run

    device = resolve_device(args.device)
    toys, losses = list(args.toys), list(args.losses)
    unknown = sorted(set(losses) - set(LOSSES))
    if unknown:
        raise ValueError(f"--losses: unknown {unknown}; known: {', '.join(LOSSES)}")
    out = Path(args.out)
    rows = []
    for toy in toys:
        # fresh draws of the toy (another seed than the training set's)
        reference = histogram(toy_values(toy, args.n_samples, seed=args.seed + 1))
        for loss in losses:
            cfg = config_for(args, toy, loss)
            run_dir = out / f"{toy}_{loss}"
            steps = args.train_steps
            print(f"== {toy} / {loss}: training {steps} steps into {run_dir}", flush=True)
            trained = train_or_reuse(cfg, run_dir, device)
            result = sample_run(
                run_dir,
                n=args.n_samples,
                seed=args.seed,
                batch_size=25_000,
                progress=True,
                device=device,
            )
            values = (result.images.cpu().double().flatten().numpy() + 1) / 2
            q = histogram(values)
            row = {
                "data": toy,
                "loss": loss,
                "steps": trained["steps"],
                "jsd2": jsd2(reference, q),
                "tv": total_variation(reference, q),
                "nfe": result.nfe,
                "train_seconds": trained["seconds"],
                "sample_seconds": result.seconds,
                "outside_01": float(np.mean((values < 0) | (values > 1))),
            }
            print(
                "   "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
            rows.append(row)
    result = {
        "benchmark": "beta-toy",
        "environment": environment(device),
        "n_samples": args.n_samples,
        "bins": BINS,
        "sample_steps": args.steps,
        "rows": rows,
    }
    write_json(result, args.json)
    return result
