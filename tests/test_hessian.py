import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail.builtin.models import flat_params
from losstrail.planes.directions import make_plane
from losstrail.planes.hessian import hessian_eigenpairs
from losstrail.values.trajectory import Trajectory
from probes import peak_around_a_wide_mlp


def _dense_hessian(model, X, y):
    """The full Hessian of the mean cross-entropy, by autograd, in float64."""
    from torch.func import functional_call

    from losstrail.evaluation.layout import ParamLayout

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

    from losstrail.evaluation.layout import ParamLayout

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


def test_params_as_a_row_or_a_list_of_floats_are_the_flat_vector():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    X = torch.randn(32, 3)
    y = X[:, :1] ** 2
    flat = flat_params(model).numpy()
    eig = hessian_eigenpairs(model, (X, y), flat, loss_fn=F.mse_loss, iterations=20)
    for given in (flat[None, :], flat.tolist()):  # a path's last row, traj.params[-1:]; plain Python floats
        again = hessian_eigenpairs(model, (X, y), given, loss_fn=F.mse_loss, iterations=20)
        np.testing.assert_allclose(again.values, eig.values, rtol=1e-6)


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


# -- products, basis and planes per tensor (issue 21) ----------------------------------------------------------------


def _block(hessian: np.ndarray, model, names) -> np.ndarray:
    """The rows and columns of the dense Hessian (over all of ``model``'s parameters) that ``names`` span."""
    offsets, start = {}, 0
    for n, p in model.named_parameters():
        offsets[n] = np.arange(start, start + p.numel())
        start += p.numel()
    index = np.concatenate([offsets[n] for n in names])
    return hessian[np.ix_(index, index)]


