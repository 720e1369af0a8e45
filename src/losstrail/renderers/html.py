"""An interactive, self-contained HTML page (plotly, with plotly.js embedded so it works offline).

The path data is written once; a few lines of script drive the play/pause button and the
step slider by restyling two traces per run, so the page grows with the path's length,
not with its square, and 300 frames stay well under a few hundred kilobytes of data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from losstrail._frames import fraction, frame_schedule, held
from losstrail.renderers._figure import axis_labels, faithfulness_title, grid_note
from losstrail.renderers.compare import RUN_COLOURS
from losstrail.values.projection import Projection
from losstrail.values.specs import Style
from losstrail.values.surface import Surface, path_height

DIV_ID = "losstrail-plot"
# The plotly.js version of the vendored cartesian bundle (see vendor/README.md).
CARTESIAN_VERSION = "4.1.1"
SLIDER_STOPS = 21  # few enough that plotly labels every one, the last step included


def check_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            "HTML output needs plotly; install it with: pip install 'losstrail[html]', or write a .gif instead"
        ) from None


def _rounded(values, digits: int = 5) -> list:
    """Values as short JSON numbers (``None`` for NaN/inf), to keep the page small."""
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        out.append(float(f"{v:.{digits}g}") if np.isfinite(v) else None)
    return out


def write_html(
    runs: Sequence[tuple[str, Projection]],
    surface: Surface,
    out: str | os.PathLike,
    *,
    style: Style | None = None,
    colours: Sequence[str] | None = None,
    captured: Sequence[float] | None = None,
    **options,
) -> Path:
    """Write the contour (or 3-D surface), every run's path, a loss panel, play/pause and a step slider to ``out``.

    The page opens at the last step, with each whole path drawn; play starts from the first.
    ``style`` (or its fields as ``**options``) gives the view, colour map, levels, colour
    scale, size, title, frames per second, most frames and the runs' timeline. ``captured``
    gives each run's share of its path in the plane (for a comparison); a single run's share
    is read from its plane.
    """
    check_plotly()
    import plotly.graph_objects as go

    style = (style or Style()).updated(options, where="write_html")
    colours = list(colours) if colours is not None else [RUN_COLOURS[k % len(RUN_COLOURS)] for k in range(len(runs))]
    projections = [p for _, p in runs]
    schedule, times = frame_schedule(projections, style.max_frames, style.timeline)
    fig = go.Figure()
    _add_surface(fig, surface, style)
    paths = [
        _add_path(fig, name, p, surface, style, colours[k], None if captured is None else captured[k])
        for k, (name, p) in enumerate(runs)
    ]
    same_end = len({int(p.step[-1]) for p in projections}) == 1
    by_step = style.timeline == "step" or (style.timeline == "auto" and same_end)
    cursors = _loss_panel(fig, runs, colours, by_step)
    _add_marks(fig, projections[0].plane, surface, style)  # last: the player addresses the traces before it
    # A slider stop per frame would draw hundreds of tick labels and double the page's start-up
    # time; it gets at most SLIDER_STOPS stops, while play still shows every frame.
    stops = np.unique(np.round(np.linspace(0, len(times) - 1, min(len(times), SLIDER_STOPS))).astype(int))
    labels = [f"{times[f]:.0f}" if by_step else f"{times[f]:.0%}" for f in stops]
    heading = style.title or "losstrail"
    if captured is None and len(runs) == 1:
        heading = faithfulness_title(heading, projections[0], surface)
    elif grid_note(surface):
        heading += "\n" + grid_note(surface)
    _lay_out(fig, style, heading, axis_labels(projections[0].plane), labels, by_step)
    data = {"paths": paths, "schedule": schedule.tolist(), "stops": stops.tolist(), "first": 1, "cursors": cursors}
    data.update(fps=style.fps, view=style.view)
    _write_page(fig, out, _PLAYER.replace("__DATA__", json.dumps(data, separators=(",", ":"))), style.view)
    return Path(out)


def _z_label(log_scale: bool) -> str:
    return "ln(loss)" if log_scale else "loss"


def _add_surface(fig, surface: Surface, style: Style) -> None:
    """The landscape: a contour with ``style.levels`` levels, or a 3-D surface, in ``style.cmap``."""
    import plotly.graph_objects as go

    loss = np.where(surface.loss > 0, surface.loss, np.nan) if style.log_scale else surface.loss
    z = np.log(loss) if style.log_scale else loss
    z_label = _z_label(style.log_scale)
    grid = {
        "x": _rounded(surface.xs),
        "y": _rounded(surface.ys),
        "z": np.reshape(np.array(_rounded(z), dtype=object), z.shape).tolist(),
        "colorscale": style.cmap,
        "hovertemplate": "x %{x:.3g}<br>y %{y:.3g}<br>slice " + z_label + " %{z:.4g}<extra></extra>",
        "colorbar": {"title": {"text": z_label + " on this slice", "side": "right"}, "x": 0.56, "len": 0.9},
    }
    if style.view == "3d":
        fig.add_trace(go.Surface(opacity=0.85, **grid))
    else:
        fig.add_trace(go.Contour(ncontours=style.levels, **grid))


def _add_marks(fig, plane, surface: Surface, style: Style) -> None:
    """The models a ``'through'`` plane goes through: named diamonds, each one's loss in its label and hover."""
    import plotly.graph_objects as go

    marks = getattr(plane, "marks", None)
    if not marks:
        return
    losses = getattr(surface, "marks_loss", None)
    labels = [n if losses is None else f"{n} (loss {losses[k]:.4g})" for k, n in enumerate(marks)]
    xy = np.asarray(plane.marks_xy, dtype=np.float64)
    common = {"mode": "markers+text", "text": list(marks), "textposition": "top right", "hovertext": labels,
              "hoverinfo": "text", "name": "models", "marker": {"symbol": "diamond", "size": 11, "color": "white",
              "line": {"color": "black", "width": 2}}}  # fmt: skip
    if style.view == "3d":
        from losstrail.values.surface import grid_value

        height = np.asarray(losses if losses is not None else grid_value(surface, xy), dtype=np.float64)
        z = np.log(np.where(height > 0, height, np.nan)) if style.log_scale else height
        fig.add_trace(go.Scatter3d(x=_rounded(xy[:, 0]), y=_rounded(xy[:, 1]), z=_rounded(z), **common))
    else:
        fig.add_trace(go.Scatter(x=_rounded(xy[:, 0]), y=_rounded(xy[:, 1]), **common))


