"""The contour picture: a static background drawn once, the moving path blitted per frame."""

from __future__ import annotations

import math

import numpy as np

from losstrail._frames import held
from losstrail.values.projection import Projection
from losstrail.values.surface import Surface

_METHOD_AXIS = {
    "pca": "principal component",
    "random": "random direction",
    "filter": "filter-normalized direction",
    "layer": "layer-normalized direction",
    "hessian": "Hessian eigenvector",
    "interpolation": "interpolation axis",
    "custom": "custom direction",
    "through": "direction",
}
# Figure size (pixels) without and with the loss panel beside the contour.
SIZE = (900, 600)
SIZE_WITH_PANEL = (1280, 600)


def axis_labels(plane) -> tuple[str, str]:
    """Axis labels of ``plane``: the method, the share of the path's variance along each axis, any curvature."""
    marks = getattr(plane, "marks", None)
    if marks:  # the plane through models: u = b - a, v the part of c - a orthogonal to it
        second = f"{marks[2]} − {marks[0]}, the part orthogonal to x" if len(marks) > 2 else "orthogonal direction"
        return f"{marks[1]} − {marks[0]}", second
    name = _METHOD_AXIS.get(plane.method, f"{plane.method} direction")
    labels = []
    for k in range(2):
        notes = []
        if plane.explained is not None:
            notes.append(f"{plane.explained[k]:.1%} of path variance")
        if plane.eigenvalues is not None:
            notes.append(f"curvature {plane.eigenvalues[k]:.3g}")
        labels.append(f"{name} {k + 1}" + (f" ({', '.join(notes)})" if notes else ""))
    return labels[0], labels[1]


def faithfulness_title(title: str, projection: Projection, surface: Surface | None = None) -> str:
    """``title`` with a line saying how much of the path the plane captures, and one on an adaptive grid's error."""
    captured = projection.plane.captured
    lines = [title] if title else []
    if captured is not None:
        line = f"the plane captures {captured:.1%} of the path's variance"
        if len(projection) and np.isfinite(projection.off_plane).any():  # unknown for a path read from a file
            line += f"; largest distance from it {float(np.max(projection.off_plane)):.3g}"
        lines.append(line)
    note = grid_note(surface)
    if note:
        lines.append(note)
    return "\n".join(lines)


def grid_note(surface: Surface | None) -> str:
    """``Surface.describe_grid()`` for an adaptive surface (``'adaptive: 1,240 of 10,000 points exact, ...'``);
    empty for a full grid, whose every cell is exact, as pictures have always shown."""
    if surface is None or not getattr(surface, "adaptive", False):
        return ""
    return surface.describe_grid()


def readout(p: Projection, k: int) -> str:
    """The read-out text of recorded point ``k``: step, epoch, loss and accuracy (and true/slice loss)."""
    epoch = f"   epoch {int(p.epoch[k])}" if p.epoch[k] >= 0 else ""  # -1: not known (a checkpoint, a file)
    label = getattr(p, "loss_label", None)
    accuracy = f" acc {_format_value(float(p.accuracy[k]), percent=True)}"
    if label is not None and not np.isfinite(p.accuracy).any():
        accuracy = ""  # a surface read from a file: no batch, no accuracy
    counted = getattr(p, "step_label", "step")
    value = _format_value(float(p.loss[k]))
    first = "the model (plane centre)" if not counted else f"{counted:<5s} {int(p.step[k]):>6d}{epoch}"
    text = f"{first}\n{label or 'batch loss'} {value}{accuracy}"
    if p.measured:
        # Between measured points: the latest truth there is, with the step it was measured at.
        m = int(held(p.true_loss)[k]) if np.isnan(p.true_loss[k]) else k
        true, slice_ = (np.nan, np.nan) if m < 0 else (float(p.true_loss[m]), float(p.slice_loss[m]))
        text += (
            f"\ntrue  {_format_value(true)} slice {_format_value(slice_)}"
            f"\noff-plane {float(p.off_plane[k]):.3g}" + (f"  truth@{int(p.step[m])}" if 0 <= m != k else "")
        )
    return text


READOUT_CHARS = 30  # "off-plane 0.0123  truth@12345" fits


def readout_chars(p: Projection) -> int:
    """The read-out's width in characters: ``READOUT_CHARS``, or wider for a long loss label."""
    label = getattr(p, "loss_label", None)
    return READOUT_CHARS if label is None else max(READOUT_CHARS, len(label) + 8)


