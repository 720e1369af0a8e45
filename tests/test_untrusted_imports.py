"""Importers never trace back: a bad surface or path file is one line naming the file and the array.

Each case runs through the command line (``losstrail import``: exit status 2, one ``Error:``
line, no traceback) and through Python (``read_surface`` or ``render_surface``: a
``ValueError``). A loss with no finite value, or an axis of one value, is no error: a warning
and a picture whose title says so.
"""

import re

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import losstrail
import losstrail.renderers.redraw
from losstrail.cli import app
from probes import declare_huge

XS, YS = np.linspace(-1.0, 1.0, 5), np.linspace(-1.0, 1.0, 4)
LOSS = np.add.outer(YS**2, XS**2) + 1  # (ny, nx)


def _h5(path, xs=XS, ys=YS, loss=LOSS):
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = xs, ys
        f["train_loss"] = np.asarray(loss).reshape(-1)  # Li et al.'s flat order, x fastest
    return path


def _npz(path, xs=XS, ys=YS, loss=LOSS):
    np.savez(path, xs=xs, ys=ys, loss=loss)
    return path


def _csv(path, xs=XS, ys=YS, loss=LOSS):
    rows = [f"{float(x)!r},{float(y)!r},{float(loss[i][j])!r}" for i, y in enumerate(ys) for j, x in enumerate(xs)]
    path.write_text("\n".join(["x,y,loss", *rows]) + "\n")
    return path


def _with(values, index, value):
    values = values.copy()
    values[index] = value
    return values


def _huge_h5(path, name="train_loss"):
    """A file that declares a 10**12-cell array and stores none of it (a chunked dataset of its fill value)."""
    with h5py.File(path, "w") as f:
        for key, values in (("xcoordinates", XS), ("ycoordinates", YS), ("train_loss", LOSS.reshape(-1))):
            if key == name:
                shape = (10**6, 10**6) if key == "train_loss" else (10**12,)
                f.create_dataset(key, shape=shape, dtype="f8", chunks=(1, 1000) if len(shape) == 2 else (10**5,),
                                 fillvalue=1.0)  # fmt: skip
            else:
                f[key] = values
    return path


def _huge_npz(path):
    """A .npz whose ``loss`` header declares (10**6, 10**6) float64 values, followed by none."""
    return declare_huge(_npz(path))


def _projection(path, x, y):
    with h5py.File(path, "w") as f:
        f["proj_xcoord"], f["proj_ycoord"] = x, y
    return path


def _huge_projection(path):
    with h5py.File(path, "w") as f:
        for key in ("proj_xcoord", "proj_ycoord"):
            f.create_dataset(key, shape=(10**12,), dtype="f8", chunks=(10**5,), fillvalue=0.5)
    return path


def _header_only(path):
    path.write_text("x,y,loss\n")
    return path


# (file name, how to make it, the array the message names, what it says about it)
BAD_SURFACES = [
    ("nan_x.h5", lambda p: _h5(p, xs=_with(XS, 2, np.nan)), "xcoordinates", "holds nan at index 2"),
    ("inf_y.h5", lambda p: _h5(p, ys=_with(YS, 1, np.inf)), "ycoordinates", "holds inf at index 1"),
    ("nan_x.npz", lambda p: _npz(p, xs=_with(XS, 0, np.nan)), "xs", "holds nan at index 0"),
    ("inf_y.npz", lambda p: _npz(p, ys=_with(YS, 3, -np.inf)), "ys", "holds -inf at index 3"),
    ("nan_x.csv", lambda p: _csv(p, xs=_with(XS, 2, np.nan)), "x", "holds nan at row 2"),
    ("constant_x.h5", lambda p: _h5(p, xs=np.zeros(5)), "xcoordinates", "has the same value 0 at all 5"),
    ("constant_y.npz", lambda p: _npz(p, ys=np.full(4, 0.5)), "ys", "has the same value 0.5 at all 4"),
    ("zigzag_x.h5", lambda p: _h5(p, xs=XS[[0, 2, 1, 3, 4]]), "xcoordinates", "is not monotonic: -0.5 follows 0"),
    ("zigzag_y.npz", lambda p: _npz(p, ys=YS[[0, 1, 3, 2]]), "ys", "is not monotonic"),
    ("repeat_x.csv", lambda p: _csv(p, xs=XS[[0, 1, 1, 3, 4]]), "x", "is not monotonic"),
    ("header.csv", _header_only, "x,y,loss", "but no rows of values"),
    ("huge.h5", _huge_h5, "train_loss", "declares 1,000,000,000,000 values (shape (1000000, 1000000))"),
    ("huge_x.h5", lambda p: _huge_h5(p, "xcoordinates"), "xcoordinates", "declares 1,000,000,000,000 values"),
    ("huge.npz", _huge_npz, "loss", "declares 1,000,000,000,000 values"),
]


