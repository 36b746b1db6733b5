"""Training-step overhead: the full nudiff training step against the bare backbone's
forward + backward + AdamW step on the same batch, in the same process.

The full step is everything the trainer does per step: draw t and eps for the batch, map the
images to whitened components, noise them, precondition, run the backbone through the basis,
weight the loss, backward, clip, AdamW, LR schedule, EMA.
"""

from __future__ import annotations

import copy
import tempfile

import torch
import torch.nn.functional as F

from benchmarks.common import environment, interleaved_timings, median, write_json


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="config (default: the quick start's)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--res", type=int, default=32, help="image size (the target is set at 32x32)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")


def run(args) -> dict:
    from pathlib import Path

    from nudiff.build import build_data, build_denoiser, build_loss, build_process
    from nudiff.config import load_config
    from nudiff.data import load_batch
    from nudiff.train.trainer import Trainer

    config = args.config or Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    overrides = [
        f"train.batch_size={args.batch}",
        f"data.resolution={args.res}",
        "train.tensorboard=false",
        "model.multiscale=null",  # one backbone: the baseline is that backbone alone
        *(args.set or []),
    ]
    cfg = load_config(config, overrides)
    dataset = build_data(cfg)
    process = build_process(cfg, dataset)
    model = build_denoiser(cfg, process, dataset)
    x0 = load_batch(dataset, list(range(args.batch)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, build_loss(cfg, process, model), dataset, cfg.train, tmp)

        def full_step():
            trainer.train_step(x0, trainer.draw_noise(), need_grad_norm=False)

        # the baseline: a copy of the same backbone on the same images, nothing else
        bare = copy.deepcopy(model.backbone)
        opt = torch.optim.AdamW(bare.parameters(), lr=cfg.train.lr)
        c = torch.rand(args.batch, model.backbone.noise_features)
        target = torch.randn_like(x0)

        def bare_step():
            loss = F.mse_loss(bare(x0, c), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(2):  # warm-up
            full_step()
            bare_step()
        t = interleaved_timings({"full": full_step, "bare": bare_step}, args.rounds, args.reps)
    full_s, bare_s = median(t["full"]), median(t["bare"])
    result = {
        "benchmark": "train",
        "resolution": cfg.data.resolution,
        "batch": args.batch,
        "parameters": model.backbone.num_parameters(),
        "full_images_per_s": args.batch / full_s,
        "bare_images_per_s": args.batch / bare_s,
        "overhead": full_s / bare_s - 1,
        "rounds": args.rounds,
        "reps": args.reps,
        "env": environment(),
    }
    print(
        f"{cfg.data.resolution}x{cfg.data.resolution}, batch {args.batch}, "
        f"{result['parameters']:,} parameters: full step {result['full_images_per_s']:.1f} "
        f"images/s, bare backbone {result['bare_images_per_s']:.1f} images/s, "
        f"overhead {100 * result['overhead']:+.1f}%"
    )
    write_json(result, getattr(args, "json", None))
    return result