def _add_path(fig, name: str, p: Projection, surface: Surface, style: Style, colour: str, captured) -> dict:
    """A run's (empty) line and marker traces, which the player fills; returns the path data the page stores."""
    import plotly.graph_objects as go

    height = path_height(p, surface)  # the slice loss: measured, else read off the grid
    h = np.log(np.where(height > 0, height, np.nan)) if style.log_scale else height
    true = p.true_loss if p.true_loss is not None else np.full(len(p), np.nan)
    custom = np.stack([p.step, true, height, p.loss], axis=1)  # the slice loss: measured, else the grid's
    counted, value = p.step_label, p.loss_label or "batch loss"  # a path read from a file: no steps, no batch
    counted = "" if p.alone else f"{counted} %{{customdata[0]}}<br>"  # a model alone: no steps to count
    hover = (
        f"<b>{name}</b><br>{counted}plane x %{{x:.4g}}, y %{{y:.4g}}<br>"
        f"true loss %{{customdata[1]:.4g}}<br>slice loss %{{customdata[2]:.4g}}<br>{value} %{{customdata[3]:.4g}}"
        "<extra></extra>"
    )
    shown = name if captured is None else f"{name} (plane holds {captured:.0%} of its path)"
    common = {"name": shown, "customdata": [_rounded(row) for row in custom], "hovertemplate": hover}
    line = {"color": colour, "width": 3}
    if style.view == "3d":
        fig.add_trace(go.Scatter3d(x=[], y=[], z=[], mode="lines", line=line, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter3d(x=[], y=[], z=[], mode="markers", marker={"color": colour, "size": 6}, **common))
    else:
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line=line, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker={"color": colour, "size": 11,
                                 "line": {"color": "white", "width": 1}}, **common))  # fmt: skip
    return {"x": _rounded(p.xy[:, 0]), "y": _rounded(p.xy[:, 1]), "z": _rounded(h), "custom": common["customdata"]}


