import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from losstrail import TrajectoryRecorder
from losstrail.builtin.models import load_flat_params
from losstrail.training.fit import fit
from losstrail.values.trajectory import Trajectory


class Plain(pl.LightningModule):
    """Any LightningModule: no losstrail base class, training_step returns a bare loss."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader(data):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=len(data[0]))


def test_records_every_step_with_loss_and_accuracy_at_that_point(tiny_data):
    torch.manual_seed(0)
    model = Plain()
    start = copy.deepcopy(model)
    traj = fit(model, _loader(tiny_data), epochs=6, quiet=True).trajectory
    assert len(traj) == 7
    assert traj.step.tolist() == list(range(7)) and traj.epoch[:6].tolist() == list(range(6))
    X, y = tiny_data
    probe = copy.deepcopy(start)
    first = torch.cat([p.detach().flatten() for p in start.parameters()])
    assert np.array_equal(traj.params[0], first.numpy())
    for k in range(7):  # independent reference: load θ_k into a model and measure on the (full) batch
        load_flat_params(probe, torch.from_numpy(traj.params[k]))
        with torch.no_grad():
            out = probe(X)
        assert traj.loss[k] == pytest.approx(F.cross_entropy(out, y).item(), abs=1e-6)
        assert traj.accuracy[k] == pytest.approx((out.argmax(1) == y).float().mean().item())
    assert not np.array_equal(traj.params[-1], traj.params[-2])


def test_every_n_steps_keeps_the_final_point(tiny_data):
    rec = TrajectoryRecorder(every_n_steps=3)
    trainer = pl.Trainer(
        max_epochs=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rec],
    )
    trainer.fit(Plain(), _loader(tiny_data))
    assert rec.trajectory.step.tolist() == [0, 3, 6, 9, 10]


def test_recorder_errors():
    with pytest.raises(ValueError, match=r"every_n_steps=0 must be a positive integer"):
        TrajectoryRecorder(every_n_steps=0)
    with pytest.raises(RuntimeError, match=r"no trajectory yet"):
        _ = TrajectoryRecorder().trajectory


def test_trajectory_checks_shapes():
    with pytest.raises(ValueError, match=r"Trajectory.loss must have shape \(3,\)"):
        Trajectory(np.zeros((3, 2), np.float32), np.zeros(2), np.zeros(3), np.arange(3), np.arange(3))


def test_a_path_larger_than_the_memory_limit_is_kept_on_disk(tmp_path, tiny_model, tiny_data):
    import copy

    import numpy as np

    from losstrail.planes.directions import make_plane
    from losstrail.store.rundir import load_run_value, save_run_value
    from losstrail.training.fit import fit
    from losstrail.values.trajectory import Trajectory

    in_memory = fit(copy.deepcopy(tiny_model), tiny_data, epochs=12, seed=0, quiet=True).trajectory
    on_disk = fit(
        copy.deepcopy(tiny_model), tiny_data, epochs=12, seed=0, storage=tmp_path, memory_limit=500, quiet=True
    ).trajectory
    assert isinstance(on_disk.params, np.memmap) and (tmp_path / "params.bin").stat().st_size == 13 * 27 * 4
    np.testing.assert_array_equal(np.asarray(on_disk.params), in_memory.params)
    monkey_blocks = __import__("losstrail.planes.pca", fromlist=["x"])
    monkey_blocks._COL_BLOCK, old = 5, monkey_blocks._COL_BLOCK  # stream the Gram matrix in many column blocks
    try:
        a, b = make_plane(in_memory, "pca"), make_plane(on_disk, "pca")
    finally:
        monkey_blocks._COL_BLOCK = old
    np.testing.assert_allclose(a.u, b.u, atol=1e-6)
    np.testing.assert_allclose(a.explained, b.explained, rtol=1e-9)
    save_run_value(tmp_path, on_disk)
    again = load_run_value(tmp_path, Trajectory)
    assert isinstance(again.params, np.memmap)
    np.testing.assert_array_equal(np.asarray(again.params), in_memory.params)


def test_half_precision_paths(tmp_path, tiny_model, tiny_data):
    import numpy as np

    from losstrail.training.fit import fit

    t = fit(tiny_model, tiny_data, epochs=3, storage=tmp_path, memory_limit=0, dtype="float16", quiet=True).trajectory
    assert t.params.dtype == np.float16 and (tmp_path / "params.bin").stat().st_size == 4 * 27 * 2
    with pytest.raises(ValueError, match=r"dtype='int8' is not supported; expected one of 'float32', 'float16'"):
        fit(tiny_model, tiny_data, epochs=1, dtype="int8", quiet=True)
