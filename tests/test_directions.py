import numpy as np
import pytest

from losstrail.directions import Plane, captured_fraction, make_plane
from losstrail.record import Trajectory


def _trajectory(params):
    t = len(params)
    return Trajectory(params.astype(np.float32), np.zeros(t), np.zeros(t), np.arange(t), np.zeros(t, dtype=np.int64))


def _path(rng, t=40, p=30):
    steps = rng.normal(size=(t, p)) * np.linspace(3, 0.1, p)  # anisotropic, so the PCs are well separated
    return np.cumsum(steps, axis=0)


def test_gram_pca_equals_svd_of_the_full_matrix(rng, monkeypatch):
    params = _path(rng).astype(np.float32)
    monkeypatch.setattr("losstrail.directions._COL_BLOCK", 7)  # stream the Gram matrix in several blocks
    plane = make_plane(_trajectory(params), "pca")
    centred = params.astype(np.float64) - params.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for mine, ref in ((plane.u, vt[0]), (plane.v, vt[1])):
        assert abs(float(mine @ ref)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(plane.explained, (s[:2] ** 2) / (s**2).sum(), rtol=1e-6)
    np.testing.assert_allclose(plane.origin, params[-1])


def test_pca_path_starts_at_negative_coordinates(rng):
    path = _path(rng)
    plane = make_plane(_trajectory(path), "pca")
    start = plane.project(path[0])
    assert start[0] <= 0 and start[1] <= 0


def test_projection_is_exact_for_points_in_a_non_orthogonal_plane(rng):
    u = rng.normal(size=50)
    plane = Plane(
        rng.normal(size=50).astype(np.float32),
        u.astype(np.float32),
        (u + 0.3 * rng.normal(size=50)).astype(np.float32),
        "custom",
    )
    coords = rng.normal(size=(20, 2))
    points = plane.origin + coords[:, :1] * plane.u + coords[:, 1:] * plane.v
    np.testing.assert_allclose(plane.project(points), coords, atol=1e-4)


def test_random_directions_are_unit_and_seeded(rng):
    traj = _trajectory(_path(rng))
    a, b, c = (make_plane(traj, "random", seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v) and not np.array_equal(a.u, c.u)
    assert np.linalg.norm(a.u) == pytest.approx(1, abs=1e-6) and np.linalg.norm(a.v) == pytest.approx(1, abs=1e-6)
    assert 0 <= sum(a.explained) <= 1


def test_custom_directions_are_normalized_and_keep_their_sign(rng):
    traj = _trajectory(_path(rng))
    u, v = rng.normal(size=30) * 5, rng.normal(size=30)
    plane = make_plane(traj, "custom", directions=(u, v))
    np.testing.assert_allclose(plane.u, u / np.linalg.norm(u), rtol=1e-6)
    np.testing.assert_allclose(plane.v, v / np.linalg.norm(v), rtol=1e-6)


def test_captured_fraction_is_one_in_plane_and_the_pca_ratio_for_pca(rng):
    u, v = rng.normal(size=(2, 30))
    in_plane = rng.normal(size=(25, 1)) * u + rng.normal(size=(25, 1)) * v + 3.0
    assert sum(captured_fraction(in_plane, u, v)) == pytest.approx(1.0, abs=1e-9)
    path = _path(rng).astype(np.float32)
    plane = make_plane(_trajectory(path), "pca")
    assert captured_fraction(path, plane.u, plane.v) == pytest.approx(plane.explained, rel=1e-4)


@pytest.mark.parametrize(
    "directions, message",
    [
        (None, r"reduction_method='custom' needs two directions; pass custom_directions=\(u, v\)"),
        ((np.ones(29), np.ones(30)), r"custom_directions u has 29 values but the model has P=30 parameters"),
        ((np.ones(30), np.zeros(30)), r"custom_directions v has zero length"),
        ((np.ones(30), 2 * np.ones(30)), r"u and v are parallel"),
        (np.ones(30), r"custom_directions must be a pair of vectors"),
    ],
)
def test_custom_direction_errors(rng, directions, message):
    with pytest.raises(ValueError, match=message):
        make_plane(_trajectory(_path(rng)), "custom", directions=directions)


def test_unknown_method_and_too_short_path(rng):
    with pytest.raises(
        ValueError, match=r"reduction_method='pcaa' is not known; expected one of 'pca', 'random', 'custom'"
    ):
        make_plane(_trajectory(_path(rng)), "pcaa")
    with pytest.raises(ValueError, match=r"needs a path of at least 3 points; this one has 2"):
        make_plane(_trajectory(_path(rng, t=2)), "pca")


def test_diverged_trajectory_is_refused_with_the_fix(rng):
    path = _path(rng)
    path[5:] = np.inf
    traj = _trajectory(path)
    with pytest.raises(
        ValueError, match=r"NaN or infinite parameters \(training diverged\); use trajectory.finite_prefix\(\)"
    ):
        make_plane(traj, "pca")
    assert len(traj.finite_prefix()) == 5
