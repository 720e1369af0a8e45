import numpy as np
import pytest
from PIL import Image

from losstrail._frames import select_frames
from losstrail.planes.projection import project
from losstrail.renderers import animate, output_format
from losstrail.renderers._figure import PathFigure
from losstrail.values.plane import Plane
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory


@pytest.fixture
def scene(rng):
    t = 40
    s = np.linspace(0, 1, t)
    xy = np.stack([-3 + 3 * s, -1 + np.sin(3 * s) + (1 - np.sin(3.0)) * s], axis=1)
    xy[-1] = 0
    plane = Plane(
        np.zeros(6, np.float32), np.eye(6, dtype=np.float32)[0], np.eye(6, dtype=np.float32)[1], "pca", (0.8, 0.1)
    )
    params = np.zeros((t, 6), np.float32)
    params[:, :2] = xy
    traj = Trajectory(params, np.exp(-3 * s), s, np.arange(t), np.arange(t))
    proj = project(plane, traj)
    xs, ys = np.linspace(-4, 1, 60), np.linspace(-2, 2, 50)
    gx, gy = np.meshgrid(xs, ys)
    surface = Surface(xs, ys, 0.1 + gx**2 + gy**2, np.zeros_like(gx))
    return proj, surface


def test_select_frames_even_with_first_and_last():
    frames = select_frames(301, 300)
    assert len(frames) == 300 and frames[0] == 0 and frames[-1] == 300
    assert np.all(np.diff(frames) >= 1)


def test_gif_has_the_frame_count_size_and_rate(scene, tmp_path):
    out = animate(*scene, tmp_path / "a.gif", fps=20, max_frames=25, quiet=True)
    with Image.open(out) as im:
        assert im.n_frames == 25 and im.size == (900, 600)
        assert im.info["duration"] == 50
        assert im.info["loop"] == 0


def test_current_point_is_drawn_where_the_projection_says(scene, tmp_path):
    proj, surface = scene
    figure = PathFigure(proj, surface)
    background = figure.background_rgba()

    def red_around(image, xy):
        px, py = figure.ax.transData.transform(xy)
        col, row = int(round(px)), int(round(image.shape[0] - py))
        patch = image[row - 2 : row + 3, col - 2 : col + 3, :3].astype(int)
        return int(((patch[..., 0] > 200) & (patch[..., 1] < 60) & (patch[..., 2] < 60)).sum())

    for k in (0, 20):
        assert red_around(figure.rgba(k), proj.xy[k]) >= 20, f"no red marker at step {k}"
        assert red_around(background, proj.xy[k]) == 0
    assert red_around(figure.rgba(0), proj.xy[20]) == 0  # the path so far stops at the current point


def test_non_finite_cells_render(scene, tmp_path):
    proj, surface = scene
    loss = surface.loss.copy()
    loss[:10, :10] = np.nan
    loss[10:12, :10] = np.inf
    out = animate(
        proj, Surface(surface.xs, surface.ys, loss, surface.accuracy), tmp_path / "nan.gif", max_frames=3, quiet=True
    )
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_bad_output_arguments(scene, tmp_path):
    with pytest.raises(
        ValueError, match=r"output 'a.avi' has format 'avi', which is not supported; expected one of 'gif'"
    ):
        output_format("a.avi")
    # Named as animate's caller spells them (not loss_landscape_anim's giffps and n_frames).
    with pytest.raises(ValueError, match=r"^fps=0 must be a positive number"):
        animate(*scene, tmp_path / "a.gif", fps=0)
    with pytest.raises(ValueError, match=r"^max_frames=1 must be an integer of at least 2"):
        animate(*scene, tmp_path / "a.gif", max_frames=1)


