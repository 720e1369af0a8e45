"""Pictures of a path on a loss surface: animations and stills."""

from __future__ import annotations

import os
from pathlib import Path

from losstrail._checks import output_format
from losstrail._files import atomic_path
from losstrail._frames import frames_to_show
from losstrail._memory import reuse_freed_memory
from losstrail._progress import track
from losstrail._registry import ANIMATED_FORMATS, STILL_FORMATS, VIEWS, check_choice
from losstrail.landscape import Surface
from losstrail.projection import Projection

__all__ = ["STILL_FORMATS", "Animation", "animate", "output_format", "plot_loss_line", "write_animation"]


def plot_loss_line(line, out="line.png", **options) -> Path:
    """A still of the loss along a line; see ``losstrail.renderers.line.plot_loss_line``."""
    from losstrail.renderers.line import plot_loss_line as plot

    return plot(line, out, **options)


def check_animation_args(fps: float, max_frames: int) -> None:
    """Raise ValueError for a frame rate or frame budget no animation can have."""
    from losstrail._checks import check_fps

    check_fps(fps)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
        raise ValueError(f"n_frames={max_frames!r} must be an integer of at least 2, e.g. n_frames=300")


class Animation:
    """A written animation or picture; shows itself inline in Jupyter (``_repr_html_``).

    ``path`` is the file, ``format`` its format, ``frames`` how many frames it has.
    """

    _MIME = {"gif": "image/gif", "png": "image/png", "svg": "image/svg+xml", "mp4": "video/mp4"}

    def __init__(self, path: str | os.PathLike, format: str, frames: int):
        self.path, self.format, self.frames = Path(path), format, frames

    def __repr__(self) -> str:
        return f"Animation({str(self.path)!r}, format={self.format!r}, frames={self.frames})"

    def __fspath__(self) -> str:
        return str(self.path)

    def _repr_html_(self) -> str:
        import base64
        import html

        if self.format == "html":
            page = html.escape(self.path.read_text(), quote=True)
            return f'<iframe srcdoc="{page}" style="width:100%;height:720px;border:0"></iframe>'
        if self.format == "pdf":
            return f"<p>PDF written to <code>{html.escape(str(self.path))}</code></p>"
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        src = f"data:{self._MIME[self.format]};base64,{data}"
        if self.format == "mp4":
            return f'<video src="{src}" controls loop autoplay muted style="max-width:100%"></video>'
        return f'<img src="{src}" style="max-width:100%"/>'


def animate(
    projection: Projection,
    surface: Surface,
    out: str | os.PathLike = "sample.gif",
    *,
    format: str | None = None,
    fps: float = 15,
    max_frames: int = 300,
    every: int | None = None,
    step: int | None = None,
    title: str = "",
    size: tuple[int, int] | None = None,
    dpi: int = 100,
    cmap: str = "YlGnBu",
    levels: int = 35,
    log_scale: bool = True,
    path_color: str = "red",
    panel: bool | None = None,
    view: str = "2d",
    rotate: bool = False,
    decision=None,
    quiet: bool = False,
) -> Animation:
    """Animate the path moving across the loss contour (or draw one still of it) and write ``out``.

    Args:
        projection: the path in the plane (from ``project``).
        surface: the loss grid (from ``loss_surface``).
        out: output file; its extension (or ``format``) picks the format: ``.gif``, ``.mp4``
            (H.264, needs ``losstrail[mp4]``), ``.html`` (interactive, needs ``losstrail[html]``),
            or a still ``.png``/``.pdf``/``.svg`` of the path up to ``step`` (default: all of it).
        format: the format, when not the extension's.
        fps: frames per second (default 15).
        max_frames: at most this many frames, spread evenly over the steps, first and
            last always in (default 300).
        every: draw only every ``every``-th recorded step (and the last).
        step: for a still, the global step it shows (default the last).
        title, size, dpi, cmap, levels, path_color: the look; see ``PathFigure``. The
            default size is 900x600, or 1280x600 with the loss panel.
        log_scale: contour of log loss (default, as the reference) or of the loss itself.
        panel: draw the true-loss and slice-loss curves beside the contour; default when
            ``projection`` carries them (``project(..., model=, data=)``).
        view: ``'2d'`` (contour, default) or ``'3d'`` (shaded surface with the path on it).
        rotate: ``'3d'``: turn the camera slowly over the animation.
        decision: ``DecisionMaps`` for a panel with the classifier's decision regions.
        quiet: no progress bar.

    Returns:
        An ``Animation`` (the written file; shows itself inline in Jupyter). The file
        appears only once complete.
    """
    from losstrail.renderers._figure import PathFigure, save_still

    kind = output_format(out, format)
    check_animation_args(fps, max_frames)
    check_choice("view", view, VIEWS)
    frames = frames_to_show(projection.step, max_frames, every)
    if kind == "html":
        from losstrail.renderers.html import write_html

        keep = _subsampled(projection, frames)
        path = write_html([("path", keep)], surface, out, max_frames=max_frames, fps=fps, title=title, cmap=cmap,
                          log_scale=log_scale, view=view, colours=[path_color])  # fmt: skip
        return Animation(path, kind, len(frames))
    if kind == "mp4":
        from losstrail.renderers.mp4 import check_ffmpeg

        check_ffmpeg()
    if view == "3d":
        from losstrail.renderers.surface3d import SurfaceFigure

        figure = SurfaceFigure(projection, surface, rotate=rotate, n_frames=len(frames), title=title, size=size,
                               dpi=dpi, cmap=cmap, path_color=path_color, log_scale=log_scale)  # fmt: skip
    else:
        figure = PathFigure(
            projection,
            surface,
            title=title,
            size=size,
            dpi=dpi,
            cmap=cmap,
            levels=levels,
            path_color=path_color,
            panel=panel,
            log_scale=log_scale,
            decision=decision,
        )
    if kind in STILL_FORMATS:
        k = len(projection) - 1 if step is None else _index_of_step(projection, step)
        with atomic_path(out) as tmp:
            save_still(figure, k, tmp, kind)
        return Animation(out, kind, 1)
    return write_animation(figure, frames, out, fps=fps, quiet=quiet, format=kind)


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

    changes = {}
    for field in dataclasses.fields(projection):
        value = getattr(projection, field.name)
        if field.name != "plane" and value is not None:
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
        if kind == "mp4":
            from losstrail.renderers.mp4 import write_mp4

            rgba = track((figure.rgba(k, copy=False) for k in frames), len(frames), "rendering", quiet, unit="frame")
            write_mp4(rgba, tmp, fps=fps, size=figure.size)
        else:
            from losstrail.renderers.gif import write_gif

            write_gif(figure, frames, tmp, fps=fps, quiet=quiet)
    return Animation(out, kind, len(frames))
