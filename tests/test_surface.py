import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from losstrail.builtin.data import SpiralsDataModule
from losstrail.builtin.models import load_flat_params
from losstrail.evaluation.grids import evaluate_points, loss_surface, path_grid
from losstrail.values.plane import Plane


def _plane(model, rng, scale=0.5):
    p = sum(q.numel() for q in model.parameters())
    origin = torch.cat([q.detach().flatten() for q in model.parameters()]).numpy()
    u, v = rng.normal(size=(2, p)).astype(np.float32) * scale
    return Plane(origin, u, v, "random")


def _loop(model, X, y, plane, xs, ys):
    """The independent reference: load each grid point's weights into the model, forward all data."""
    loss = np.zeros((len(ys), len(xs)))
    acc = np.zeros_like(loss)
    probe = type(model)(input_dim=2, num_classes=3, hidden_dim=4).eval()
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            load_flat_params(probe, torch.from_numpy(plane.point(xv, yv)))
            with torch.no_grad():
                out = probe(X)
            loss[i, j] = F.cross_entropy(out, y).item()
            acc[i, j] = (out.argmax(1) == y).float().mean().item()
    return loss, acc


def test_vectorized_grid_equals_a_plain_loop(tiny_model, tiny_data, rng):
    plane = _plane(tiny_model, rng)
    xs, ys = np.array([-1.0, 0.0, 2.0]), np.array([-0.5, 0.5, 1.5])
    surface = loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True)
    ref_loss, ref_acc = _loop(tiny_model, *tiny_data, plane, xs, ys)
    assert surface.loss.shape == (3, 3)
    np.testing.assert_allclose(surface.loss, ref_loss, atol=1e-5)
    np.testing.assert_allclose(surface.accuracy, ref_acc, atol=1e-7)


@pytest.mark.parametrize("kind", ["dataset", "loader", "datamodule"])
def test_every_kind_of_data_gives_the_same_grid(tiny_model, tiny_data, rng, kind):
    plane = _plane(tiny_model, rng)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    ds = torch.utils.data.TensorDataset(*tiny_data)
    data = {
        "dataset": ds,
        "loader": torch.utils.data.DataLoader(ds, batch_size=10),
        "datamodule": _DM(ds),
    }[kind]
    expected = loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True)
    got = loss_surface(tiny_model, data, plane, xs, ys, batch_size=7, chunk_size=5, quiet=True)
    np.testing.assert_allclose(got.loss, expected.loss, atol=1e-5)
    np.testing.assert_allclose(got.accuracy, expected.accuracy, atol=1e-7)


class _DM(SpiralsDataModule):
    def __init__(self, ds):
        super().__init__()
        self.dataset = ds


def test_model_is_left_unchanged_and_in_its_mode(tiny_model, tiny_data, rng):
    before = [p.detach().clone() for p in tiny_model.parameters()]
    tiny_model.train()
    loss_surface(tiny_model, tiny_data, _plane(tiny_model, rng), [0.0, 1.0], [0.0, 1.0], quiet=True)
    assert tiny_model.training
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))


def test_evaluate_points_matches_the_grid(tiny_model, tiny_data, rng):
    plane = _plane(tiny_model, rng)
    surface = loss_surface(tiny_model, tiny_data, plane, [0.3], [-0.7], quiet=True)
    loss, acc = evaluate_points(tiny_model, tiny_data, plane.point(0.3, -0.7)[None])
    assert loss[0] == pytest.approx(surface.loss[0, 0], abs=1e-6) and acc[0] == surface.accuracy[0, 0]


def test_divergent_cells_are_kept_and_warned_about(tiny_model, tiny_data, rng):
    plane = _plane(tiny_model, rng, scale=1e19)
    with pytest.warns(RuntimeWarning, match=r"grid cells have a non-finite loss"):
        surface = loss_surface(tiny_model, tiny_data, plane, [0.0, 1e19], [0.0], quiet=True)
    assert np.isfinite(surface.loss[0, 0]) and not np.isfinite(surface.loss[0, 1])


