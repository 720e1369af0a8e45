"""One ``Style`` for every picture: each option changes what it applies to, and is refused by name where it cannot."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import losstrail
from losstrail._registry import FORMATS
from losstrail.cli import app
from losstrail.values.specs import Style

runner = CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved single run and a saved comparison (each a few seconds to make)."""
    root = tmp_path_factory.mktemp("saved")
    losstrail.loss_landscape_anim(n_epochs=6, model_dirpath=root / "run", output_filename=root / "r.gif", seed=0,
                                  resolution=10, n_frames=4, quiet=True)  # fmt: skip
    losstrail.compare(optimizers=["adam", "sgd"], epochs=4, resolution=8, n_frames=4, out=None,
                      run_dir=root / "cmp", quiet=True)  # fmt: skip
    return root


def _bytes(run_dir, out, **options) -> bytes:
    losstrail.render(run_dir, out, quiet=True, **options)
    return out.read_bytes()


# Each option, a value other than its default, and the outputs of a single run it applies to.
SINGLE_RUN = [
    ("view", "3d", ("gif", "png", "html")),
    ("cmap", "magma", ("gif", "png", "html")),
    ("levels", 6, ("gif", "png", "html")),
    ("log_scale", False, ("gif", "png", "html")),
    ("size", (640, 480), ("gif", "png", "html")),
    ("dpi", 60, ("gif", "png")),
    ("path_color", "black", ("gif", "png", "html")),
    ("every", 3, ("gif", "html")),
    ("step", 2, ("png",)),
    ("title", "another title", ("gif", "png", "html")),
    ("fps", 4, ("gif", "html")),
    ("max_frames", 3, ("gif", "html")),
]
COMPARISON = [
    ("view", "3d", ("html",)),
    ("cmap", "magma", ("gif", "png", "html")),
    ("levels", 6, ("gif", "png", "html")),
    ("log_scale", False, ("gif", "png", "html")),
    ("size", (700, 500), ("gif", "png", "html")),
    ("dpi", 60, ("gif", "png")),
    ("title", "another title", ("gif", "png", "html")),
    ("fps", 4, ("gif", "html")),
    ("max_frames", 3, ("gif", "html")),
    ("layout", "grid", ("gif", "png")),
    ("timeline", "fraction", ("gif", "html")),
]
BASE = {"gif": {"max_frames": 4}, "html": {"max_frames": 4}, "png": {}}


@pytest.mark.parametrize("folder, table", [("run", SINGLE_RUN), ("cmp", COMPARISON)])
def test_each_option_changes_the_picture_it_applies_to(saved, tmp_path, folder, table):
    for kind in ("gif", "png", "html"):
        base = _bytes(saved / folder, tmp_path / f"base.{kind}", **BASE[kind])
        assert _bytes(saved / folder, tmp_path / f"again.{kind}", **BASE[kind]) == base  # the same, drawn twice
        for name, value, kinds in table:
            if kind in kinds:
                options = {**BASE[kind], name: value}
                changed = _bytes(saved / folder, tmp_path / f"{name}.{kind}", **options)
                assert changed != base, f"{name}={value!r} did not change the {folder} {kind}"


@pytest.mark.parametrize("folder, table", [("run", SINGLE_RUN), ("cmp", COMPARISON)])
def test_each_option_is_refused_by_name_where_it_cannot_apply(saved, tmp_path, folder, table):
    applies = {name: kinds for name, _, kinds in table}
    values = {name: value for name, value, _ in SINGLE_RUN + COMPARISON}
    values.update(rotate=True)
    for kind in ("gif", "png", "html"):
        for name, value in values.items():
            if kind in applies.get(name, ()) or (name == "rotate" and folder == "run"):
                continue
            with pytest.raises(ValueError, match=rf"^{name}={value!r} does not apply to ".replace("(", r"\(")):
                losstrail.render(saved / folder, tmp_path / f"x.{kind}", quiet=True, **{name: value})
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_rotate_turns_a_3d_animation_and_3d_drops_the_contour_levels(saved, tmp_path):
    still = _bytes(saved / "run", tmp_path / "a.gif", view="3d", max_frames=4)
    assert _bytes(saved / "run", tmp_path / "b.gif", view="3d", rotate=True, max_frames=4) != still
    with pytest.raises(ValueError, match=r"^levels=6 does not apply to a single run's animation in 3-D \(gif\)"):
        losstrail.render(saved / "run", tmp_path / "c.gif", view="3d", levels=6)


