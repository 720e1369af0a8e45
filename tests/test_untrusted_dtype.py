"""Models in float64, bfloat16 or a mix of float32 and float64 are evaluated in their own dtypes, end to end.

Every grid and path loss is checked against a plain loop that loads each point into a copy of
the model with ``load_state_dict`` (each tensor cast to its parameter's dtype) and calls it.
The model casts its activations to each layer's dtype by name, not by reading the weights, so
an evaluation that put float32 weights into its layers would fail, not pass unnoticed.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import losstrail as lt
from losstrail.builtin.data import SpiralsDataModule
from losstrail.builtin.models import GenericModel

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
# The dtypes of the first and second layer, and how close the grid must be to the plain loop:
# bfloat16 keeps 8 bits, and the loop rounds its points from float64, the evaluator from float32.
CASES = {
    "float64": (F64, F64, 1e-9),
    "bfloat16": (BF16, BF16, 5e-3),
    "mixed": (F32, F64, 1e-6),
}


class Net(GenericModel):
    """Fixed features of 2-D points (9 of them, so the first layer is factored over a plane) -> 16 -> 3."""

    def __init__(self, first: torch.dtype, second: torch.dtype):
        super().__init__(learning_rate=0.05, num_classes=3)
        self.first, self.second = first, second
        self.a = nn.Linear(9, 16).to(first)
        self.b = nn.Linear(16, 3).to(second)

    def forward(self, x):
        x = x.float()
        features = torch.cat([x, x * x, torch.sin(x), torch.cos(x), x[:, :1] * x[:, 1:]], 1)
        hidden = torch.tanh(self.a(features.to(self.first)))
        return self.b(hidden.to(self.second))


def _data():
    return SpiralsDataModule(n_per_class=40, seed=1)


def _net(case: str) -> Net:
    torch.manual_seed(0)
    first, second, _ = CASES[case]
    return Net(first, second)


def _reference(model: nn.Module, points: np.ndarray, data) -> np.ndarray:
    """Mean cross-entropy at each point (N, P): loaded with load_state_dict in the model's dtypes, then called."""
    X, y = data.dataset.tensors
    ref = copy.deepcopy(model).eval()
    named = list(ref.named_parameters())
    losses = []
    for point in np.asarray(points, dtype=np.float64):
        state, offset = ref.state_dict(), 0
        for name, p in named:
            piece = torch.from_numpy(point[offset : offset + p.numel()].copy()).reshape(p.shape)
            state[name] = piece.to(p.dtype)
            offset += p.numel()
        assert offset == len(point)
        ref.load_state_dict(state)
        with torch.no_grad():
            losses.append(float(F.cross_entropy(ref(X).double(), y)))
    return np.array(losses)


