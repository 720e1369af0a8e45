"""lt.export takes a Surface made in memory (with its projection and plane), for every format it writes."""

import numpy as np
import pytest
import torch

import losstrail as lt
from losstrail.store.formats import EXPORT_FORMATS


@pytest.fixture
def made(tiny_data, tiny_model):
    X, y = tiny_data
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.5)
    rec = lt.Recorder(tiny_model)
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(tiny_model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss=loss)
    t = rec.trajectory
    plane = lt.make_plane(t, "pca")
    path = lt.project(plane, t)
    xs, ys = lt.path_grid(path.xy, resolution=(5, 4))
    return tiny_model, t, plane, path, lt.loss_surface(tiny_model, (X, y), plane, xs, ys, quiet=True)


@pytest.mark.parametrize("kind", EXPORT_FORMATS)
def test_every_format_from_a_surface(made, tmp_path, kind):
    pytest.importorskip("h5py") if kind == "h5" else None
    model, t, plane, path, surface = made
    out = lt.export(surface, tmp_path / f"s.{kind}", projection=path)
    assert out.is_file() and out.stat().st_size > 0
    if kind in ("h5", "csv", "npz"):  # read back by losstrail's own reader: the same grid
        again = lt.read_surface(out)
        np.testing.assert_allclose(again.xs, surface.xs)
        np.testing.assert_allclose(again.ys, surface.ys)
        np.testing.assert_allclose(again.loss, surface.loss)


def test_path_and_directions_from_memory(made, tmp_path):
    h5py = pytest.importorskip("h5py")
    model, t, plane, path, surface = made
    lt.export(surface, tmp_path / "s.h5", projection=path, path=tmp_path / "p.h5", directions=tmp_path / "d.h5",
              model=model)  # fmt: skip
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_allclose(f["proj_xcoord"][()], path.xy[:, 0])
    with h5py.File(tmp_path / "d.h5") as f:  # one dataset per tensor, in the model's shapes
        shapes = [tuple(f["xdirection"][str(k)].shape) for k in range(len(f["xdirection"]))]
        assert shapes == [tuple(p.shape) for p in model.parameters()]
        flat = np.concatenate([f["xdirection"][str(k)][()].ravel() for k in range(len(shapes))])
        np.testing.assert_array_equal(flat, plane.u)
        np.testing.assert_allclose(f["explained_variance_ratio_"][()], plane.explained)


def test_missing_companions_are_named(made, tmp_path):
    model, t, plane, path, surface = made
    with pytest.raises(ValueError, match=r"path= writes the path.*projection="):
        lt.export(surface, tmp_path / "s.csv", path=tmp_path / "p.csv")
    with pytest.raises(ValueError, match=r"directions= writes the plane's directions.*plane="):
        lt.export(surface, tmp_path / "s.csv", directions=tmp_path / "d.h5")
    with pytest.raises(ValueError, match=r"pass model="):
        lt.export(surface, tmp_path / "s.h5", plane=plane, directions=tmp_path / "d.h5")
    with pytest.raises(TypeError, match="projection= must be a losstrail.Projection"):
        lt.export(surface, tmp_path / "s.csv", projection=plane)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_the_command_names_its_positional_argument(tmp_path):
    from typer.testing import CliRunner

    from losstrail.cli import app

    result = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere"), "--to", str(tmp_path / "s.csv")])
    assert result.exit_code == 2
    assert "RUN_DIR=" in result.output and "--run-dir" not in result.output
