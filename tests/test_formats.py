"""Open formats, checked against other readers: h5py, VTK's own XML reader, trimesh, scikit-learn's PCA."""

import sys

import h5py
import numpy as np
import pytest
import torch
import trimesh
import vtk
from PIL import Image
from typer.testing import CliRunner
from vtk.util.numpy_support import vtk_to_numpy

import losstrail
from losstrail.builtin.models import MLP
from losstrail.cli import app
from losstrail.store.rundir import load_run_value
from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory

NX, NY = 7, 5  # not square, so a transposition cannot hide


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished PCA run on a 7 x 5 grid, with the model it trained."""
    run_dir = tmp_path_factory.mktemp("formats") / "run"
    torch.manual_seed(0)
    model = MLP(input_dim=2, num_classes=3, hidden_dim=6)
    data = losstrail.SpiralsDataModule()
    losstrail.loss_landscape_anim(n_epochs=6, model=model, datamodule=data, model_dirpath=run_dir, seed=1,
                                  resolution=(NX, NY), output_to_file=False, quiet=True)  # fmt: skip
    plane = load_run_value(run_dir, Plane)
    return {
        "dir": run_dir,
        "model": model,
        "surface": load_run_value(run_dir, Surface),
        "plane": plane,
        "path": load_run_value(run_dir, Projection, plane=plane),
        "trajectory": load_run_value(run_dir, Trajectory),
    }


def _vtk_read(path):
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    assert reader.GetErrorCode() == 0
    return reader.GetOutput()


def _grid_points(surface):
    gx, gy = np.meshgrid(surface.xs, surface.ys)
    return gx.ravel(), gy.ravel()


# ---------------------------------------------------------------------------------------------- HDF5


def test_h5_round_trip_equals_the_runs_surface(run, tmp_path):
    out = losstrail.export(run["dir"], tmp_path / "surface.h5")
    back = losstrail.read_surface(out)
    s = run["surface"]
    assert np.array_equal(back.xs, s.xs) and np.array_equal(back.ys, s.ys)
    assert back.loss.shape == (NY, NX) and np.array_equal(back.loss, s.loss)
    np.testing.assert_allclose(back.accuracy, s.accuracy, rtol=1e-12)
    with h5py.File(out) as f:
        assert f["train_loss"].shape == (NX, NY)  # as plot_surface.py allocates it
        losses, acc = f["train_loss"][()], f["train_acc"][()]
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        assert f["losstrail/method"][()].decode() == "pca"
    # Li et al.'s crunch(): flat index k of the array is the point meshgrid(x, y).ravel()[k].
    mx, my = np.meshgrid(x, y)
    for k, (cx, cy) in enumerate(zip(mx.ravel(), my.ravel())):
        i, j = int(np.flatnonzero(s.ys == cy)[0]), int(np.flatnonzero(s.xs == cx)[0])
        assert losses.ravel()[k] == s.loss[i, j]
        assert acc.ravel()[k] == pytest.approx(100 * s.accuracy[i, j])


def _loss_at(x, y):
    return 3.0 + x + 10.0 * y  # differs under any swap of the axes


def test_a_surface_file_written_as_li_et_al_do_reads_with_the_right_axes(tmp_path):
    x, y = np.linspace(-1, 1, 6), np.linspace(-2, 2, 4)
    path = tmp_path / "li.h5"
    with h5py.File(path, "w") as f:  # setup_surface_file() then crunch(), with their keys and layout
        f["dir_file"] = "model_300.t7_weights.h5"
        f["xcoordinates"], f["ycoordinates"] = x, y
        losses, accuracies = -np.ones((len(x), len(y))), -np.ones((len(x), len(y)))
        mx, my = np.meshgrid(x, y)
        for ind, (cx, cy) in enumerate(np.c_[mx.ravel(), my.ravel()]):
            if ind == 5:
                continue  # not computed yet: stays -1
            losses.ravel()[ind] = _loss_at(cx, cy)
            accuracies.ravel()[ind] = 50 + cx
        f["train_loss"], f["train_acc"] = losses, accuracies
    s = losstrail.read_surface(path)
    assert s.loss.shape == (len(y), len(x))
    for i in range(len(y)):
        for j in range(len(x)):
            if (i, j) == (0, 5):
                assert np.isnan(s.loss[i, j]) and np.isnan(s.accuracy[i, j])
            else:
                assert s.loss[i, j] == pytest.approx(_loss_at(x[j], y[i]))
                assert s.accuracy[i, j] == pytest.approx((50 + x[j]) / 100)


@pytest.mark.parametrize("indexing", ["xy", "ij"])
def test_a_forks_meshgrid_keys_read_with_the_right_axes(tmp_path, indexing):
    x, y = np.linspace(0, 1, 5), np.linspace(-1, 0, 3)
    mx, my = np.meshgrid(x, y, indexing=indexing)
    with h5py.File(tmp_path / "fork.h5", "w") as f:
        f["X"], f["Y"], f["losses"] = mx, my, _loss_at(mx, my)
    s = losstrail.read_surface(tmp_path / "fork.h5")
    assert np.array_equal(s.xs, x) and np.array_equal(s.ys, y)
    np.testing.assert_allclose(s.loss, _loss_at(*np.meshgrid(x, y)))
    assert np.isnan(s.accuracy).all()


def test_directions_file_is_li_et_als_with_sklearns_pca_figures(run, tmp_path):
    from sklearn.decomposition import PCA

    losstrail.export(run["dir"], tmp_path / "s.h5", directions=tmp_path / "dir.h5")
    plane, shapes = run["plane"], [tuple(p.shape) for p in run["model"].parameters()]
    with h5py.File(tmp_path / "dir.h5") as f:
        for name, vector in (("xdirection", plane.u), ("ydirection", plane.v)):
            group = f[name]  # as h5_util.read_list and projection.nplist_to_tensor read it
            tensors = [group[str(i)][()] for i in range(len(group))]
            assert [t.shape for t in tensors] == shapes
            assert np.array_equal(np.concatenate([t.ravel() for t in tensors]), vector)
        figures = {k: f[k][()] for k in ("explained_variance_ratio_", "singular_values_", "explained_variance_")}
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["dir_file"][()].decode() == str(tmp_path / "dir.h5")
    pca = PCA(n_components=2).fit(run["trajectory"].params.astype(np.float64))
    for name, value in figures.items():
        np.testing.assert_allclose(value, getattr(pca, name), rtol=1e-3)
    np.testing.assert_allclose(np.abs(pca.components_ @ np.stack([plane.u, plane.v]).T), np.eye(2), atol=1e-3)


def test_projection_file_holds_the_paths_plane_coordinates(run, tmp_path):
    losstrail.export(run["dir"], tmp_path / "s.h5", path=tmp_path / "proj.h5")
    with h5py.File(tmp_path / "proj.h5") as f:
        assert np.array_equal(f["proj_xcoord"][()], run["path"].xy[:, 0])
        assert np.array_equal(f["proj_ycoord"][()], run["path"].xy[:, 1])


# ---------------------------------------------------------------------------------------------- VTK


@pytest.mark.parametrize("ascii", [False, True])
def test_vtp_opens_in_vtks_reader_with_the_surfaces_values(run, tmp_path, ascii):
    s = run["surface"]
    data = _vtk_read(losstrail.export(run["dir"], tmp_path / "s.vtp", ascii=ascii))
    assert data.GetNumberOfPoints() == NX * NY and data.GetNumberOfPolys() == (NX - 1) * (NY - 1)
    points = vtk_to_numpy(data.GetPoints().GetData())
    gx, gy = _grid_points(s)
    assert np.array_equal(points, np.column_stack([gx, gy, s.loss.ravel()]))
    assert np.array_equal(vtk_to_numpy(data.GetPointData().GetArray("zvalue")), s.loss.ravel())
    assert np.array_equal(vtk_to_numpy(data.GetPointData().GetArray("loss")), s.loss.ravel())
    averaged = vtk_to_numpy(data.GetCellData().GetArray("averaged zvalue"))
    for c in range(data.GetNumberOfCells()):  # each cell is one grid square, its value the mean of its corners
        ids = data.GetCell(c).GetPointIds()
        corners = points[[ids.GetId(k) for k in range(ids.GetNumberOfIds())]]
        assert len(corners) == 4
        assert len(set(corners[:, 0])) == 2 and len(set(corners[:, 1])) == 2
        assert averaged[c] == pytest.approx(corners[:, 2].mean())


def test_vtp_log_and_zmax_as_h52vtp(run, tmp_path):
    s, zmax = run["surface"], float(np.median(run["surface"].loss))
    data = _vtk_read(losstrail.export(run["dir"], tmp_path / "s.vtp", log=True, zmax=zmax))
    expected = np.log(np.minimum(s.loss.ravel(), zmax) + 0.1)
    np.testing.assert_allclose(vtk_to_numpy(data.GetPointData().GetArray("zvalue")), expected, rtol=1e-15)
    np.testing.assert_allclose(vtk_to_numpy(data.GetPoints().GetData())[:, 2], expected, rtol=1e-15)


def test_path_vtp_is_one_polyline_through_the_path(run, tmp_path):
    losstrail.export(run["dir"], tmp_path / "s.vtp", path=tmp_path / "path.vtp")
    data = _vtk_read(tmp_path / "path.vtp")
    p = run["path"]
    assert data.GetNumberOfLines() == 1 and data.GetNumberOfPolys() == 0
    assert data.GetCell(0).GetNumberOfPoints() == len(p) == data.GetNumberOfPoints()
    points = vtk_to_numpy(data.GetPoints().GetData())
    assert np.array_equal(points[:, :2], p.xy)
    assert np.array_equal(points[:, 2], p.slice_loss)  # on the surface: the loss at its projection
    assert np.array_equal(vtk_to_numpy(data.GetPointData().GetArray("step")), p.step)
    result = CliRunner().invoke(app, ["export", str(run["dir"]), "--to", str(tmp_path / "c.vtp"),
                                      "--path-vtp", str(tmp_path / "c-path.vtp")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _vtk_read(tmp_path / "c-path.vtp").GetNumberOfLines() == 1


# ---------------------------------------------------------------------------------------------- meshes, tables


def test_obj_parses_as_a_mesh_with_the_path_as_a_line(run, tmp_path):
    s, n_path = run["surface"], len(run["path"])
    out = losstrail.export(run["dir"], tmp_path / "s.obj")
    mesh = trimesh.load(out, process=False)
    assert len(mesh.vertices) == NX * NY and len(mesh.faces) == 2 * (NX - 1) * (NY - 1)
    gx, gy = _grid_points(s)
    np.testing.assert_allclose(mesh.vertices, np.column_stack([gx, gy, s.loss.ravel()]), rtol=1e-15)
    assert (mesh.face_normals[:, 2] > 0).all()  # counter-clockwise seen from above
    lines = [line.split()[1:] for line in out.read_text().splitlines() if line.startswith("l ")]
    assert lines == [[str(k) for k in range(NX * NY + 1, NX * NY + n_path + 1)]]


@pytest.mark.parametrize("ascii", [False, True])
def test_ply_parses_as_a_mesh_with_the_path_as_edges(run, tmp_path, ascii):
    n_path = len(run["path"])
    mesh = trimesh.load(losstrail.export(run["dir"], tmp_path / "s.ply", ascii=ascii), process=False)
    assert len(mesh.vertices) == NX * NY + n_path and len(mesh.faces) == 2 * (NX - 1) * (NY - 1)
    raw = mesh.metadata["_ply_raw"]["edge"]["data"]  # a record array (binary) or a dict of columns (ascii)
    edges = np.column_stack([np.ravel(raw["vertex1"]), np.ravel(raw["vertex2"])])
    assert [tuple(e) for e in edges.tolist()] == [(NX * NY + k, NX * NY + k + 1) for k in range(n_path - 1)]
    np.testing.assert_allclose(mesh.vertices[NX * NY :, :2], run["path"].xy, rtol=1e-15)


@pytest.mark.parametrize("ext", ["csv", "npz"])
def test_tables_read_back_equal_to_the_surface(run, tmp_path, ext):
    s = run["surface"]
    back = losstrail.read_surface(losstrail.export(run["dir"], tmp_path / f"s.{ext}"))
    for name in ("xs", "ys", "loss", "accuracy"):
        assert np.array_equal(getattr(back, name), getattr(s, name)), name


def test_path_table_holds_every_step(run, tmp_path):
    losstrail.export(run["dir"], tmp_path / "s.csv", path=tmp_path / "path.csv")
    table = np.genfromtxt(tmp_path / "path.csv", delimiter=",", names=True)
    assert np.array_equal(table["step"], run["path"].step)
    assert np.array_equal(np.column_stack([table["x"], table["y"]]), run["path"].xy)


# ---------------------------------------------------------------------------------------------- import


def test_import_animates_an_exported_surface_with_its_path(run, tmp_path):
    runner = CliRunner()
    files = [str(tmp_path / n) for n in ("s.h5", "p.h5", "d.h5")]
    result = runner.invoke(app, ["export", str(run["dir"]), "--to", files[0], "--path", files[1],
                                 "--directions", files[2]])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "again.gif"
    args = ["import", files[0], "--path", files[1], "--directions", files[2], "--out", str(out), "--frames", "3"]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.n_frames == 3
    still = losstrail.render_surface(files[0], tmp_path / "still.png")  # no path: the plane's centre only
    assert still.frames == 1 and Image.open(still.path).size == (900, 600)


# ---------------------------------------------------------------------------------------------- bad input


def _garbage(path):
    path.write_bytes(b"not a file of this kind at all")
    return path


def _no_keys(path):
    with h5py.File(path, "w") as f:
        f["foo"], f["bar"] = np.zeros(3), np.zeros(2)
    return path


def _short_axis(path):
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"], f["train_loss"] = np.zeros(4), np.zeros(5), np.zeros((4, 6))
    return path


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "gone.h5", FileNotFoundError, r"path='.*gone.h5' does not exist"),
        (lambda p: _garbage(p / "bad.h5"), ValueError, r"path='.*bad.h5' is not a readable HDF5 file"),
        (lambda p: _garbage(p / "bad.npz"), ValueError, r"path='.*bad.npz' is not a readable .npz file"),
        (
            lambda p: _no_keys(p / "k.h5"),
            ValueError,
            r"has no loss array \(looked for 'train_loss', 'losses'.*"
            r"it holds 'bar', 'foo'",
        ),  # fmt: skip
        (
            lambda p: _short_axis(p / "n.h5"),
            ValueError,
            r"'train_loss' has 24 values .* 'xcoordinates' \(4\) x "
            r"'ycoordinates' \(5\) needs 20",
        ),  # fmt: skip
        (
            lambda p: p / "s.txt",
            ValueError,
            r"path='.*s.txt' has extension '.txt', which is not known; "
            r"expected one of '.h5', '.hdf5', '.npz', '.csv'",
        ),  # fmt: skip
    ],
)
def test_read_surface_names_what_is_wrong(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        losstrail.read_surface(make(tmp_path))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"to": "s.stl"},
            ValueError,
            r"to='.*s.stl' has extension '.stl', which is not known; expected one of "
            r"'.h5', '.vtp', '.obj', '.ply', '.csv', '.npz'",
        ),  # fmt: skip
        ({"path": "p.obj"}, ValueError, r"path='.*p.obj' has extension '.obj'"),
        ({"directions": "d.npz"}, ValueError, r"directions='.*d.npz' has extension '.npz'.*expected one of '.h5'"),
        ({"to": "s.csv", "log": True}, ValueError, r"log=, zmax= and ascii= shape the heights"),
        ({"zmax": float("nan")}, ValueError, r"zmax=nan must be a finite number"),
        ({"run_dir": "nowhere"}, FileNotFoundError, r"run_dir='.*nowhere' is not a directory"),
        # the directions fail after the surface is ready to write: neither file is written
        (
            {"directions": "d.h5", "model": MLP(input_dim=2, num_classes=3, hidden_dim=2)},
            ValueError,
            r"the parameter tensors of model.parameters\(\) hold 15 numbers but the plane has P=39",
        ),  # fmt: skip
    ],
)
def test_export_names_what_is_wrong_and_writes_nothing(run, tmp_path, kwargs, error, message):
    out = tmp_path / "out"
    out.mkdir()
    args = {"run_dir": run["dir"], "to": "s.vtp", **kwargs}
    args.update({k: out / args[k] for k in ("to", "path", "directions") if k in args})
    if kwargs.get("run_dir"):
        args["run_dir"] = tmp_path / kwargs["run_dir"]
    with pytest.raises(error, match=message):
        losstrail.export(args.pop("run_dir"), args.pop("to"), **args)
    assert list(out.iterdir()) == []


def test_import_names_a_file_of_the_wrong_kind(run, tmp_path):
    surface = losstrail.export(run["dir"], tmp_path / "s.h5")
    with pytest.raises(ValueError, match=r"directions='.*s.h5' is not a 2-D direction file: .* it holds 'losstrail'"):
        losstrail.render_surface(surface, tmp_path / "x.png", directions=surface)
    with pytest.raises(ValueError, match=r"path='.*s.h5' is not a projection file: it has no 'proj_xcoord'"):
        losstrail.render_surface(surface, tmp_path / "x.png", path=surface)
    assert not (tmp_path / "x.png").exists()


def test_without_h5py_the_error_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    with pytest.raises(ModuleNotFoundError, match=r"to='.*s.h5' is an HDF5 file, which needs h5py; install it: "
                                                  r"pip install 'losstrail\[h5\]'"):  # fmt: skip
        losstrail.export(run["dir"], tmp_path / "s.h5")
    li = _garbage(tmp_path / "li.h5")
    result = CliRunner().invoke(app, ["import", str(li), "--out", str(tmp_path / "x.gif")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: surface={str(li)!r} is an HDF5 file, which needs h5py; install it: pip install 'losstrail[h5]'"
    ]
    assert list(tmp_path.iterdir()) == [li]


def test_cli_bad_input_is_one_line_and_status_2(run, tmp_path):
    runner = CliRunner()
    cases = [
        (["export", str(run["dir"]), "--to", str(tmp_path / "s.xyz")], "has extension '.xyz', which is not known"),
        (["import", str(tmp_path / "gone.h5")], "surface='"),
        (["import", str(_no_keys(tmp_path / "k.h5")), "--out", str(tmp_path / "k.gif")], "it holds 'bar', 'foo'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and message in result.output


def test_a_path_measured_at_some_points_exports_on_the_surface_everywhere(run):
    import dataclasses

    from losstrail.store.formats import _path_columns, _path_points
    from losstrail.values.surface import grid_value

    p, s = run["path"], run["surface"]
    sparse = dataclasses.replace(p, true_loss=p.true_loss.copy(), slice_loss=p.slice_loss.copy())
    sparse.true_loss[1:-1], sparse.slice_loss[1:-1] = np.nan, np.nan  # measured at the first and last point only
    points = _path_points(sparse, s, lambda v: v)
    assert np.isfinite(points).all()  # a polyline with no hole: the grid's value between measured points
    assert points[0, 2] == p.slice_loss[0] and points[-1, 2] == p.slice_loss[-1]
    np.testing.assert_allclose(points[1:-1, 2], grid_value(s, p.xy[1:-1]))
    columns = _path_columns(sparse, s)
    assert np.isnan(columns["true_loss"][1:-1]).all() and np.isfinite(columns["true_loss"][[0, -1]]).all()
