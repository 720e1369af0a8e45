"""The evaluation core: any batch tree, one loss rule, parameter subsets, vmap or point by point.

Every grid here is checked against a plain loop that copies the model, loads each point's
weights with ``load_state_dict`` and calls the model as a user would.
"""

import copy
from collections import namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import losstrail as lt
from losstrail.builtin.models import load_flat_params
from losstrail.evaluation.layout import ParamLayout, choose_parameters, flat_params
from losstrail.values.plane import Plane


def _plain_loop(model, names, plane, xs, ys, loss_of):
    """Loss at each grid point: load the point's weights into a copy of the model, call it."""
    net = copy.deepcopy(model).eval()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    layout = ParamLayout(model, names)
    out = np.zeros((len(ys), len(xs)))
    states = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            point = torch.from_numpy(plane.point(x, y))
            state = dict(original)
            state.update(dict(zip(layout.names, (t.clone() for t in layout.split(point)))))
            net.load_state_dict(state)
            states.append(state)
            with torch.no_grad():
                out[i, j] = float(loss_of(net))
    return out, states


def _random_plane(n, seed=0, names=None):
    rng = np.random.default_rng(seed)
    origin, u, v = (rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2))
    return Plane(origin, u, v, "custom", names=names)


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = torch.nn.Linear(3, 4), torch.nn.Linear(2, 4), torch.nn.Linear(4, 3)

    def forward(self, xa, xb):
        return self.head(torch.tanh(self.a(xa) + self.b(xb)))


class _DictModel(torch.nn.Module):
    """Takes keyword inputs and returns an object with a ``.loss``, like a Hugging Face model."""

    Output = namedtuple("Output", "loss logits")

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(3, 4)

    def forward(self, features, labels, mask=None):
        logits = self.body(features)
        return _DictModel.Output(F.cross_entropy(logits, labels), logits)


def test_two_input_model_with_nested_pairs_and_triples():
    torch.manual_seed(0)
    model = _TwoInputs()
    xa, xb, y = torch.randn(40, 3), torch.randn(40, 2), torch.randint(0, 3, (40,))
    plane = _random_plane(sum(p.numel() for p in model.parameters()))
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 2)
    expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: F.cross_entropy(m(xa, xb), y))
    nested = lt.loss_surface(model, ((xa, xb), y), plane, xs, ys, quiet=True)
    triple = lt.loss_surface(model, (xa, xb, y), plane, xs, ys, quiet=True)
    np.testing.assert_allclose(nested.loss, expected, rtol=1e-5)
    np.testing.assert_allclose(triple.loss, expected, rtol=1e-5)
    assert np.isfinite(nested.accuracy).all()  # class logits and labels: accuracy is measured


def test_dict_batches_use_the_models_own_loss_and_no_accuracy():
    torch.manual_seed(0)
    model = _DictModel()
    data = {"features": torch.randn(30, 3), "labels": torch.randint(0, 4, (30,)), "mask": torch.ones(30, 2)}
    plane = _random_plane(sum(p.numel() for p in model.parameters()))
    xs, ys = np.linspace(-1, 1, 3), np.linspace(0, 1, 2)
    expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: m(**data).loss)
    surface = lt.loss_surface(model, data, plane, xs, ys, batch_size=7, quiet=True)
    np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)
    assert np.isnan(surface.accuracy).all()  # not a classification output that the rule can see


@dataclass
class _Batch:
    x: torch.Tensor
    y: torch.Tensor


