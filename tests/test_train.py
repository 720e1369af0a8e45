import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail.data import SpiralsDataModule
from losstrail.models import MLP
from losstrail.train import fit, make_optimizer


def _run(seed):
    torch.manual_seed(seed)
    dm = SpiralsDataModule(batch_size=256)
    return fit(MLP(2, 3, hidden_dim=8), dm, epochs=3, seed=seed, quiet=True).trajectory


def test_same_seed_gives_bit_identical_trajectories():
    a, b = _run(7), _run(7)
    assert np.array_equal(a.params, b.params) and np.array_equal(a.loss, b.loss)
    assert len(a) == 3 * 5 + 1
    assert not np.array_equal(a.params, _run(8).params)


def test_optimizer_by_name_takes_the_step_it_should(tiny_data, tiny_model):
    """One SGD step from θ0 must equal θ0 - lr * ∇L(θ0), computed here by autograd."""
    X, y = tiny_data
    start = copy.deepcopy(tiny_model)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)
    traj = fit(tiny_model, loader, optimizer="sgd", learning_rate=0.3, epochs=1, quiet=True).trajectory
    loss = F.cross_entropy(start(X), y)
    grads = torch.autograd.grad(loss, list(start.parameters()))
    expected = torch.cat([(p - 0.3 * g).detach().flatten() for p, g in zip(start.parameters(), grads)])
    np.testing.assert_allclose(traj.params[1], expected.numpy(), atol=1e-6)
    assert tiny_model.optimizer == "adam"  # the override lasted for this fit only


@pytest.mark.parametrize("name", ["sgd", "momentum", "sgd+momentum", "adam", "adamw", "adagrad", "rmsprop"])
def test_every_optimizer_name_builds(name):
    opt = make_optimizer(name, torch.nn.Linear(2, 1).parameters(), 0.01)
    assert opt.defaults["lr"] == 0.01


def test_callable_optimizer():
    opt = make_optimizer(
        lambda params, lr: torch.optim.SGD(params, lr=lr, nesterov=True, momentum=0.5),
        torch.nn.Linear(2, 1).parameters(),
        0.1,
    )
    assert opt.defaults["nesterov"]


def test_fit_rejects_bad_arguments_before_training(tiny_model):
    with pytest.raises(ValueError, match=r"optimizer='adamm' is not known; expected one of 'sgd', 'momentum'"):
        fit(tiny_model, None, optimizer="adamm")
    with pytest.raises(ValueError, match=r"epochs=0 must be a positive integer, e.g. epochs=10"):
        fit(tiny_model, None, epochs=0)
    with pytest.raises(ValueError, match=r"record_every=-1 must be a positive integer"):
        fit(tiny_model, None, record_every=-1)
