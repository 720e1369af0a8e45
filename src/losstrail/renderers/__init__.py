"""Pictures of a path on a loss surface: animations, stills and pages, in the formats ``formats.PICTURES`` names."""

from __future__ import annotations

import os
from pathlib import Path

from losstrail._checks import output_format
from losstrail._files import atomic_path
from losstrail._frames import frames_to_show
from losstrail._memory import reuse_freed_memory
from losstrail._registry import ANIMATED_FORMATS, STILL_FORMATS
from losstrail.renderers.formats import picture_format
from losstrail.values.projection import Projection
from losstrail.values.specs import Style
from losstrail.values.surface import Surface

__all__ = ["STILL_FORMATS", "Animation", "animate", "draw_path", "output_format", "plot_loss_line", "write_animation"]


def plot_loss_line(line, out="line.png", **options) -> Path:
    """A still of the loss along a line; see ``losstrail.renderers.line.plot_loss_line``."""
    from losstrail.renderers.line import plot_loss_line as plot

    return plot(line, out, **options)


class Animation:
    """A written animation or picture; shows itself inline in Jupyter (``_repr_html_``).

    ``path`` is the file, ``format`` its format, ``frames`` how many frames it has.
    """

    def __init__(self, path: str | os.PathLike, format: str, frames: int):
        self.path, self.format, self.frames = Path(path), format, frames

    def __repr__(self) -> str:
        return f"Animation({str(self.path)!r}, format={self.format!r}, frames={self.frames})"

    def __fspath__(self) -> str:
        return str(self.path)

    def _repr_html_(self) -> str:
        import base64
        import html

        picture = picture_format(self.format)
        if picture.shown == "iframe":
            page = html.escape(self.path.read_text(), quote=True)
            return f'<iframe srcdoc="{page}" style="width:100%;height:720px;border:0"></iframe>'
        if picture.shown == "path":
            return f"<p>{self.format.upper()} written to <code>{html.escape(str(self.path))}</code></p>"
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        src = f"data:{picture.mime};base64,{data}"
        if picture.shown == "video":
            return f'<video src="{src}" controls loop autoplay muted style="max-width:100%"></video>'
        return f'<img src="{src}" style="max-width:100%"/>'


def animate(
    projection: Projection,
    surface: Surface,
    out: str | os.PathLike = "sample.gif",
    *,
    style: Style | None = None,
    panel: bool | None = None,
    decision=None,
    quiet: bool = False,
    **options,
) -> Animation:
    """Animate the path moving across the loss contour (or draw one still of it) and write ``out``.

    Args:
        projection: the path in the plane (from ``project``); or, for a plane around a model with
            no path (``make_plane(model, ...)``), the ``Plane`` itself: the model is drawn as one
            point at the plane's centre, its loss read from the grid there.
        surface: the loss grid (from ``loss_surface``).
        out: output file; its extension (or ``format``) picks the format: ``.gif``, ``.mp4``
            (H.264, needs ``losstrail[mp4]``), ``.html`` (interactive, needs ``losstrail[html]``),
            or a still ``.png``/``.pdf``/``.svg`` of the path up to ``step`` (default: all of it).
        style: a ``Style``; ``**options`` are its fields, and replace its values: ``format``,
            ``view`` (``'2d'`` contour or ``'3d'`` surface), ``rotate``, ``cmap``, ``levels``,
            ``log_scale``, ``size``, ``dpi``, ``path_color``, ``every``, ``step`` (of a still),
            ``title``, ``fps`` (default 15), ``max_frames`` (default 300, spread evenly over
            the steps, first and last always in). A field this picture cannot show, set away
            from its default, is an error naming it. The default size is 900x600, or 1280x600
            with the loss panel.
        panel: draw the true-loss and slice-loss curves beside the contour; default when
            ``projection`` carries them (``project(..., model=, data=)``).
        decision: ``DecisionMaps`` for a panel with the classifier's decision regions (2-D view).
        quiet: no progress bar.

    Returns:
        An ``Animation`` (the written file; shows itself inline in Jupyter). The file
        appears only once complete.
    """
    style = (style or Style()).updated(options, where="animate")
    if not isinstance(projection, Projection):
        projection, panel = centre_point(projection, surface), False if panel is None else panel
    kind = output_format(out, style.format)
    picture = picture_format(kind)
    style.check_for("run", kind)
    if decision is not None and (style.view == "3d" or picture.medium == "page"):
        raise ValueError(
            "decision regions are drawn beside the 2-D contour of a GIF, MP4 or still; "
            f"leave decision out for view={style.view!r} and format {kind!r}"
        )
    picture.check_installed()  # before any drawing
    return draw_path(projection, surface, out, style, kind, panel=panel, decision=decision, quiet=quiet)


