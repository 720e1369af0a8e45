import numpy as np
import pytest

from losstrail.planes.projection import project
from losstrail.values.plane import Plane
from losstrail.values.trajectory import Trajectory


def test_coordinates_and_distance_from_the_plane(rng):
    p = 12
    u, v, normal = np.linalg.qr(rng.normal(size=(p, 3)))[0].T
    origin = rng.normal(size=p)
    coords, heights = rng.normal(size=(9, 2)), rng.normal(size=9)
    params = origin + coords[:, :1] * u + coords[:, 1:] * v + heights[:, None] * normal
    traj = Trajectory(params.astype(np.float32), np.arange(9.0), np.zeros(9), np.arange(9), np.zeros(9, dtype=np.int64))
    proj = project(Plane(origin.astype(np.float32), u.astype(np.float32), v.astype(np.float32), "custom"), traj)
    np.testing.assert_allclose(proj.xy, coords, atol=1e-5)
    np.testing.assert_allclose(proj.off_plane, np.abs(heights), atol=1e-5)
    assert np.array_equal(proj.loss, traj.loss)


def test_size_mismatch_is_named():
    traj = Trajectory(np.zeros((3, 4), np.float32), np.zeros(3), np.zeros(3), np.arange(3), np.arange(3))
    plane = Plane(np.zeros(5, np.float32), np.ones(5, np.float32), np.ones(5, np.float32), "custom")
    with pytest.raises(ValueError, match=r"the trajectory has P=4 parameters but the plane has P=5"):
        project(plane, traj)


def test_true_loss_and_slice_loss_equal_the_model_loaded_with_those_weights(tiny_model, tiny_data, rng):
    import torch
    import torch.nn.functional as F

    from losstrail.builtin.models import flat_params, load_flat_params

    end = flat_params(tiny_model).numpy()
    params = (end + rng.normal(size=(5, 27)) * 0.3).astype(np.float32)
    params[-1] = end
    traj = Trajectory(params, np.zeros(5), np.zeros(5), np.arange(5), np.zeros(5, dtype=np.int64))
    u, v = rng.normal(size=(2, 27)).astype(np.float32)
    plane = Plane(end, u, v, "random")
    proj = project(plane, traj, model=tiny_model, data=tiny_data)
    probe = type(tiny_model)(input_dim=2, num_classes=3, hidden_dim=4).eval()

    def loss_at(theta):
        load_flat_params(probe, torch.from_numpy(np.asarray(theta, np.float32)))
        with torch.no_grad():
            return F.cross_entropy(probe(tiny_data[0]), tiny_data[1]).item()

    for k in range(5):
        assert proj.true_loss[k] == pytest.approx(loss_at(params[k]), abs=1e-5)
        assert proj.slice_loss[k] == pytest.approx(loss_at(plane.point(*proj.xy[k])), abs=1e-5)
    assert proj.true_loss[-1] == pytest.approx(proj.slice_loss[-1], abs=1e-6)  # the centre is in the plane
    with pytest.raises(ValueError, match=r"pass both model and data"):
        project(plane, traj, model=tiny_model)