def _grid_points(plane, xs, ys) -> np.ndarray:
    """The points of the grid (row-major, ys by xs) in float64."""
    gx, gy = np.meshgrid(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    origin, u, v = (np.asarray(a, np.float64) for a in (plane.origin, plane.u, plane.v))
    return origin + gx.reshape(-1, 1) * u + gy.reshape(-1, 1) * v


@pytest.mark.parametrize("case", list(CASES))
def test_the_pipeline_evaluates_in_the_models_own_dtypes(case):
    data = _data()
    run = lt.fit(_net(case), data, epochs=4, seed=0, quiet=True)
    model = run.model
    assert (model.a.weight.dtype, model.b.weight.dtype) == CASES[case][:2]  # training kept them
    trajectory = run.trajectory
    assert trajectory.params.dtype == np.float32 and np.isfinite(trajectory.params).all()
    plane = lt.make_plane(trajectory)
    at = [0, len(trajectory) // 2, len(trajectory) - 1]
    projection = lt.project(plane, trajectory, model=model, data=data, at=at)
    xs, ys = np.linspace(-1.0, 1.0, 4), np.linspace(-0.5, 0.5, 3)
    surface = lt.loss_surface(model, data, plane, xs, ys, grid="full")
    rtol = CASES[case][2]

    np.testing.assert_allclose(surface.loss.reshape(-1), _reference(model, _grid_points(plane, xs, ys), data),
                               rtol=rtol)  # fmt: skip
    np.testing.assert_allclose(projection.true_loss[at], _reference(model, trajectory.params[at], data), rtol=rtol)
    basis = np.stack([plane.u, plane.v]).astype(np.float64)
    on_plane = plane.origin.astype(np.float64) + projection.xy[at] @ basis
    np.testing.assert_allclose(projection.slice_loss[at], _reference(model, on_plane, data), rtol=rtol)


@pytest.mark.parametrize("case", list(CASES))
def test_the_one_call_api_evaluates_in_the_models_own_dtypes(case, tmp_path):
    data, model = _data(), _net(case)
    result = lt.loss_landscape_anim(
        n_epochs=3, model=model, datamodule=data, load_model=False, output_to_file=True,
        model_dirpath=tmp_path / "run", output_filename=tmp_path / "a.gif", resolution=(4, 3), grid="full",
        n_frames=3, seed=0, quiet=True, return_data=True,
    )  # fmt: skip
    assert (tmp_path / "a.gif").stat().st_size > 0
    rtol = CASES[case][2]
    with np.load(tmp_path / "run" / "surface.npz") as s, np.load(tmp_path / "run" / "plane.npz") as p:
        plane = lt.Plane(p["origin"], p["u"], p["v"], "pca")
        expected = _reference(model, _grid_points(plane, s["xs"], s["ys"]), data)
        np.testing.assert_allclose(s["loss"].reshape(-1), expected, rtol=rtol)
    measured = np.flatnonzero(np.isfinite(result.true_loss))
    assert len(measured) >= 2
    path = np.stack([t.numpy() for t in result[0]])[measured]
    np.testing.assert_allclose(result.true_loss[measured], _reference(model, path, data), rtol=rtol)


def _dense_hessian(model: nn.Module, data) -> np.ndarray:
    """The Hessian of the mean loss in float64, formed whole by autograd (P is small)."""
    X, y = data.dataset.tensors
    ref = copy.deepcopy(model).double().eval()
    named = list(ref.named_parameters())
    start = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss(flat):
        tensors, offset = {}, 0
        for name, p in named:
            tensors[name] = flat[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()
        ref.first = ref.second = F64
        return F.cross_entropy(torch.func.functional_call(ref, tensors, (X.double(),)), y)

    return torch.autograd.functional.hessian(loss, start).numpy()


@pytest.mark.parametrize(("case", "rtol"), [("float64", 1e-9), ("mixed", 1e-6), ("bfloat16", 2e-2)])
def test_hessian_eigenvalues_in_the_models_own_dtypes(case, rtol):
    data, model = _data(), _net(case)
    with torch.no_grad():  # a point where the Hessian is far from zero
        model.a.weight.mul_(2)
    centre = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    eig = lt.hessian_eigenpairs(model, data.dataset.tensors, centre, k=2, iterations=80, tol=1e-6)
    dense = np.linalg.eigvalsh(_dense_hessian(model, data))
    np.testing.assert_allclose(eig.values, dense[::-1][:2], rtol=rtol)


class _ComplexNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.phase = nn.Parameter(torch.ones(3, dtype=torch.complex64))

    def forward(self, x):
        return (self.a(x) * self.phase).real


def test_a_complex_parameter_is_refused_before_training_naming_the_argument():
    data = _data()
    model = _ComplexNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"params selects 'phase', a complex64 parameter.*params=lambda"):
        lt.fit(model, data.dataset.tensors, epochs=1, quiet=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not trained
    run = lt.fit(model, data.dataset.tensors, epochs=1, quiet=True, params=lambda name, p: p.is_floating_point())
    assert run.trajectory.n_params == 9


@pytest.mark.parametrize("case", list(CASES))
def test_a_loss_line_evaluates_in_the_models_own_dtypes(case):
    data, model = _data(), _net(case)
    start = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()]).numpy()
    direction = np.random.default_rng(0).standard_normal(start.shape) * 0.1
    ts = np.linspace(-1.0, 1.0, 5)
    line = lt.loss_line(model, data.dataset.tensors, start, direction, ts)
    expected = _reference(model, start + ts[:, None] * direction, data)
    np.testing.assert_allclose(line.loss, expected, rtol=CASES[case][2])
