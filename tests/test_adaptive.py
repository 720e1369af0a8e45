"""Adaptive grids against the full grid they stand in for: synthetic surfaces and real loss surfaces."""

import numpy as np
import pytest
import torch

from losstrail.evaluation.adaptive import (
    COARSE,
    FLOOR,
    adaptive_grid,
    coarse_shape,
    minimum_points,
    relative_difference,
)
from losstrail.evaluation.plan import expected_exact


class Lookup:
    """``evaluate`` for ``adaptive_grid``: values looked up in a full grid, every call recorded."""

    def __init__(self, loss: np.ndarray, accuracy: np.ndarray | None = None):
        self.loss = loss
        self.accuracy = np.zeros_like(loss) if accuracy is None else accuracy
        self.calls: list[np.ndarray] = []

    def __call__(self, ij):
        assert ij.ndim == 2 and ij.shape[1] == 2 and np.issubdtype(ij.dtype, np.integer)
        self.calls.append(ij.copy())
        return self.loss[ij[:, 0], ij[:, 1]], self.accuracy[ij[:, 0], ij[:, 1]]


def check_against_full(loss: np.ndarray, tol: float, accuracy: np.ndarray | None = None, **options):
    """Run the adaptive grid on ``loss`` and check every promise it makes; returns the grid and the true error."""
    lookup = Lookup(loss, accuracy)
    grid = adaptive_grid(lookup, loss.shape[1], loss.shape[0], tol=tol, **options)
    # every evaluated cell is evaluated once, and exactly those are marked exact
    evaluated = np.concatenate(lookup.calls)
    assert len(np.unique(evaluated, axis=0)) == len(evaluated)
    mask = np.zeros(loss.shape, bool)
    mask[evaluated[:, 0], evaluated[:, 1]] = True
    np.testing.assert_array_equal(grid.exact, mask)
    assert grid.n_exact == mask.sum()
    # exact cells hold the returned values bit for bit, in their dtype
    assert grid.loss.dtype == loss.dtype
    assert np.array_equal(grid.loss[mask], loss[mask], equal_nan=True)
    assert np.array_equal(grid.accuracy[mask], lookup.accuracy[mask], equal_nan=True)
    # non-finite cells stay non-finite (the same kind), finite ones stay finite
    np.testing.assert_array_equal(np.isfinite(grid.loss), np.isfinite(loss))
    np.testing.assert_array_equal(np.isnan(grid.loss), np.isnan(loss))
    # positive values: ln(loss) interpolated, the plain relative error; else the floor is FLOOR times the range seen
    seen = loss[mask][np.isfinite(loss[mask])]
    assert grid.log == bool(seen.size and (seen > 0).all())
    assert grid.floor == pytest.approx(0.0 if grid.log or not seen.size else FLOOR * (seen.max() - seen.min()))
    # the stated error: the true error of every cell is within it, and it is within tol
    finite = np.isfinite(loss)
    diff = np.abs(grid.loss[finite].astype(np.float64) - loss[finite].astype(np.float64))
    scale = np.maximum(np.abs(loss[finite].astype(np.float64)), grid.floor)
    true = float((diff / scale).max()) if finite.any() else 0.0
    assert true <= grid.max_error <= tol, (true, grid.max_error, tol)
    return grid, true, lookup


def bowl(ny, nx):
    yy, xx = np.mgrid[0:ny, 0:nx]
    x, y = xx / (nx - 1), yy / (ny - 1)
    return 0.2 + 3 * (x - 0.3) ** 2 + 2 * (y - 0.6) ** 2 + x * y + 0.5 * np.sin(3 * x) * y


@pytest.mark.parametrize("tol", [0.002, 0.01, 0.05])
def test_smooth_bowl_needs_few_exact_points(tol):
    loss = bowl(129, 129).astype(np.float32)
    grid, true, lookup = check_against_full(loss, tol)
    assert grid.n_exact < loss.size / 10
    assert len(lookup.calls) <= 1 + np.log2(128)  # one call for the lattice, at most one per level


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 2), (2, 100), (100, 2), (3, 50), (17, 65), (61, 37), (50, 9)])
def test_any_shape(shape):
    loss = bowl(max(shape[0], 2), max(shape[1], 2))[: shape[0], : shape[1]].astype(np.float32)
    if shape[0] == 2 or shape[1] == 2:  # bowl's normalization needs n > 1 only
        loss = (1.0 + np.add.outer(np.linspace(0, 1, shape[0]) ** 2, np.linspace(0, 1, shape[1]) ** 2)).astype(
            np.float32
        )
    grid, _, _ = check_against_full(loss, 0.01)
    assert grid.loss.shape == shape
    assert grid.n_exact >= min(loss.size, minimum_points(shape[1], shape[0]))


