"""Training-step overhead: the full nudiff training step against the bare backbone's
forward + backward + AdamW step on the same batch, in the same process.

The full step is everything the trainer does per step: draw t and eps for the batch, map the
images to whitened components, noise them, precondition, run the backbone through the basis,
weight the loss, backward, clip, AdamW, LR schedule, EMA.
"""

from __future__ import annotations

import copy
import tempfile

from nudiff.bench.common import environment, interleaved_timings, median, write_json
from nudiff.cli.vocabulary import add, deprecated
from nudiff.config_files import CONFIG_DIR


def add_arguments(p) -> None:
    add(p, "--config", default=str(CONFIG_DIR / "quickstart.yaml"))
    add(p, "--batch-size", "images per training step", default=64)
    deprecated(p, "--batch", "--batch-size")
    add(p, "--resolution", "image size (the target is set at 32x32)", default=32)
    deprecated(p, "--res", "--resolution")
    add(p, "--rounds", default=5)
    add(p, "--reps", "training steps per timing round", default=4)
    add(p, "--set")


def run(args) -> dict:
    import torch
    import torch.nn.functional as F

    from nudiff.build import build_data, build_denoiser, build_loss, build_process
    from nudiff.config import load_config
    from nudiff.data import load_batch
    from nudiff.devices import resolve_device
    from nudiff.training.trainer import Trainer

    device = resolve_device(args.device)
    overrides = [
        f"train.batch_size={args.batch_size}",
        f"data.resolution={args.resolution}",
        "train.tensorboard=false",
        "model.multiscale=null",  # one backbone: the baseline is that backbone alone
        *(args.set or []),
    ]
    cfg = load_config(args.config, overrides)
    dataset = build_data(cfg)
    process = build_process(cfg, dataset)
    model = build_denoiser(cfg, process, dataset)
    x0 = load_batch(dataset, list(range(args.batch_size))).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        loss = build_loss(cfg, process, model)
        trainer = Trainer(model, loss, dataset, cfg.train, tmp, device=device)

        def full_step():
            trainer.train_step(x0, trainer.draw_noise(), need_grad_norm=False)

        # the baseline: a copy of the same backbone on the same images, nothing else
        bare = copy.deepcopy(model.backbone)
        opt = torch.optim.AdamW(  # fused on CUDA, as the trainer's
            bare.parameters(), lr=cfg.train.lr, fused=device.type == "cuda" or None
        )
        c = torch.rand(args.batch_size, model.backbone.noise_features, device=device)
        target = torch.randn_like(x0)

        def bare_step():
            loss = F.mse_loss(bare(x0, c), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(2):  # warm-up
            full_step()
            bare_step()
        steps = {"full": full_step, "bare": bare_step}
        t = interleaved_timings(steps, args.rounds, args.reps, device)
    full_s, bare_s = median(t["full"]), median(t["bare"])
    result = {
        "benchmark": "train",
        "resolution": cfg.data.resolution,
        "batch": args.batch_size,
        "parameters": model.backbone.num_parameters(),
        "full_images_per_s": args.batch_size / full_s,
        "bare_images_per_s": args.batch_size / bare_s,
        "overhead": full_s / bare_s - 1,
        "rounds": args.rounds,
        "reps": args.reps,
        "env": environment(device),
    }
    print(
        f"{cfg.data.resolution}x{cfg.data.resolution}, batch {args.batch_size}, "
        f"{result['parameters']:,} parameters: full step {result['full_images_per_s']:.1f} "
        f"images/s, bare backbone {result['bare_images_per_s']:.1f} images/s, "
        f"overhead {100 * result['overhead']:+.1f}%"
    )
    write_json(result, args.json)
    return result
