"""The plane through two or three models, against a hand computation and the models evaluated one by one."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import losstrail as lt
from losstrail.builtin.models import MLP


def _three(tiny_data):
    """A base MLP and two fine-tunes of it (a few SGD steps each, on different halves of the data)."""
    X, y = tiny_data
    torch.manual_seed(0)
    base = MLP(input_dim=2, num_classes=3, hidden_dim=4)
    tunes = []
    for half in (slice(0, 32), slice(32, 64)):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(X[half]), y[half])
            opt.zero_grad()
            loss.backward()
            opt.step()
        tunes.append(model)
    return base, *tunes


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def _loss_of(model, X, y):
    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(X), y))


def _through_with_path(tiny_data, end: int, resolution: int):
    """The plane through the three models, its grid, and a two-point path from the base to model ``end`` (1 or 2)."""
    X, y = tiny_data
    models = _three(tiny_data)
    plane = lt.make_plane(list(models), "through", labels=("base", "A", "B"))
    xs, ys = lt.path_grid(plane.marks_xy, resolution=resolution)
    surface = lt.loss_surface(models[0], (X, y), plane, xs, ys, quiet=True)
    traj = lt.Trajectory(np.stack([_flat(models[0]), _flat(models[end])]).astype(np.float32), np.zeros(2),
                         np.full(2, np.nan), np.arange(2), np.zeros(2, np.int64))  # fmt: skip
    return plane, surface, traj


def test_plane_through_three_models_is_the_hand_computation(tiny_data):
    a, b, c = _three(tiny_data)
    plane = lt.make_plane([a, b.state_dict(), c], "through", labels=("base", "tune A", "tune B"))
    A, B, C = _flat(a), _flat(b), _flat(c)
    u = B - A
    alpha = (C - A) @ u / (u @ u)
    v = (C - A) - alpha * u
    np.testing.assert_allclose(plane.origin, A, rtol=0, atol=1e-7)
    np.testing.assert_allclose(plane.u, u, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plane.v, v, rtol=1e-5, atol=1e-7)
    assert plane.method == "through" and plane.marks == ("base", "tune A", "tune B") and plane.names is None
    np.testing.assert_allclose(plane.marks_xy, [[0, 0], [1, 0], [alpha, 1]], atol=1e-9)
    for xy, vector in zip(plane.marks_xy, (A, B, C)):  # each model is where its mark says
        np.testing.assert_allclose(plane.point(*xy), vector, atol=1e-5)


def test_the_loss_at_the_marks_is_each_model_evaluated(tiny_data, tmp_path):
    X, y = tiny_data
    models = _three(tiny_data)
    plane = lt.make_plane(list(models), "through", labels=("base", "A", "B"))
    xs, ys = lt.path_grid(plane.marks_xy, resolution=6)
    surface = lt.loss_surface(models[0], (X, y), plane, xs, ys, quiet=True)
    expected = []
    for m in models:  # an independent evaluation: a fresh MLP with the model's state dict loaded
        fresh = MLP(input_dim=2, num_classes=3, hidden_dim=4)
        fresh.load_state_dict(m.state_dict())
        expected.append(_loss_of(fresh, X, y))
    np.testing.assert_allclose(surface.marks_loss, expected, rtol=1e-5)
    # saved and loaded with its marks
    from losstrail.store.rundir import load_run_value, save_run_value
    from losstrail.values.plane import Plane
    from losstrail.values.surface import Surface

    save_run_value(tmp_path, plane)
    save_run_value(tmp_path, surface)
    again = load_run_value(tmp_path, Plane)
    assert again.marks == plane.marks
    np.testing.assert_array_equal(again.marks_xy, plane.marks_xy)
    np.testing.assert_array_equal(load_run_value(tmp_path, Surface).marks_loss, surface.marks_loss)


def test_every_picture_marks_and_names_the_three(tiny_data, tmp_path):
    from PIL import Image

    from losstrail.renderers._figure import PathFigure

    plane, surface, traj = _through_with_path(tiny_data, 1, resolution=6)
    path = lt.project(plane, traj)
    figure = PathFigure(path, surface)
    texts = [t.get_text() for t in figure.ax.get_legend().get_texts()]
    for name, loss in zip(("base", "A", "B"), surface.marks_loss):
        assert f"{name} (loss {loss:.4g})" in texts
    assert {"base", "A", "B"} <= {t.get_text() for t in figure.ax.texts}
    assert "A − base" in figure.ax.get_xlabel()
    out = lt.animate(path, surface, tmp_path / "through.png")
    with Image.open(out) as image:
        assert image.size == (900, 600)
    from losstrail.renderers.surface3d import SurfaceFigure

    shown = {t.get_text().strip() for t in SurfaceFigure(path, surface).ax.texts}
    assert {f"{n} ({v:.4g})" for n, v in zip(("base", "A", "B"), surface.marks_loss)} <= shown


def test_two_models_give_the_line_and_an_orthogonal_direction(tiny_data):
    X, y = tiny_data
    a, b, _ = _three(tiny_data)
    plane = lt.make_plane([a, b], "through", seed=0)
    u = _flat(b) - _flat(a)
    np.testing.assert_allclose(plane.u, u, rtol=1e-6, atol=1e-7)
    assert abs(float(plane.u.astype(np.float64) @ plane.v)) < 1e-5 * float(u @ u)
    assert np.linalg.norm(plane.v) == pytest.approx(np.linalg.norm(u), rel=1e-5)
    line = lt.loss_line(a, (X, y), plane.origin, plane.u, [0.0, 1.0])  # the line from a to b
    assert line.loss[1] == pytest.approx(_loss_of(copy.deepcopy(b), X, y), rel=1e-5)
    filtered = lt.make_plane([a, b], "through", second="filter", seed=0)
    assert abs(float(filtered.u.astype(np.float64) @ filtered.v)) < 1e-5 * float(u @ u)


def test_bad_lists_of_models(tiny_data):
    a, b, c = _three(tiny_data)
    with pytest.raises(ValueError, match="'a' and 'b' have the same weights"):
        lt.make_plane([a, copy.deepcopy(a), c], "through")
    middle = {k: (v + w) / 2 for (k, v), w in zip(a.state_dict().items(), b.state_dict().values())}
    with pytest.raises(ValueError, match="'c' lies on the line through 'a' and 'b'"):
        lt.make_plane([a, b, middle], "through")
    with pytest.raises(ValueError, match="takes two or three models; got 4"):
        lt.make_plane([a, b, c, a], "through")
    with pytest.raises(ValueError, match=r"model 1: tensor '.*' has shape"):
        lt.make_plane([a, MLP(input_dim=2, num_classes=3, hidden_dim=5), c], "through")
    with pytest.raises(ValueError, match="labels=.*its own name"):
        lt.make_plane([a, b, c], "through", labels=("x", "x", "y"))
    with pytest.raises(ValueError, match="reduction_method='pca' takes a trajectory"):
        lt.make_plane([a, b, c], "pca")
    traj = lt.Trajectory(np.zeros((3, 2), np.float32), np.zeros(3), np.zeros(3), np.arange(3), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"'through' is the plane through two or three models"):
        lt.make_plane(traj, "through")


@pytest.mark.parametrize("view", ["2d", "3d"])
def test_the_html_page_marks_and_names_the_three(tiny_data, tmp_path, view):
    pytest.importorskip("plotly")
    plane, surface, traj = _through_with_path(tiny_data, 2, resolution=5)
    page = lt.animate(lt.project(plane, traj), surface, tmp_path / "through.html", view=view)
    text = Path(page).read_text(encoding="utf-8")
    for name, loss in zip(("base", "A", "B"), surface.marks_loss):
        assert f"{name} (loss {loss:.4g})" in text