def test_coarse_shape_is_the_first_evaluations():
    lookup = Lookup(bowl(61, 37))
    adaptive_grid(lookup, 37, 61, tol=0.01)
    first_two = np.concatenate(lookup.calls[:2])
    columns, rows = coarse_shape(37, 61)
    assert (len(np.unique(first_two[:, 1])), len(np.unique(first_two[:, 0]))) == (columns, rows)
    assert len(first_two) == columns * rows == minimum_points(37, 61)
    assert coarse_shape(100, 100) == (2 * COARSE + 1, 2 * COARSE + 1)


@pytest.mark.parametrize("tol", [0.001, 0.01])
def test_relu_kink_is_refined_along_the_kink(tol):
    yy, xx = np.mgrid[0:80, 0:90] / 80.0
    crease = xx + 0.5 * yy - 0.7
    loss = 0.5 + 3 * np.maximum(0, crease) + 0.2 * yy**2
    grid, _, _ = check_against_full(loss, tol)
    on_crease = np.abs(crease) < 0.5 / 80
    assert grid.exact[on_crease].mean() > 0.5  # the kink itself is evaluated
    assert grid.n_exact < loss.size / 2  # the planes either side are not


def test_non_finite_regions_stay_masked_and_their_border_is_exact():
    yy, xx = np.mgrid[0:80, 0:90] / 80.0
    loss = 1 + (xx - 0.3) ** 2 + (yy - 0.5) ** 2
    loss[(xx - 0.8) ** 2 + (yy - 0.7) ** 2 < 0.02] = np.nan  # a diverged disc
    loss[:6, 60:72] = np.inf  # and an overflowing strip at the border
    grid, _, _ = check_against_full(loss, 0.01)
    bad = ~np.isfinite(loss)
    near = np.zeros_like(bad)
    padded = np.pad(bad, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= padded[1 + dy : 1 + dy + bad.shape[0], 1 + dx : 1 + dx + bad.shape[1]]
    assert grid.exact[near].all()  # every cell touching a non-finite one was evaluated
    assert np.isposinf(grid.loss[:6, 60:72]).all()
    assert grid.n_exact < loss.size / 2


def test_all_non_finite_grid_is_evaluated_everywhere():
    loss = np.full((20, 30), np.nan, np.float32)
    grid, _, _ = check_against_full(loss, 0.01)
    assert grid.exact.all() and grid.max_error == 0.0


def test_constant_surface():
    grid, true, _ = check_against_full(np.full((40, 40), 2.5), 0.01)
    assert true < 1e-12 and grid.n_exact == minimum_points(40, 40)


def test_accuracy_is_interpolated_within_the_exact_range():
    loss = bowl(65, 65)
    accuracy = 1 / (1 + loss)  # smooth like the loss: the interpolation that passes for one fits the other
    grid, _, _ = check_against_full(loss, 0.01, accuracy=accuracy)
    assert np.isfinite(grid.accuracy).all()
    assert grid.accuracy.min() >= accuracy[grid.exact].min() and grid.accuracy.max() <= accuracy[grid.exact].max()
    assert np.abs(grid.accuracy - accuracy).max() < 0.01


def test_more_coarse_intervals_cost_more_and_stay_correct():
    loss = bowl(65, 65)
    few, _, _ = check_against_full(loss, 0.02, coarse=2)
    many, _, _ = check_against_full(loss, 0.02, coarse=16)
    assert many.n_exact >= minimum_points(65, 65, 16) > minimum_points(65, 65, 2)
    assert few.n_exact <= many.n_exact


def test_relative_difference_formula():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(7, 9))
    approx = exact + rng.normal(scale=1e-3, size=exact.shape)
    floor = 0.01 * (exact.max() - exact.min())
    expected = np.array(
        [[abs(a - e) / max(abs(e), floor) for a, e in zip(ra, re)] for ra, re in zip(approx, exact)],
    )
    np.testing.assert_allclose(relative_difference(approx, exact), expected, rtol=1e-12)
    got = relative_difference([np.nan, np.inf, 1.0, np.nan, 2.0], [np.nan, np.inf, np.nan, 1.0, 2.0], floor=1.0)
    assert got.tolist() == [0.0, 0.0, np.inf, np.inf, 0.0]


