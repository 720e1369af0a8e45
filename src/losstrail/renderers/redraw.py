"""Drawing a saved run or comparison again, in any format, from its NumPy arrays and JSON alone.

Nothing here imports torch or Lightning: re-rendering with another colour map or format is as
quick as drawing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from losstrail._checks import check_output_file, output_format
from losstrail._registry import medium
from losstrail.planes.projection import project
from losstrail.renderers import Animation, animate, draw_path, write_figure
from losstrail.renderers.formats import picture_format
from losstrail.store.checks import check_outputs
from losstrail.store.formats import read_imported
from losstrail.store.rundir import COMPARISON_ROLES, RunDir
from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.results import Comparison
from losstrail.values.specs import Style
from losstrail.values.surface import DecisionMaps, Surface, grid_value
from losstrail.values.trajectory import Trajectory

__all__ = ["render", "render_comparison"]

# The names ``compare`` and ``render_comparison`` give the Style fields they take as arguments of their own.
COMPARISON_NAMES = {"max_frames": "n_frames"}


def render(
    run_dir: str | os.PathLike,
    out: str | os.PathLike = "sample.gif",
    *,
    style: Style | None = None,
    decision: bool | None = None,
    quiet: bool = False,
    **options,
):
    """Draw a saved run (or comparison) again, in any format, without training or evaluating anything.

    Args:
        run_dir: a run directory written by ``loss_landscape_anim`` or ``losstrail run``, or a
            comparison directory written by ``compare``.
        out: the output file; its extension picks the format (gif, mp4, html, png, pdf, svg).
        style: a ``Style``; ``**options`` are its fields and replace its values: ``fps``,
            ``max_frames``, ``title`` (default the one saved with the run), ``format``, ``view``,
            ``cmap``, ``levels``, ``layout`` (a comparison's) ... A field the picture cannot
            show, set away from its default, is an error naming it.
        decision: the decision-regions panel; default when the run saved one (and the picture
            is a 2-D GIF, MP4 or still).
        quiet: no progress bar.

    Returns:
        The ``Animation`` written.
    """
    style = (style or Style()).updated(options, where="render")
    kind = output_format(out, style.format)
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(
            f"run_dir={str(run_dir)!r} is not a directory; pass the model_dirpath of a finished run"
        )
    check_outputs([("out", out)], run_dir=run_dir, kept=COMPARISON_ROLES)
    run = RunDir(run_dir)
    comparing = run.holds_comparison  # a link or FIFO there is named, not skipped
    style.check_for("comparison" if comparing else "run", kind)  # once: drawn with the style as it is
    drawn_beside = style.view == "2d" and medium(kind) != "page"  # where a decision panel can go
    if decision and not comparing and not drawn_beside:
        raise ValueError(
            "decision regions are drawn beside the 2-D contour of a GIF, MP4 or still; "
            f"leave decision out for view={style.view!r} and format {kind!r}"
        )
    check_output_file("out", out)
    picture_format(kind).check_installed()  # before any drawing
    if comparing:
        return draw_comparison(run.load_comparison(), out, style, kind, quiet=quiet)
    settings = run.finished().settings  # run.json read and checked once
    trajectory = run.load(Trajectory).finite_prefix()
    plane, surface = run.load(Plane), run.load(Surface)
    run.check_together(trajectory, plane, surface)
    projection = run.projection(plane, trajectory)
    if projection is None:
        projection = project(plane, trajectory)
    maps = None
    if decision or (decision is None and drawn_beside and run.has(DecisionMaps)):
        maps = run.load(DecisionMaps)
    if style.title is None:
        style = style.replace(title=settings.get("title", ""))
    return draw_path(projection, surface, out, style, kind, decision=maps, quiet=quiet)


def render_comparison(
    comparison: Comparison,
    out: str | os.PathLike = "compare.gif",
    *,
    style: Style | None = None,
    quiet: bool = False,
    **options,
):
    """Animate every run of ``comparison`` in step on the shared surface and write ``out`` (gif, mp4, html, still).

    ``style`` (or its fields as ``**options``; ``n_frames`` is ``max_frames``) sets the look:
    ``layout``, ``timeline``, ``fps``, ``max_frames``, ``title`` (default "Comparing ..."),
    ``format``, ``cmap``, ``levels``, ``log_scale``, ``size``, ``dpi``, and ``view='3d'`` for
    an HTML page. A field a comparison's picture cannot show is an error naming it.
    """
    if "n_frames" in options:
        options["max_frames"] = options.pop("n_frames")
    style = (style or Style()).updated(options, COMPARISON_NAMES, where="render_comparison")
    kind = output_format(out, style.format)
    style.check_for("comparison", kind, COMPARISON_NAMES)
    picture_format(kind).check_installed()  # before any drawing
    return draw_comparison(comparison, out, style, kind, quiet=quiet)


def draw_comparison(comparison: Comparison, out: str | os.PathLike, style: Style, kind: str, *,
                    quiet: bool = False) -> Animation:  # fmt: skip
    """``render_comparison``'s drawing, for a ``style`` checked already for a comparison's picture in format
    ``kind`` (``Style.check_for``, the format's package installed): ``compare`` and ``render`` check them once."""
    from losstrail.renderers.compare import CompareFigure

    style = style if style.title is not None else style.replace(title="Comparing " + ", ".join(comparison.names))
    from losstrail.renderers._figure import colour_scale

    style = colour_scale(comparison.surface, style)
    runs = list(zip(comparison.names, comparison.projections))
    picture = picture_format(kind)
    if picture.medium == "page":
        path = picture.write(runs, comparison.surface, out, style=style, captured=comparison.captured)
        return Animation(path, kind, style.max_frames)
    figure = CompareFigure(
        runs, comparison.surface, title=style.title, layout=style.layout, timeline=style.timeline,
        max_frames=style.max_frames, size=style.size, dpi=style.dpi, cmap=style.cmap, levels=style.levels,
        log_scale=style.log_scale, captured=comparison.captured,
    )  # fmt: skip
    frames = range(figure.n_frames)
    return write_figure(figure, out, kind, frames, still=frames[-1], fps=style.fps, quiet=quiet)


def render_surface(
    surface: str | os.PathLike,
    out: str | os.PathLike = "surface.gif",
    *,
    path: str | os.PathLike | None = None,
    directions: str | os.PathLike | None = None,
    key: str | None = None,
    style=None,
    quiet: bool = False,
    **options,
):
    """Draw (or animate) a surface made elsewhere, e.g. by Li et al.'s ``plot_surface.py``, with its path.

    Args:
        surface: the surface file, as ``read_surface`` reads it.
        out: the output file; its extension picks the format (gif, mp4, html, png, pdf, svg).
        path: Li et al.'s projection file (``proj_xcoord``, ``proj_ycoord``), for the path to
            draw; without it the picture marks only the plane's centre, the trained model.
        directions: Li et al.'s direction file, to name the axes (PCA: the share of variance).
        key: the loss array in the surface file (default ``train_loss`` or a fork's name).
        style, quiet, **options: as ``losstrail.render`` (``fps``, ``max_frames``, ``title``, ``cmap``, ...).

    Returns:
        The ``Animation`` written.
    """
    style = (style or Style()).updated(options, where="render_surface")
    style.check_for("run", output_format(out, style.format))
    check_outputs([("out", out)], inputs=[("surface", surface), ("path", path), ("directions", directions)])
    imported = read_imported(surface, path=path, directions=directions, key=key)
    grid, problem, extras, found, about = (imported.surface, imported.problem, imported.extras, imported.path,
                                           imported.about)  # fmt: skip
    explained = extras.get("explained")
    usable = isinstance(explained, np.ndarray) and explained.dtype.kind in "biuf" and explained.size >= 2
    explained = tuple(float(v) for v in explained.ravel()[:2]) if usable else None  # a file's extra may be anything
    plane_info = {"method": str(extras.get("method", "custom")), "explained": explained, **about}
    empty = np.zeros(0, np.float32)  # the directions themselves are not needed to draw
    plane = Plane(empty, empty, empty, **plane_info)
    xy = found["xy"]
    n = len(xy)
    slice_loss = grid_value(grid, xy)
    projection = Projection(
        plane=plane,
        xy=xy,
        off_plane=found.get("off_plane", np.full(n, np.nan)),
        loss=found.get("loss", slice_loss),
        accuracy=found.get("accuracy", np.full(n, np.nan)),
        step=found.get("step", np.arange(n)).astype(np.int64),
        epoch=found.get("epoch", np.full(n, -1)).astype(np.int64),  # -1: not known, and not shown
        true_loss=found.get("true_loss"),
        slice_loss=found.get("slice_loss"),
        loss_label=None if "loss" in found else str(extras.get("loss_label", "surface value at the path point")),
        step_label="step" if "step" in found else "point",  # no steps in the file: the index along the path
    )
    if style.title is None:
        style = style.replace(title=str(extras.get("title", Path(surface).name)))
    if problem is not None:
        style = style.replace(title=f"{style.title}\nno surface: {problem}")
    return animate(projection, grid, out, style=style, quiet=quiet)
