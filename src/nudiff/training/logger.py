"""Run logs: ``RUN/log.csv``, TensorBoard (``RUN/tb``, optional) and the loss curve
``RUN/loss.png``."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

log = logging.getLogger("nudiff.training")

FIELDS = ("step", "loss", "lr", "grad_norm", "images_per_s", "elapsed", "images_seen")


class RunLogger:
    """Appends one row per log interval to ``log.csv`` (floats written with ``repr``, so they
    read back exactly) and to TensorBoard, and draws ``loss.png`` on :meth:`plot`.

    ``resume_step``: keep the rows of an existing ``log.csv`` up to that step (later ones are
    about to be recomputed); ``None`` starts a new file.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        resume_step: int | None = None,
        tensorboard: bool = True,
        extra_fields: tuple[str, ...] = (),
    ):
        self.fields = FIELDS + tuple(extra_fields)  # e.g. each phase's loss of a phased loss
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "log.csv"
        self.rows: list[dict[str, float]] = []
        if resume_step is not None and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                self.rows = [
                    {k: float(v) for k, v in r.items()}
                    for r in csv.DictReader(f)
                    if r.get("step") and int(float(r["step"])) <= resume_step
                ]
        tmp = self.csv_path.with_name(".log.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows({k: _fmt(r.get(k, math.nan)) for k in self.fields} for r in self.rows)
        os.replace(tmp, self.csv_path)
        self._file = open(self.csv_path, "a", newline="")  # closed in close()
        self._csv = csv.DictWriter(self._file, self.fields)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(
                    str(self.run_dir / "tb"), purge_step=resume_step and resume_step + 1
                )
            except Exception as e:  # tensorboard missing or broken: the CSV suffices
                log.info("TensorBoard disabled (%s: %s)", type(e).__name__, e)

    def log(
        self,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float,
        images_per_s: float,
        elapsed: float,
        images_seen: float = math.nan,
        **extra: float,
    ) -> None:
        row = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "images_per_s": images_per_s,
            "elapsed": elapsed,
            "images_seen": images_seen,
            **extra,
        }
        self.rows.append(row)
        self._csv.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()
        if self.tb is not None:
            for k in self.fields[1:]:
                self.tb.add_scalar(f"train/{k}", row[k], step)

    def plot(self) -> None:
        """``loss.png``: the logged loss on a log scale with a moving average."""
        pts = [(r["step"], r["loss"]) for r in self.rows if r["loss"] > 0]
        if not pts:
            return
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        steps, loss = np.array(pts).T
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(steps, loss, lw=0.8, alpha=0.4, label="loss")
        w = max(1, len(loss) // 20)
        if w > 1:  # moving average over ~5% of the run, in log space
            avg = np.exp(np.convolve(np.log(loss), np.ones(w) / w, mode="valid"))
            ax.plot(steps[w - 1 :], avg, lw=1.5, label=f"moving average ({w} logs)")
        ax.set(yscale="log", xlabel="step", ylabel="loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = self.run_dir / ".loss.png.tmp"
        fig.savefig(tmp, format="png")
        os.replace(tmp, self.run_dir / "loss.png")

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))
