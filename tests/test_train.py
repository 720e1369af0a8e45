import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losstrail.builtin.data import SpiralsDataModule
from losstrail.builtin.models import MLP
from losstrail.training.fit import fit, make_optimizer


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


# --- the plain loop: the built-in networks train without Lightning, the same steps Lightning takes ------------------


@pytest.mark.parametrize("batch_size", [None, 256])
def test_the_plain_loop_takes_lightnings_steps_bit_for_bit(batch_size):
    """The Lightning-free MLP on the Lightning-free data, trained by losstrail's own loop, against
    ``losstrail.MLP`` on ``losstrail.SpiralsDataModule`` (both Lightning's) trained by a Lightning Trainer."""
    from losstrail import datamodule
    from losstrail.builtin import data, nets

    torch.manual_seed(3)
    plain = nets.MLP(2, 3, hidden_dim=8)
    torch.manual_seed(3)
    lightning = MLP(2, 3, hidden_dim=8)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in lightning.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), lightning.parameters()))  # the same init
    ours = fit(plain, data.SpiralsDataModule(batch_size=batch_size), epochs=4, seed=5, quiet=True).trajectory
    theirs = fit(lightning, datamodule.SpiralsDataModule(batch_size=batch_size), epochs=4, seed=5, quiet=True)
    theirs = theirs.trajectory
    assert len(ours) == 4 * (1 if batch_size is None else 5) + 1
    for field in ("params", "loss", "step", "epoch"):
        assert np.array_equal(getattr(ours, field), getattr(theirs, field)), field
    np.testing.assert_allclose(ours.accuracy, theirs.accuracy, rtol=1e-6)


def test_the_plain_loop_leaves_batchnorm_statistics_and_the_random_state_to_training():
    """Checking the loss on a first batch before training moves neither BatchNorm's running statistics nor the
    data order: the trajectory is the one of a loop written here with the same seed."""
    X, y = torch.randn(40, 3, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 2

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16, shuffle=True)
    run = fit(net(), loader, optimizer="sgd", learning_rate=0.1, epochs=2, seed=4, quiet=True)
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(4)
    expected = [torch.cat([p.detach().flatten() for p in model.parameters()])]
    for _ in range(2):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            expected.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert np.array_equal(run.trajectory.params, torch.stack(expected).numpy())
    assert torch.equal(run.model[1].running_mean, model[1].running_mean)


def test_saved_weights_of_either_network_load_into_the_other():
    from losstrail.builtin import nets
    from losstrail.builtin.models import LeNet

    plain, lightning = nets.LeNet(input_size=8), LeNet(input_size=8)
    lightning.load_state_dict(plain.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(plain(x), lightning(x))


def _heavy_modules_after(code: str, cwd) -> list[str]:
    """Lightning's packages (and ``torch._dynamo``) in ``sys.modules`` after ``code`` runs in a fresh interpreter
    with this losstrail."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import losstrail

    report = "\nimport json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
    report += "{'lightning', 'pytorch_lightning', 'torch'} | {'torch._dynamo'} & set(sys.modules))))"
    env = {**os.environ, "PYTHONPATH": str(Path(losstrail.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code + report], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_default_job_never_imports_lightning(tmp_path):
    """``loss_landscape_anim()`` and ``losstrail run`` with the built-in model and data: no Lightning loaded, nor
    ``torch._dynamo`` (which any ``torch.optim`` optimizer imports), but torch (the check can see a loaded
    package) and the pictures written."""
    api = "import losstrail\nlosstrail.loss_landscape_anim(n_epochs=5, resolution=6, n_frames=3, seed=0, quiet=True)"
    assert _heavy_modules_after(api, tmp_path) == ["torch"]
    assert (tmp_path / "sample.gif").stat().st_size > 1000
    argv = ["losstrail", "run", "--epochs", "5", "--resolution", "6", "--out", "cli.gif", "-q"]
    cli = (
        f"import sys\nfrom losstrail.cli import main\nsys.argv = {argv!r}\ntry:\n    main()\nexcept SystemExit as e:\n"
    )
    cli += "    assert not e.code, e.code"
    assert _heavy_modules_after(cli, tmp_path) == ["torch"]
    assert (tmp_path / "cli.gif").stat().st_size > 1000


def test_a_lightning_model_still_trains_with_lightning(tmp_path):
    code = "import losstrail, torch\nlosstrail.fit(losstrail.MLP(2, 3), (torch.randn(8, 2), torch.arange(8) % 3), "
    code += "epochs=1, quiet=True)"
    assert "lightning" in _heavy_modules_after(code, tmp_path)


def test_the_plain_loop_shows_its_loss_without_a_torch_warning(tiny_data):
    """The progress bar's loss is read from a detached tensor: no 'requires_grad ... to a scalar' warning."""
    import warnings

    X, y = tiny_data
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r".*requires_grad=True to a scalar.*")
        run = fit(torch.nn.Linear(2, 3), (X, y), optimizer="sgd", learning_rate=0.1, epochs=2, seed=0)
    assert len(run.trajectory) == 3


@pytest.mark.parametrize("rule", ["sgd", "momentum", "adam"])
def test_the_loops_own_steps_equal_torch_optim_bit_for_bit(rule):
    """``OwnStep`` against ``torch.optim`` itself: 40 steps of a small network and a parameter that has a gradient
    in every other step only: every weight equal, bit for bit."""
    from losstrail.training.optim import OwnStep, make_optimizer

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))

    ours, theirs = net(), net()
    extra = [torch.nn.Parameter(torch.ones(2)) for _ in range(2)]  # stepped only on even steps
    opts = [OwnStep(rule, [*ours.parameters(), extra[0]], 3e-3),
            make_optimizer(rule, [*theirs.parameters(), extra[1]], 3e-3)]  # fmt: skip
    data = torch.Generator().manual_seed(1)
    for step in range(40):
        x, y = torch.randn(32, 3, generator=data), torch.randint(0, 4, (32,), generator=data)
        for model, opt, e in zip((ours, theirs), opts, extra):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y) + (e.sum() * 0.1 if step % 2 == 0 else 0)
            loss.backward()
            opt.step()
    for a, b in zip([*ours.parameters(), extra[0]], [*theirs.parameters(), extra[1]]):
        assert torch.equal(a, b)
    assert not torch.equal(extra[0], torch.ones(2))
