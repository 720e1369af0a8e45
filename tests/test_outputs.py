"""Every output format: the file opens, has the expected frames and size, and shows the path."""

import dataclasses
import shutil

import numpy as np
import pytest
from PIL import Image

from losstrail.renderers import animate


@pytest.fixture
def scene(rng):
    from losstrail.planes.projection import project
    from losstrail.values.plane import Plane
    from losstrail.values.surface import Surface
    from losstrail.values.trajectory import Trajectory

    t = 30
    s = np.linspace(0, 1, t)
    params = np.zeros((t, 5), np.float32)
    params[:, 0], params[:, 1] = -3 + 3 * s, -1.5 + 1.5 * s**2
    eye = np.eye(5, dtype=np.float32)
    plane = Plane(np.zeros(5, np.float32), eye[0], eye[1], "pca", (0.9, 0.05))
    traj = Trajectory(params, np.exp(-2 * s), s, np.arange(t) * 2, np.arange(t))
    xs, ys = np.linspace(-4, 1, 40), np.linspace(-2, 1, 30)
    gx, gy = np.meshgrid(xs, ys)
    proj = project(plane, traj)
    measured = dataclasses.replace(proj, true_loss=proj.loss * 1.2, slice_loss=proj.loss)
    return measured, Surface(xs, ys, 0.1 + gx**2 + gy**2, np.zeros_like(gx))


def test_mp4_has_the_frame_count_and_an_even_size(scene, tmp_path):
    import imageio_ffmpeg

    proj, surface = scene
    out = animate(proj, surface, tmp_path / "a.mp4", max_frames=12, size=(641, 401), quiet=True)
    reader = imageio_ffmpeg.read_frames(str(out.path))
    meta = next(reader)
    frames = list(reader)
    assert meta["size"] == (642, 402) and meta["codec"] == "h264"  # odd sizes are padded, not refused
    assert len(frames) == 12
    turning = animate(proj, surface, tmp_path / "3d.mp4", view="3d", rotate=True, max_frames=3, quiet=True)
    meta = next(imageio_ffmpeg.read_frames(str(turning.path)))
    assert meta["size"] == (900, 700)


def test_gif_every_kth_step(scene, tmp_path):
    proj, surface = scene
    out = animate(proj, surface, tmp_path / "a.gif", every=10, quiet=True)  # steps 0, 2, ..., 58: every 10th
    with Image.open(out.path) as im:
        assert im.n_frames == 7  # steps 0, 10, 20, 30, 40, 50 and the last (58)


@pytest.mark.parametrize("kind", ["png", "pdf", "svg"])
def test_stills_open(scene, tmp_path, kind):
    proj, surface = scene
    out = animate(proj, surface, tmp_path / f"still.{kind}", quiet=True)
    head = out.path.read_bytes()[:5]
    assert head == {"png": b"\x89PNG\r", "pdf": b"%PDF-", "svg": b"<?xml"}[kind]


def test_still_draws_the_path_where_the_projection_says(scene, tmp_path):
    from losstrail.renderers._figure import PathFigure

    proj, surface = scene
    out = animate(proj, surface, tmp_path / "s.png", panel=False, step=20, path_color="magenta", quiet=True)
    image = np.asarray(Image.open(out.path).convert("RGB")).astype(int)
    figure = PathFigure(proj, surface, panel=False)  # the same layout, to map plane coordinates to pixels
    height = image.shape[0]

    def magenta_near(x, y, r=4):
        px, py = figure.ax.transData.transform((x, y))
        col, row = int(round(px)), int(round(height - py))
        patch = image[row - r : row + r + 1, col - r : col + r + 1]
        return int(((patch[..., 0] > 200) & (patch[..., 1] < 60) & (patch[..., 2] > 200)).sum())

    for k in (0, 5, 10):  # the path up to step 20 (point 10) is drawn ...
        assert magenta_near(*proj.xy[k]) > 0, k
    assert magenta_near(*proj.xy[29]) == 0  # ... and not beyond it
    with pytest.raises(ValueError, match=r"step=21 is not a recorded step; this path has steps 0 to 58"):
        animate(proj, surface, tmp_path / "t.png", step=21)


def test_three_d_view_turns(scene, tmp_path):
    proj, surface = scene
    out = animate(proj, surface, tmp_path / "3d.gif", view="3d", rotate=True, max_frames=4, quiet=True)
    with Image.open(out.path) as im:
        assert (im.n_frames, im.size) == (4, (900, 700))
        first = np.asarray(im.convert("RGB"))
        im.seek(3)
        last = np.asarray(im.convert("RGB"))
    assert (first != last).mean() > 0.05  # the whole surface moved, not only the path
    from losstrail.renderers.surface3d import SurfaceFigure

    direct = SurfaceFigure(proj, surface, rotate=True, n_frames=4).rgba(len(proj) - 1)[..., :3].astype(int)
    off = np.abs(direct - last.astype(int)).max(axis=2) > 12  # what the GIF shows is what was drawn
    assert off.mean() < 0.005, off.mean()


def test_decision_regions_panel_follows_the_steps(tmp_path, tiny_model, tiny_data, scene):
    from losstrail.builtin.models import flat_params
    from losstrail.evaluation.grids import decision_regions

    proj, surface = scene
    theta = flat_params(tiny_model).numpy()
    params = np.stack([theta * 0.0, theta])  # an untrained-looking point, then the model
    maps = decision_regions(tiny_model, tiny_data, params, np.array([0, 15]), resolution=20)
    assert maps.labels.shape == (2, 20, 20)
    with pytest.importorskip("torch").inference_mode():
        import torch

        grid = torch.tensor([[maps.xs[3], maps.ys[7]]], dtype=torch.float32)
        assert int(tiny_model(grid).argmax()) == int(maps.labels[1, 7, 3])
    out = animate(proj, surface, tmp_path / "d.gif", decision=maps, max_frames=3, quiet=True)
    with Image.open(out.path) as im:
        assert im.size == (1760, 600)