def test_path_grid_holds_the_path_with_a_margin(rng):
    xy = rng.normal(size=(50, 2)) * [5.0, 0.1]
    xs, ys = path_grid(xy, resolution=(30, 20), margin=0.1)
    assert len(xs) == 30 and len(ys) == 20
    assert xs[0] < xy[:, 0].min() and xs[-1] > xy[:, 0].max()
    assert ys[0] < xy[:, 1].min() and ys[-1] > xy[:, 1].max()
    assert (ys[-1] - ys[0]) >= 0.2 * (xy[:, 0].max() - xy[:, 0].min())


def test_surface_errors(tiny_model, tiny_data, rng):
    wrong = Plane(np.zeros(5, np.float32), np.ones(5, np.float32), np.ones(5, np.float32), "custom")
    with pytest.raises(ValueError, match=r"the plane has P=5 parameters but the model has P=27"):
        loss_surface(tiny_model, tiny_data, wrong, [0.0], [0.0])
    with pytest.raises(ValueError, match=r"xs must be a non-empty 1-D array"):
        loss_surface(tiny_model, tiny_data, _plane(tiny_model, rng), [], [0.0])
    with pytest.raises(TypeError, match=r"data=str is not supported"):
        loss_surface(tiny_model, "data.csv", _plane(tiny_model, rng), [0.0], [0.0])
    with pytest.raises(ValueError, match=r"resolution nx=1 must be an integer of at least 2"):
        path_grid(np.zeros((3, 2)), resolution=1)


def test_subset_reports_the_standard_error_of_each_cell(tiny_model, tiny_data, rng):
    from losstrail.evaluation.batches import take_subset

    plane = _plane(tiny_model, rng)
    xs, ys = np.array([-1.0, 1.0]), np.array([0.0, 0.5, 1.0])
    surface = loss_surface(tiny_model, tiny_data, plane, xs, ys, subset=40, seed=5, quiet=True)
    X, y = take_subset(tiny_data, 40, 5).tensors
    assert len(set(map(tuple, X.tolist())) & set(map(tuple, tiny_data[0].tolist()))) == 40
    probe = type(tiny_model)(input_dim=2, num_classes=3, hidden_dim=4).eval()
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            load_flat_params(probe, torch.from_numpy(plane.point(xv, yv)))
            with torch.no_grad():
                each = F.cross_entropy(probe(X), y, reduction="none").double().numpy()
            assert surface.loss[i, j] == pytest.approx(each.mean(), abs=1e-5)
            assert surface.loss_se[i, j] == pytest.approx(each.std(ddof=1) / np.sqrt(40), rel=1e-4)
    assert loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True).loss_se is None


def test_a_subset_larger_than_the_data_is_refused(tiny_model, tiny_data, rng):
    with pytest.raises(ValueError, match=r"subset=65 is larger than the data \(64 examples\); pass at most 64"):
        loss_surface(tiny_model, tiny_data, _plane(tiny_model, rng), [0.0, 1.0], [0.0, 1.0], subset=65)


class _NormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = torch.nn.Linear(2, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x))))


def test_batchnorm_statistics_recomputed_at_every_point_equal_a_loop(tiny_data, rng):
    import copy

    torch.manual_seed(0)
    model = _NormNet()
    model.train()
    with torch.no_grad():
        model(tiny_data[0] * 3 + 1)  # running statistics that differ from any grid point's
    plane = _plane(model, rng, scale=0.3)
    xs, ys = np.array([-1.0, 0.5]), np.array([0.0, 1.0])
    X, y = tiny_data
    surface = loss_surface(model, (X, y), plane, xs, ys, bn_batches=2, batch_size=16, quiet=True)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            probe = copy.deepcopy(model)
            load_flat_params(probe, torch.from_numpy(plane.point(xv, yv)))
            probe.bn.reset_running_stats()
            probe.bn.momentum = None  # a cumulative average over the batches
            probe.train()
            with torch.no_grad():
                probe(X[:16])
                probe(X[16:32])
                probe.eval()
                expected = F.cross_entropy(probe(X), y).item()
            assert surface.loss[i, j] == pytest.approx(expected, abs=1e-5)
    kept = loss_surface(model, (X, y), plane, xs, ys, quiet=True)
    assert not np.allclose(kept.loss, surface.loss)
    with pytest.raises(ValueError, match=r"bn_batches=2 recomputes BatchNorm statistics, but MLP has no BatchNorm"):
        from losstrail.builtin.models import MLP

        loss_surface(MLP(2, 3, hidden_dim=4), (X, y), _plane(MLP(2, 3, hidden_dim=4), rng), xs, ys, bn_batches=2)