def draw_contour(
    fig, ax, surface: Surface, plane, *, levels: int, cmap: str, colorbar: bool = True, norm=None, log_scale=True
):
    """Filled contour of (log) loss with the slice's lowest cell marked and the axes labelled; returns the contour."""
    ax.set_facecolor("0.85")  # cells with a non-finite loss are masked and show this grey
    if not np.isfinite(surface.loss).any():  # no surface at all (a path drawn without data): the path alone
        ax.set_facecolor("0.96")
        _label_axes(ax, surface, plane)
        return None
    loss = np.ma.masked_invalid(surface.loss)
    shown = np.ma.log(np.ma.masked_less_equal(loss, 0)) if log_scale else loss
    contour = ax.contourf(surface.xs, surface.ys, shown, levels=levels, cmap=cmap, alpha=0.9, norm=norm)
    if colorbar:
        fig.colorbar(contour, ax=ax, label=colour_label(log_scale))
    lowest = lowest_inside(surface)
    if lowest is not None:  # the window's lowest point, marked only when it is inside, never cut by the edge
        ax.plot([lowest[0]], [lowest[1]], "bx", markersize=9, mew=2, clip_on=False,
                label=f"lowest loss in this window ({lowest[2]:.3g})")  # fmt: skip
    _label_axes(ax, surface, plane)
    return contour


def _label_axes(ax, surface: Surface, plane) -> None:
    """The marked models, the axis labels and the window of the grid."""
    draw_marks(ax, plane, surface)
    xlabel, ylabel = axis_labels(plane)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(surface.xs[0], surface.xs[-1])
    ax.set_ylim(surface.ys[0], surface.ys[-1])


MARK_COLOURS = ("#ffffff", "#f0a030", "#c050c0", "#40b0b0")


def draw_marks(ax, plane, surface: Surface | None) -> None:
    """The models a ``'through'`` plane goes through: a named diamond each, its loss in the legend."""
    marks = getattr(plane, "marks", None)
    if not marks:
        return
    losses = getattr(surface, "marks_loss", None)
    for k, (name, (x, y)) in enumerate(zip(marks, plane.marks_xy)):
        label = f"{name} (loss {losses[k]:.4g})" if losses is not None else name
        ax.plot([x], [y], "D", mfc=MARK_COLOURS[k % len(MARK_COLOURS)], mec="k", mew=1.5, ms=9, label=label,
                clip_on=False, zorder=5)  # fmt: skip
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, 7), fontsize=10, weight="bold", zorder=6)


def colour_scale(surface: Surface, style):
    """``style``, with a linear colour scale (and one warning) when its log scale cannot show ``surface``:
    zero or negative values, which ``ln`` would grey out (a surface of your own, an MSE of 0, a log-likelihood).
    """
    import warnings

    loss = surface.loss[np.isfinite(surface.loss)]
    if not style.log_scale or not (loss <= 0).any():
        return style
    warnings.warn(
        f"{int((loss <= 0).sum())} of {loss.size} surface values are zero or negative, which log colours cannot "
        "show; drawing with a linear colour scale instead (log_scale=False says so outright)",
        UserWarning,
        stacklevel=3,
    )
    return style.replace(log_scale=False)


def colour_label(log_scale: bool) -> str:
    """The colour bar's label: the natural log of the loss, or the loss."""
    return "ln(loss) on this slice" if log_scale else "loss on this slice"


def lowest_inside(surface: Surface, margin: float = 0.04):
    """``(x, y, loss)`` of the grid's lowest cell when it lies inside the window, else None.

    A lowest cell on (or within ``margin`` of) the edge is only the lowest point of the window,
    not a minimum of the slice, and a marker there would be cut in half; it is not marked.

    >>> xs = ys = np.linspace(-1, 1, 5)
    >>> lowest_inside(Surface(xs, ys, np.add.outer(ys**2, xs**2), np.zeros((5, 5))))
    (0.0, 0.0, 0.0)
    >>> lowest_inside(Surface(xs, ys, np.add.outer(ys**2, xs), np.zeros((5, 5)))) is None
    True
    """
    loss = np.where(np.isfinite(surface.loss), surface.loss, np.inf)
    if not np.isfinite(loss).any():
        return None
    i, j = np.unravel_index(np.argmin(loss), loss.shape)
    x, y = float(surface.xs[j]), float(surface.ys[i])
    for value, axis in ((x, surface.xs), (y, surface.ys)):
        low, high = float(axis[0]), float(axis[-1])
        if not low + margin * (high - low) < value < high - margin * (high - low):
            return None
    return x, y, float(loss[i, j])