def _lay_out(fig, style: Style, heading: str, axis_titles, labels, by_step: bool) -> None:
    """Title, axes, size, legend, the step slider and the play/pause buttons."""
    xlabel, ylabel = axis_titles
    width, height = style.size if style.size is not None else (1280, 660)
    fig.update_layout(
        title={"text": heading.replace("\n", "<br>"), "x": 0.5, "font": {"size": 14}},
        xaxis={"title": {"text": xlabel}, "domain": [0.0, 0.53]},
        yaxis_title=ylabel,
        width=width,
        height=height,
        margin={"t": 110, "b": 40},
        showlegend=True,
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom", "font": {"size": 11}},
        sliders=[
            {
                "active": len(labels) - 1,
                "len": 0.53,
                "currentvalue": {"prefix": "step " if by_step else "training "},
                "pad": {"t": 50},
                "steps": [{"label": lab, "method": "skip", "args": [None]} for lab in labels],
            }
        ],
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": 1.02,
                "xanchor": "left",
                "yanchor": "bottom",
                "buttons": [
                    {"label": "▶ play", "method": "skip", "args": [None], "name": "play"},
                    {"label": "❚❚ pause", "method": "skip", "args": [None], "name": "pause"},
                ],
            }
        ],
    )
    if style.view == "3d":
        z_label = _z_label(style.log_scale)
        fig.update_layout(
            scene={"xaxis_title": xlabel, "yaxis_title": ylabel, "zaxis_title": z_label, "domain": {"x": [0, 0.53]}}
        )


def _write_page(fig, out, script: str, view: str) -> None:
    """The page, self-contained: the 2-D-only plotly.js bundle when it fits, else plotly's whole one."""
    from losstrail._files import atomic_path

    bundle = _cartesian_bundle() if view != "3d" else None
    with atomic_path(out) as tmp:
        if bundle is None:
            fig.write_html(tmp, include_plotlyjs=True, full_html=True, div_id=DIV_ID, post_script=script,
                           config={"responsive": True})  # fmt: skip
        else:
            page = fig.to_html(include_plotlyjs=False, full_html=True, div_id=DIV_ID, post_script=script,
                               config={"responsive": True})  # fmt: skip
            head = page.index("<head>") + len("<head>")
            tmp.write_text(page[:head] + "\n<script>" + bundle + "</script>\n" + page[head:], encoding="utf-8")


def _loss_panel(fig, runs, colours, by_step: bool) -> list[dict]:
    """The loss of each run over its steps, beside the contour; returns each run's moving cursor (trace, x, y)."""
    import plotly.graph_objects as go

    panel = {"xaxis": "x2", "yaxis": "y2"}
    cursors = []
    for k, (name, p) in enumerate(runs):
        x = p.step if by_step else fraction(p.step)
        measured = p.true_loss is not None
        y = p.true_loss if measured else p.loss
        at = np.flatnonzero(~np.isnan(y)) if measured else np.arange(len(y))  # curves run through measured points
        own = "batch loss (training)" if p.loss_label is None else p.loss_label
        label = name if len(runs) > 1 else ("true loss at θ" if measured else own)
        fig.add_trace(go.Scatter(x=_rounded(x[at]), y=_rounded(y[at]), mode="lines", name=label, legendgroup="panel",
                                 line={"color": colours[k] if len(runs) > 1 else "black", "width": 2},
                                 showlegend=len(runs) == 1, **panel))  # fmt: skip
        if len(runs) == 1 and p.slice_loss is not None:
            fig.add_trace(go.Scatter(x=_rounded(x[at]), y=_rounded(p.slice_loss[at]), mode="lines",
                                     legendgroup="panel", name="slice loss at projection",
                                     line={"color": colours[k], "dash": "dash"}, **panel))  # fmt: skip
        m = held(y)  # the cursor sits at the latest measured point (none before the first)
        shown_x, shown_y = np.where(m >= 0, x[np.maximum(m, 0)], np.nan), np.where(m >= 0, y[np.maximum(m, 0)], np.nan)
        cursors.append({"trace": len(fig.data), "x": _rounded(shown_x), "y": _rounded(shown_y)})
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", marker={"color": colours[k], "size": 9},
                                 showlegend=False, hoverinfo="skip", **panel))  # fmt: skip
    values = np.concatenate([np.asarray(p.true_loss if p.true_loss is not None else p.loss) for _, p in runs])
    values = values[np.isfinite(values)]
    scale = "log" if len(values) and values.min() > 0 else "linear"
    along = "step" if by_step else "fraction of training"
    fig.update_layout(
        xaxis2={"domain": [0.68, 1.0], "anchor": "y2", "title": {"text": along}},
        yaxis2={"anchor": "x2", "title": {"text": "loss"}, "type": scale},
    )
    return cursors


