"""The loss surface as a shaded 3-D plot with the path drawn on it, optionally turning."""

from __future__ import annotations

import numpy as np

from losstrail.renderers._figure import CanvasFigure
from losstrail.values.projection import Projection
from losstrail.values.surface import Surface, grid_value, path_height

# A turning camera takes this many distinct angles over the animation; between them only the
# path moves, so a frame is a blit (fast) and a GIF stores only the change (small).
TURN_VIEWS = 24


class SurfaceFigure(CanvasFigure):
    """A 3-D view: the surface (ln loss by default) and the path on it at its slice loss.

    The read-out sits in a strip above the axes, so it never covers the surface or the path.

    Args:
        projection, surface: as ``PathFigure``.
        rotate: turn the camera slowly (half a turn over the animation, in ``TURN_VIEWS`` steps)
            instead of holding it.
        n_frames: frames the animation will have (sets the rotation speed).
        title, size, dpi, cmap, path_color, log_scale: the look.
    """

    def __init__(
        self,
        projection: Projection,
        surface: Surface,
        *,
        rotate: bool = False,
        n_frames: int = 300,
        title: str = "",
        size: tuple[int, int] | None = None,
        dpi: int = 100,
        cmap: str = "YlGnBu",
        path_color: str = "red",
        log_scale: bool = True,
    ):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from losstrail.renderers._figure import Label, axis_labels, colour_label, faithfulness_title, readout_chars

        self.projection = projection
        self.rotate, self.n_frames = rotate, max(n_frames, 1)
        width, height = size if size is not None else (900, 700)
        self.fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_subplot(projection="3d")
        transform = (lambda v: np.log(np.where(v > 0, v, np.nan))) if log_scale else (lambda v: v)
        gx, gy = np.meshgrid(surface.xs, surface.ys)
        z = np.ma.masked_invalid(transform(surface.loss))
        ax.plot_surface(gx, gy, z, cmap=cmap, linewidth=0, antialiased=False, alpha=0.85, rcount=40, ccount=40)
        self.z = transform(path_height(projection, surface))
        _draw_marks_3d(ax, projection.plane, surface, transform)
        xlabel, ylabel = axis_labels(projection.plane)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_zlabel(colour_label(log_scale), fontsize=8)
        heading = self.fig.suptitle(faithfulness_title(title, projection, surface), fontsize=10)
        self.azimuth = -60.0
        ax.view_init(elev=35, azim=self.azimuth)
        (self.line,) = ax.plot([], [], [], color=path_color, lw=2, animated=True, zorder=10)
        (self.point,) = ax.plot([], [], [], "o", color=path_color, ms=7, animated=True, zorder=11)
        self._moving = [(ax, self.line), (ax, self.point)]
        self.main_axes = [ax]
        # The read-out goes under the title, and the 3-D axes below it.
        lines = 4 if projection.measured else 2
        box = Label.measure(dpi, lines, readout_chars(projection))
        top = int(height - heading.get_window_extent(self.canvas.get_renderer()).y0) + 4
        bottom = 40 / height  # room for the axis labels below the box
        ax.set_position([0.0, bottom, 1.0, 1.0 - bottom - (top + box[1] + 6) / height])
        self._label = Label(ax, dpi, lines=lines, chars=readout_chars(projection), at=(8, top))
        self.views = max(2, min(self.n_frames, TURN_VIEWS))
        self._view = 0
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(self.fig.bbox)

    def label(self, k: int) -> str:
        from losstrail.renderers._figure import readout

        return readout(self.projection, k)

    def update(self, k: int) -> None:
        p = self.projection
        self.line.set_data_3d(p.xy[: k + 1, 0], p.xy[: k + 1, 1], self.z[: k + 1])
        self.point.set_data_3d(p.xy[k : k + 1, 0], p.xy[k : k + 1, 1], self.z[k : k + 1])
        if self.rotate:
            view = round(k / max(len(p) - 1, 1) * (self.views - 1))
            self.ax.view_init(elev=35, azim=self.azimuth + 180.0 * view / (self.views - 1))
            if view != self._view:  # a new camera angle: draw the surface once, then blit the path over it
                self._view = view
                self.canvas.draw()
                self._background = self.canvas.copy_from_bbox(self.fig.bbox)

    def rgba(self, k: int, copy: bool = True) -> np.ndarray:
        """Frame ``k`` as (H, W, 4) uint8: the path blitted over the surface drawn at the frame's camera angle."""
        self.update(k)
        self.canvas.restore_region(self._background)
        for ax, artist in self._moving:
            ax.draw_artist(artist)
        frame = np.asarray(self.canvas.buffer_rgba())
        self._label.draw(frame, self.label(k))
        return frame.copy() if copy else frame


def _draw_marks_3d(ax, plane, surface: Surface, transform) -> None:
    """The models a ``'through'`` plane goes through, named on the surface, each one's loss in its label."""
    marks = getattr(plane, "marks", None)
    if not marks:
        return
    xy = np.asarray(plane.marks_xy, dtype=np.float64)
    losses = getattr(surface, "marks_loss", None)
    heights = transform(np.asarray(losses if losses is not None else grid_value(surface, xy), dtype=np.float64))
    for k, name in enumerate(marks):
        label = name if losses is None else f"{name} ({losses[k]:.4g})"
        ax.scatter([xy[k, 0]], [xy[k, 1]], [heights[k]], marker="D", s=50, c="white", edgecolors="k", zorder=12)
        ax.text(xy[k, 0], xy[k, 1], heights[k], f"  {label}", fontsize=9, weight="bold", zorder=13)