def test_a_failed_render_leaves_no_file(scene, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("losstrail.renderers.gif.write_gif", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        animate(*scene, tmp_path / "a.gif", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_loss_panel_and_captured_fraction_are_drawn(scene, tmp_path):
    import dataclasses

    from losstrail.renderers._figure import faithfulness_title

    proj, surface = scene
    measured = dataclasses.replace(proj, true_loss=proj.loss * 1.1, slice_loss=proj.loss * 0.9)
    out = animate(measured, surface, tmp_path / "p.gif", max_frames=5, quiet=True)
    with Image.open(out) as im:
        assert (im.n_frames, im.size) == (5, (1280, 600))
        im.seek(2)
        middle = np.asarray(im.convert("RGB"))
        im.seek(4)
        last = np.asarray(im.convert("RGB"))
    panel = (slice(60, 560), slice(800, 1270))
    assert (middle[panel] != last[panel]).any()  # the panel's cursor follows the frame
    assert "captures 90.0% of the path's variance" in faithfulness_title("t", proj)
    with pytest.raises(ValueError, match=r"panel=True needs the true and slice losses"):
        animate(proj, surface, tmp_path / "q.gif", panel=True, quiet=True)


def _decoded_frames(path):
    with Image.open(path) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")))
    return frames


def test_gif_frames_decode_to_the_nearest_palette_colour_of_every_pixel(scene, tmp_path):
    """Pillow's decoder (the reference) shows each drawn frame, each pixel at its nearest palette colour."""
    from losstrail.renderers.gif import PaletteMapper, frame_delays, write_gif

    proj, surface = scene
    figure = PathFigure(proj, surface)
    frames = [0, 1, 5, 6, 6, 20, 39]  # a repeated frame: nothing changes between them
    assert write_gif(figure, frames, tmp_path / "a.gif", fps=15, quiet=True, workers=1) == len(frames)
    palette = PaletteMapper(figure.background_rgba(), figure.rgba(frames[-1])).palette.astype(np.int64)
    for k, shown in zip(frames, _decoded_frames(tmp_path / "a.gif")):
        colours, which = np.unique(figure.rgba(k)[..., :3].reshape(-1, 3), axis=0, return_inverse=True)
        brute = ((colours[:, None, :].astype(np.int64) - palette[None, :255]) ** 2).sum(-1).argmin(1)  # every entry
        nearest = palette[brute][which.reshape(-1)].reshape(shown.shape)
        np.testing.assert_array_equal(shown, nearest, err_msg=f"frame of step {k}")
    with Image.open(tmp_path / "a.gif") as im:
        delays = []
        for k in range(im.n_frames):
            im.seek(k)
            delays.append(im.info["duration"])
    assert delays == [10 * d for d in frame_delays(len(frames), 15, 1500)]
    assert sum(delays[:-1]) == pytest.approx(1000 * (len(frames) - 1) / 15, abs=10)  # 15 fps on average
    assert delays[-1] == 1500


def test_gif_drawn_by_forked_workers_is_the_same_file(scene, tmp_path):
    from losstrail.renderers.gif import render_workers, write_gif

    proj, surface = scene
    figure = PathFigure(proj, surface)
    frames = list(range(len(proj)))
    write_gif(figure, frames, tmp_path / "one.gif", fps=10, quiet=True, workers=1)
    write_gif(figure, frames, tmp_path / "two.gif", fps=10, quiet=True, workers=2)
    assert (tmp_path / "one.gif").read_bytes() == (tmp_path / "two.gif").read_bytes()
    assert render_workers(3) == 1  # a few frames are drawn in this process


# --- nothing drawn over a path: legends and read-outs, checked in display pixels -------------


def _drawn_points(ax, xy: np.ndarray) -> np.ndarray:
    """Display pixels along the path ``xy`` (data coordinates), one point per pixel of every segment."""
    pts = ax.transData.transform(xy)
    pieces = [np.linspace(a, b, int(np.ceil(np.hypot(*(b - a)))) + 2) for a, b in zip(pts[:-1], pts[1:])]
    return np.concatenate(pieces)


def _inside(points: np.ndarray, box) -> int:
    x0, y0, x1, y1 = box
    return int(((points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)).sum())


def _legend_box(legend):
    b = legend.get_window_extent()
    return b.x0, b.y0, b.x1, b.y1


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _winding(t: int = 200) -> np.ndarray:
    """A path through all four corners of the window, so no corner is free for the read-out."""
    s = np.linspace(0, 1, t)
    xy = np.stack([3.8 * np.cos(2 * np.pi * 1.25 * s) * (1 - 0.1 * s), 1.9 * np.sin(2 * np.pi * 2.5 * s)], 1)
    xy[-1] = 0
    return xy


def _projection(xy, n_params=6):
    t = len(xy)
    params = np.zeros((t, n_params), np.float32)
    params[:, :2] = xy
    eye = np.eye(n_params, dtype=np.float32)
    plane = Plane(np.zeros(n_params, np.float32), eye[0], eye[1], "pca", (0.8, 0.1))
    s = np.linspace(0, 1, t)
    return project(plane, Trajectory(params, np.exp(-3 * s), s, np.arange(t), np.arange(t)))


@pytest.mark.parametrize("path", ["curve", "winding"])
def test_legend_and_read_out_never_cover_the_path(scene, path):
    import dataclasses

    proj, surface = scene
    if path == "winding":
        proj = _projection(_winding())
        xs, ys = np.linspace(-4, 4, 40), np.linspace(-2, 2, 30)
        surface = Surface(xs, ys, 0.1 + np.add.outer(ys**2, xs**2), np.zeros((30, 40)))
    proj = dataclasses.replace(proj, true_loss=proj.loss * 1.1, slice_loss=proj.loss)  # with the loss panel
    figure = PathFigure(proj, surface)
    ax = figure.ax
    drawn = np.concatenate([_drawn_points(ax, proj.xy), ax.transData.transform([[0.0, 0.0]])])
    assert _inside(drawn, figure._label.display_bbox()) == 0
    assert _inside(drawn, _legend_box(ax.get_legend())) == 0
    side = figure.fig.axes[1]
    assert not _overlap(_legend_box(side.get_legend()), tuple(side.get_window_extent().extents))
    frame = figure.rgba(len(proj) - 1)  # the box lies on the canvas
    x0, y0, x1, y1 = figure._label.display_bbox()
    assert x0 >= 0 and x1 <= frame.shape[1] and y0 >= 0 and y1 <= frame.shape[0]


def test_comparison_read_outs_and_legends_never_cover_a_path():
    from losstrail.renderers.compare import CompareFigure

    xs, ys = np.linspace(-4, 4, 40), np.linspace(-2, 2, 30)
    surface = Surface(xs, ys, 0.1 + np.add.outer(ys**2, xs**2), np.zeros((30, 40)))
    s = np.linspace(0, 1, 50)[:, None]
    runs = [
        ("curve", _projection(np.hstack([-3.5 + 3.5 * s, 1.5 - 1.5 * s**2]))),
        ("winding", _projection(_winding(50))),
    ]
    for layout in ("overlay", "grid"):
        figure = CompareFigure(runs, surface, layout=layout, max_frames=10)
        figure.rgba(figure.n_frames - 1)
        axes = figure.main_axes * (2 if layout == "overlay" else 1)
        labels = figure._labels * (2 if layout == "overlay" else 1)
        for ax, label, (_, p) in zip(axes, labels, runs):
            assert _inside(_drawn_points(ax, p.xy), label.display_bbox()) == 0, (layout, p)
        if layout == "overlay":
            ax = figure.main_axes[0]
            for _, p in runs:
                assert _inside(_drawn_points(ax, p.xy), _legend_box(ax.get_legend())) == 0
            side = figure.fig.axes[1]  # the loss panel (the colour bar comes after)
            assert not _overlap(_legend_box(side.get_legend()), tuple(side.get_window_extent().extents))


def test_three_d_read_out_is_outside_the_axes(scene):
    from losstrail.renderers.surface3d import SurfaceFigure

    figure = SurfaceFigure(*scene, rotate=True, n_frames=10)
    axes_box = tuple(figure.ax.get_window_extent().extents)
    assert not _overlap(figure._label.display_bbox(), axes_box)
    heading = figure.fig._suptitle.get_window_extent()
    assert not _overlap(figure._label.display_bbox(), (heading.x0, heading.y0, heading.x1, heading.y1))


def test_lowest_point_is_marked_only_inside_the_window(scene):
    proj, _ = scene
    xs, ys = np.linspace(-4, 1, 60), np.linspace(-2, 2, 50)
    gx, gy = np.meshgrid(xs, ys)
    inside = Surface(xs, ys, 0.1 + (gx + 1) ** 2 + gy**2, np.zeros_like(gx))  # lowest at (-1, 0)
    at_edge = Surface(xs, ys, 0.1 + (gx - 3) ** 2 + gy**2, np.zeros_like(gx))  # lowest beyond the right edge

    def lowest_markers(figure):
        return [line for line in figure.ax.get_lines() if line.get_label().startswith("lowest loss")]

    figure = PathFigure(proj, inside)
    (marker,) = lowest_markers(figure)
    assert marker.get_label().startswith("lowest loss in this window")
    figure.canvas.draw()
    drawn = marker.get_window_extent(figure.canvas.get_renderer())
    box = figure.ax.get_window_extent()
    assert box.x0 <= drawn.x0 and drawn.x1 <= box.x1 and box.y0 <= drawn.y0 and drawn.y1 <= box.y1  # not clipped
    assert lowest_markers(PathFigure(proj, at_edge)) == []


def test_full_batch_runs_draw_one_loss_line_and_say_so(scene):
    import dataclasses

    proj, surface = scene
    same = dataclasses.replace(proj, true_loss=proj.loss.copy(), slice_loss=proj.loss * 0.9)
    labels = [line.get_label() for line in PathFigure(same, surface).fig.axes[1].get_lines()]
    assert "true loss at θ (= batch loss, full batch)" in labels and "batch loss (training)" not in labels
    other = dataclasses.replace(proj, true_loss=proj.loss * 1.2, slice_loss=proj.loss * 0.9)
    labels = [line.get_label() for line in PathFigure(other, surface).fig.axes[1].get_lines()]
    assert "batch loss (training)" in labels and "true loss at θ" in labels


def test_a_small_figure_still_draws_its_read_out(tmp_path):
    from PIL import Image

    import losstrail as lt

    dm = lt.SpiralsDataModule(n_per_class=40)
    run = lt.fit(lt.MLP(2, 3, hidden_dim=8), dm, epochs=5, seed=0, quiet=True)
    plane = lt.make_plane(run.trajectory, "pca")
    path = lt.project(plane, run.trajectory)
    xs, ys = lt.path_grid(path.xy, 8)
    surface = lt.loss_surface(run.model, dm, plane, xs, ys, quiet=True)
    out = lt.animate(path, surface, tmp_path / "small.gif", size=(320, 240), quiet=True)
    with Image.open(out.path) as gif:
        assert gif.size == (320, 240) and gif.n_frames == len(path)


def _measured_at(proj, at):
    """``proj`` with true and slice losses at the points ``at`` only (NaN elsewhere), as ``project(at=)`` gives."""
    import dataclasses

    true, slice_ = np.full(len(proj), np.nan), np.full(len(proj), np.nan)
    true[at], slice_[at] = proj.loss[at] * 1.2, proj.loss[at] * 0.9
    return dataclasses.replace(proj, true_loss=true, slice_loss=slice_)


def test_sparse_truth_is_a_curve_through_the_measured_points_and_dots_stay_on_them(scene, tmp_path):
    from losstrail._frames import measured_points
    from losstrail.renderers._figure import readout

    proj, surface = scene
    at = measured_points(select_frames(len(proj), 20), limit=7)
    sparse = _measured_at(proj, at)
    figure = PathFigure(sparse, surface)
    lines = {line.get_label(): line for line in figure.fig.axes[1].get_lines()}
    for label, values in (("true loss at θ", sparse.true_loss), ("slice loss at projection", sparse.slice_loss)):
        x, y = lines[label].get_data()
        assert np.array_equal(x, proj.step[at]) and np.array_equal(y, values[at])  # a line through all of them
    k = int(at[2]) + 1  # not measured: the dots sit at the latest measured point, the read-out says which
    figure.update(k)
    assert list(figure._true_dot.get_data()[0]) == [float(proj.step[at[2]])]
    assert f"truth@{int(proj.step[at[2]])}" in readout(sparse, k)
    assert "truth@" not in readout(sparse, int(at[2]))
    out = animate(sparse, surface, tmp_path / "p.gif", max_frames=12, quiet=True)  # other frames than measured
    with Image.open(out) as im:
        assert im.n_frames == 12


def test_sparse_truth_draws_in_3d_html_and_comparisons(scene, tmp_path):
    from losstrail.renderers.compare import CompareFigure
    from losstrail.renderers.surface3d import SurfaceFigure
    from losstrail.values.surface import grid_value

    proj, surface = scene
    at = np.array([0, 13, 26, 39])
    sparse = _measured_at(proj, at)
    figure = SurfaceFigure(sparse, surface)
    assert np.isfinite(figure.z).all()  # the path lies on the surface between measured points too
    np.testing.assert_allclose(np.exp(figure.z[at]), sparse.slice_loss[at], rtol=1e-6)
    np.testing.assert_allclose(np.exp(figure.z[5]), grid_value(surface, proj.xy[5:6])[0], rtol=1e-6)
    compare = CompareFigure([("a", sparse), ("b", sparse)], surface, max_frames=10)
    x, y = compare.fig.axes[1].get_lines()[0].get_data()
    assert np.array_equal(x, proj.step[at]) and np.array_equal(y, sparse.true_loss[at])
    compare.rgba(3)
    assert "nan" not in " ".join(text for text, _ in compare.label_lines(3))
    pytest.importorskip("plotly")
    page = animate(sparse, surface, tmp_path / "p.html", max_frames=40, quiet=True).path.read_text()
    assert '"name":"true loss at \\u03b8"' in page or '"name":"true loss at θ"' in page