def _cartesian_bundle() -> str | None:
    """The vendored 2-D-only plotly.js, when it is the version this plotly.py writes figures for."""
    import plotly.offline

    path = Path(__file__).parent / "vendor" / "plotly-cartesian.min.js"
    if plotly.offline.get_plotlyjs_version() != CARTESIAN_VERSION or not path.is_file():
        return None
    return path.read_text(encoding="utf-8")


# Drives the slider and the play/pause buttons: frame k shows each run's path up to its
# scheduled point and a marker there. ``window.losstrail`` exposes the state to tests.
_PLAYER = """
(function () {
  const gd = document.getElementById('{plot_id}');
  const D = __DATA__;
  const n = D.schedule.length, runs = D.paths.length;
  const state = {frame: 0, playing: false, timer: null};
  window.losstrail = state;
  function show(f) {
    f = Math.max(0, Math.min(n - 1, f));
    state.frame = f;
    const upd = {x: [], y: [], customdata: []};
    if (D.view === '3d') upd.z = [];
    const idx = [];
    for (let r = 0; r < runs; r++) {
      const p = D.paths[r], i = D.schedule[f][r];
      upd.x.push(p.x.slice(0, i + 1), [p.x[i]]);
      upd.y.push(p.y.slice(0, i + 1), [p.y[i]]);
      if (D.view === '3d') upd.z.push(p.z.slice(0, i + 1), [p.z[i]]);
      upd.customdata.push(null, [p.custom[i]]);
      idx.push(D.first + 2 * r, D.first + 2 * r + 1);
    }
    Plotly.restyle(gd, upd, idx);
    const cx = [], cy = [], ci = [];
    for (let r = 0; r < D.cursors.length; r++) {
      const c = D.cursors[r], i = D.schedule[f][r];
      cx.push([c.x[i]]); cy.push([c.y[i]]); ci.push(c.trace);
    }
    if (ci.length) Plotly.restyle(gd, {x: cx, y: cy}, ci);
    let at = 0;  // the slider stop at or before frame f
    while (at + 1 < D.stops.length && D.stops[at + 1] <= f) at++;
    if (gd.layout.sliders[0].active !== at) {
      state.moving = true;  // our own slider update is not a user's slider change
      Promise.resolve(Plotly.relayout(gd, {'sliders[0].active': at})).finally(function () { state.moving = false; });
    }
  }
  function stop() { state.playing = false; if (state.timer) clearInterval(state.timer); state.timer = null; }
  function play() {
    stop();
    if (state.frame >= n - 1) show(0);
    state.playing = true;
    state.timer = setInterval(function () {
      if (state.frame >= n - 1) { stop(); return; }
      show(state.frame + 1);
    }, 1000 / D.fps);
  }
  state.show = show; state.play = play; state.stop = stop;
  gd.on('plotly_sliderchange', function (e) {
    if (!state.moving && e.slider) { stop(); show(D.stops[e.slider.active]); }
  });
  gd.on('plotly_buttonclicked', function (e) { if (e.button.name === 'play') play(); else stop(); });
  show(n - 1);  // open on the whole path; play starts again from the first step
})();
"""