def test_the_cli_applies_cmap_to_a_comparison_and_names_what_it_cannot_draw(saved, tmp_path):
    def render(*args):
        return runner.invoke(app, ["render", str(saved / "cmp"), "-q", "--frames", "4", *args])

    assert render("--out", str(tmp_path / "a.gif")).exit_code == 0
    assert render("--out", str(tmp_path / "b.gif"), "--cmap", "magma").exit_code == 0
    assert (tmp_path / "a.gif").read_bytes() != (tmp_path / "b.gif").read_bytes()
    result = render("--out", str(tmp_path / "c.gif"), "--view", "3d", "--cmap", "magma")
    assert result.exit_code == 2
    assert "--view='3d' does not apply to a comparison's animation (gif)" in result.output
    assert "as an HTML page" in result.output and not (tmp_path / "c.gif").exists()
    assert render("--out", str(tmp_path / "d.html"), "--view", "3d", "--cmap", "magma").exit_code == 0


def test_errors_name_the_argument_the_caller_used(saved, tmp_path):
    from losstrail.renderers import animate

    with pytest.raises(ValueError, match=r"^fps=0 must be a positive number of frames per second, e.g. fps=15"):
        losstrail.render(saved / "run", tmp_path / "a.gif", fps=0)
    with pytest.raises(ValueError, match=r"^giffps=0 must be a positive number"):
        losstrail.loss_landscape_anim(giffps=0, model_dirpath=tmp_path / "r", output_filename=tmp_path / "b.gif")
    with pytest.raises(ValueError, match=r"^n_frames=1 must be an integer of at least 2, e.g. n_frames=300"):
        losstrail.compare(n_frames=1, out=tmp_path / "c.gif", run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"^n_frames=1 must be an integer of at least 2"):
        losstrail.loss_landscape_anim(n_frames=1, model_dirpath=tmp_path / "r", output_filename=tmp_path / "b.gif")
    with pytest.raises(ValueError, match=r"^fps=0 must be a positive number"):
        animate(*_scene(saved), tmp_path / "d.gif", fps=0)
    result = runner.invoke(app, ["render", str(saved / "run"), "--out", str(tmp_path / "e.gif"), "--fps", "0"])
    assert result.exit_code == 2 and "--fps=0.0 must be a positive number" in result.output
    with pytest.raises(TypeError, match=r"frames per second are giffps="):
        losstrail.loss_landscape_anim(fps=4, model_dirpath=tmp_path / "r", output_filename=tmp_path / "b.gif")
    with pytest.raises(TypeError, match=r"render\(\) got unexpected keyword argument\(s\) 'colour'"):
        losstrail.render(saved / "run", tmp_path / "a.gif", colour="red")
    assert not list(tmp_path.iterdir())


def _scene(saved):
    from losstrail.store.rundir import load_run_value
    from losstrail.values.plane import Plane
    from losstrail.values.projection import Projection
    from losstrail.values.surface import Surface

    surface = load_run_value(saved / "run", Surface)
    plane = load_run_value(saved / "run", Plane)
    return load_run_value(saved / "run", Projection, plane=plane), surface


def test_a_style_value_is_one_value_for_every_face(saved, tmp_path):
    look = Style(cmap="magma", levels=6, title="t")
    by_value = _bytes(saved / "run", tmp_path / "a.png", style=look)
    assert by_value == _bytes(saved / "run", tmp_path / "b.png", cmap="magma", levels=6, title="t")
    assert _bytes(saved / "run", tmp_path / "c.png", style=look, cmap="viridis") != by_value  # options replace fields
    from losstrail.renderers import animate

    animate(*_scene(saved), tmp_path / "d.png", style=look)
    assert (tmp_path / "d.png").read_bytes() == by_value


@pytest.mark.parametrize("kind", FORMATS)
def test_a_run_and_a_comparison_render_in_every_registered_format(saved, tmp_path, kind):
    from losstrail.renderers.formats import picture_format

    picture = picture_format(kind)
    try:
        picture.check_installed()
    except ModuleNotFoundError as err:
        pytest.skip(str(err))
    for folder in ("run", "cmp"):
        out = tmp_path / f"{folder}.{kind}"
        animation = losstrail.render(saved / folder, out, quiet=True)
        assert (animation.path, animation.format) == (out, kind) and out.stat().st_size > 0
        assert (animation.frames == 1) == (picture.medium == "still")
        assert f"data:{picture.mime};base64," in animation._repr_html_() or picture.shown in ("iframe", "path")
