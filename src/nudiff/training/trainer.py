"""The generic training loop: AdamW with LR warm-up, gradient clipping and accumulation, EMA,
mixed precision on CUDA, DDP, logs, sample grids and exactly resumable checkpoints.

Reproducibility: every random draw comes from a seeded source whose state is checkpointed or
derived from ``(seed, step)``. The data order is a permutation per epoch seeded by
``(seed, epoch)``; the loss's randomness is drawn for the global batch from the trainer's
generator (same state on every rank); augmentations use a generator seeded by
``(seed, step, rank)``. So a resumed run repeats an uninterrupted one bit for bit (on the CPU),
and N processes compute what one process computes with the same global batch (up to the
order of floating-point sums), augmentations aside.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from nudiff.training import distributed as dist
from nudiff.training.checkpoint import (
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from nudiff.training.config import TrainConfig
from nudiff.training.ema import EMA, ema_beta
from nudiff.training.logger import RunLogger
from nudiff.training.protocols import Augment, Loss, SampleFn

log = logging.getLogger("nudiff.training")

# purposes mixed into seeds, so that the streams are independent
_DATA, _NOISE, _AUGMENT, _GLOBAL, _SAMPLE = range(5)


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from non-negative integers, well mixed (``SeedSequence``)."""
    return int(np.random.SeedSequence(list(xs)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's indices of every global batch, forever, from ``(epoch, position)`` on.

    Each epoch is a permutation of the dataset seeded by ``(seed, epoch)``, cut into
    consecutive global batches of ``batch_size`` (the remainder is dropped); rank ``r`` takes
    rows ``[r * b, (r + 1) * b)`` of each, ``b = batch_size / world_size``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        position: int = 0,
    ):
        self.n, self.batch, self.seed = n, batch_size, seed
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self.epoch, self.position = epoch, position

    def __iter__(self):
        epoch, start = self.epoch, self.position
        while True:
            g = torch.Generator().manual_seed(mix_seed(self.seed, _DATA, epoch))
            perm = torch.randperm(self.n, generator=g)
            for b in range(start, self.n // self.batch):
                i = b * self.batch + self.offset
                yield perm[i : i + self.local].tolist()
            epoch, start = epoch + 1, 0


class StreamBatchSampler(Sampler[list[int]]):
    """This rank's indices of global batches whose size depends on the step (patch training's
    batch multiplier), forever, from step ``step`` at ``(epoch, position)`` on.

    The data order is :class:`EpochBatchSampler`'s (a permutation per epoch seeded by
    ``(seed, epoch)``), read as one stream: step ``k`` takes the next ``sizes(k)`` images
    (running on into the next epoch; ``position`` counts images); rank ``r`` takes rows
    ``[r * b, (r + 1) * b)`` of them, ``b = sizes(k) / world_size``.
    """

    def __init__(
        self,
        n: int,
        sizes,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
        position: int = 0,
        step: int = 0,
    ):
        self.n, self.sizes, self.seed = n, sizes, seed
        self.rank, self.world = rank, world_size
        self.epoch, self.position, self.step = epoch, position, step

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, _DATA, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        epoch, pos, step = self.epoch, self.position, self.step
        perm = self._perm(epoch)
        while True:
            size = self.sizes(step)
            rows = []
            while len(rows) < size:
                take = perm[pos : pos + size - len(rows)].tolist()
                rows += take
                pos += len(take)
                if pos == self.n:
                    epoch, pos = epoch + 1, 0
                    perm = self._perm(epoch)
            local = size // self.world
            yield rows[self.rank * local : (self.rank + 1) * local]
            step += 1


def collate_images(items: list) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Stack dataset items: tensors ``(C, H, W)`` -> ``(B, C, H, W)``; ``(image, label)`` pairs
    -> images ``(B, C, H, W)`` and int64 labels ``(B,)``."""
    if isinstance(items[0], tuple | list):
        images = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
        return images, torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    return torch.stack([torch.as_tensor(it) for it in items]).float()


class Trainer:
    """Trains ``model`` on ``dataset`` with ``loss``, writing everything under ``run_dir``.

    Args:
        model: the trainable module; its whole ``state_dict`` (buffers included) is saved.
        loss: a :class:`~nudiff.training.protocols.Loss`; moved to the device if a module. A
            :class:`~nudiff.training.protocols.PhasedLoss` (``phases(model)``: named parameter
            lists) trains several networks in turn: every step runs each phase's loss, backward
            pass and optimiser step (one AdamW and LR schedule per phase), then the EMA.
        dataset: items ``(C, H, W)`` float tensors in ``[-1, 1]``, or tuples of which the first
            element is one; must be deterministic (put randomness in ``augment``). ``None``: a
            data-free objective (distillation), called with ``x0 = None``; the batch is then
            the loss's draws.
        config: :class:`TrainConfig`.
        sample_fn: ``(model, n, generator) -> (n, C, H, W)`` in ``[-1, 1]``; called with the EMA
            model every ``sample_every`` steps to write ``RUN/samples/step_XXXXXX.png``.
        augment: ``(x, generator) -> x`` applied to each batch on the device.
        resolved_config: the full config as a plain dict, saved in each checkpoint.
        device: default ``cuda:LOCAL_RANK`` when available, else the CPU.

    Under torchrun (``WORLD_SIZE`` > 1) the constructor joins the process group; call
    :func:`nudiff.training.distributed.cleanup` at the end of the program.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss,
        dataset: Dataset,
        config: TrainConfig,
        run_dir: str | os.PathLike,
        sample_fn: SampleFn | None = None,
        augment: Augment | None = None,
        resolved_config: dict | None = None,
        device: str | torch.device | None = None,
    ):
        self.device = dist.setup(device)
        self.rank, self.world = dist.rank(), dist.world_size()
        config.check_world(self.world)
        if dataset is not None and len(dataset) < config.batch_size:
            raise ValueError(
                f"the dataset has {len(dataset)} images, fewer than "
                f"train.batch_size={config.batch_size}"
            )
        self.config, self.run_dir = config, Path(run_dir)
        self.dataset, self.sample_fn, self.augment = dataset, sample_fn, augment
        self.resolved_config = _plain_data(
            resolved_config or {"train": config.model_dump(mode="json")}
        )
        self.model = model.to(self.device)
        self.loss = loss.to(self.device) if isinstance(loss, nn.Module) else loss
        # a multi-scale model trains one of its networks per step: the others have no gradient
        self.ddp = dist.wrap(self.model, self.device, find_unused=_has_unused(self.model))
        self.ema = EMA(self.model)  # after DDP has broadcast rank 0's weights
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._setup_phases()
        self._setup_precision()
        self.generator = torch.Generator(self.device).manual_seed(mix_seed(config.seed, _NOISE))
        self._aug_generator = torch.Generator(self.device)
        self.local_batch = config.batch_size // self.world
        # patch training loads a multiple of the batch on some steps (a function of the step)
        self.variable_batch = (
            callable(getattr(self.loss, "batch_multiplier", None))
            and getattr(self.loss, "patch", None) is not None
        )
        self._setup_progress()

    def _setup_phases(self) -> None:
        """The loss's phases, each with its AdamW, LR schedule and mask of averaged parameters."""
        cfg = self.config
        # phases: (name, parameters); None names the single phase of an ordinary loss
        if callable(getattr(self.loss, "phases", None)):
            self.phases = [(k, list(v)) for k, v in self.loss.phases(self.model).items()]
        else:
            self.phases = [(None, self.params)]
        self.phased = self.phases[0][0] is not None
        self.phase_names = [name for name, _ in self.phases] if self.phased else []
        # which averaged parameters each phase trains (a phase's EMA flags, fixed for the run)
        self._phase_masks = [
            [id(p) in ids for p in self.ema.sources]
            for ids in ({id(p) for p in params} for _, params in self.phases)
        ]
        fused = self.device.type == "cuda" or None
        self.optimizers = [
            torch.optim.AdamW(
                params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused
            )
            for _, params in self.phases
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s))
            for opt in self.optimizers
        ]

    def _setup_precision(self) -> None:
        """Autocast dtype and gradient scaler: mixed precision applies on CUDA only."""
        amp = self.config.mixed_precision if self.device.type == "cuda" else "no"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

    def _setup_progress(self) -> None:
        """A fresh run's position (a checkpoint restores it) and logging state."""
        self.step = self.epoch = self.position = 0
        self.images_seen = 0  # images loaded so far (patch training: images, not pixels)
        self.elapsed = 0.0  # seconds of training before this fit(), from the checkpoint
        self._window: list[float] = []  # losses since the last log row
        self._phase_window: list[list[float]] = []  # each phase's, of a phased loss
        self.logger: RunLogger | None = None
        self._plot_t = -math.inf
        self._deadline = math.inf  # wall-clock end of the current fit() (max_minutes)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of a single-phase loss (the last phase's otherwise)."""
        return self.optimizers[-1]

    @property
    def scheduler(self):
        return self.schedulers[-1]

    # ------------------------------------------------------------------------------- step
    def train_step(
        self,
        x0: torch.Tensor | None,
        noise: dict[str, torch.Tensor],
        need_grad_norm: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimiser step on this rank's rows of a global batch; advances :attr:`step`.

        ``x0``: ``(B_local, C, H, W)`` on the device (None: a data-free loss); ``noise``: the
        matching rows of ``loss.draw`` (leading dimension ``B_local``). Per phase: accumulates
        ``grad_accum`` micro-batches (DDP averages gradients on the last one only), clips,
        steps the phase's AdamW and LR schedule; then the EMA. Returns the loss of these rows
        (summed over phases; each phase's is kept in :attr:`phase_losses`) and the last
        phase's gradient norm before clipping (``None`` if not clipping and not
        ``need_grad_norm``) as 0-dim device tensors: nothing here waits for the device.
        """
        n_micro = self.config.grad_accum
        xs = [None] * n_micro if x0 is None else x0.tensor_split(n_micro)
        parts = {
            k: v.tensor_split(n_micro) if isinstance(v, torch.Tensor) else [v] * n_micro
            for k, v in noise.items()
        }
        losses = torch.zeros(len(self.phases), device=self.device)
        trained = [False] * len(self.ema.sources)
        for j, ((phase, params), opt, sched, mask) in enumerate(
            zip(self.phases, self.optimizers, self.schedulers, self._phase_masks, strict=True)
        ):
            self.model.zero_grad(set_to_none=True)  # an earlier phase's gradients are not ours
            for i, x in enumerate(xs):
                sync = i == n_micro - 1 or self.ddp is self.model
                rows = {k: v[i] for k, v in parts.items()}
                losses[j] += self._forward_backward(x, rows, phase, sync)
            norm = self._optimizer_step(opt, params, need_grad_norm)
            # parameters without a gradient (a multi-scale model's networks of other scales)
            # were not trained: their averages wait for their own steps
            trained = [
                done or (m and p.grad is not None)
                for done, m, p in zip(trained, mask, self.ema.sources, strict=True)
            ]
            sched.step()
        self.scaler.update()
        self.model.zero_grad(set_to_none=True)
        self.phase_losses = losses
        total = losses.sum()
        images = self.batch_for_step(self.step)
        self._update_ema(trained, images)
        self.images_seen += images
        self.step += 1
        return total, norm

    def _forward_backward(
        self, x: torch.Tensor | None, rows: dict, phase: str | None, sync: bool
    ) -> torch.Tensor:
        """Loss and backward pass of one micro-batch ``x`` ``(b, C, H, W)`` (None: data-free)
        with its ``rows`` of the draws; ``sync``: DDP averages the gradients (the last
        micro-batch). Returns the micro-batch's mean loss over ``grad_accum``, detached, 0-dim."""
        kw = {} if phase is None else {"phase": phase}
        with nullcontext() if sync else self.ddp.no_sync():
            with self._autocast():
                per_sample = self.loss(self.ddp, x, rows, **kw)
            n = _rows(x, rows)
            if per_sample.shape != (n,):
                raise ValueError(
                    f"the loss must return one value per sample, shape ({n},); got "
                    f"{tuple(per_sample.shape)}"
                )
            micro = per_sample.float().mean() / self.config.grad_accum
            self.scaler.scale(micro).backward()
        return micro.detach()

    def _optimizer_step(
        self, opt: torch.optim.Optimizer, params: list[nn.Parameter], need_grad_norm: bool
    ) -> torch.Tensor | None:
        """Unscale, clip and step one phase's optimiser; return the gradient norm before
        clipping (None if not clipping and not ``need_grad_norm``)."""
        self.scaler.unscale_(opt)
        norm = None
        if self.config.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        elif need_grad_norm:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        self.scaler.step(opt)
        return norm

    def _update_ema(self, trained: list[bool], images: int) -> None:
        """Average the ``trained`` parameters into the EMA after a step of ``images`` images,
        with a half-life of ``ema_halflife_images`` images."""
        cfg = self.config
        if self.variable_batch:  # the half-life counts the images this step and before it
            seen = self.images_seen
            self.ema.update(
                lambda updates: ema_beta(
                    images, seen, cfg.ema_halflife_images, cfg.ema_warmup_ratio
                ),
                trained,
            )
        else:
            self.ema.update(
                lambda updates: ema_beta(
                    cfg.batch_size,
                    updates * cfg.batch_size,
                    cfg.ema_halflife_images,
                    cfg.ema_warmup_ratio,
                ),
                trained,
            )

    def batch_for_step(self, step: int) -> int:
        """The global batch of step ``step``: ``train.batch_size``, times the loss's
        ``batch_multiplier(step)`` in patch training."""
        if not self.variable_batch:
            return self.config.batch_size
        return self.config.batch_size * int(self.loss.batch_multiplier(step))

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def draw_noise(self) -> dict:
        """This rank's rows of ``loss.draw`` for the next global batch (entries that are not
        tensors, e.g. the scale a multi-scale loss trains this step, are shared by all rows)."""
        batch = self.batch_for_step(self.step)
        local = batch // self.world
        lo = self.rank * local
        out = {}
        for k, v in self.loss.draw(batch, self.generator, step=self.step).items():
            if not isinstance(v, torch.Tensor):
                out[k] = v
                continue
            if v.shape[0] != batch:
                raise ValueError(
                    f"loss.draw({batch}) returned {k!r} with leading dimension {v.shape[0]}"
                )
            out[k] = v[lo : lo + local].to(self.device, non_blocking=True)
        return out

    # -------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train up to ``config.steps`` steps (or ``max_minutes``); checkpoint every
        ``checkpoint_every`` steps and at the end.

        ``resume``: continue from the newest valid checkpoint of ``run_dir`` (from scratch,
        with a note, if there is none). Without it, a ``run_dir`` that already holds
        checkpoints is an error. Raises ``FloatingPointError`` on a non-finite loss, without
        checkpointing the bad state.

        Returns ``{"steps", "final_loss", "images_per_s", "images_seen", "stopped",
        "checkpoint", "losses"}``: ``stopped`` is ``"completed"`` or ``"time limit"``,
        ``losses`` the ``(step, loss)`` of every step of this call.
        """
        cfg, main = self.config, dist.is_main()
        resumed = self._start(resume)
        if main:
            self._open_logs(resumed)
        self.model.train()
        loader = self._loader() if self.dataset is not None else None
        start_images, t0 = self.images_seen, time.perf_counter()
        self._open_progress(t0)
        flags = torch.tensor([0.0, 1.0], device=self.device)  # stat[1] > 0: a rank is over time
        saved, pending = None, None
        batches = iter(loader) if loader is not None else None
        try:
            while self.step < cfg.steps and not self._stop:
                x0, noise = self._next_batch(next(batches) if batches is not None else None)
                lr = self.scheduler.get_last_lr()[0]
                log_now = (self.step + 1) % cfg.log_every == 0
                loss, norm = self.train_step(x0, noise, need_grad_norm=log_now)
                stat = self._global_stat(loss, flags)
                self._pbar.update(1)
                # read the previous step's loss now, so the host never waits for this one
                if pending is not None:
                    self._settle(*pending)
                pending = (self.step, stat)
                sample_now = (
                    self.sample_fn is not None
                    and cfg.sample_every > 0
                    and self.step % cfg.sample_every == 0
                )
                ckpt_now = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                if log_now or sample_now or ckpt_now or self._stop:
                    self._settle(*pending)
                    pending = None
                if log_now and main:
                    self._log_row(lr, norm, time.perf_counter() - t0)
                if sample_now:
                    self._sample()
                if ckpt_now or self._stop:
                    saved = self._save(self.elapsed + time.perf_counter() - t0)
        finally:
            self._pbar.close()
            del batches  # ends the loader's workers now, even while an error propagates
            self._close_logger()
        dist.barrier()
        return self._summary(time.perf_counter() - t0, start_images, saved)

    def _start(self, resume: bool) -> bool:
        """Restore the newest valid checkpoint (``resume``) or start afresh; True if resumed."""
        if dist.is_main():
            _console_logging()
        resumed = self._resume() if resume else False
        if not resumed:
            if not resume and list_checkpoints(self.run_dir):
                raise FileExistsError(
                    f"{self.run_dir / 'checkpoints'} already holds checkpoints;"
                    " resume, or train into a new folder"
                )
            self._seed_global_rngs()
            if self.config.init_from:
                self._init_from(self.config.init_from)
        return resumed

    def _init_from(self, source: str) -> None:
        """Load the model and EMA weights of ``source`` (a run folder or a checkpoint): the
        optimiser, step count and data position start afresh."""
        path = resolve_checkpoint(source)
        ck = load_checkpoint(path)
        check_same_tensors(self.model.state_dict(), ck.model, f"train.init_from: {path}")
        check_same_tensors(self.ema.state_dict(), ck.ema, f"train.init_from: {path} (EMA)")
        self.model.load_state_dict(ck.model)
        self.ema.load_state_dict(ck.ema)
        if dist.is_main():
            log.info("initialised from %s (step %d): fresh optimiser at step 0", path, ck.step)

    def _open_logs(self, resumed: bool) -> None:
        """Rank 0: note the model's size and the precision, open the run's log."""
        cfg = self.config
        n_all = sum(p.numel() for p in self.model.parameters())
        log.info(
            "model: %s parameters (%s trainable); %d process(es) on %s",
            f"{n_all:,}",
            f"{sum(p.numel() for p in self.params):,}",
            self.world,
            self.device,
        )
        if cfg.mixed_precision != "no" and self.device.type != "cuda":
            log.info(
                "mixed_precision=%s applies on CUDA only; training in float32 on %s",
                cfg.mixed_precision,
                self.device,
            )
        self.logger = RunLogger(
            self.run_dir,
            self.step if resumed else None,
            cfg.tensorboard,
            tuple(f"loss_{name}" for name in self.phase_names),
        )

    def _open_progress(self, t0: float) -> None:
        """The progress bar, the wall-clock deadline and the per-fit loss records."""
        cfg = self.config
        self._deadline = t0 + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
        # under a wall-clock budget the step count's ETA means nothing: show the budget instead
        fmt = "{desc}: {n_fmt} steps [{elapsed}, {rate_fmt}{postfix}]" if cfg.max_minutes else None
        self._pbar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not dist.is_main(),
            desc="train",
            dynamic_ncols=True,
            bar_format=fmt,
        )
        self._losses: list[tuple[int, float]] = []
        self._log_t, self._log_images = t0, self.images_seen
        self._stop = False

    def _next_batch(self, batch) -> tuple[torch.Tensor | None, dict]:
        """The step's images ``(B_local, C, H, W)`` on the device, augmented (None: data-free),
        and its draws (with the data's labels); advances the data position."""
        x0, labels = _images_and_labels(batch) if batch is not None else (None, None)
        if x0 is not None:
            x0 = x0.to(self.device, non_blocking=True)
        if batch is not None:  # a data-free run has no data position
            self._advance_data_position()
        noise = self.draw_noise()
        if labels is not None:  # the data's; a loss that does not use them ignores them
            noise["labels"] = labels.to(self.device, non_blocking=True)
        if self.augment is not None and x0 is not None:
            self._aug_generator.manual_seed(
                mix_seed(self.config.seed, _AUGMENT, self.step, self.rank)
            )
            x0 = self.augment(x0, self._aug_generator)
        return x0, noise

    def _advance_data_position(self) -> None:
        """Move ``(epoch, position)`` past this step's global batch."""
        n = len(self.dataset)
        if self.variable_batch:  # position counts images of the data stream
            self.epoch, self.position = divmod(
                self.epoch * n + self.position + self.batch_for_step(self.step), n
            )
        else:
            per_epoch = n // self.config.batch_size
            self.epoch, self.position = divmod(
                self.epoch * per_epoch + self.position + 1, per_epoch
            )

    def _global_stat(self, loss: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """``[loss, over time, phase losses...]`` summed over ranks (any rank over time stops
        all), without waiting for the device: ``flags`` ``[0., 1.]`` picks the time flag."""
        stat = torch.cat(
            [
                torch.stack([loss, flags[int(time.perf_counter() > self._deadline)]]),
                self.phase_losses if self.phased else self.phase_losses[:0],
            ]
        )
        dist.all_reduce_sum_(stat)
        return stat

    def _close_logger(self) -> None:
        if self.logger is not None:
            self.logger.plot()
            self.logger.close()

    def _summary(self, seconds: float, start_images: int, saved: Path | None) -> dict[str, Any]:
        """:meth:`fit`'s result after ``seconds`` of training from ``start_images`` images."""
        return {
            "steps": self.step,
            "final_loss": self._losses[-1][1] if self._losses else None,
            "images_per_s": (self.images_seen - start_images) / max(seconds, 1e-9),
            "images_seen": self.images_seen,
            "stopped": "time limit" if self._stop else "completed",
            "checkpoint": str(saved) if saved else None,
            "losses": self._losses,
        }

    def _loader(self) -> DataLoader:
        """This rank's batches from the data position of :attr:`step` on."""
        cfg = self.config
        return DataLoader(
            self.dataset,
            num_workers=cfg.num_workers,
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),
            batch_sampler=StreamBatchSampler(
                len(self.dataset),
                self.batch_for_step,
                cfg.seed,
                self.rank,
                self.world,
                self.epoch,
                self.position,
                self.step,
            )
            if self.variable_batch
            else EpochBatchSampler(
                len(self.dataset),
                cfg.batch_size,
                cfg.seed,
                self.rank,
                self.world,
                self.epoch,
                self.position,
            ),
        )

    def _settle(self, step: int, stat: torch.Tensor) -> None:
        """Read a step's global loss and stop flag (the one host sync per step)."""
        total, over, *phases = stat.tolist()
        value = total / self.world
        if not math.isfinite(value):
            good = latest_valid_checkpoint(self.run_dir)
            then = (
                f"last good checkpoint: {good} (continue from it with --resume, e.g. with a "
                "lower train.lr)"
                if good is not None
                else "no checkpoint was saved before it"
            )
            raise FloatingPointError(
                f"non-finite loss ({value}) at step {step}; stopped without checkpointing; {then}"
            )
        self._losses.append((step, value))
        postfix = {"loss": f"{value:.4g}"}
        if math.isfinite(self._deadline):  # a wall-clock budget ends the run before cfg.steps
            left = max(0, int(self._deadline - time.perf_counter()))
            postfix["budget_left"] = f"{left // 60}:{left % 60:02d}"
        self._pbar.set_postfix(postfix, refresh=False)
        self._window.append(value)
        if phases:
            self._phase_window.append([v / self.world for v in phases])
        self._stop = self._stop or over > 0

    def _log_row(self, lr: float, norm: torch.Tensor | None, elapsed: float) -> None:
        now = time.perf_counter()
        images = self.images_seen - self._log_images
        self.logger.log(
            step=self.step,
            images_seen=self.images_seen,
            loss=sum(self._window) / len(self._window),
            **{
                f"loss_{name}": sum(w[j] for w in self._phase_window) / len(self._phase_window)
                for j, name in enumerate(self.phase_names)
                if self._phase_window
            },
            lr=lr,
            grad_norm=float(norm) if norm is not None else math.nan,
            images_per_s=images / max(now - self._log_t, 1e-9),
            elapsed=self.elapsed + elapsed,
        )
        self._window, self._log_t = [], now
        self._phase_window = []
        self._log_images = self.images_seen
        if now - self._plot_t > 60:  # the curve at most once a minute
            self.logger.plot()
            self._plot_t = now

    # ------------------------------------------------------------------------ samples
    @torch.no_grad()
    def _sample(self) -> None:
        if not dist.is_main():
            return
        g = torch.Generator(self.device).manual_seed(mix_seed(self.config.seed, _SAMPLE))
        x = self.sample_fn(self.ema.module, self.config.sample_n, g)
        path = self.run_dir / "samples" / f"step_{self.step:06d}.png"
        try:
            from nudiff.data.images import save_image_grid

            save_image_grid(x.detach().float().cpu(), path, min_size=64)
        except Exception as e:  # a failed picture must not end a training run
            log.warning("could not write %s: %s: %s", path, type(e).__name__, e)

    # --------------------------------------------------------------------- checkpoints
    def _save(self, elapsed: float) -> Path | None:
        rngs = dist.all_gather_objects(_rng_state())  # every rank's, for exact resume
        if not dist.is_main():
            return None
        cfg = self.config
        state = {
            "format": 1,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "images_seen": self.images_seen,
            "data_stream": self.variable_batch,  # position counts images, not batches
            "batch_size": cfg.batch_size,
            "world_size": self.world,
            "elapsed": elapsed,
            "log_window": list(self._window),
            "phase_window": [list(w) for w in self._phase_window],
            "phases": self.phase_names,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [sched.state_dict() for sched in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "ema_updates": list(self.ema.updates),
            "generator": self.generator.get_state(),
            "rng": rngs,
        }
        path = save_checkpoint(
            self.run_dir,
            self.step,
            self.model.state_dict(),
            self.ema.state_dict(),
            state,
            self.resolved_config,
            keep=cfg.keep_checkpoints,
        )
        self.logger.plot()
        return path

    def _resume(self) -> bool:
        with warnings.catch_warnings():
            if not dist.is_main():  # rank 0 reports skipped checkpoints
                warnings.simplefilter("ignore")
            path = latest_valid_checkpoint(self.run_dir)
        if path is None:
            if dist.is_main():
                log.info("no valid checkpoint in %s: starting from scratch", self.run_dir)
            return False
        ck = load_checkpoint(path)
        s = ck.state
        if s["batch_size"] != self.config.batch_size:
            raise ValueError(
                f"{path} was trained with train.batch_size={s['batch_size']}, "
                f"the config says {self.config.batch_size}"
            )
        self.model.load_state_dict(ck.model)
        self.ema.load_state_dict(ck.ema)
        # checkpoints from before per-parameter counts: every parameter trained every step
        self.ema.updates = list(s.get("ema_updates", [s["step"]] * len(self.ema.updates)))
        if list(s.get("phases", [])) != self.phase_names:
            raise ValueError(
                f"{path} was trained with loss phases {s.get('phases', [])}, this loss has "
                f"{self.phase_names}"
            )
        # checkpoints from before phased losses hold one optimiser and schedule
        for opt, state in zip(
            self.optimizers, s.get("optimizers", [s.get("optimizer")]), strict=True
        ):
            opt.load_state_dict(state)
        for sched, state in zip(
            self.schedulers, s.get("schedulers", [s.get("scheduler")]), strict=True
        ):
            sched.load_state_dict(state)
        self.scaler.load_state_dict(s["scaler"])
        self.generator.set_state(s["generator"])
        if bool(s.get("data_stream", False)) != self.variable_batch:
            raise ValueError(
                f"{path} was trained {'with' if s.get('data_stream') else 'without'} patch "
                f"training's batch multiplier (train.patch), the config says otherwise"
            )
        self.step, self.epoch, self.position = s["step"], s["epoch"], s["position"]
        self.images_seen = int(s.get("images_seen", s["step"] * s["batch_size"]))
        self.elapsed, self._window = s["elapsed"], list(s["log_window"])
        self._phase_window = [list(w) for w in s.get("phase_window", [])]
        if len(s["rng"]) == self.world:
            _set_rng_state(s["rng"][self.rank])
        else:
            log.info(
                "checkpoint from %d process(es), now %d: global RNGs reseeded",
                len(s["rng"]),
                self.world,
            )
            self._seed_global_rngs()
        if dist.is_main():
            log.info("resumed from %s (step %d)", path, self.step)
        return True

    def _seed_global_rngs(self) -> None:
        """Seed the global RNGs (dropout, user code) by ``(seed, step, rank)``."""
        s = mix_seed(self.config.seed, _GLOBAL, self.step, self.rank)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)


def _rows(x0: torch.Tensor | None, noise: dict) -> int:
    """The number of samples of a micro-batch: the images', or (data-free) the draws'."""
    if x0 is not None:
        return x0.shape[0]
    return next(v.shape[0] for v in noise.values() if isinstance(v, torch.Tensor))


def _plain_data(config: dict) -> dict:
    """``config`` if YAML can write it; fail at once rather than at the first checkpoint."""
    try:
        yaml.safe_dump(config)
    except yaml.YAMLError as e:
        raise ValueError(
            f"resolved_config must be plain data (dicts, lists, strings, "
            f"numbers): {str(e).splitlines()[0]}"
        ) from None
    return config


def _images_and_labels(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    return batch if isinstance(batch, tuple) else (batch, None)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): a linear warm-up over
    ``warmup_steps``, then 1 (``constant``) or a cosine from 1 to 0 at ``steps``. The cosine
    anneals the weights by the end of a fixed step budget (a run stopped earlier by
    ``max_minutes`` has not annealed: its EMA still averages)."""
    warm = config.warmup_steps
    if step < warm:
        return (step + 1) / warm
    if config.lr_schedule == "constant":
        return 1.0
    done = (step - warm) / max(1, config.steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def _has_unused(model: nn.Module) -> bool:
    """Whether some parameters get no gradient in a step: a module says so with a true
    ``unused_parameters`` attribute (e.g. the multi-scale model)."""
    return any(getattr(m, "unused_parameters", False) for m in model.modules())


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors, numbers and lists (loadable with ``weights_only``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def _console_logging() -> None:
    """Show the trainer's notes on the console unless the program configured logging."""
    pkg = logging.getLogger("nudiff")
    if not logging.getLogger().handlers and not pkg.handlers:
        pkg.addHandler(_TqdmHandler())
        pkg.setLevel(logging.INFO)


def check_same_tensors(own: dict, theirs: dict, where: str) -> None:
    """One-line ``ValueError`` naming the first tensor that ``theirs`` lacks, adds or shapes
    differently from ``own`` (state dicts of two models that should share an architecture)."""
    for key, t in own.items():
        if key not in theirs:
            raise ValueError(f"{where} has no tensor {key}: another architecture")
        if tuple(theirs[key].shape) != tuple(t.shape):
            raise ValueError(
                f"{where}: tensor {key} has shape {tuple(theirs[key].shape)} there, "
                f"{tuple(t.shape)} here: another architecture"
            )
    extra = sorted(set(theirs) - set(own))
    if extra:
        raise ValueError(f"{where} has a tensor this model lacks, {extra[0]}: another architecture")
