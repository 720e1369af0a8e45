import numpy as np
import pytest
import torch

from losstrail.directions import make_plane
from losstrail.hessian import hessian_eigenpairs
from losstrail.models import flat_params
from losstrail.record import Trajectory


def _dense_hessian(model, X, y):
    """The full Hessian of the mean cross-entropy, by autograd, in float64."""
    from torch.func import functional_call

    from losstrail._functional import ParamLayout

    layout = ParamLayout(model)
    model = model.double().eval()
    theta = flat_params(model).double()

    def loss(flat):
        out = functional_call(model, layout.unflatten(flat), (X.double(),))
        return torch.nn.functional.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, theta).numpy()


def test_eigenpairs_match_the_dense_hessian(tiny_model, tiny_data):
    X, y = tiny_data
    theta = flat_params(tiny_model).numpy()
    eig = hessian_eigenpairs(tiny_model, (X, y), theta, 2, iterations=60)
    values, vectors = np.linalg.eigh(_dense_hessian(tiny_model, X, y))
    np.testing.assert_allclose(eig.values, values[::-1][:2], atol=1e-4)
    for k in range(2):
        assert abs(float(eig.vectors[k] @ vectors[:, -1 - k])) == pytest.approx(1.0, abs=1e-4)
    assert eig.lowest_value == pytest.approx(values[0], abs=1e-4)
    assert abs(float(eig.lowest_vector @ vectors[:, 0])) == pytest.approx(1.0, abs=1e-4)


def test_hessian_plane_records_both_eigenvalues(tiny_model, tiny_data):
    X, y = tiny_data
    theta = flat_params(tiny_model).numpy()
    t = 4
    params = np.stack([theta + 0.1 * k for k in range(t)][::-1])
    params[-1] = theta
    traj = Trajectory(params, np.zeros(t), np.zeros(t), np.arange(t), np.zeros(t, dtype=np.int64))
    values = np.linalg.eigvalsh(_dense_hessian(tiny_model, X, y))
    plane = make_plane(traj, "hessian", model=tiny_model, data=(X, y))
    np.testing.assert_allclose(plane.eigenvalues, values[::-1][:2], atol=1e-4)
    negative = make_plane(traj, "hessian", model=tiny_model, data=(X, y), negative_curvature=True)
    np.testing.assert_allclose(negative.eigenvalues, [values[-1], values[0]], atol=1e-4)
    sub = make_plane(traj, "hessian", model=tiny_model, data=(X, y), hessian_examples=20, seed=0)
    assert sub.eigenvalues[0] != pytest.approx(plane.eigenvalues[0], abs=1e-6)  # another loss, another Hessian


class _NoForwardMode(torch.autograd.Function):
    """A ReLU with a backward rule but no forward-mode (jvp) rule."""

    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 4), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.b(_NoForwardMode.apply(self.a(x)))


def test_a_loss_that_is_not_twice_differentiable_is_refused(tiny_data):
    model = _Net()
    with pytest.raises(ValueError, match=r"'hessian' needs a loss that is twice differentiable.*Use reduction_method="):
        hessian_eigenpairs(model, tiny_data, flat_params(model).numpy())