def test_notebook_repr_contains_the_animation(scene, tmp_path):
    import base64

    proj, surface = scene
    gif = animate(proj, surface, tmp_path / "n.gif", max_frames=3, quiet=True)
    html = gif._repr_html_()
    assert html.startswith('<img src="data:image/gif;base64,')
    assert base64.b64decode(html.split(",", 1)[1].split('"')[0]) == gif.path.read_bytes()
    mp4 = animate(proj, surface, tmp_path / "n.mp4", max_frames=3, quiet=True)
    assert mp4._repr_html_().startswith('<video src="data:video/mp4;base64,')


def test_unknown_format_and_missing_ffmpeg(scene, tmp_path, monkeypatch):
    proj, surface = scene
    with pytest.raises(ValueError, match=r"format 'webm', which is not supported; expected one of 'gif', 'mp4'"):
        animate(proj, surface, tmp_path / "a.webm")
    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)
    with pytest.raises(ModuleNotFoundError, match=r"MP4 output needs .* pip install 'losstrail\[mp4\]'"):
        animate(proj, surface, tmp_path / "a.mp4")
    assert not list(tmp_path.iterdir())


# --- the interactive page, in a real browser ------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path):
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("window.losstrail !== undefined && document.querySelector('.main-svg') !== null")
    return page, errors


def test_html_page_plays_and_the_slider_moves_the_step(scene, tmp_path, browser):
    proj, surface = scene
    out = animate(proj, surface, tmp_path / "p.html", fps=30, quiet=True)
    page, errors = _open(browser, out.path)
    assert page.locator(".contour").count() >= 1  # the landscape is drawn
    # It opens at the end: the whole path, the slider at the last step, the loss panel beside it.
    assert page.evaluate("window.losstrail.frame") == 29
    assert page.evaluate("document.getElementById('losstrail-plot').data[1].x.length") == 30
    assert page.locator(".slider-group .slider-label").first.text_content().strip() == "step 58"
    assert page.locator(".slider-label").last.text_content() == "58"  # the slider's last label is the last step
    panel = page.evaluate("document.getElementById('losstrail-plot').data.filter(t => t.xaxis === 'x2')")
    assert [t["name"] for t in panel[:2]] == ["true loss at θ", "slice loss at projection"]
    assert panel[2]["x"] == [58] and len(panel[0]["x"]) == 30  # the cursor at the last step
    assert page.locator(".x2title").text_content() == "step"
    assert "captures 95.0% of the path's variance" in page.locator(".gtitle").text_content()
    page.get_by_text("▶ play").click()
    page.wait_for_function("window.losstrail.frame >= 5")
    page.get_by_text("❚❚ pause").click()
    stopped = page.evaluate("window.losstrail.frame")
    page.wait_for_timeout(200)
    assert page.evaluate("window.losstrail.frame") == stopped
    box = page.locator(".slider-rail-rect").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.999, box["y"] + box["height"] / 2)  # the slider's end
    page.wait_for_function("window.losstrail.frame === 29")
    n = page.evaluate("document.getElementById('losstrail-plot').data[2].x.length")
    assert n == 1 and page.evaluate("document.getElementById('losstrail-plot').data[1].x.length") == 30
    assert errors == []
    page.close()


def test_html_of_several_runs_has_a_trace_each_and_3d(scene, tmp_path, browser):
    from losstrail.renderers.html import write_html

    proj, surface = scene
    other = dataclasses.replace(proj, xy=proj.xy * 0.5)
    out = write_html([("adam", proj), ("sgd", other)], surface, tmp_path / "c.html", view="3d")
    page, errors = _open(browser, out)
    names = page.evaluate("document.getElementById('losstrail-plot').data.map(t => t.name || '')")
    assert [n for n in names if n][:2] == ["adam", "sgd"]
    assert errors == []
    page.close()


def test_pictures_of_an_adaptive_surface_say_how_exact_it_is(scene, tmp_path):
    pytest.importorskip("plotly")
    from losstrail.renderers._figure import PathFigure

    proj, surface = scene
    exact = np.zeros(surface.loss.shape, bool)
    exact[::3, ::3] = True
    adaptive = dataclasses.replace(surface, exact=exact, max_error=0.0042)
    said = f"adaptive: {int(exact.sum()):,} of {exact.size:,} points exact, checked error ≤ 0.4%"
    assert adaptive.describe_grid() == said

    def texts(s):
        from matplotlib.text import Text

        return [t.get_text() for t in PathFigure(proj, s).fig.findobj(Text)]

    assert any(said in t for t in texts(adaptive))  # the GIF's and MP4's figure: a text artist says it
    assert not any("adaptive" in t for t in texts(surface))  # a full grid: nothing to say
    svg = animate(proj, adaptive, tmp_path / "still.svg", quiet=True).path.read_text()
    assert "points exact" in svg  # a still, as real text
    page = animate(proj, adaptive, tmp_path / "p.html", quiet=True).path.read_text()
    assert said.replace("≤", "\\u2264") in page  # the HTML page's title (plotly's JSON escapes the ≤)
