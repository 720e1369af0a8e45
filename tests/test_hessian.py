import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail.directions import make_plane
from losstrail.hessian import hessian_eigenpairs
from losstrail.models import flat_params
from losstrail.record import Trajectory


def _dense_hessian(model, X, y):
    """The full Hessian of the mean cross-entropy, by autograd, in float64."""
    from torch.func import functional_call

    from losstrail._functional import ParamLayout

    model = copy.deepcopy(model).double().eval()  # a copy: the model under test stays float32
    layout = ParamLayout(model)  # of the float64 model: unflatten casts to the dtypes it finds
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


def test_a_model_without_forward_mode_falls_back_to_reverse_over_reverse(tiny_data, capsys):
    torch.manual_seed(0)
    model = _Net()
    X, y = tiny_data
    eig = hessian_eigenpairs(model, tiny_data, flat_params(model).numpy(), iterations=60, quiet=False)
    assert eig.product == "reverse-over-reverse"
    assert "using reverse-over-reverse" in capsys.readouterr().err
    values = np.linalg.eigvalsh(_dense_hessian(model, X, y))
    np.testing.assert_allclose(eig.values, values[::-1][:2], atol=1e-4)


class _OnceDifferentiable(torch.autograd.Function):
    """A ReLU whose backward cannot itself be differentiated."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _OnceNet(_Net):
    def forward(self, x):
        return self.b(_OnceDifferentiable.apply(self.a(x)))


def test_a_loss_that_is_not_twice_differentiable_is_refused(tiny_data):
    model = _OnceNet()
    with pytest.raises(ValueError, match=r"'hessian' needs a loss that is twice differentiable.*Use reduction_method="):
        hessian_eigenpairs(model, tiny_data, flat_params(model).numpy(), quiet=True)


def _dense_mse_hessian(model, X, y):
    from torch.func import functional_call, hessian

    from losstrail._functional import ParamLayout

    model = copy.deepcopy(model).double().eval()  # a copy: the model under test stays float32
    layout = ParamLayout(model)
    theta = flat_params(model).double()
    return hessian(lambda f: F.mse_loss(functional_call(model, layout.unflatten(f), (X.double(),)), y.double()))(
        theta
    ).numpy()


def test_regression_hessian_with_mse_equals_the_dense_hessian():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    X = torch.randn(64, 3)
    y = X[:, :1] ** 2 - X[:, 1:2]
    eig = hessian_eigenpairs(model, (X, y), flat_params(model).numpy(), loss_fn=F.mse_loss, iterations=60, quiet=True)
    values = np.linalg.eigvalsh(_dense_mse_hessian(model, X, y))
    np.testing.assert_allclose(eig.values, values[::-1][:2], rtol=1e-4, atol=1e-5)
    assert eig.lowest_value == pytest.approx(values[0], abs=1e-4)


def test_regression_without_a_loss_is_refused_with_the_fix():
    model = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match=r"not class logits and labels.*loss_fn=torch.nn.functional.mse_loss"):
        hessian_eigenpairs(model, (torch.randn(8, 3), torch.randn(8, 1)), flat_params(model).numpy())


def test_hessian_over_a_parameter_subset_equals_the_dense_block(tiny_data):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    X, y = tiny_data
    full = _dense_hessian(model, X, y)  # (P, P) over 0.weight, 0.bias, 2.weight, 2.bias
    model = model.float()
    block = full[12:, 12:]  # the last layer's weight and bias
    theta = flat_params(model, ["2.weight", "2.bias"]).numpy()
    eig = hessian_eigenpairs(model, tiny_data, theta, names=["2.*"], iterations=60, quiet=True)
    assert eig.vectors.shape == (2, 15)
    np.testing.assert_allclose(eig.values, np.linalg.eigvalsh(block)[::-1][:2], atol=1e-4)
