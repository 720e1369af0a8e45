import numpy as np
import pytest

from losstrail.planes.directions import captured_fraction, make_plane
from losstrail.values.plane import Plane
from losstrail.values.trajectory import Trajectory


def _trajectory(params):
    t = len(params)
    return Trajectory(params.astype(np.float32), np.zeros(t), np.zeros(t), np.arange(t), np.zeros(t, dtype=np.int64))


def _path(rng, t=40, p=30):
    steps = rng.normal(size=(t, p)) * np.linspace(3, 0.1, p)  # anisotropic, so the PCs are well separated
    return np.cumsum(steps, axis=0)


def test_gram_pca_equals_svd_of_the_full_matrix(rng, monkeypatch):
    params = _path(rng).astype(np.float32)
    monkeypatch.setattr("losstrail.planes.pca._COL_BLOCK", 7)  # stream the Gram matrix in several blocks
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
        ((np.ones(30), np.full(30, 1e300)), r"custom_directions v has length inf, which float arithmetic cannot use"),
        ((np.full(30, 1e-160), np.ones(30)), r"custom_directions u has length [0-9.]+e-160, which float arithmetic"),
    ],
)
def test_custom_direction_errors(rng, directions, message):
    with pytest.raises(ValueError, match=message):
        make_plane(_trajectory(_path(rng)), "custom", directions=directions)


def test_unknown_method_and_too_short_path(rng):
    with pytest.raises(
        ValueError,
        match=r"reduction_method='pcaa' is not known; expected one of 'pca', 'random', 'filter', 'layer', "
        r"'hessian', 'interpolation', 'custom'",
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


# --- directions that need the model -------------------------------------------------------


def _model_trajectory(model, rng, t=12):
    """A path of ``t`` points around the model's own weights (the last one is the model)."""
    from losstrail.builtin.models import flat_params

    end = flat_params(model).numpy().astype(np.float64)
    params = end + np.cumsum(rng.normal(size=(t, end.size)) * 0.05, axis=0)[::-1]
    params[-1] = end
    return _trajectory(params)


def _pieces(model, flat):
    from losstrail.evaluation.layout import ParamLayout

    return dict(zip(ParamLayout(model).names, ParamLayout(model).split(np.asarray(flat, dtype=np.float64))))


def test_filter_directions_have_the_centre_filter_norms_and_zero_biases(tiny_model, rng):
    traj = _model_trajectory(tiny_model, rng)
    plane = make_plane(traj, "filter", model=tiny_model, seed=3)
    centre = _pieces(tiny_model, plane.origin)
    for direction in (plane.u, plane.v):
        for name, d in _pieces(tiny_model, direction).items():
            if d.ndim >= 2:
                np.testing.assert_allclose(np.linalg.norm(d, axis=1), np.linalg.norm(centre[name], axis=1), rtol=1e-5)
            else:
                assert not d.any(), name
    kept = make_plane(traj, "filter", model=tiny_model, seed=3, keep_biases=True)
    for name, d in _pieces(tiny_model, kept.u).items():
        if d.ndim == 1:
            assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(centre[name]), rel=1e-5)


def test_layer_directions_have_the_centre_tensor_norms(tiny_model, rng):
    plane = make_plane(_model_trajectory(tiny_model, rng), "layer", model=tiny_model, seed=1, keep_biases=True)
    centre = _pieces(tiny_model, plane.origin)
    for name, d in _pieces(tiny_model, plane.v).items():
        assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(centre[name]), rel=1e-5)


def test_seeded_random_directions_repeat(tiny_model, rng):
    traj = _model_trajectory(tiny_model, rng)
    a, b = (make_plane(traj, "filter", model=tiny_model, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a.u, b.u)
    assert not np.array_equal(a.u, make_plane(traj, "filter", model=tiny_model, seed=8).u)


def test_filter_on_a_model_without_weight_matrices_is_refused(rng):
    import torch

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(5))

        def forward(self, x):
            return x * self.w

    model = Scale()
    with pytest.raises(ValueError, match=r"reduction_method='filter' .* has none .* use 'layer', 'random' or 'pca'"):
        make_plane(_model_trajectory(model, rng), "filter", model=model)


def test_methods_that_read_the_model_say_how_to_pass_it(rng, tiny_model):
    traj = _model_trajectory(tiny_model, rng)
    with pytest.raises(ValueError, match=r"reduction_method='filter' reads the model's layers; pass it"):
        make_plane(traj, "filter")
    with pytest.raises(ValueError, match=r"reduction_method='hessian' evaluates the loss; pass the data"):
        make_plane(traj, "hessian", model=tiny_model)