def draw_path(projection: Projection, surface: Surface, out: str | os.PathLike, style: Style, kind: str, *,
              panel: bool | None = None, decision=None, quiet: bool = False) -> Animation:  # fmt: skip
    """``animate``'s drawing, for a ``style`` checked already for a single run's picture in format ``kind``
    (``Style.check_for``, the decision panel's view and format, the format's package installed): the job runner
    checks them once, before any work, and calls this."""
    from losstrail.renderers._figure import colour_scale

    picture = picture_format(kind)
    style = colour_scale(surface, style)
    frames = frames_to_show(projection.step, style.max_frames, style.every)
    if picture.medium == "page":
        name = "model" if projection.alone else "path"
        path = picture.write([(name, _subsampled(projection, frames))], surface, out, style=style,
                             colours=[style.path_color])  # fmt: skip
        return Animation(path, kind, len(frames))
    still = len(projection) - 1 if style.step is None else _index_of_step(projection, style.step)
    figure = _path_figure(projection, surface, style, len(frames), panel, decision)
    return write_figure(figure, out, kind, frames, still=still, fps=style.fps, quiet=quiet)


def centre_point(plane, surface: Surface) -> Projection:
    """The model a plane is centred on, as a one-point path at ``(0, 0)``: its loss and accuracy read from
    the grid there (bilinear between the cells around it)."""
    import dataclasses

    import numpy as np

    from losstrail.values.plane import Plane
    from losstrail.values.surface import grid_value

    if not isinstance(plane, Plane):
        raise ValueError(
            f"animate draws a Projection (lt.project(plane, trajectory)) or, with no path, the Plane the grid is on; "
            f"got {type(plane).__name__}"
        )
    xy = np.zeros((1, 2))
    loss = grid_value(surface, xy)
    accuracy = np.full(1, np.nan)
    if surface.accuracy is not None:
        accuracy = grid_value(dataclasses.replace(surface, loss=surface.accuracy), xy)
    zero = np.zeros(1, np.int64)
    return Projection(plane, xy, np.zeros(1), loss, accuracy, zero, zero, loss_label="loss", step_label="")


def _path_figure(projection: Projection, surface: Surface, style: Style, n_frames: int, panel, decision):
    """The figure that draws one run: the 3-D surface, or the 2-D contour (with its panels)."""
    look = {"title": style.title or "", "size": style.size, "dpi": style.dpi, "cmap": style.cmap}
    look.update(path_color=style.path_color, log_scale=style.log_scale)
    if style.view == "3d":
        from losstrail.renderers.surface3d import SurfaceFigure

        return SurfaceFigure(projection, surface, rotate=style.rotate, n_frames=n_frames, **look)
    from losstrail.renderers._figure import PathFigure

    return PathFigure(projection, surface, levels=style.levels, panel=panel, decision=decision, **look)


def _index_of_step(projection: Projection, step: int) -> int:
    import numpy as np

    hits = np.flatnonzero(projection.step == step)
    if not len(hits):
        raise ValueError(
            f"step={step!r} is not a recorded step; this path has steps "
            f"{int(projection.step[0])} to {int(projection.step[-1])}"
        )
    return int(hits[0])


def _subsampled(projection: Projection, frames) -> Projection:
    """The projection at the chosen frames only (what the HTML page stores)."""
    import dataclasses

    import numpy as np

    changes = {}
    for field in dataclasses.fields(projection):
        value = getattr(projection, field.name)
        if isinstance(value, np.ndarray):  # the per-point arrays: not the plane, nor the labels
            changes[field.name] = value[frames]
    return dataclasses.replace(projection, **changes)


def write_animation(
    figure, frames, out: str | os.PathLike, *, fps: float, quiet: bool = False, format: str | None = None
) -> Animation:
    """Write the frames ``frames`` of ``figure`` (anything with ``rgba(k, copy)`` and ``background_rgba()``) to ``out``.

    GIF or MP4 by the extension (or ``format``); the file appears only once complete.
    """
    kind = output_format(out, format, allowed=ANIMATED_FORMATS)
    frames = [int(k) for k in frames]
    with atomic_path(out) as tmp, reuse_freed_memory():
        picture_format(kind).write(figure, frames, tmp, fps=fps, quiet=quiet)
    return Animation(out, kind, len(frames))


def write_figure(figure, out: str | os.PathLike, format: str, frames, *, still: int, fps: float,
                 quiet: bool = False) -> Animation:  # fmt: skip
    """Write ``figure`` to ``out`` in ``format``: its frame ``still`` as a still, else its ``frames`` animated."""
    kind = output_format(out, format, allowed=(*ANIMATED_FORMATS, *STILL_FORMATS))
    picture = picture_format(kind)
    if picture.medium == "still":
        with atomic_path(out) as tmp:
            picture.write(figure, still, tmp, kind)
        return Animation(out, kind, 1)
    return write_animation(figure, frames, out, fps=fps, quiet=quiet, format=kind)