def free_corner(ax, size: tuple[int, int], points: np.ndarray, pad: int = 8, margin: int = 8):
    """The top-left pixel (x, y from the figure's top) of a corner of ``ax`` where a box of ``size`` covers none
    of ``points`` (N, 2 data coordinates; consecutive points are a path, so the segments between them count too).

    Corners are tried in the order upper left, upper right, lower left, lower right; None when none is free.
    """
    box = ax.get_window_extent()
    fig_height = ax.figure.bbox.height
    drawn = _densified(ax.transData.transform(np.asarray(points, dtype=np.float64).reshape(-1, 2)))
    width, height = size
    for top in (True, False):
        for left in (True, False):
            x0 = box.x0 + margin if left else box.x1 - margin - width
            y1 = box.y1 - margin if top else box.y0 + margin + height  # the box's top, display pixels
            hit = (
                (drawn[:, 0] > x0 - pad)
                & (drawn[:, 0] < x0 + width + pad)
                & (drawn[:, 1] > y1 - height - pad)
                & (drawn[:, 1] < y1 + pad)
            )
            if not hit.any():
                return int(round(x0)), int(round(fig_height - y1))
    return None


def _densified(points: np.ndarray, step: float = 2.0) -> np.ndarray:
    """Display points with extra points every ``step`` pixels along each segment between consecutive ones."""
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) < 2:
        return points
    pieces = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        pieces.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(pieces)


def plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers (0.6, 1, 2) instead of mathtext powers of ten.

    Easier to read for losses, and it spares the mathtext parser, the slowest part of
    laying out the figure.
    """
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # LogFormatter picks which ticks get a label; this writes it
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:.3g}"

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _format_value(value: float, percent: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.1%}" if percent else f"{value:.4f}"


class CanvasFigure:
    """What every animated figure shares: an Agg ``canvas`` and the static picture saved in ``_background``."""

    canvas = None
    fig = None
    _background = None

    def background(self):
        """The static picture (everything but the animated artists), drawn on first use: a still never needs it."""
        if self._background is None:
            self.canvas.draw()
            self._background = self.canvas.copy_from_bbox(self.fig.bbox)
        return self._background

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        width, height = self.canvas.get_width_height()
        return int(width), int(height)

    def background_rgba(self) -> np.ndarray:
        """The static picture without the moving parts, (H, W, 4) uint8."""
        self.canvas.restore_region(self.background())
        return np.array(self.canvas.buffer_rgba())


class PathFigure(CanvasFigure):
    """A 2-D loss contour with the optimizer's path, rendered frame by frame.

    Args:
        projection: the path in the plane.
        surface: the loss grid over the plane.
        title: figure title.
        size: figure size in pixels (width, height); default (900, 600).
        dpi: dots per inch (default 100).
        cmap: colormap of the log-loss contour (default ``'YlGnBu'``, as the reference).
        levels: contour levels (default 35).
        path_color: colour of the path and the current point (default ``'red'``).
    """

    def __init__(
        self,
        projection: Projection,
        surface: Surface,
        *,
        title: str = "",
        size: tuple[int, int] | None = None,
        dpi: int = 100,
        cmap: str = "YlGnBu",
        levels: int = 35,
        path_color: str = "red",
        panel: bool | None = None,
        log_scale: bool = True,
        decision=None,
    ):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.projection = projection
        self.panel = projection.measured if panel is None else panel
        if self.panel and not projection.measured:
            raise ValueError("panel=True needs the true and slice losses: project(..., model=model, data=data)")
        self.decision = decision
        default = SIZE_WITH_PANEL if self.panel else SIZE
        if decision is not None:
            default = (default[0] + 480, default[1])
        width, height = size if size is not None else default
        self.fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        ratios = [1.55] + ([1.0] if self.panel else []) + ([0.95] if decision is not None else [])
        axes = list(np.atleast_1d(self.fig.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})))
        ax = self.ax = axes[0]
        side = axes[1] if self.panel else None
        draw_contour(self.fig, ax, surface, projection.plane, levels=levels, cmap=cmap, log_scale=log_scale)
        if getattr(projection.plane, "marks", None) is None:  # a 'through' plane's centre is its first mark
            centre = "the model (plane centre)" if projection.alone else "end of training (plane centre)"
            ax.plot([0.0], [0.0], "o", mfc="none", mec="k", ms=9, label=centre)
        self.fig.suptitle(faithfulness_title(title, projection, surface), fontsize=11)

        (self.line,) = ax.plot([], [], color=path_color, lw=1.5, animated=True)
        mover = "_nolegend_" if projection.alone else "optimizer"  # a model alone: nothing moves
        (self.point,) = ax.plot([], [], "o", color=path_color, ms=7, animated=True, label=mover)
        legend_above(ax, ncol=3)  # outside the axes, so it never covers the path
        self._moving = [(ax, self.line), (ax, self.point)]
        if self.panel:
            self._draw_panel(side, path_color)
        if decision is not None:
            self._draw_decision(axes[-1], decision)
        # The step/loss read-out changes every frame. Matplotlib rasterizes text glyph by
        # glyph, which would cost more than the rest of a frame, so Pillow draws it: in a
        # corner of the contour that the path never crosses, else in a strip below the figure.
        lines = 4 if projection.measured else 2
        marks = [[0.0, 0.0], (lowest_inside(surface) or (np.nan, np.nan))[:2]]  # the centre and the lowest point
        if getattr(projection.plane, "marks_xy", None) is not None:
            marks += [list(xy) for xy in projection.plane.marks_xy]
        chars = readout_chars(projection)
        at = place_readout(self.fig, ax, Label.measure(dpi, lines, chars), [projection.xy, *marks])
        self._label = Label(ax, dpi, lines=lines, chars=chars, at=at)

    def _draw_panel(self, side, path_color: str) -> None:
        """True loss and slice loss over the steps, with a cursor that follows the frame."""
        p = self.projection
        steps = p.step
        at = p.measured_at  # the curves run through the measured points only
        self._held = held(p.true_loss)
        if full_batch(p):  # the batch loss is the true loss: one line, said so
            side.plot(steps[at], p.true_loss[at], color="k", lw=1.6, label="true loss at θ (= batch loss, full batch)")
        else:
            side.plot(steps, p.loss, color="0.55", lw=0.8, label="batch loss (training)", zorder=1)
            side.plot(steps[at], p.true_loss[at], color="k", lw=1.6, label="true loss at θ", zorder=3)
        side.plot(steps[at], p.slice_loss[at], color=path_color, lw=1.4, ls="--", label="slice loss at projection",
                  zorder=2)  # fmt: skip
        values = np.concatenate([p.loss, p.true_loss, p.slice_loss])
        if np.all(values[np.isfinite(values)] > 0):
            side.set_yscale("log")
            plain_log_ticks(side.yaxis)
        side.set_xlabel(getattr(p, "step_label", "step"))
        side.set_ylabel("loss along the path")
        side.grid(alpha=0.3)
        handles, labels = side.get_legend_handles_labels()
        if np.isfinite(p.accuracy).any():  # accuracy of each training step, on its own axis
            twin = side.twinx()
            label = "accuracy (training batch)" if not full_batch(p) else "accuracy (training set)"
            (line,) = twin.plot(steps, p.accuracy, color="tab:green", lw=0.9, alpha=0.8, label=label)
            twin.set_ylim(0, 1.02)
            twin.set_ylabel("accuracy", color="tab:green")
            handles, labels = handles + [line], labels + [line.get_label()]
        legend_above(side, handles, labels, ncol=2)
        self._cursor = side.axvline(steps[0], color="0.3", lw=0.8, animated=True)
        (self._true_dot,) = side.plot([], [], "o", color="k", ms=5, animated=True)
        (self._slice_dot,) = side.plot([], [], "o", color=path_color, ms=5, animated=True)
        self._moving += [(side, self._cursor), (side, self._true_dot), (side, self._slice_dot)]

    def _draw_decision(self, ax, decision) -> None:
        """The classifier's decision regions at the current step, over the training points."""
        from matplotlib.colors import ListedColormap

        classes = int(max(decision.labels.max(), decision.y.max())) + 1
        colours = ListedColormap(["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
                                  "#8c8c8c", "#ccb974", "#64b5cd"][: max(classes, 2)])  # fmt: skip
        extent = (decision.xs[0], decision.xs[-1], decision.ys[0], decision.ys[-1])
        self._regions = ax.imshow(decision.labels[0], origin="lower", extent=extent, cmap=colours, vmin=-0.5,
                                  vmax=colours.N - 0.5, alpha=0.35, aspect="auto", animated=True,
                                  interpolation="nearest")  # fmt: skip
        ax.scatter(decision.X[:, 0], decision.X[:, 1], c=decision.y, cmap=colours, vmin=-0.5, vmax=colours.N - 0.5,
                   s=6, edgecolors="none")  # fmt: skip
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title("decision regions at this step", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        self._moving.insert(0, (ax, self._regions))  # under the nothing else; drawn first

    def label(self, k: int) -> str:
        return readout(self.projection, k)

    def rgba(self, k: int, copy: bool = True) -> np.ndarray:
        """Frame ``k``, the state at recorded point ``k``, as an (H, W, 4) uint8 array.

        With ``copy=False`` it is a view of the canvas, valid until the next call: what a
        writer that encodes each frame at once needs, without a frame-sized copy.
        """
        self.canvas.restore_region(self.background())
        self.update(k)
        for ax, artist in self._moving:
            ax.draw_artist(artist)
        frame = np.asarray(self.canvas.buffer_rgba())
        self._label.draw(frame, self.label(k))
        return frame.copy() if copy else frame

    def update(self, k: int) -> None:
        """Set the moving artists to the state at recorded point ``k`` (without drawing)."""
        p = self.projection
        self.line.set_data(p.xy[: k + 1, 0], p.xy[: k + 1, 1])
        self.point.set_data(p.xy[k : k + 1, 0], p.xy[k : k + 1, 1])
        if self.decision is not None:
            self._regions.set_data(self.decision.at(k))
        if self.panel:
            step = float(p.step[k])
            self._cursor.set_xdata([step, step])
            m = int(self._held[k])  # the dots sit at the latest measured point
            shown = ([float(p.step[m])], [p.true_loss[m]], [p.slice_loss[m]]) if m >= 0 else ([], [], [])
            self._true_dot.set_data(shown[0], shown[1])
            self._slice_dot.set_data(shown[0], shown[2])


def full_batch(p: Projection) -> bool:
    """Whether each step's batch loss is the true loss at its point (training on the whole dataset)."""
    if not p.measured:
        return False
    both = np.isfinite(p.loss) & np.isfinite(p.true_loss)
    return bool(both.any()) and bool(np.allclose(p.loss[both], p.true_loss[both], rtol=1e-4, atol=1e-7))


def legend_above(ax, handles=None, labels=None, ncol: int = 2):
    """The axes' legend in a row above it, outside the axes, where no path or curve is."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=ncol, fontsize=8,
                     framealpha=0.8, borderaxespad=0.0)  # fmt: skip


def place_readout(fig, ax, size: tuple[int, int], obstacles) -> tuple[int, int]:
    """Lay out ``fig`` and return where a read-out box of ``size`` goes: the top-left pixel (x, y from the top).

    A corner of ``ax`` that no path point, segment or marker in ``obstacles`` (arrays of (N, 2) data
    coordinates) comes near; else a strip kept free below the figure's axes.
    """
    fig.tight_layout()
    points = np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1, 2) for o in obstacles])
    spot = free_corner(ax, size, points)
    if spot is not None:
        return spot
    height = fig.bbox.height
    fig.tight_layout(rect=(0.0, (size[1] + 12) / height, 1.0, 1.0))
    return int(ax.get_window_extent().x0), int(height - size[1] - 6)


class Label:
    """A few lines of read-out in a translucent box, drawn with Pillow: at ``at`` (x, y from the figure's top)
    or in a corner of an axes."""

    def __init__(self, ax, dpi: int, lines: int = 2, chars: int = 28, pad: int = 6, corner: str = "upper left",
                 at: tuple[int, int] | None = None):  # fmt: skip
        self.font = _font(dpi)
        self.line_height, (width, height) = Label._line_height(self.font), Label.measure(dpi, lines, chars, pad)
        box = ax.get_window_extent()  # display pixels, origin bottom left
        fig_height = ax.figure.bbox.height
        self.x0 = int(box.x0) + 8
        self.y0 = int(fig_height - box.y1) + 8
        if corner == "lower left":
            self.y0 = int(fig_height - box.y0) - 8 - int(height)
        if at is not None:
            self.x0, self.y0 = at
        self.size = (int(width), int(height))
        self.pad = pad
        self._fig_height = fig_height
        self._overlay = self._box()

    @staticmethod
    def _line_height(font) -> int:
        return round(font.getbbox("M")[3] * 1.25)

    @staticmethod
    def measure(dpi: int, lines: int = 2, chars: int = 28, pad: int = 6) -> tuple[int, int]:
        """(width, height) in pixels of a box of ``lines`` lines of ``chars`` characters."""
        font = _font(dpi)
        left, _, right, _ = font.getbbox("M" * chars)
        return int((right - left) + 2 * pad), int(Label._line_height(font) * lines + 2 * pad)

    def display_bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the box in matplotlib display pixels (origin bottom left), for checks."""
        fig_height = self._fig_height
        return self.x0, fig_height - self.y0 - self.size[1], self.x0 + self.size[0], fig_height - self.y0

    def _box(self):
        from PIL import Image, ImageDraw

        overlay = Image.new("RGBA", self.size, (0, 0, 0, 0))
        ImageDraw.Draw(overlay).rounded_rectangle(
            (0, 0, self.size[0] - 1, self.size[1] - 1),
            radius=5,
            fill=(255, 255, 255, 205),
            outline=(150, 150, 150, 255),
        )
        return overlay

    def draw(self, frame: np.ndarray, text) -> None:
        """Draw ``text`` (a string, or ``(line, colour)`` pairs) onto ``frame`` (H, W, 4) uint8, in place."""
        from matplotlib.colors import to_rgba
        from PIL import Image, ImageDraw

        lines = [(line, "k") for line in text.split("\n")] if isinstance(text, str) else text
        # In a figure too small for the box, it is shifted (then cut) to stay inside the frame.
        w, h = min(self.size[0], frame.shape[1]), min(self.size[1], frame.shape[0])
        x0, y0 = max(0, min(self.x0, frame.shape[1] - w)), max(0, min(self.y0, frame.shape[0] - h))
        region = frame[y0 : y0 + h, x0 : x0 + w]
        overlay = self._overlay if (w, h) == self.size else self._overlay.crop((0, 0, w, h))
        image = Image.alpha_composite(Image.fromarray(region), overlay)
        draw = ImageDraw.Draw(image)
        for row, (line, colour) in enumerate(lines):
            fill = tuple(int(round(255 * c)) for c in to_rgba(colour))
            draw.text((self.pad, self.pad + row * self.line_height), line, font=self.font, fill=fill)
        region[...] = np.asarray(image)


def _font(dpi: int):
    from matplotlib import get_data_path
    from PIL import ImageFont

    return ImageFont.truetype(f"{get_data_path()}/fonts/ttf/DejaVuSansMono.ttf", round(10 * dpi / 72))


def save_still(figure, k: int, out, kind: str) -> None:
    """Write ``figure`` at frame ``k`` as a still image (png, pdf or svg), with its read-out as real text."""
    figure.update(k)
    for _, artist in figure._moving:
        artist.set_animated(False)
    if hasattr(figure, "still_texts"):
        placed = [(label, lines) for label, (_, lines) in zip(figure._labels, figure.still_texts(k))]
    else:
        placed = [(figure._label, [(line, "k") for line in figure.label(k).split("\n")])]
    for label, lines in placed:
        _write_lines(figure.fig, label, lines)
    save_figure(figure.fig, out, kind)


# What would make a still differ between two runs of one command: the date in a PDF or SVG, and
# the random part of the ids an SVG gives its clip paths and glyphs (derived from this salt instead).
_UNDATED = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}
_SVG_SALT = "losstrail"


def save_figure(fig, out, kind: str) -> None:
    """``fig.savefig(out)`` as ``kind`` (png, pdf, svg), the same bytes each time for the same figure."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": _SVG_SALT}):
        fig.savefig(out, format=kind, metadata=_UNDATED.get(kind))


def _write_lines(fig, label: Label, lines) -> None:
    """The read-out as real (vector) text where the animation's box is (a place no path crosses)."""
    width, height = fig.bbox.width, fig.bbox.height
    for row, (line, colour) in enumerate(lines):
        y = label.y0 + label.pad + row * label.line_height
        fig.text(label.x0 / width, 1 - y / height, line, family="monospace", fontsize=10, color=colour, va="top",
                 bbox={"fc": "white", "alpha": 0.7, "lw": 0, "pad": 1})  # fmt: skip
