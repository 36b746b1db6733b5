"""Beta diffusion on the 1-D toys: KLUB vs the ELBO vs a Gaussian diffusion of the same MLP.

Trains ``configs/beta_toy1.yaml`` on Toy1 and Toy2 (``--toys``) three ways (``--losses``):
Beta diffusion with KLUB, Beta diffusion with the swapped-argument ELBO, and a Gaussian
diffusion (VP cosine on the pixel basis, EDM preconditioning, the same MLP and training
budget), each for ``--steps`` steps through the normal trainer, or reuses the runs under
``--out``. Then ``--n-samples`` samples of each (Beta: ``--sample-steps`` multiplicative steps;
Gaussian: as many DPM-Solver++(2M) SDE steps) are compared with as many fresh draws of the toy
on 100 bins over [0, 1]: ``jsd2 = KL(p || m) + KL(q || m)`` (twice the Jensen-Shannon
divergence, the paper's metric; natural logs) and total variation. Gaussian samples outside
[0, 1] are clipped into the end bins. Writes ``--json`` with rows ``data, loss, steps, jsd2,
tv`` (and timings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import environment, train_or_reuse, write_json

ROOT = Path(__file__).resolve().parents[1]
BINS = 100
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
    p.add_argument("--steps", type=int, default=6000, help="training steps per model")
    p.add_argument("--toys", default="toy1,toy2")
    p.add_argument("--losses", default="klub,elbo,gaussian")
    p.add_argument("--n-samples", type=int, default=100_000)
    p.add_argument("--sample-steps", type=int, default=200)
    p.add_argument("--config", default=str(ROOT / "configs" / "beta_toy1.yaml"))
    p.add_argument("--out", default="runs/beta_toy")
    p.add_argument("--set", action="append", default=[], help="override a config key")
    p.add_argument("--seed", type=int, default=0)


def histogram(values: np.ndarray) -> np.ndarray:
    """Probabilities of ``BINS`` equal bins over [0, 1] (values outside in the end bins)."""
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=BINS, range=(0.0, 1.0))
    return counts / counts.sum()


def jsd2(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p || m) + KL(q || m)`` with ``m = (p + q) / 2`` (natural logs; 0 log 0 = 0)."""
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return kl(p) + kl(q)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def config_for(args, toy: str, loss: str):
    from nudiff.config import load_config

    sets = [f"data.key={toy}", f"train.steps={args.steps}", f"train.seed={args.seed}"]
    sets += ["train.sample_every=0", "train.tensorboard=false", f"sample.steps={args.sample_steps}"]
    if loss == "gaussian":
        sets += GAUSSIAN
    else:
        sets.append(f"loss.beta.type={loss}")
    return load_config(args.config, [*sets, *args.set])


def run(args) -> dict:
    from nudiff.data.toy import toy_values
    from nudiff.run import sample_run

    toys, losses = args.toys.split(","), args.losses.split(",")
    out = Path(args.out)
    rows = []
    for toy in toys:
        # fresh draws of the toy (another seed than the training set's)
        reference = histogram(toy_values(toy, args.n_samples, seed=args.seed + 1))
        for loss in losses:
            cfg = config_for(args, toy, loss)
            run_dir = out / f"{toy}_{loss}"
            print(f"== {toy} / {loss}: training {args.steps} steps into {run_dir}", flush=True)
            trained = train_or_reuse(cfg, run_dir)
            result = sample_run(
                run_dir, n=args.n_samples, seed=args.seed, batch_size=25_000, progress=True
            )
            values = (result.images.double().flatten().numpy() + 1) / 2
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
        "environment": environment(),
        "n_samples": args.n_samples,
        "bins": BINS,
        "sample_steps": args.sample_steps,
        "rows": rows,
    }
    write_json(result, args.json)
    return result