def _one_error_line(result, *words):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(("name", "make", "array", "says"), BAD_SURFACES, ids=[c[0] for c in BAD_SURFACES])
def test_a_bad_surface_file_is_one_line_naming_the_file_and_the_array(tmp_path, name, make, array, says):
    surface = make(tmp_path / name)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["import", str(surface), "--out", str(out), "-q"])
    _one_error_line(result, str(surface), repr(array), says)
    assert not out.exists()
    with pytest.raises(ValueError, match=f"path='{surface}'.*'{array}'"):
        losstrail.read_surface(surface)


BAD_PATHS = [
    ("nan_path.h5", lambda p: _projection(p, [0.1, np.nan, 0.3], [0.1, 0.2, 0.3]), "proj_xcoord", "nan at index 1"),
    ("inf_path.h5", lambda p: _projection(p, [0.1, 0.2], [np.inf, 0.2]), "proj_ycoord", "inf at index 0"),
    ("huge_path.h5", _huge_projection, "proj_xcoord", "declares 1,000,000,000,000 values"),
]


@pytest.mark.parametrize(("name", "make", "array", "says"), BAD_PATHS, ids=[c[0] for c in BAD_PATHS])
def test_a_bad_path_file_is_one_line_naming_the_file_and_the_array(tmp_path, name, make, array, says):
    surface, path = _h5(tmp_path / "s.h5"), make(tmp_path / name)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["import", str(surface), "--path", str(path), "--out", str(out), "-q"])
    _one_error_line(result, str(path), repr(array), says)
    assert not out.exists()
    with pytest.raises(ValueError, match=f"path='{path}'.*'{array}'.*{says}"):
        losstrail.render_surface(surface, out, path=path, quiet=True)
    assert not out.exists()


def test_a_link_to_another_file_is_not_followed(tmp_path):
    _h5(tmp_path / "elsewhere.h5")
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = XS, YS
        f["train_loss"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "train_loss")
    result = CliRunner().invoke(app, ["import", str(linked), "--out", str(tmp_path / "o.png"), "-q"])
    _one_error_line(result, str(linked), "'train_loss' is a link to the file", "not followed")


def test_a_decreasing_axis_is_turned_round(tmp_path):
    ascending = losstrail.read_surface(_npz(tmp_path / "up.npz"))
    descending = losstrail.read_surface(_npz(tmp_path / "down.npz", xs=XS[::-1], loss=LOSS[:, ::-1]))
    np.testing.assert_array_equal(descending.xs, ascending.xs)
    np.testing.assert_array_equal(descending.loss, ascending.loss)


@pytest.fixture
def titles(monkeypatch):
    """The titles render_surface hands to the renderer, which still draws the picture."""
    seen, draw = [], losstrail.renderers.redraw.animate

    def spy(projection, surface, out, *, style, **kwargs):
        seen.append(style.title)
        return draw(projection, surface, out, style=style, **kwargs)

    monkeypatch.setattr(losstrail.renderers.redraw, "animate", spy)  # where render_surface looks it up
    return seen


EMPTY_SURFACES = [
    (
        "all_nan.h5",
        lambda p: _h5(p, loss=np.full_like(LOSS, np.nan)),
        "the loss holds no finite value (all 20 are NaN or infinite)",
    ),
    (
        "all_nan.csv",
        lambda p: _csv(p, loss=np.full_like(LOSS, np.nan)),
        "the loss holds no finite value (all 20 are NaN or infinite)",
    ),
    ("one_x.npz", lambda p: _npz(p, xs=XS[2:3], loss=LOSS[:, 2:3]), "the x axis has zero width (its one value is 0)"),
    ("one_y.h5", lambda p: _h5(p, ys=YS[:1], loss=LOSS[:1]), "the y axis has zero width (its one value is -1)"),
]


@pytest.mark.parametrize(("name", "make", "says"), EMPTY_SURFACES, ids=[c[0] for c in EMPTY_SURFACES])
def test_no_surface_to_draw_is_a_warning_and_a_picture_that_says_so(tmp_path, titles, name, make, says):
    surface = make(tmp_path / name)
    out = tmp_path / "cli.png"
    result = CliRunner().invoke(app, ["import", str(surface), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("Warning: ") and str(surface) in lines[0] and says in lines[0], result.output
    assert lines[1:] == [f"wrote {out}"] and "Traceback" not in result.output
    with Image.open(out) as image:
        assert image.size == (900, 600)
    assert titles == [f"{name}\nno surface: {says}"]
    with pytest.warns(UserWarning, match=re.escape(f"path='{surface}': {says}")):
        read = losstrail.read_surface(surface)
    assert read.loss.shape == (len(read.ys), len(read.xs))
    with pytest.warns(UserWarning, match=re.escape(says)):
        losstrail.render_surface(surface, tmp_path / "py.png", quiet=True)
    assert titles[-1].endswith(f"no surface: {says}") and (tmp_path / "py.png").stat().st_size > 0
