"""Pictures of a path on a loss surface: animations and stills."""

from __future__ import annotations

import os
from pathlib import Path

from losstrail._files import atomic_path
from losstrail._memory import reuse_freed_memory
from losstrail._progress import track
from losstrail._registry import FORMATS, quoted
from losstrail.projection import Projection
from losstrail.surface import Surface

__all__ = ["animate", "output_format", "plot_loss_line", "write_animation"]


def plot_loss_line(line, out="line.png", **options) -> Path:
    """A still of the loss along a line; see ``losstrail.renderers.line.plot_loss_line``."""
    from losstrail.renderers.line import plot_loss_line as plot

    return plot(line, out, **options)


def output_format(out: str | os.PathLike, format: str | None = None, *, allowed=FORMATS) -> str:
    """The format of ``out``: ``format`` if given, else its extension; checked against the known ones.

    >>> output_format("runs/sample.GIF")
    'gif'
    >>> output_format("movie.avi")
    Traceback (most recent call last):
    ...
    ValueError: output 'movie.avi' has format 'avi', which is not supported; expected one of 'gif'
    """
    chosen = (format or Path(out).suffix.lstrip(".")).lower()
    if chosen not in allowed:
        raise ValueError(
            f"output {str(out)!r} has format {chosen!r}, which is not supported; expected one of {quoted(allowed)}"
        )
    return chosen


def check_animation_args(fps: float, max_frames: int) -> None:
    """Raise ValueError for a frame rate or frame budget no animation can have."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"giffps={fps!r} must be a positive number of frames per second, e.g. giffps=15")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
        raise ValueError(f"n_frames={max_frames!r} must be an integer of at least 2, e.g. n_frames=300")


def animate(
    projection: Projection,
    surface: Surface,
    out: str | os.PathLike = "sample.gif",
    *,
    fps: float = 15,
    max_frames: int = 300,
    title: str = "",
    size: tuple[int, int] | None = None,
    dpi: int = 100,
    cmap: str = "YlGnBu",
    levels: int = 35,
    path_color: str = "red",
    panel: bool | None = None,
    quiet: bool = False,
) -> Path:
    """Animate the path moving across the loss contour and write it to ``out``.

    Args:
        projection: the path in the plane (from ``project``).
        surface: the loss grid (from ``loss_surface``).
        out: output file; its extension picks the format (``.gif``).
        fps: frames per second (default 15).
        max_frames: at most this many frames, spread evenly over the steps, first and
            last always in (default 300).
        title, size, dpi, cmap, levels, path_color: the look; see ``PathFigure``. The
            default size is 900x600, or 1280x600 with the loss panel.
        panel: draw the true-loss and slice-loss curves beside the contour; default when
            ``projection`` carries them (``project(..., model=, data=)``).
        quiet: no progress bar.

    Returns:
        The path of the written file. It appears only once complete.
    """
    from losstrail.renderers._figure import PathFigure, select_frames

    output_format(out)
    check_animation_args(fps, max_frames)
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
    )
    frames = select_frames(len(projection), max_frames)
    return write_animation(figure, frames, out, fps=fps, quiet=quiet)


def write_animation(figure, frames, out: str | os.PathLike, *, fps: float, quiet: bool = False) -> Path:
    """Write the frames ``frames`` of ``figure`` (anything with ``rgba(k, copy)`` and ``background_rgba()``) to ``out``.

    The file appears only once complete.
    """
    from losstrail.renderers.gif import PaletteMapper, write_gif

    output_format(out)
    frames = [int(k) for k in frames]
    mapper = PaletteMapper(figure.background_rgba(), figure.rgba(frames[-1]))
    with atomic_path(out) as tmp, reuse_freed_memory():
        rgba = (figure.rgba(k, copy=False) for k in frames)  # each is encoded before the next is drawn
        write_gif(track(rgba, len(frames), "rendering", quiet, unit="frame"), tmp, fps=fps, mapper=mapper)
    return Path(out)
