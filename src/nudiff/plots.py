"""Figures a person reads: the schedule per component group and a noised sample strip."""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nudiff.data.images import to_uint8  # noqa: E402
from nudiff.process import Process  # noqa: E402


@torch.no_grad()
def plot_schedule(
    process: Process,
    image: torch.Tensor,
    path: str | Path,
    title: str = "",
    times=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    seed: int = 0,
) -> Path:
    """Top: log-SNR against t, the mean of each basis group with its min-max range shaded.
    Bottom: ``image`` ``(C, H, W)`` in [-1, 1] noised at ``times`` with one noise draw, shown in
    pixel space."""
    t = torch.linspace(process.t_min, 1.0, 401, dtype=torch.float64)
    lam = process.log_snr(t).expand(len(t), *process.shape).flatten(1).clamp(-25, 25)
    index, names = process.basis.groups()
    index = index.flatten()

    fig = plt.figure(figsize=(max(8, 0.9 * len(times)), 6.5))
    ax = fig.add_axes([0.08, 0.42, 0.62, 0.5])
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    for g, (name, colour) in enumerate(zip(names, colours, strict=True)):
        sel = lam[:, index == g]
        ax.plot(t, sel.mean(1), color=colour, label=name, lw=2)
        if sel.shape[1] > 1:
            ax.fill_between(t, sel.amin(1), sel.amax(1), color=colour, alpha=0.15)
    if process.schedule.inactive_log_snr > -np.inf:
        ax.axhline(
            process.schedule.inactive_log_snr, color="grey", ls=":", lw=1, label="fully noised"
        )
    ax.set_xlabel("t")
    ax.set_ylabel("log-SNR  log(alpha^2 / sigma^2)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_title(
        title or f"{type(process.basis).__name__} basis, {type(process.schedule).__name__} schedule"
    )

    x = image.double()[None]
    process = copy.deepcopy(process).double()  # never change the caller's dtypes
    u0 = process.encode(x)
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(u0.shape, generator=g, dtype=torch.float64)
    tt = torch.tensor(times, dtype=torch.float64).clamp(min=process.t_min)
    frames = process.decode(
        process.marginal(u0.expand(len(tt), -1, -1, -1), tt, eps.expand(len(tt), -1, -1, -1))
    ).float()
    strip = to_uint8(frames)
    for i, (ti, frame) in enumerate(zip(times, strip, strict=True)):
        axi = fig.add_axes([0.02 + i * 0.96 / len(times), 0.04, 0.9 / len(times), 0.26])
        grey = frame.shape[-1] == 1
        axi.imshow(
            frame[..., 0] if grey else frame,
            cmap="gray" if grey else None,
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        axi.set_title(f"t={ti:g}", fontsize=8)
        axi.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