def test_zero_length_filter_direction_is_refused(rng):
    import torch

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    traj = _trajectory(np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"reduction_method='filter' made a zero-length direction"):
        make_plane(traj, "filter", model=model)


def test_interpolation_axis_runs_from_the_initial_to_the_final_point(rng):
    path = _path(rng)
    plane = make_plane(_trajectory(path), "interpolation")
    np.testing.assert_allclose(plane.project(path[0]), [-1.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(plane.u, path[-1] - path[0], rtol=1e-4, atol=1e-4)
    assert abs(float(plane.u @ plane.v)) < 1e-3 * float(plane.u @ plane.u)
    assert np.linalg.norm(plane.v) == pytest.approx(np.linalg.norm(plane.u), rel=1e-5)
    # v is the top principal direction of what u leaves of the path: nothing captures more
    residual = make_plane(_trajectory(path), "interpolation", second="random", seed=0)
    assert sum(plane.explained) > sum(residual.explained)


def test_interpolation_of_a_path_that_does_not_move_is_refused():
    with pytest.raises(ValueError, match=r"'interpolation' made a zero-length direction"):
        make_plane(_trajectory(np.ones((5, 6))), "interpolation")


def test_captured_fraction_of_any_plane(rng):
    path = _path(rng)
    for method in ("random", "interpolation"):
        plane = make_plane(_trajectory(path), method, seed=0)
        assert plane.explained == pytest.approx(captured_fraction(path, plane.u, plane.v))
    pca = make_plane(_trajectory(path), "pca")
    assert captured_fraction(path, pca.u, pca.v) == pytest.approx(pca.explained, rel=1e-5)
    u, v = rng.normal(size=(2, 30))
    flat = rng.normal(size=(25, 1)) * u + rng.normal(size=(25, 1)) * v
    assert make_plane(_trajectory(flat), "random", seed=1).captured < 1
    assert make_plane(_trajectory(flat), "custom", directions=(u, v)).captured == pytest.approx(1.0, abs=1e-6)


def test_centre_picks_the_origin(rng):
    path = _path(rng)
    traj = _trajectory(path)
    np.testing.assert_allclose(make_plane(traj, "pca", centre="initial").origin, path[0].astype(np.float32))
    np.testing.assert_allclose(make_plane(traj, "pca", centre=7).origin, path[7].astype(np.float32))
    with pytest.raises(ValueError, match=r"centre=99 is not 'final', 'initial' or a recorded step; .* from 0 to 39"):
        make_plane(traj, "pca", centre=99)


def _random_walk(rng, t, p):
    """A random walk with a drift: a spectrum that decays slowly, as SGD's does."""
    return np.cumsum(rng.normal(size=(t, p)) + 0.05 * rng.normal(size=p), axis=0) + 10.0


def _settling(rng, t, p):
    """A path that moves fast, then settles far from its start: the second direction holds 1e-8 of it."""
    steps = np.arange(t)[:, None]
    start = 30 * np.exp(-steps / 50) * rng.normal(size=p)
    return 0.5 * rng.normal(size=p) + start + 0.001 * np.cumsum(rng.normal(size=(t, p)), axis=0) / np.sqrt(t)


@pytest.mark.parametrize("make_path", [_random_walk, _settling])
def test_long_paths_are_sketched_and_agree_with_the_svd(rng, monkeypatch, tmp_path, make_path):
    """Past the exact method's budget, the randomized range finder matches an SVD of the whole path."""
    import losstrail.planes.pca as pca

    t, p = 400, 3000
    params = make_path(rng, t, p).astype(np.float32)
    centred = params.astype(np.float64) - params.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    on_disk = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(t, p))
    on_disk[:] = params
    monkeypatch.setattr(pca, "_EXACT_WORK", 0)  # this path now counts as long
    monkeypatch.setattr(pca, "_SKETCH_BLOCK_BYTES", 50 * p * 4)  # and is read 50 rows at a time
    monkeypatch.setattr(pca, "centred_gram", lambda *a: (_ for _ in ()).throw(AssertionError("formed")))
    sketched = make_plane(_trajectory(on_disk), "pca")
    for mine, ref in ((sketched.u, vt[0]), (sketched.v, vt[1])):
        assert abs(float(mine @ ref)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(sketched.explained, (s[:2] ** 2) / (s**2).sum(), rtol=1e-4, atol=1e-9)
