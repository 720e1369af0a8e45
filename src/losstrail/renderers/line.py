"""A still picture of the loss (and accuracy) along a line in parameter space."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from losstrail._checks import output_format
from losstrail._files import atomic_path
from losstrail._registry import STILL_FORMATS
from losstrail.values.surface import LossLine


def plot_loss_line(
    line: LossLine,
    out: str | os.PathLike = "line.png",
    *,
    title: str = "loss along the straight line from the initial to the final parameters",
    xlabel: str = "t   (0 = initial parameters, 1 = final parameters)",
    marks: dict[str, float] | None = None,
    size: tuple[int, int] = (800, 450),
    dpi: int = 100,
) -> Path:
    """Plot ``line`` (loss on a log axis, accuracy on a second axis) and write it to ``out`` (.png, .pdf, .svg).

    ``marks`` names positions to draw as vertical lines; default ``{'initial': 0, 'final': 1}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from losstrail.renderers._figure import plain_log_ticks, save_figure

    kind = output_format(out, allowed=STILL_FORMATS)
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(line.ts, line.loss, color="tab:blue", lw=1.8, label="loss")
    finite = line.loss[np.isfinite(line.loss)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss", color="tab:blue")
    for name, t in (marks if marks is not None else {"initial": 0.0, "final": 1.0}).items():
        ax.axvline(t, color="0.4", lw=0.8, ls=":")
        ax.annotate(name, (t, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8)
    if np.isfinite(line.accuracy).any():
        twin = ax.twinx()
        twin.plot(line.ts, line.accuracy, color="tab:orange", lw=1.2, ls="--", label="accuracy")
        twin.set_ylabel("accuracy", color="tab:orange")
        twin.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10, pad=14)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        save_figure(fig, tmp, kind)
    return Path(out)
