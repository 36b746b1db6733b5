"""Conditions from files for ``nudiff sample RUN --condition INPUT``, and the comparison grid."""

from __future__ import annotations

import torch

from nudiff.conditional.tasks import Inpainting, Task


def conditions(
    task: Task, shape: tuple[int, int, int], images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(y, truth)``: images of the model's shape are ground truth, degraded by the task (the
    masks of ``inpaint-boxes`` seeded by their position); images of ``y``'s shape (a
    low-resolution input, a grey image) are conditions, without truth. Grey and colour are
    converted to the model's channels except for colorization, where they tell the two apart."""
    from nudiff.conditional.tasks import Colorization
    from nudiff.data.transforms import to_channels

    y_shape = task.y_shape(shape)
    if not isinstance(task, Colorization):
        images = to_channels(images, shape[0])
    got = tuple(images.shape[1:])
    if got == tuple(shape):
        return task.degrade(images, torch.arange(len(images))), images
    values_shape = (y_shape[0] - 1, *y_shape[1:]) if isinstance(task, Inpainting) else y_shape
    if got == values_shape and not isinstance(task, Inpainting):
        return images, None
    want = f"{shape}" + ("" if isinstance(task, Inpainting) else f" (truth) or {values_shape}")
    raise ValueError(f"condition images must have shape {want} for task {task.name}, got {got}")


def comparison_grid(
    task: Task, y: torch.Tensor, samples: torch.Tensor, truth: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """Rows ``[condition, samples..., truth]`` per input as one batch for ``save_image_grid``,
    and the number of images per row. ``samples``: ``(B, K, C, H, W)``."""
    b, k, c, h, w = samples.shape
    values = y[:, :-1] if isinstance(task, Inpainting) else y
    cond = task.upsample(values, (c, h, w))
    if cond.shape[1] != c:  # a grey condition next to colour samples
        cond = cond.expand(b, c, h, w)
    if isinstance(task, Inpainting):  # show the hole in grey
        cond = torch.where(y[:, -1:].bool(), torch.zeros_like(cond), cond)
    parts = [cond[:, None], samples.clamp(-1, 1)]
    if truth is not None:
        parts.append(truth[:, None])
    rows = torch.cat(parts, 1)
    return rows.flatten(0, 1), rows.shape[1]