@pytest.mark.parametrize(
    "options, match",
    [
        ({"tol": 0}, r"tol=0 must be a positive finite number"),
        ({"tol": -0.01}, r"tol=-0.01"),
        ({"tol": float("nan")}, r"tol=nan"),
        ({"tol": float("inf")}, r"tol=inf"),
        ({"tol": "0.01"}, r"tol='0.01'"),
        ({"tol": 0.01, "coarse": 0}, r"coarse=0 must be a positive integer"),
        ({"tol": 0.01, "nx": 1}, r"nx=1 must be an integer of at least 2"),
        ({"tol": 0.01, "ny": 2.5}, r"ny=2.5 must be an integer"),
    ],
)
def test_bad_arguments(options, match):
    lookup = Lookup(bowl(10, 10))
    args = {"nx": 10, "ny": 10, **options}
    with pytest.raises(ValueError, match=match):
        adaptive_grid(lookup, args.pop("nx"), args.pop("ny"), **args)
    assert lookup.calls == []  # checked before any evaluation


def test_evaluate_returning_the_wrong_shape():
    with pytest.raises(ValueError, match=r"evaluate must return \(loss, accuracy\) of shape \(81,\)"):
        adaptive_grid(lambda ij: (np.zeros(3), np.zeros(3)), 40, 40, tol=0.01)


# ---- real loss surfaces: the full grid from the public loss_surface, the adaptive grid looks it up ----


@pytest.fixture(scope="module")
def real_surfaces():
    """Full loss surfaces: a spirals MLP (60×60, PCA plane and a wide filter-normalized one), a digits LeNet (60×48)."""
    pytest.importorskip("sklearn")
    from losstrail import (
        MLP,
        DigitsDataModule,
        LeNet,
        SpiralsDataModule,
        fit,
        loss_surface,
        make_plane,
        path_grid,
        project,
    )

    surfaces = {}
    torch.manual_seed(0)
    spirals = SpiralsDataModule(n_per_class=200)
    run = fit(MLP(2, 3, learning_rate=5e-3), spirals, epochs=40, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    xs, ys = path_grid(project(plane, run.trajectory).xy, 60)
    surfaces["spirals"] = loss_surface(run.model, spirals, plane, xs, ys, quiet=True)
    wide = make_plane(run.trajectory, "filter", seed=0, model=run.model)
    axis = np.linspace(-1, 1, 60)
    surfaces["spirals, filter plane ±1"] = loss_surface(run.model, spirals, wide, axis, axis, quiet=True)

    torch.manual_seed(0)
    digits = DigitsDataModule(batch_size=64, n_examples=500)
    run = fit(LeNet(in_channels=1, num_classes=10, input_size=8), digits, epochs=2, quiet=True)
    plane = make_plane(run.trajectory, "pca")
    xs, ys = path_grid(project(plane, run.trajectory).xy, (60, 48))
    surfaces["digits"] = loss_surface(run.model, digits, plane, xs, ys, subset=128, quiet=True)
    return surfaces


@pytest.mark.parametrize("name", ["spirals", "spirals, filter plane ±1", "digits"])
@pytest.mark.parametrize("tol", [0.002, 0.01, 0.02])
def test_real_surfaces_within_the_stated_error(real_surfaces, name, tol):
    surface = real_surfaces[name]
    assert np.isfinite(surface.loss).all()
    grid, true, _ = check_against_full(surface.loss, tol, accuracy=surface.accuracy)
    assert grid.n_exact < surface.loss.size
    if tol >= 0.01 and "filter" not in name:  # smooth views near the path: a small fraction is exact
        assert grid.n_exact < 0.3 * surface.loss.size
    # the plan does not underestimate the exact count of these default views badly
    if "filter" not in name:
        assert grid.n_exact < 2 * expected_exact(*surface.loss.shape[::-1], tol)


def test_a_loss_spanning_orders_of_magnitude_is_within_tol_everywhere_relative_to_itself():
    # a trained model's basin: from ~5 at the far corner down to ~1e-5, as on the reference README's LeNet example
    yy, xx = np.mgrid[0:90, 0:100] / 90.0
    loss = np.exp(1.6 - 12 * np.hypot(xx - 0.85, yy - 0.7)) + 1e-5 * (1 + 0.3 * np.sin(9 * xx) * np.cos(7 * yy))
    assert loss.max() / loss.min() > 1e4
    grid, true, _ = check_against_full(loss, 0.01)
    assert grid.log and grid.floor == 0.0
    assert (grid.loss > 0).all()  # never negative where the picture takes the log
    plain = float(np.max(np.abs(grid.loss / loss - 1)))  # relative to each cell's own value, no floor
    assert plain == pytest.approx(true) and plain <= grid.max_error <= 0.01
    assert grid.n_exact < loss.size / 2


def test_values_that_are_not_all_positive_are_interpolated_as_they_are():
    yy, xx = np.mgrid[0:60, 0:70] / 60.0
    grid, _, _ = check_against_full(-1.0 + (xx - 0.4) ** 2 + (yy - 0.5) ** 2, 0.01)  # an objective below zero
    assert not grid.log and grid.floor > 0
