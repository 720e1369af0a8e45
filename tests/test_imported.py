"""A surface made elsewhere reads right: no batch loss or unknown epoch in the read-out, Li et al.'s uncomputed
cells counted and said, and values log colours cannot show drawn on a linear scale with one warning."""

import warnings

import numpy as np
import pytest

import losstrail as lt
from losstrail.renderers._figure import readout
from losstrail.values.surface import Surface

h5py = pytest.importorskip("h5py")


def _li_files(tmp_path, missing: int = 0):
    """Li et al.'s surface file (an (nx, ny) train_loss holding the row-major (ny, nx) values) and projection file."""
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
    loss = 1.0 + np.add.outer(ys**2, xs**2)  # (ny, nx)
    loss.ravel()[:missing] = -1.0
    with h5py.File(tmp_path / "surface.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"] = xs, ys
        f["train_loss"] = loss.reshape(len(xs), len(ys))
    with h5py.File(tmp_path / "proj.h5", "w") as f:
        f["proj_xcoord"], f["proj_ycoord"] = np.linspace(-0.8, 0, 4), np.linspace(-0.6, 0, 4)
    return tmp_path / "surface.h5", tmp_path / "proj.h5"


def test_uncomputed_cells_are_counted_and_said(tmp_path):
    surface_file, _ = _li_files(tmp_path, missing=7)
    with pytest.warns(UserWarning, match=r"7 cells not computed \(-1 in 'train_loss'"):
        surface = lt.read_surface(surface_file)
    assert int(np.isnan(surface.loss).sum()) == 7
    finished = tmp_path / "finished"
    finished.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished grid says nothing
        lt.read_surface(_li_files(finished)[0])


def test_the_read_out_of_an_imported_path_is_a_surface_value(tmp_path, monkeypatch):
    import losstrail.renderers

    surface_file, proj_file = _li_files(tmp_path)
    seen = {}
    real = losstrail.renderers.animate

    def spy(projection, surface, out, **kwargs):
        seen["projection"] = projection
        return real(projection, surface, out, **kwargs)

    monkeypatch.setattr("losstrail.renderers.redraw.animate", spy)  # render_surface's own name for it
    lt.render_surface(surface_file, tmp_path / "theirs.png", path=proj_file)
    text = readout(seen["projection"], 0)
    assert "surface value at the path point" in text
    assert "batch loss" not in text and "epoch" not in text and "acc" not in text
    assert "step" not in text and text.startswith("point")  # Li et al.'s projection file has no steps
    assert (tmp_path / "theirs.png").is_file()
    pytest.importorskip("plotly")
    page = lt.render_surface(surface_file, tmp_path / "theirs.html", path=proj_file).path.read_text()
    assert "surface value at the path point" in page


def test_values_log_colours_cannot_show_switch_to_linear_with_one_warning(tmp_path, rng):
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
    values = np.add.outer(ys, xs)  # negative in one corner, zero on the diagonal
    surface = Surface(xs, ys, values, np.full(values.shape, np.nan))
    plane = lt.Plane(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1], "custom")
    traj = lt.Trajectory(rng.normal(size=(4, 3)).astype(np.float32), np.ones(4), np.full(4, np.nan), np.arange(4),
                         np.zeros(4, np.int64))  # fmt: skip
    path = lt.project(plane, traj)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lt.animate(path, surface, tmp_path / "mine.png")
    said = [w for w in caught if "linear colour scale" in str(w.message)]
    assert len(said) == 1 and "of 30 surface values are zero or negative" in str(said[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lt.animate(path, surface, tmp_path / "linear.png", log_scale=False)  # asked for: nothing to say