def test_explicit_and_asymmetric_ranges_and_resolution_per_axis():
    xy = np.array([[-2.0, -1.0], [0.0, 0.0]])
    xs, ys = path_grid(xy, (7, 4), xrange=(-5, 1))
    assert (len(xs), len(ys)) == (7, 4)
    assert (xs[0], xs[-1]) == (-5.0, 1.0)
    assert ys[0] < -1 and ys[-1] > 0  # still fitted to the path
    with pytest.raises(ValueError, match=r"yrange=\(2, 1\) must have a finite low < high"):
        path_grid(xy, yrange=(2, 1))


def test_loss_line_equals_the_model_loaded_at_each_point(tiny_model, tiny_data, rng, tmp_path):
    from losstrail.evaluation.grids import loss_line
    from losstrail.renderers import plot_loss_line

    start = rng.normal(size=27).astype(np.float32)
    end = torch.cat([q.detach().flatten() for q in tiny_model.parameters()]).numpy()
    ts = np.linspace(-0.5, 1.5, 5)
    line = loss_line(tiny_model, tiny_data, start, end - start, ts)
    probe = type(tiny_model)(input_dim=2, num_classes=3, hidden_dim=4).eval()
    for t, value in zip(ts, line.loss):
        load_flat_params(probe, torch.from_numpy((start + t * (end - start)).astype(np.float32)))
        with torch.no_grad():
            assert value == pytest.approx(F.cross_entropy(probe(tiny_data[0]), tiny_data[1]).item(), abs=1e-5)
    out = plot_loss_line(line, tmp_path / "line.png")
    with Image.open(out) as im:
        assert im.size == (800, 450)
    with pytest.raises(ValueError, match=r"direction has zero length"):
        loss_line(tiny_model, tiny_data, start, np.zeros(27), ts)
    with pytest.raises(ValueError, match=r"has format 'gif', which is not supported; expected one of 'png', 'pdf'"):
        plot_loss_line(line, tmp_path / "line.gif")


def test_autocast_is_close_to_full_precision(tiny_model, tiny_data, rng):
    plane = _plane(tiny_model, rng)
    xs, ys = np.array([-1.0, 1.0]), np.array([0.0, 1.0])
    exact = loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True)
    mixed = loss_surface(tiny_model, tiny_data, plane, xs, ys, autocast=True, quiet=True)
    np.testing.assert_allclose(mixed.loss, exact.loss, rtol=3e-2)


@pytest.mark.parametrize("classes", [3, 40])  # the transposed reduction (few classes) and the plain one
def test_cross_entropy_terms_equal_the_built_in_loss_and_argmax(classes):
    from losstrail.evaluation.loss import cross_entropy_terms

    gen = torch.Generator().manual_seed(classes)
    out = torch.randn(200, classes, generator=gen) * 4
    out[:20] = 0.0  # ties everywhere: argmax takes the first class
    out[20:40, 1] = out[20:40, 2] = 9.0  # a tie for the largest at classes 1 and 2
    y = torch.randint(0, classes, (200,), generator=gen)
    y[:10] = 0
    losses, correct = cross_entropy_terms(out, y)
    torch.testing.assert_close(losses, F.cross_entropy(out, y, reduction="none"), rtol=1e-6, atol=1e-6)
    assert int(correct) == int((out.argmax(1) == y).sum())
    losses16, _ = cross_entropy_terms(out.bfloat16(), y)  # half-precision logits, float32 sums
    assert losses16.dtype == torch.float32