@pytest.mark.parametrize("kind", ["forward-over-reverse", "reverse-over-reverse"])
@pytest.mark.parametrize("names", [None, ("0.weight", "2.bias")])
def test_products_per_tensor_equal_the_dense_hessian_times_the_vector(tiny_data, kind, names):
    from losstrail.evaluation.batches import Batches
    from losstrail.evaluation.loss import LossRule
    from losstrail.planes.hessian import _centre, _HessianOperator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    X, y = tiny_data
    names = names or tuple(n for n, _ in model.named_parameters())
    block = _block(_dense_hessian(model, X, y), model, names)
    centre = _centre(model, None, names, torch.device("cpu"))
    named = dict(model.named_parameters())
    assert all(c.data_ptr() == named[n].data_ptr() for c, n in zip(centre, names))  # the model's own, not a copy
    batches = Batches((X.double(), y), 24)  # 24 + 24 + 16 examples: weighted by size
    operator = _HessianOperator(model, batches, centre, LossRule(model, None, None), names, kind)
    with torch.no_grad():
        operator.check()
    v = [torch.randn(named[n].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
         for k, n in enumerate(names)]  # fmt: skip
    product = operator.hvp(v)
    assert [(t.shape, t.dtype) for t in product] == [(named[n].shape, torch.float64) for n in names]
    expected = block @ torch.cat([t.reshape(-1) for t in v]).numpy()
    np.testing.assert_allclose(torch.cat([t.reshape(-1) for t in product]).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_eigenvectors_are_held_per_tensor_and_flat_when_read(tiny_data):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    X, y = tiny_data
    eig = hessian_eigenpairs(model, tiny_data, names=["2.*"], iterations=60)
    assert eig.names == ("2.weight", "2.bias") and len(eig.tensors) == 3
    assert [tuple(t.shape) for t in eig.tensors[0]] == [(3, 4), (3,)]
    assert eig.__dict__["vectors"] is None and "per tensor" in repr(eig)  # flat arrays only when read
    np.testing.assert_array_equal(eig.vectors[1], torch.cat([t.reshape(-1) for t in eig.tensors[1]]).double())
    np.testing.assert_array_equal(eig.lowest_vector, torch.cat([t.reshape(-1) for t in eig.tensors[2]]).double())
    block = _block(_dense_hessian(model, X, y), model, eig.names)
    np.testing.assert_allclose(eig.vectors @ block @ eig.vectors.T, np.diag(eig.values), atol=1e-4)
    flat = hessian_eigenpairs(model, tiny_data, flat_params(model, ["2.weight", "2.bias"]), names=["2.*"],
                              iterations=60)  # fmt: skip
    np.testing.assert_allclose(flat.values, eig.values, rtol=1e-6)
    with pytest.raises(ValueError, match=r"params must give one tensor for each of the 2 chosen parameters"):
        hessian_eigenpairs(model, tiny_data, [model[2].weight], names=["2.*"])


def _net(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).to(dtype)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("negative", [False, True])
def test_a_float64_models_hessian_plane_is_held_per_tensor_in_float64_and_leaves_the_model_as_it_was(
    tiny_data, negative
):
    from losstrail.evaluation.grids import loss_surface

    model = _net(torch.float64)
    X, y = tiny_data
    before = _weights(model)
    plane = make_plane(model, "hessian", data=(X.double(), y), seed=0, negative_curvature=negative)
    for n, p in model.named_parameters():
        assert p.dtype == torch.float64 and torch.equal(p.detach(), before[n]), n  # bit for bit
    t = plane.tensors
    assert {x.dtype for x in t.u + t.v} == {torch.float64} and plane.explained is None
    assert all(o is p or o.data_ptr() == p.data_ptr() for o, p in zip(t.origin, model.parameters()))
    values, vectors = np.linalg.eigh(_dense_hessian(model, X, y))
    second = 0 if negative else -2
    np.testing.assert_allclose(plane.eigenvalues, [values[-1], values[second]], rtol=1e-5)  # Lanczos' tol=1e-3
    for d, column in ((plane.u, -1), (plane.v, second)):
        assert abs(float(d.astype(np.float64) @ vectors[:, column])) == pytest.approx(1.0, abs=1e-4)
    surface = loss_surface(model, (X.double(), y), plane, [-0.5, 0.0], [0.0, 0.5], quiet=True)  # the model unchanged
    with torch.no_grad():
        centre_loss = float(F.cross_entropy(model(X.double()), y))
    assert surface.loss[0, 1] == pytest.approx(centre_loss, rel=1e-12)


def test_a_bfloat16_models_hessian_plane_is_bfloat16_and_near_the_float32_ones(tiny_data):
    X, y = tiny_data
    model32, model16 = _net(torch.float32), _net(torch.bfloat16)
    before = _weights(model16)
    plane16 = make_plane(model16, "hessian", data=(X.bfloat16(), y), seed=0)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model16.named_parameters())
    assert {x.dtype for x in plane16.tensors.u + plane16.tensors.v} == {torch.bfloat16}
    # float32 products of the bfloat16 model: its own Hessian, near the float32 model's
    plane32 = make_plane(model32, "hessian", data=(X, y), seed=0)
    np.testing.assert_allclose(plane16.eigenvalues, plane32.eigenvalues, rtol=0.05)
    assert abs(float(plane16.u @ plane32.u)) == pytest.approx(1.0, abs=0.02)


def test_the_lanczos_basis_is_bounded_with_a_note_and_a_given_iterations_is_kept(tiny_data, monkeypatch, capsys):
    import losstrail.planes.hessian as hessian

    model = _net(torch.float32)
    monkeypatch.setattr(hessian, "BASIS_BUDGET", 10 * 39 * 4)  # ten vectors of P=39 float32
    bounded = hessian_eigenpairs(model, tiny_data, quiet=False, tol=1e-12)
    err = capsys.readouterr().err
    assert "basis of 39 vectors of P=39 (float32) takes 5.9 KiB, more than 1.5 KiB" in err
    assert "taking at most 10 steps (1.5 KiB). Pass iterations=39 to hessian_eigenpairs" in err
    exact = hessian_eigenpairs(model, tiny_data, iterations=39, quiet=False)
    assert "a smaller iterations= bounds it" in capsys.readouterr().err
    assert not np.allclose(bounded.lowest_value, exact.lowest_value, rtol=1e-3)  # ten steps of 39 taken, no more
    np.testing.assert_allclose(bounded.values[0], exact.values[0], rtol=1e-3)
    with pytest.raises(ValueError, match=r"iterations=0 must be a positive whole number of Lanczos steps"):
        hessian_eigenpairs(model, tiny_data, iterations=0)


def test_the_hessian_plane_of_a_big_model_stays_within_the_model_its_basis_and_one_product(tmp_path):
    """Measured in a fresh process: its peak resident memory, less what it held before the model was built.

    A 29.4M-parameter MLP (117 MB): 40 Lanczos vectors would take 4.7 GB, so the default takes the 9 that fit
    in 1 GiB, said in a note. The bound is the model, that basis, and 8 copies of the model for one product's work
    (torch.func's forward-over-reverse product peaked at 6-7 copies here) and the heap. Measured 1.71-1.92 GB
    (14.5-16.3x the model; the bound is 18.1x). Before, with a flat float64 basis and float64 Ritz vectors of all
    the steps: 3.84 GB for only 10 steps of a 12.6M-parameter MLP (76x its 50 MB), and for this model 40 x 235 MB
    twice (19 GB), far past the bound.
    """
    body = """
        plane = lt.make_plane(model, "hessian", data=(X, y), seed=0, quiet=False)
        figures = {"eigenvalues": plane.eigenvalues}
    """
    figures, err = peak_around_a_wide_mlp(tmp_path, "Tanh", body)
    assert "taking at most 9 steps" in err
    assert figures["params"] > 100e6 and figures["eigenvalues"][0] >= figures["eigenvalues"][1] > 0
    assert figures["peak"] < (1 + 8) * figures["params"] + (1 << 30), figures


def test_the_plane_around_a_model_spans_the_path_fitted_hessian_plane_at_the_same_point(tiny_model, tiny_data):
    theta = flat_params(tiny_model).numpy()
    t = 3
    params = np.stack([theta + 0.05 * (t - 1 - k) for k in range(t)])  # ends at the model
    traj = Trajectory(params, np.zeros(t), np.zeros(t), np.arange(t), np.zeros(t, dtype=np.int64))
    fitted = make_plane(traj, "hessian", model=tiny_model, data=tiny_data, seed=0)
    around = make_plane(tiny_model, "hessian", data=tiny_data, seed=0)
    assert around.tensors is not None and fitted.tensors is None
    np.testing.assert_allclose(around.eigenvalues, fitted.eigenvalues, rtol=1e-6)
    for a, b in ((around.u, fitted.u), (around.v, fitted.v)):  # the same directions, up to the path's orientation
        assert abs(float(a @ b)) == pytest.approx(1.0, abs=1e-5)