def test_an_objective_on_dataclass_batches_with_extra_metrics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    data = _Batch(torch.randn(50, 2), torch.randn(50, 1))

    def objective(m, b):
        err = m(b.x) - b.y
        return (err**2).mean(), {"mae": err.abs().mean()}

    plane = _random_plane(sum(p.numel() for p in model.parameters()))
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: F.mse_loss(m(data.x), data.y))
    surface = lt.loss_surface(model, data, plane, xs, ys, objective=objective, quiet=True)
    np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)
    assert np.isnan(surface.accuracy).all()
    points = np.stack([plane.point(0.5, -0.5)])
    from losstrail.evaluation.evaluator import Evaluator

    result = Evaluator(model, data, objective=objective).at_vectors(points)
    net = copy.deepcopy(model)
    load_flat_params(net, torch.from_numpy(points[0]))
    with torch.no_grad():
        mae = float((net(data.x) - data.y).abs().mean())
    assert result.metrics["mae"][0] == pytest.approx(mae, rel=1e-5)


def test_a_parameter_subset_moves_only_those_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 3)
    ).eval()
    model[0].requires_grad_(False)  # a frozen "backbone"
    X, y = torch.randn(64, 2), torch.randint(0, 3, (64,))
    names = choose_parameters(model)  # 'trainable': the BatchNorm and the head
    assert names == ("1.weight", "1.bias", "3.weight", "3.bias")
    n = sum(dict(model.named_parameters())[k].numel() for k in names)
    rng = np.random.default_rng(1)
    plane = Plane(flat_params(model, names).numpy(), rng.normal(size=n).astype(np.float32),
                  rng.normal(size=n).astype(np.float32), "custom", names=names)  # fmt: skip
    assert plane.u.shape == (n,)
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)
    expected, states = _plain_loop(model, names, plane, xs, ys, lambda m: F.cross_entropy(m(X), y))
    surface = lt.loss_surface(model, (X, y), plane, xs, ys, quiet=True)
    np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)
    original = model.state_dict()
    for state in states:  # every tensor outside the subset is bit-equal to its original at every point
        for key in ("0.weight", "0.bias", "1.running_mean", "1.running_var"):
            assert torch.equal(state[key], original[key])
    loop = lt.loss_surface(model, (X, y), plane, xs, ys, mode="loop", quiet=True)
    np.testing.assert_allclose(loop.loss, surface.loss, rtol=1e-6)


def test_params_patterns_and_predicates_and_their_errors():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    assert choose_parameters(model, "2.*") == ("2.weight", "2.bias")
    assert choose_parameters(model, lambda name, p: p.dim() == 1) == ("0.bias", "2.bias")
    with pytest.raises(ValueError, match=r"params pattern 'head\.\*' matches no parameter.*'0\.weight', '0\.bias'"):
        choose_parameters(model, ["head.*"])
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"params='trainable' selects nothing.*requires grad"):
        choose_parameters(model)
    with pytest.raises(ValueError, match=r"selects only frozen parameters"):
        choose_parameters(model, ["0.*"])
    with pytest.raises(ValueError, match=r"params=\[\] must be 'trainable', 'all'"):
        choose_parameters(model, [])