def test_adaptive_grid_against_the_full_grid_on_the_spirals(tmp_path):
    import losstrail as lt
    from losstrail.evaluation.adaptive import relative_difference

    dm = lt.SpiralsDataModule()
    torch.manual_seed(0)
    run = lt.fit(lt.MLP(2, 3, hidden_dim=16, learning_rate=5e-3), dm, epochs=60, seed=0, quiet=True)
    plane = lt.make_plane(run.trajectory, "pca")
    xs, ys = lt.path_grid(lt.project(plane, run.trajectory).xy, 41)
    # One way fixed: mode='auto' may choose another way (or thread count) for each grid on a busy machine, whose
    # float32 sums round differently in the last place.
    full = lt.loss_surface(run.model, dm, plane, xs, ys, quiet=True, mode="vmap")
    adaptive = lt.loss_surface(run.model, dm, plane, xs, ys, grid="adaptive", tol=0.01, quiet=True, mode="vmap")
    assert adaptive.adaptive and adaptive.exact.sum() < 0.5 * adaptive.loss.size
    np.testing.assert_array_equal(adaptive.loss[adaptive.exact], full.loss[adaptive.exact])  # bit for bit
    auto = lt.loss_surface(run.model, dm, plane, xs, ys, grid="adaptive", tol=0.01, quiet=True)
    np.testing.assert_allclose(auto.loss[auto.exact], full.loss[auto.exact], rtol=1e-6)
    assert relative_difference(adaptive.loss, full.loss).max() <= adaptive.max_error <= 0.01
    assert adaptive.describe_grid().startswith(f"adaptive: {int(adaptive.exact.sum()):,} of 1,681 points exact")


class _Explodes(torch.nn.Module):
    """Logits that overflow to inf past a line in the plane: a diverged region of NaN/inf cells."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x):
        return torch.exp(20 * self.lin(x))


def test_adaptive_grid_keeps_a_diverged_region_masked_and_exact_around_it():
    from losstrail.evaluation.adaptive import relative_difference

    torch.manual_seed(0)
    model = _Explodes()
    data = (torch.randn(64, 2), torch.randint(0, 3, (64,)))
    rng = np.random.default_rng(0)
    plane = Plane(np.zeros(9, np.float32), rng.normal(size=9).astype(np.float32),
                  rng.normal(size=9).astype(np.float32), "custom")  # fmt: skip
    xs, ys = np.linspace(-3, 3, 33), np.linspace(-3, 3, 29)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        full = loss_surface(model, data, plane, xs, ys, quiet=True)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        adaptive = loss_surface(model, data, plane, xs, ys, grid="adaptive", tol=0.02, quiet=True)
    bad = ~np.isfinite(full.loss)
    assert bad.any() and not bad.all()
    np.testing.assert_array_equal(~np.isfinite(adaptive.loss), bad)  # masked cells stay masked, and only they
    np.testing.assert_array_equal(adaptive.loss[adaptive.exact], full.loss[adaptive.exact])
    finite = ~bad
    assert relative_difference(adaptive.loss[finite], full.loss[finite]).max() <= adaptive.max_error <= 0.02


def test_adaptive_grid_arguments_are_checked_first(tiny_model, tiny_data):
    P = sum(p.numel() for p in tiny_model.parameters())
    plane = Plane(np.zeros(P, np.float32), np.eye(P, dtype=np.float32)[0], np.eye(P, dtype=np.float32)[1], "custom")
    with pytest.raises(ValueError, match=r"grid='coarse' is not known; expected one of 'full', 'adaptive'"):
        loss_surface(tiny_model, tiny_data, plane, [0, 1], [0, 1], grid="coarse")
    for bad in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"tol="):
            loss_surface(tiny_model, tiny_data, plane, [0, 1], [0, 1], grid="adaptive", tol=bad)
