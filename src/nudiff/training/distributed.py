"""Multi-GPU and multi-node training through torchrun and DDP.

Launch one process per GPU with torchrun, which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``::

    torchrun --nproc_per_node 8 -m nudiff train config.yaml --out runs/x
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 \\
        --nproc_per_node 8 -m nudiff train config.yaml --out runs/x      # multi-node

``accelerate launch`` sets the same variables and works too. With ``WORLD_SIZE`` > 1 the trainer
joins the process group (NCCL on CUDA, gloo on CPU) and wraps the model in DDP; only rank 0
writes files and shows the progress bar. The run folder must be on a filesystem all nodes see
(resume reads the checkpoint on every rank).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def setup(device: str | torch.device | None = None) -> torch.device:
    """Join the process group described by torchrun's variables (if ``WORLD_SIZE`` > 1 and not
    joined yet) and return this process's device: ``device`` if given, else ``cuda:LOCAL_RANK``
    when CUDA is available, else the CPU."""
    if device is None:
        device = f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    # before init_process_group (and after cleanup) torchrun's RANK still tells who we are
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of the program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``model`` in DDP when distributed (gradients averaged over ranks), else unchanged.

    ``find_unused``: some parameters get no gradient in a step (the same ones on every rank);
    DDP then leaves their gradients ``None``."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # buffers are constants (bases, prior statistics): re-broadcasting them every forward
    # would cost bandwidth for nothing
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused
    )


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks in place (no host sync on CUDA)."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; for small things)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int) -> tuple[int, int]:
    """This rank's share of ``n`` items, the contiguous range ``[start, start + count)``;
    ``(0, n)`` in a single process. ``n`` must split evenly over the ranks, so that every rank
    does the same work and the gathered result is the single-process one."""
    size = world_size()
    if n % size:
        raise ValueError(
            f"{n} items do not split evenly over {size} processes: use a multiple of {size}"
        )
    return rank() * (n // size), n // size


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The ranks' equally sized ``x`` ``(n_local, ...)`` concatenated in rank order
    ``(n_local * world, ...)``, on every rank (``x`` itself in a single process)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