def test_batchnorm_without_recomputed_statistics_warns_and_with_them_does_not():
    import warnings

    import torch

    from losstrail import fit, make_plane, project

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    data = (torch.randn(64, 2), torch.randint(0, 3, (64,)))
    run = fit(model, data, epochs=3, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    with pytest.warns(UserWarning, match=r"BatchNorm layers, and with bn_batches=0.*pass bn_batches=4"):
        project(plane, run.trajectory, model=model, data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measured = project(plane, run.trajectory, model=model, data=data, bn_batches=1)
    assert np.isfinite(measured.true_loss).all()


def test_true_and_slice_loss_only_at_the_points_asked_for(tiny_model, tiny_data, rng):
    from losstrail.builtin.models import flat_params

    end = flat_params(tiny_model).numpy()
    params = (end + rng.normal(size=(7, 27)) * 0.3).astype(np.float32)
    traj = Trajectory(params, np.zeros(7), np.zeros(7), np.arange(7), np.zeros(7, dtype=np.int64))
    plane = Plane(end, *rng.normal(size=(2, 27)).astype(np.float32), "random")
    every = project(plane, traj, model=tiny_model, data=tiny_data)
    some = project(plane, traj, model=tiny_model, data=tiny_data, at=[5, 0, -1, 5])
    assert some.measured_at.tolist() == [0, 5, 6]
    for name in ("true_loss", "slice_loss"):
        got, want = getattr(some, name), getattr(every, name)
        np.testing.assert_allclose(got[[0, 5, 6]], want[[0, 5, 6]], rtol=1e-6)
        assert np.isnan(got[[1, 2, 3, 4]]).all()
    np.testing.assert_array_equal(some.xy, every.xy)  # the geometry is every point's, always
    assert project(plane, traj, model=tiny_model, data=tiny_data, at=[]).measured_at.tolist() == []
    with pytest.raises(ValueError, match=r"at holds 7, but the trajectory has 7 points"):
        project(plane, traj, model=tiny_model, data=tiny_data, at=[0, 7])
    with pytest.raises(ValueError, match=r"at=.* must be a 1-D sequence of indices"):
        project(plane, traj, model=tiny_model, data=tiny_data, at=[0.5])


def _lstsq_reference(params, origin, u, v):
    """Plain NumPy: least squares in float64 on the whole (T, P) path, and the residual's norm."""
    basis = np.stack([u, v]).astype(np.float64).T  # (P, 2)
    centred = (np.asarray(params, np.float64) - origin.astype(np.float64)).T  # (P, T)
    xy = np.linalg.lstsq(basis, centred, rcond=None)[0]
    return xy.T, np.linalg.norm(centred - basis @ xy, axis=0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_projection_in_slabs_equals_plain_least_squares(dtype, rng, monkeypatch, tmp_path):
    """Blocks of rows and runs of columns (made small here, so a path has several of each) give the same
    coordinates and distances as one least-squares solve on the whole path, from memory or a memory map."""
    from losstrail.values import rows as _rows

    monkeypatch.setattr(_rows, "_PLANE_COLUMNS", 1000)
    monkeypatch.setattr(_rows, "_PLANE_BLOCK_BYTES", 7 * 4 * 4500)  # 7 rows of 4,500 float32 values at once
    T, P = 23, 4500
    origin = rng.normal(size=P).astype(np.float32)
    u, v = (rng.normal(size=(2, P)) * [[0.01], [0.03]]).astype(np.float32)
    steps = rng.normal(size=(T, 2)) * 5 + np.linspace(0, 40, T)[:, None]
    params = origin + steps @ np.stack([u, v]) + rng.normal(size=(T, P)) * 0.002 * np.arange(T)[:, None]
    params[3] = origin + 2.5 * u - 1.5 * v  # in the plane
    params = params.astype(dtype)
    mapped = np.memmap(tmp_path / "rows.bin", dtype, "w+", shape=(T, P))
    mapped[:] = params
    mapped.flush()
    want_xy, want_off = _lstsq_reference(params, origin, u, v)
    plane = Plane(origin, u, v, "custom")
    for rows in (params, np.memmap(tmp_path / "rows.bin", dtype, "r", shape=(T, P))):
        traj = Trajectory(rows, np.zeros(T), np.zeros(T), np.arange(T), np.zeros(T, np.int64))
        got = project(plane, traj)
        np.testing.assert_allclose(got.xy, want_xy, rtol=1e-5, atol=1e-5 * np.abs(want_xy).max())
        np.testing.assert_allclose(got.off_plane, want_off, rtol=1e-5, atol=1e-6 * want_off.max())
        np.testing.assert_allclose(plane.project(rows), want_xy, rtol=1e-5, atol=1e-5 * np.abs(want_xy).max())
    if dtype == "float32":  # float16 rounds the point off the plane, as the reference sees too
        assert got.off_plane[3] < 1e-6 * want_off.max()
    np.testing.assert_allclose(plane.project(params[5]), want_xy[5], rtol=1e-5)


def test_projection_onto_a_plane_held_per_tensor_makes_no_flat_copy(tiny_model, rng):
    """A plane made around a model is read tensor by tensor: the same coordinates as its flat vectors give,
    and the plane is not left holding flat copies of itself."""
    from losstrail import make_plane
    from losstrail.builtin.models import flat_params

    plane = make_plane(tiny_model, "random", seed=0)
    assert plane.tensors is not None and plane.__dict__.get("u") is None
    end = flat_params(tiny_model).numpy()
    params = (end + rng.normal(size=(6, 27)) * 0.3).astype(np.float32)
    traj = Trajectory(params, np.zeros(6), np.zeros(6), np.arange(6), np.zeros(6, dtype=np.int64))
    got = project(plane, traj)
    assert all(plane.__dict__.get(name) is None for name in ("origin", "u", "v"))
    want_xy, want_off = _lstsq_reference(params, plane.origin, plane.u, plane.v)  # reading them makes them
    np.testing.assert_allclose(got.xy, want_xy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.off_plane, want_off, rtol=1e-5)


def test_projecting_a_path_on_disk_holds_a_block_of_rows_not_the_path(rng, monkeypatch, tmp_path):
    """NumPy's allocations while projecting (tracemalloc sees them) stay near one block of rows and the
    plane's vectors, whatever the path's length: no float64 copy of the plane or of the path."""
    import tracemalloc

    from losstrail.values import rows as _rows

    monkeypatch.setattr(_rows, "_PLANE_BLOCK_BYTES", 1 << 20)
    T, P = 400, 50_000  # 40 MB as float16 on disk, 80 MB in float32, 160 MB in float64
    rows = np.memmap(tmp_path / "rows.bin", np.float16, "w+", shape=(T, P))
    for start in range(0, T, 50):
        rows[start : start + 50] = rng.normal(size=(50, P)).astype(np.float16)
    rows.flush()
    rows = np.memmap(tmp_path / "rows.bin", np.float16, "r", shape=(T, P))
    plane = Plane(*rng.normal(size=(3, P)).astype(np.float32), "custom")
    traj = Trajectory(rows, np.zeros(T), np.zeros(T), np.arange(T), np.zeros(T, np.int64))
    tracemalloc.start()
    try:
        got = project(plane, traj)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (1 << 20) + 3 * 4 * P + (1 << 20), f"projecting took {peak / 1e6:.1f} MB"
    want_xy, want_off = _lstsq_reference(rows[:40], plane.origin, plane.u, plane.v)
    np.testing.assert_allclose(got.xy[:40], want_xy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.off_plane[:40], want_off, rtol=1e-5)