class _VmapRejects(torch.nn.Module):
    """Data-dependent control flow: vmap cannot run it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x):
        out = self.lin(x)
        if out.sum() > 0:
            return out
        return -out


def test_a_model_vmap_rejects_is_evaluated_point_by_point_and_says_so(capsys):
    torch.manual_seed(0)
    model = _VmapRejects()
    X, y = torch.randn(20, 2), torch.randint(0, 3, (20,))
    plane = _random_plane(9)
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 2)
    surface = lt.loss_surface(model, (X, y), plane, xs, ys, quiet=False)
    assert "vmap cannot run _VmapRejects" in capsys.readouterr().err
    expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: F.cross_entropy(m(X), y))
    np.testing.assert_allclose(surface.loss, expected, rtol=1e-5)


def test_bad_batches_and_objectives_fail_before_the_work():
    model = torch.nn.Linear(2, 3)
    plane = _random_plane(9)
    with pytest.raises(ValueError, match=r"leading \(example\) dimensions differ: batch\[0\] has 10, batch\[1\] has 9"):
        lt.loss_surface(model, (torch.randn(10, 2), torch.randint(0, 3, (9,))), plane, [0, 1], [0, 1])
    data = (torch.randn(10, 2), torch.randint(0, 3, (10,)))
    with pytest.raises(ValueError, match=r"objective must return the batch's mean loss as a scalar.*shape \(10, 3\)"):
        lt.loss_surface(model, data, plane, [0, 1], [0, 1], objective=lambda m, b: m(b[0]))
    with pytest.raises(ValueError, match=r"objective must return .* it returned a float"):
        lt.loss_surface(model, data, plane, [0, 1], [0, 1], objective=lambda m, b: 1.0)
    regression = (torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"not class logits and labels.*loss_fn=torch.nn.functional.mse_loss"):
        lt.loss_surface(model, regression, plane, [0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"model\(\*\*batch\) returned .* without a loss"):
        lt.loss_surface(_NoLoss(), {"x": torch.randn(4, 2)}, _random_plane(9), [0, 1], [0, 1])


class _NoLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)

    def forward(self, x):
        return self.lin(x)


def test_subset_and_standard_error_work_on_dict_batches():
    torch.manual_seed(0)
    model = _NoLoss()
    data = {"x": torch.randn(100, 2), "y": torch.randint(0, 3, (100,))}

    def objective(m, b):
        return F.cross_entropy(m(b["x"]), b["y"])

    sub = lt.take_subset(data, 30, seed=2)
    assert len(sub) == 30 and sub[0]["x"].shape == (2,)
    surface = lt.loss_surface(model, data, _random_plane(9), [0, 1], [0], objective=objective, subset=30, quiet=True)
    assert surface.loss_se is not None and surface.loss_se.shape == (1, 2)


def test_fit_trains_a_plain_module_on_dict_batches_and_records_a_subset():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    data = {"x": torch.randn(32, 2), "y": torch.randn(32, 1)}
    run = lt.fit(model, data, objective=lambda m, b: F.mse_loss(m(b["x"]), b["y"]), params=["2.*"],
                 optimizer="sgd", learning_rate=0.1, epochs=4, quiet=True)  # fmt: skip
    t = run.trajectory
    assert t.names == ("2.weight", "2.bias") and t.shapes == ((1, 4), (1,)) and t.params.shape == (5, 5)
    assert np.isfinite(t.loss).all()
    np.testing.assert_array_equal(t.params[-1], flat_params(model, t.names).numpy())
    plane = lt.make_plane(t, "pca")
    assert plane.names == t.names and plane.u.shape == (5,)


# -- the first layer, factored over a plane -----------------------------------------------------------


def _grid_both_ways(model, data, plane, xs, ys, names=None, **options):
    """The grid with the first layer factored and with the plain vmap path, and the factored evaluator."""
    from losstrail.evaluation.evaluator import Evaluator
    from losstrail.evaluation.grids import evaluate_grid

    factored = Evaluator(model, data, names=names, first_layer="factor", mode="vmap", **options)
    plain = Evaluator(model, data, names=names, first_layer="plain", mode="vmap", **options)
    return (evaluate_grid(factored, plane, xs, ys, chunk_size=5), evaluate_grid(plain, plane, xs, ys, chunk_size=5),
            factored)  # fmt: skip


def test_the_factored_first_layer_matches_the_plain_path_on_the_spirals_mlp():
    from losstrail import MLP, SpiralsDataModule

    torch.manual_seed(0)
    model = MLP(input_dim=2, num_classes=3)
    plane = _random_plane(sum(p.numel() for p in model.parameters()), seed=1)
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-1, 0.5, 4)
    factored, plain, evaluator = _grid_both_ways(model, SpiralsDataModule(), plane, xs, ys)
    assert evaluator._first is not None and evaluator._first.prefix == "layers.0"  # it did apply
    np.testing.assert_allclose(factored.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(factored.accuracy, plain.accuracy, atol=1e-12)


def test_the_factored_first_convolution_matches_the_plain_path_on_lenet_digits():
    pytest.importorskip("sklearn")
    from losstrail import DigitsDataModule, LeNet

    torch.manual_seed(0)
    model = LeNet(in_channels=1, num_classes=10, input_size=8)
    plane = _random_plane(sum(p.numel() for p in model.parameters()), seed=2)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    data = lt.take_subset(DigitsDataModule(n_examples=300), 200)
    factored, plain, evaluator = _grid_both_ways(model, data, plane, xs, ys, batch_size=64)
    assert evaluator._first.prefix == "features.0" and evaluator._first.fan_in == 25
    np.testing.assert_allclose(factored.loss, plain.loss, rtol=1e-5)
    np.testing.assert_allclose(factored.accuracy, plain.accuracy, atol=1e-12)
    # 'auto' factors a 5x5 convolution (fan-in 25): the default grid gives the same surface
    auto = lt.loss_surface(model, data, plane, xs, ys, batch_size=64, quiet=True)
    np.testing.assert_allclose(auto.loss, plain.loss, rtol=1e-5)


def test_a_first_layer_that_is_not_reached_by_the_raw_input_alone_is_not_factored():
    class Scaled(torch.nn.Module):  # a parameter acts on the input before the first layer
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(1.5))
            self.first, self.head = torch.nn.Linear(12, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(torch.relu(self.first(x * self.scale)))

    class Twice(torch.nn.Module):  # the first layer runs twice
        def __init__(self):
            super().__init__()
            self.first, self.head = torch.nn.Linear(12, 12), torch.nn.Linear(12, 3)

        def forward(self, x):
            return self.head(torch.relu(self.first(torch.relu(self.first(x)))))

    g = torch.Generator().manual_seed(0)
    data = (torch.randn(40, 12, generator=g), torch.randint(0, 3, (40,), generator=g))
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 3)
    for cls in (Scaled, Twice):
        torch.manual_seed(0)
        model = cls()
        plane = _random_plane(sum(p.numel() for p in model.parameters()), seed=3)
        factored, plain, evaluator = _grid_both_ways(model, data, plane, xs, ys)
        assert evaluator._first is None, cls.__name__
        expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: F.cross_entropy(m(data[0]), data[1]))
        np.testing.assert_allclose(factored.loss, expected, rtol=1e-5)


def test_a_frozen_first_layer_is_factored_with_the_fixed_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    names = ["2.weight", "2.bias"]
    plane = _random_plane(8 * 3 + 3, seed=4, names=names)
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(40, 12, generator=g), torch.randint(0, 3, (40,), generator=g))
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 2)
    factored, plain, evaluator = _grid_both_ways(model, data, plane, xs, ys, names=names)
    assert evaluator._first is not None
    expected, _ = _plain_loop(model, names, plane, xs, ys, lambda m: F.cross_entropy(m(data[0]), data[1]))
    np.testing.assert_allclose(factored.loss, expected, rtol=1e-5)
    np.testing.assert_allclose(plain.loss, expected, rtol=1e-5)


def test_large_batches_are_cut_into_pieces_that_fit_the_memory_budget(monkeypatch):
    from losstrail.evaluation.evaluator import Evaluator

    monkeypatch.setattr(
        "losstrail.evaluation.evaluator._PIECE_MEMORY", 1 << 20
    )  # cut where a call's activations pass 1 MiB
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(1000, 16, generator=g), torch.randint(0, 3, (1000,), generator=g))
    plane = _random_plane(sum(p.numel() for p in model.parameters()), seed=5)
    small = Evaluator(model, data)
    assert small.piece_size(1 << 20) < 1000  # 256 activations per example: a 1 MiB budget cuts the batch
    from losstrail.evaluation.grids import evaluate_grid

    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 2)
    cut = evaluate_grid(small, plane, xs, ys, memory_budget=1 << 20)
    expected, _ = _plain_loop(model, None, plane, xs, ys, lambda m: F.cross_entropy(m(data[0]), data[1]))
    np.testing.assert_allclose(cut.loss, expected, rtol=1e-5)
