import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail.data import SpiralsDataModule
from losstrail.directions import Plane
from losstrail.models import load_flat_params
from losstrail.surface import evaluate_points, loss_surface, path_grid


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
