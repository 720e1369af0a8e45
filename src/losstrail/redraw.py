"""Drawing a saved run or comparison again, in any format, from its NumPy arrays and JSON alone.

Nothing here imports torch or Lightning: re-rendering with another colour map or format is as
quick as drawing.
"""

from __future__ import annotations

import os
from pathlib import Path

from losstrail._checks import check_output_file, check_settings, check_style, output_format
from losstrail._files import atomic_path
from losstrail._registry import STILL_FORMATS
from losstrail._rundir import check_together, require_finished
from losstrail.artifacts import COMPARISON_FILE, load_comparison, load_run_value, saved_projection
from losstrail.landscape import DecisionMaps, Surface
from losstrail.plane import Plane
from losstrail.projection import project
from losstrail.renderers import Animation, animate, check_animation_args, write_animation
from losstrail.results import Comparison
from losstrail.trajectory import Trajectory

__all__ = ["render", "render_comparison"]


def render(
    run_dir: str | os.PathLike,
    out: str | os.PathLike = "sample.gif",
    *,
    fps: float = 15,
    max_frames: int = 300,
    title: str | None = None,
    decision: bool | None = None,
    layout: str = "overlay",
    quiet: bool = False,
    **style,
):
    """Draw a saved run (or comparison) again, in any format, without training or evaluating anything.

    Args:
        run_dir: a run directory written by ``loss_landscape_anim`` or ``losstrail run``, or a
            comparison directory written by ``compare``.
        out: the output file; its extension picks the format (gif, mp4, html, png, pdf, svg).
        fps, max_frames: as for ``animate``.
        title: figure title; default the one saved with the run.
        decision: the decision-regions panel; default when the run saved one.
        layout: for a comparison, ``'overlay'`` or ``'grid'``.
        quiet: no progress bar.
        **style: the look, as ``animate`` (``format``, ``view``, ``cmap``, ``levels``, ...).

    Returns:
        The ``Animation`` written.
    """
    check_style(style, where="render")
    output_format(out, style.get("format"))
    check_animation_args(fps, max_frames)
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(
            f"run_dir={str(run_dir)!r} is not a directory; pass the model_dirpath of a finished run"
        )
    check_output_file("out", out)
    if (Path(run_dir) / COMPARISON_FILE).is_file():
        comparison = load_comparison(run_dir)
        chosen = title if title is not None else "Comparing " + ", ".join(comparison.names)
        return render_comparison(
            comparison, out, fps=fps, n_frames=max_frames, title=chosen, layout=layout, quiet=quiet,
            format=style.get("format"),
        )  # fmt: skip
    settings = require_finished(Path(run_dir))["settings"]
    check_settings(Path(run_dir), settings)
    trajectory = load_run_value(run_dir, Trajectory).finite_prefix()
    plane, surface = load_run_value(run_dir, Plane), load_run_value(run_dir, Surface)
    check_together(run_dir, trajectory, plane, surface, settings)
    projection = saved_projection(run_dir, plane, trajectory)
    if projection is None:
        projection = project(plane, trajectory)
    maps = None
    if decision or (decision is None and (Path(run_dir) / "decision.npz").is_file()):
        maps = load_run_value(run_dir, DecisionMaps)
    chosen_title = title if title is not None else settings.get("title", "")
    return animate(
        projection, surface, out, fps=fps, max_frames=max_frames, title=chosen_title, decision=maps, quiet=quiet,
        **style,
    )  # fmt: skip


def render_comparison(
    comparison: Comparison,
    out: str | os.PathLike = "compare.gif",
    *,
    layout: str = "overlay",
    timeline: str = "auto",
    fps: float = 15,
    n_frames: int = 300,
    title: str = "",
    format: str | None = None,
    quiet: bool = False,
):
    """Animate every run of ``comparison`` in step on the shared surface and write ``out`` (gif, mp4, html, still)."""
    from losstrail.renderers.compare import CompareFigure

    kind = output_format(out, format)
    if kind == "html":
        from losstrail.renderers.html import write_html

        runs = list(zip(comparison.names, comparison.projections))
        path = write_html(runs, comparison.surface, out, max_frames=n_frames, fps=fps, title=title,
                          captured=comparison.captured)  # fmt: skip
        return Animation(path, kind, n_frames)

    figure = CompareFigure(
        list(zip(comparison.names, comparison.projections)),
        comparison.surface,
        title=title,
        layout=layout,
        timeline=timeline,
        max_frames=n_frames,
        captured=comparison.captured,
    )
    if kind in STILL_FORMATS:
        from losstrail.renderers._figure import save_still

        with atomic_path(out) as tmp:
            save_still(figure, figure.n_frames - 1, tmp, kind)
        return Animation(out, kind, 1)
    return write_animation(figure, range(figure.n_frames), out, fps=fps, quiet=quiet, format=kind)
