"""Several paths on one loss surface: one animation where every run moves in step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from losstrail._frames import fraction, frame_schedule, held
from losstrail.renderers._figure import (
    CanvasFigure,
    Label,
    colour_label,
    draw_contour,
    free_corner,
    grid_note,
    legend_above,
    lowest_inside,
    place_readout,
    plain_log_ticks,
)
from losstrail.values.projection import Projection
from losstrail.values.surface import Surface

# Path colours that stand out on the blue-green-yellow contour, in run order.
RUN_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#000000", "#e377c2", "#8c564b", "#bcbd22", "#7f7f7f")


class CompareFigure(CanvasFigure):
    """The paths of several runs on one shared surface, frame by frame.

    Args:
        runs: ``(name, projection)`` pairs, all in the same plane.
        surface: the shared loss grid.
        title: figure title.
        layout: ``'overlay'`` (all paths on one contour, with a loss panel) or ``'grid'``
            (one panel per run, one colour scale).
        timeline, max_frames: see ``frame_schedule``.
        size, dpi, cmap, levels, log_scale: the look, as ``PathFigure``.
        captured: each run's fraction of its path variance that the shared plane holds.
    """

    def __init__(
        self,
        runs: Sequence[tuple[str, Projection]],
        surface: Surface,
        *,
        title: str = "",
        layout: str = "overlay",
        timeline: str = "auto",
        max_frames: int = 300,
        size: tuple[int, int] | None = None,
        dpi: int = 100,
        cmap: str = "YlGnBu",
        levels: int = 35,
        log_scale: bool = True,
        captured: Sequence[float] | None = None,
    ):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure

        self.names = [name for name, _ in runs]
        self.projections = [p for _, p in runs]
        self.colours = [RUN_COLOURS[k % len(RUN_COLOURS)] for k in range(len(runs))]
        self.schedule, self.times = frame_schedule(self.projections, max_frames, timeline)
        ends = {int(p.step[-1]) for p in self.projections}
        self.by_step = timeline == "step" or (timeline == "auto" and len(ends) == 1)
        self.captured = list(captured) if captured is not None else [None] * len(runs)
        plane = self.projections[0].plane
        n = len(runs)
        if layout == "grid":
            cols = min(n, 2 if n <= 4 else 3)
            rows = math.ceil(n / cols)
            width, height = size if size is not None else (560 * cols, 460 * rows + 60)
        else:
            width, height = size if size is not None else (1280, 600)
        # Small multiples share one colour bar; constrained layout keeps labels and bar apart.
        self.fig = Figure(
            figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained" if layout == "grid" else None
        )
        self.canvas = FigureCanvasAgg(self.fig)
        self._moving: list = []
        self.lines, self.points = [], []
        if layout == "grid":
            axes = self.fig.subplots(rows, cols, squeeze=False).ravel()
            shown = surface.loss[np.isfinite(surface.loss) & ((surface.loss > 0) | (not log_scale))]
            finite = np.log(shown) if log_scale else shown
            norm = Normalize(float(finite.min()), float(finite.max())) if finite.size else None
            for k, ax in enumerate(axes):
                if k >= n:
                    ax.set_visible(False)
                    continue
                contour = draw_contour(
                    self.fig, ax, surface, plane, levels=levels, cmap=cmap, colorbar=False, norm=norm,
                    log_scale=log_scale,
                )  # fmt: skip
                ax.set_title(self._run_title(k), fontsize=9, color=self.colours[k])
                self._add_path(ax, k)
            self.fig.colorbar(contour, ax=list(axes[:n]), label=colour_label(log_scale) + " (one scale)")
            self.main_axes = list(axes[:n])
        else:
            ax, side = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.55, 1]})
            draw_contour(self.fig, ax, surface, plane, levels=levels, cmap=cmap, log_scale=log_scale)
            for k in range(n):
                self._add_path(ax, k, label=self._run_title(k))
            legend_above(ax, ncol=2)  # outside the axes, so it never covers a path
            self._draw_panel(side)
            self.main_axes = [ax]
        heading = [title] if title else []
        heading += [line for line in (_shared_plane_note(self.projections, layout), grid_note(surface)) if line]
        self.fig.suptitle("\n".join(heading), fontsize=10)
        self.layout = layout
        lowest = lowest_inside(surface) or (np.nan, np.nan)
        marks = [[0.0, 0.0], lowest[:2]]  # the plane's centre and the lowest point, if drawn
        if layout == "overlay":
            # The live read-out: in a corner of the contour that no path crosses, else below the figure.
            size = Label.measure(dpi, n + 1, 46)
            at = place_readout(self.fig, ax, size, [p.xy for p in self.projections] + marks)
            self._labels = [Label(ax, dpi, lines=n + 1, chars=46, at=at)]
        else:
            self._labels = self._grid_labels(dpi, marks)
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(self.fig.bbox)

    def _grid_labels(self, dpi: int, marks) -> list:
        """Each panel's read-out in a corner its path never crosses; a panel without one gives up a strip at its top."""
        self.canvas.draw()  # the constrained layout places the panels
        size = Label.measure(dpi, 2, 32)
        spots = [
            free_corner(ax, size, np.concatenate([p.xy, marks])) for ax, p in zip(self.main_axes, self.projections)
        ]
        if any(spot is None for spot in spots):
            self.fig.set_layout_engine("none")  # freeze the layout before moving panels by hand
        height = self.fig.bbox.height
        labels = []
        for ax, spot in zip(self.main_axes, spots):
            if spot is None:
                top = ax.get_window_extent().y1
                pos = ax.get_position()
                ax.set_position([pos.x0, pos.y0, pos.width, pos.height - (size[1] + 24) / height])
                spot = (int(ax.get_window_extent().x0), int(height - top))
            labels.append(Label(ax, dpi, lines=2, chars=32, at=spot))
        return labels

    def _run_title(self, k: int) -> str:
        captured = self.captured[k]
        return f"{self.names[k]} (plane holds {captured:.0%} of its path)" if captured is not None else self.names[k]

    def _add_path(self, ax, k: int, label: str | None = None) -> None:
        colour = self.colours[k]
        (line,) = ax.plot([], [], color=colour, lw=1.5, animated=True)
        (point,) = ax.plot([], [], "o", color=colour, ms=7, mec="white", mew=0.8, animated=True, label=label)
        self.lines.append(line)
        self.points.append(point)
        self._moving += [(ax, line), (ax, point)]

    def _draw_panel(self, side) -> None:
        """One loss curve per run (true loss where measured), with a dot that follows each run."""
        self._dots = []
        measured = all(p.measured for p in self.projections)
        self._held = [held(p.true_loss) if measured else np.arange(len(p)) for p in self.projections]
        for k, p in enumerate(self.projections):
            x = p.step if self.by_step else fraction(p.step)
            y = p.true_loss if measured else p.loss
            at = p.measured_at if measured else slice(None)  # curves run through the measured points only
            side.plot(x[at], y[at], color=self.colours[k], lw=1.4, label=self.names[k])
            (dot,) = side.plot([], [], "o", color=self.colours[k], ms=5, animated=True)
            self._dots.append(dot)
            self._moving.append((side, dot))
        values = np.concatenate([(p.true_loss if measured else p.loss) for p in self.projections])
        if np.all(values[np.isfinite(values)] > 0):
            side.set_yscale("log")
            plain_log_ticks(side.yaxis)
        side.set_xlabel("step" if self.by_step else "fraction of training")
        side.set_ylabel("true loss along each path" if measured else "training (batch) loss of each run")
        side.grid(alpha=0.3)
        legend_above(side, ncol=4)

    @property
    def n_frames(self) -> int:
        return len(self.times)

    def label_lines(self, f: int) -> list[tuple[str, str]]:
        when = f"step {self.times[f]:>7.0f}" if self.by_step else f"{self.times[f]:>4.0%} of training"
        lines = [(when, "k")]
        for k, p in enumerate(self.projections):
            i = int(self.schedule[f, k])
            loss = _loss_shown(p, i)
            lines.append(
                (
                    f"{self.names[k][:12]:<12s} loss {float(loss):.4f}  off-plane {float(p.off_plane[i]):.3g}",
                    self.colours[k],
                )
            )
        return lines

    def rgba(self, f: int, copy: bool = True) -> np.ndarray:
        """Frame ``f`` as an (H, W, 4) uint8 array; with ``copy=False`` a view valid until the next call."""
        self.canvas.restore_region(self._background)
        self.update(f)
        for ax, artist in self._moving:
            ax.draw_artist(artist)
        frame = np.asarray(self.canvas.buffer_rgba())
        lines = self.label_lines(f)
        if self.layout == "grid":
            for k, label in enumerate(self._labels):
                loss_and_distance = lines[k + 1][0][12:].strip()
                label.draw(frame, [(f"{lines[0][0]}", "k"), (loss_and_distance, "k")])
        else:
            self._labels[0].draw(frame, _as_legend(lines))
        return frame.copy() if copy else frame

    def label(self, f: int) -> list[tuple[str, str]]:
        return self.label_lines(f)

    def still_texts(self, f: int) -> list:
        """``(axes, lines)`` of the read-out of frame ``f``, as a still draws it."""
        lines = self.label_lines(f)
        if self.layout == "grid":
            return [(ax, [lines[0], (lines[k + 1][0][12:].strip(), "k")]) for k, ax in enumerate(self.main_axes)]
        return [(self.main_axes[0], _as_legend(lines))]

    def update(self, f: int) -> None:
        """Set every run's moving artists to frame ``f`` (without drawing)."""
        for k, p in enumerate(self.projections):
            i = int(self.schedule[f, k])
            self.lines[k].set_data(p.xy[: i + 1, 0], p.xy[: i + 1, 1])
            self.points[k].set_data(p.xy[i : i + 1, 0], p.xy[i : i + 1, 1])
            if self.layout == "overlay":
                m = int(self._held[k][i])  # the dot sits at the latest measured point
                measured = p.true_loss if p.measured else p.loss
                x = float(p.step[m]) if self.by_step else float(fraction(p.step)[m])
                self._dots[k].set_data(*(([x], [measured[m]]) if m >= 0 else ([], [])))


def _loss_shown(p: Projection, i: int) -> float:
    """The loss the read-out gives at point ``i``: the latest measured true loss, else the training batch's."""
    if not p.measured:
        return float(p.loss[i])
    m = int(held(p.true_loss)[i])
    return float(p.true_loss[m]) if m >= 0 else float("nan")


def _as_legend(lines: list) -> list:
    """The read-out as a live legend: a bullet in each run's colour before its name, loss and distance."""
    return [lines[0]] + [(f"\u25cf {text}", colour) for text, colour in lines[1:]]


def _shared_plane_note(projections: Sequence[Projection], layout: str = "overlay") -> str:
    plane = projections[0].plane
    where = "each panel's title" if layout == "grid" else "the legend"
    return (
        f"one shared {plane.method!r} plane holds each run differently: its share of the path is in {where}, "
        "its distance from the plane in the read-out"
    )
