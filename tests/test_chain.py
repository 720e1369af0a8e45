"""Models that are a chain of linear layers and activations, run over a plane's points hidden-major
(``evaluation.chain``).

Every grid is checked against a plain loop that copies the model, loads each point's weights with
``load_state_dict`` and calls the model with cross-entropy, as a user would.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F

import losstrail as lt
from losstrail.evaluation.evaluator import Evaluator
from losstrail.evaluation.grids import evaluate_grid
from losstrail.evaluation.layout import ParamLayout
from losstrail.values.plane import Plane


def _loop(model, names, plane, xs, ys, X, y):
    """Loss and per-example squared losses' standard error at each grid point, by load_state_dict."""
    net = copy.deepcopy(model).eval()
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    layout = ParamLayout(model, names)
    loss, se = np.zeros((len(ys), len(xs))), np.zeros((len(ys), len(xs)))
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            state = dict(state0)
            state.update(zip(layout.names, (t.clone() for t in layout.split(torch.from_numpy(plane.point(a, b))))))
            net.load_state_dict(state)
            with torch.no_grad():
                each = F.cross_entropy(net(X), y, reduction="none").double()
            loss[i, j] = float(each.mean())
            se[i, j] = float(each.std() / len(each) ** 0.5)
    return loss, se


def _plane(model, names=None, seed=0):
    layout = ParamLayout(model, names)
    rng = np.random.default_rng(seed)
    origin = layout.flatten(model).numpy()
    u, v = (rng.normal(size=layout.n_params).astype(np.float32) * 0.2 for _ in range(2))
    return Plane(origin, u, v, "custom", names=None if names is None else tuple(names))


class _Net(torch.nn.Module):
    """A chain inside a container, with a flatten before it, a Tanh, a LeakyReLU and a layer without bias."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 9, bias=False), torch.nn.LeakyReLU(0.1),
            torch.nn.Dropout(0.5), torch.nn.Linear(9, 4),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x.flatten(1))


def test_the_spirals_mlp_runs_as_a_chain_and_matches_a_load_state_dict_loop_with_its_standard_error():
    torch.manual_seed(0)
    model = lt.MLP(2, 3)
    dm = lt.SpiralsDataModule()
    X, y = dm.dataset.tensors
    plane = _plane(model)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-1, 0.5, 5)
    evaluator = Evaluator(model, dm, spread=True)
    surface = evaluate_grid(evaluator, plane, xs, ys, chunk_size=4)  # chunks that cut the grid's rows
    assert evaluator._first is not None and evaluator._first.chain is not None  # it did apply
    loss, se = _loop(model, None, plane, xs, ys, X, y)
    np.testing.assert_allclose(surface.loss, loss, rtol=1e-5)
    np.testing.assert_allclose(surface.loss_se, se, rtol=1e-4)
    plain = evaluate_grid(Evaluator(model, dm, mode="vmap", first_layer="plain"), plane, xs, ys)
    np.testing.assert_allclose(surface.accuracy, plain.accuracy, atol=1e-12)


def test_a_deeper_chain_with_frozen_layers_matches_the_loop_and_gives_each_point_the_same_bits_in_any_chunk():
    torch.manual_seed(1)
    model = _Net()
    names = ["body.2.weight", "body.5.weight", "body.5.bias"]  # the first layer is fixed, the rest move
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(300, 2, 3, generator=g), torch.randint(0, 4, (300,), generator=g)
    plane = _plane(model, names, seed=3)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    evaluator = Evaluator(model, (X, y), names=names)
    whole = evaluate_grid(evaluator, plane, xs, ys, chunk_size=20)
    assert evaluator._first.chain is not None
    loss, _ = _loop(model, names, plane, xs, ys, X, y)
    np.testing.assert_allclose(whole.loss, loss, rtol=1e-5)
    cut = evaluate_grid(evaluator, plane, xs, ys, chunk_size=3)
    np.testing.assert_array_equal(cut.loss, whole.loss)  # bit for bit: a point's numbers are its own
    some = evaluate_grid(evaluator, plane, xs, ys, only=np.array([17, 2, 9]), chunk_size=2)
    np.testing.assert_array_equal(some["loss"], whole.loss.ravel()[[17, 2, 9]])


def test_models_that_are_not_a_plain_chain_are_evaluated_as_before():
    class Functional(torch.nn.Module):  # an activation called as a function: not a module the chain can see
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(5, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    class Scaled(Functional):  # something after the last layer
        def forward(self, x):
            return 2 * super().forward(x)

    class Branches(Functional):  # what it returns depends on a value: vmap cannot run it
        def forward(self, x):
            out = self.b(self.a(x))
            return out if out.sum() > 0 else -out

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    for cls in (Functional, Scaled, Branches):
        torch.manual_seed(0)
        model = cls()
        plane = _plane(model, seed=4)
        xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)
        evaluator = Evaluator(model, (X, y))
        surface = evaluate_grid(evaluator, plane, xs, ys)
        assert evaluator._first is False or evaluator._first is None or evaluator._first.chain is None, cls.__name__
        loss, _ = _loop(model, None, plane, xs, ys, X, y)
        np.testing.assert_allclose(surface.loss, loss, rtol=1e-5, err_msg=cls.__name__)
