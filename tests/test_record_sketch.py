"""Paths longer than the recorder's memory: snapshots, every step's loss, and PCA from a sketch of every step.

The reference is independent of the recorder: every step's parameters collected by the test's
own loop (or a second, unsketched run of the same seeded training), centred, and decomposed
with a dense SVD.
"""

import copy
import glob
import os
import tempfile

import numpy as np
import pytest
import torch

from losstrail.planes.directions import make_plane
from losstrail.training.record import Recorder

MAX_DEGREES = 2.0


def exact_principal_plane(rows: np.ndarray) -> np.ndarray:
    """The top two right singular vectors of the centred (T, P) matrix of every step, float64."""
    centred = rows.astype(np.float64)
    centred -= centred.mean(axis=0)
    return np.linalg.svd(centred, full_matrices=False)[2][:2]


def subspace_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """The largest principal angle between the spans of the rows of ``a`` (2, P) and ``b`` (2, P)."""
    qa, qb = np.linalg.qr(np.asarray(a, np.float64).T)[0], np.linalg.qr(np.asarray(b, np.float64).T)[0]
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def flat(model) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def train_recorded(model, batches, recorder_options, lr=0.05):
    """A plain loop: every step's parameters kept by the test, and a Recorder with ``recorder_options``."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    rec = Recorder(model, **recorder_options)
    rows, losses = [flat(model)], []
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.record(loss=loss)
        rows.append(flat(model))
        losses.append(loss.item())
    return rec.trajectory, np.stack(rows), np.asarray(losses)


def check_sketched(trajectory, rows: np.ndarray, snapshots: int) -> float:
    """Snapshots are evenly spaced rows of the path (first and last in); PCA is within MAX_DEGREES of the exact."""
    assert trajectory.sketch is not None, "the path should have been kept sketched"
    assert len(trajectory) <= snapshots + 1 and len(trajectory.sketch) == len(rows)
    kept = trajectory.step
    assert kept[0] == 0 and kept[-1] == len(rows) - 1
    assert len(set(np.diff(kept[:-1]).tolist())) <= 1  # evenly spaced, then the final point
    np.testing.assert_allclose(np.asarray(trajectory.params, np.float32), rows[kept], rtol=1e-3, atol=1e-3)
    plane = make_plane(trajectory, "pca")
    degrees = subspace_degrees(np.stack([plane.u, plane.v]), exact_principal_plane(rows))
    print(f"sketched PCA plane: {degrees:.4f} degrees from the exact one (bound {trajectory.sketch.angle_bound:.4f})")
    assert degrees <= MAX_DEGREES, f"the sketched PCA plane is {degrees:.3f} degrees from the exact one"
    assert degrees <= trajectory.sketch.angle_bound + 0.05  # the stated bound holds, up to float32 rounding
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    np.testing.assert_allclose(trajectory.sketch.total_variance, (centred**2).sum(), rtol=1e-5)
    return degrees


def test_spirals_mlp_sketched_matches_the_exact_pca_of_every_step():
    from losstrail.builtin.data import SpiralsDataModule
    from losstrail.model import MLP

    torch.manual_seed(0)
    model = MLP(input_dim=2, num_classes=3)  # 303 parameters
    loader = SpiralsDataModule(batch_size=111).train_dataloader()
    batches = [batch for _ in range(40) for batch in loader]  # 400 steps
    memory = (16 + 8 * 24) * sum(p.numel() for p in model.parameters())  # the sketch fits, the 401 rows do not
    t, rows, losses = train_recorded(model, batches, {"memory_limit": memory, "quiet": True}, lr=0.02)
    check_sketched(t, rows, 200)
    np.testing.assert_allclose(t.steps().loss[:-1], losses, rtol=1e-6)  # every step's loss


def test_fit_plans_a_sketched_path_and_says_its_size(capsys, tiny_model, tiny_data):
    from torch.utils.data import DataLoader, TensorDataset

    from losstrail.training.fit import fit

    loader = DataLoader(TensorDataset(*tiny_data), batch_size=1)  # 64 steps an epoch
    whole = fit(copy.deepcopy(tiny_model), loader, epochs=4, seed=0, quiet=True).trajectory
    assert whole.sketch is None and len(whole) == 257 and capsys.readouterr().err == ""
    sketched = fit(copy.deepcopy(tiny_model), loader, epochs=4, seed=0, memory_limit=27 * 4 * 100).trajectory
    said = capsys.readouterr().err
    assert "the path will take 257 points × 27 parameters" in said and "evenly spaced float16 snapshots" in said
    assert len(sketched) <= 200 and sketched.step[1] == 2  # planned: one step in two, from the start
    np.testing.assert_array_equal(sketched.steps().loss, whole.loss)  # every step's loss, as recorded
    np.testing.assert_array_equal(sketched.steps().step, whole.step)
    check_sketched(sketched, np.asarray(whole.params), 200)


def test_digits_lenet_sketched_without_a_step_count():
    pytest.importorskip("sklearn")
    from losstrail.builtin.data import DigitsDataModule
    from losstrail.model import LeNet

    torch.manual_seed(0)
    model = LeNet(input_size=8)
    P = sum(p.numel() for p in model.parameters())
    loader = DigitsDataModule(batch_size=64).train_dataloader()
    batches = [batch for _ in range(10) for batch in loader][:200]
    memory = (16 + 8 * 24) * P  # room for the sketch; the 201 rows of the path are 4x more
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "losstrail-path-*")))
    t, rows, losses = train_recorded(model, batches, {"memory_limit": memory, "snapshots": 40, "quiet": True})
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "losstrail-path-*"))) == before  # nothing left behind
    check_sketched(t, rows, 40)
    np.testing.assert_allclose(t.steps().loss[:-1], losses, rtol=1e-6)


def test_a_million_parameter_path_planned_before_training(capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10))  # fmt: skip
    P = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < P < 1_100_000
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(784, 10, generator=g)
    batches = []
    for _ in range(100):
        x = torch.randn(32, 784, generator=g)
        batches.append((x, (x @ teacher).argmax(1)))
    options = {"memory_limit": 256 << 20, "snapshots": 30, "steps": 100}
    t, rows, _ = train_recorded(model, batches, options, lr=0.01)
    said = capsys.readouterr().err
    assert f"101 points × {P:,} parameters" in said and f"{len(t)} evenly spaced float16 snapshots" in said
    assert t.step[1] == 4 and len(t) == 26  # planned: every 4th step from the start, then the final point
    check_sketched(t, rows, 30)


def test_a_path_that_fits_keeps_every_step_and_says_nothing(capsys, tiny_model, tiny_data):
    X, y = tiny_data
    batches = [(X, y)] * 300
    t, rows, _ = train_recorded(tiny_model, batches, {"snapshots": 50, "steps": 300})
    assert t.sketch is None and len(t) == 301 and capsys.readouterr().err == ""
    np.testing.assert_array_equal(t.params, rows)


def test_a_sketched_path_is_saved_and_loaded(tmp_path, tiny_model, tiny_data):
    from losstrail.store.rundir import load_run_value, save_run_value
    from losstrail.values.trajectory import Trajectory

    X, y = tiny_data
    t, rows, _ = train_recorded(tiny_model, [(X, y)] * 100, {"memory_limit": 2400, "snapshots": 20, "quiet": True})
    assert t.sketch is not None and t.sketch.directions is not None
    save_run_value(tmp_path, t)
    again = load_run_value(tmp_path, Trajectory)
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(t.params))
    for name in ("step", "loss", "variances", "directions"):
        np.testing.assert_array_equal(getattr(again.sketch, name), getattr(t.sketch, name))
    a, b = make_plane(t, "pca"), make_plane(again, "pca")
    np.testing.assert_array_equal(a.u, b.u)
    assert a.explained == b.explained


def test_bad_recorder_settings_are_named():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"snapshots=2 must be an integer of at least 3"):
        Recorder(model, snapshots=2)
    with pytest.raises(ValueError, match=r"memory_limit=-1 must be a number of bytes"):
        Recorder(model, memory_limit=-1)
    with pytest.raises(ValueError, match=r"steps='many' must be the number of optimizer steps"):
        Recorder(model, steps="many")


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("dtype", [None, "float32"])
def test_sketched_rows_read_from_parameters_of_mixed_dtypes_equal_their_flat_copy(every, dtype, monkeypatch):
    """A sketched path's rows are copied into reused tensors and written by a thread while training goes on
    (float16 snapshots from two conversion tensors in turn; float32 ones from the recorder's rows themselves),
    and sketched by another: each snapshot is still its own step's parameters, and the sketch's total variance
    that of every step, though each write and each row sketched here waits 2 ms first (a slow disk, a busy core)."""
    import time

    from losstrail.training import points

    write, sketch = points.RowFile._write, points.FrequentDirections.add
    monkeypatch.setattr(points.RowFile, "_write", lambda *args: (time.sleep(0.002), write(*args)))
    monkeypatch.setattr(points.FrequentDirections, "add", lambda *args: (time.sleep(0.002), sketch(*args))[1])

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            for name, dtype, shape in [("a", torch.float16, (7, 5)), ("b", torch.bfloat16, (9,)),
                                       ("c", torch.float32, (4, 6)), ("d", torch.float64, (11,))]:  # fmt: skip
                setattr(self, name, torch.nn.Parameter(torch.randn(shape, generator=g).to(dtype)))

    model = Mixed()
    g = torch.Generator().manual_seed(1)
    P = sum(p.numel() for p in model.parameters())
    rec = Recorder(model, every=every, memory_limit=(16 + 8 * 24) * P, snapshots=12, dtype=dtype, quiet=True)
    rows = []  # the reference: every recorded step's parameters, flattened by the test itself
    for k in range(240):
        if k % every == 0:
            rows.append(torch.cat([p.detach().reshape(-1).float() for p in model.parameters()]).numpy().copy())
        with torch.no_grad():
            for p in model.parameters():
                p.add_((0.01 * torch.randn(p.shape, generator=g) + 0.003).to(p.dtype))
        rec.record(loss=float(k))
    rows.append(torch.cat([p.detach().reshape(-1).float() for p in model.parameters()]).numpy().copy())
    t = rec.trajectory
    assert t.sketch is not None and len(t.sketch) == len(rows)
    index = np.asarray(t.step) // every
    index[-1] = len(rows) - 1  # the final point
    np.testing.assert_array_equal(np.asarray(t.params), np.stack(rows)[index].astype(dtype or np.float16))
    centred = np.stack(rows).astype(np.float64) - np.stack(rows).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(t.sketch.total_variance, (centred**2).sum(), rtol=1e-5)


def test_a_row_the_writer_thread_cannot_write_is_an_error_in_the_training_loop(tmp_path, monkeypatch):
    """A full disk while a row is written behind the loop's back is raised by the next call that needs the file."""
    import errno

    from losstrail.training import points

    rows = points.RowFile(tmp_path / "rows.bin", "float32", 4)
    rows.append(np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(rows.read(0), np.arange(4))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(points.os, "pwrite", full)
    rows.append(np.ones(4, np.float32))  # handed to the thread
    with pytest.raises(OSError, match="No space left"):
        rows.append(np.ones(4, np.float32))
    rows.discard()
    assert not (tmp_path / "rows.bin").exists()
