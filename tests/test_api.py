import numpy as np
import pytest
import torch
from PIL import Image

import losstrail
from losstrail.builtin.data import SpiralsDataModule


def _frames(path):
    with Image.open(path) as im:
        return im.n_frames, im.size


def test_default_arguments_write_the_sample_gif(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    animation = losstrail.loss_landscape_anim(n_epochs=12, quiet=True)
    assert (str(animation.path), animation.format, animation.frames) == ("sample.gif", "gif", 13)
    assert animation._repr_html_().startswith('<img src="data:image/gif;base64,')  # inline in Jupyter
    assert _frames(tmp_path / "sample.gif") == (13, (1280, 600))  # 12 steps + the final point; loss panel beside
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "model.pt",
        "path.npz",
        "plane.npz",
        "run.json",
        "surface.npz",
        "trajectory.npz",
    ]
    with np.load(tmp_path / "checkpoints" / "surface.npz") as s:
        assert s["loss"].shape == (100, 100)


def _small(tmp_path, **kwargs):
    args = dict(
        n_epochs=8,
        model_dirpath=tmp_path / "run",
        output_filename=tmp_path / "a.gif",
        seed=3,
        resolution=10,
        quiet=True,
        return_data=True,
    )
    return losstrail.loss_landscape_anim(**{**args, **kwargs})


def test_return_data_is_path_losses_and_accuracies(tmp_path):
    optim_path, loss_steps, accu_steps = _small(tmp_path)
    assert len(optim_path) == len(loss_steps) == len(accu_steps) == 9
    assert isinstance(optim_path[0], torch.Tensor) and optim_path[0].shape == (303,)
    assert all(0 <= a <= 1 for a in accu_steps) and loss_steps[-1] < loss_steps[0]


def test_same_seed_same_run_and_random_plane(tmp_path):
    a = _small(tmp_path / "a", reduction_method="random")
    b = _small(tmp_path / "b", reduction_method="random")
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    plane_a, plane_b = (np.load(tmp_path / d / "run" / "plane.npz") for d in "ab")
    assert np.array_equal(plane_a["u"], plane_b["u"])


def test_load_model_reuses_the_run_and_recomputes_nothing(tmp_path, monkeypatch):
    first = _small(tmp_path)
    (tmp_path / "a.gif").unlink()

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr("losstrail.training.fit.train_model", forbidden)
    monkeypatch.setattr("losstrail.evaluation.grids.grid_surface", forbidden)
    again = _small(tmp_path, load_model=True)
    assert _frames(tmp_path / "a.gif")[0] == 9
    assert all(torch.equal(x, y) for x, y in zip(first[0], again[0])) and first[1] == again[1]
    with pytest.raises(AssertionError, match="recomputed"):  # the patches are where the job looks them up
        _small(tmp_path / "fresh")
    with pytest.raises(AssertionError, match="recomputed"):
        _small(tmp_path, load_model=True, resolution=12)


def test_load_model_with_another_method_recomputes_only_the_plane_and_grid(tmp_path, monkeypatch):
    _small(tmp_path)
    monkeypatch.setattr(
        "losstrail.training.fit.train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained"))
    )
    _small(tmp_path, load_model=True, reduction_method="random")
    with np.load(tmp_path / "run" / "plane.npz") as plane:
        assert str(plane["method"]) == "random"
    with pytest.raises(AssertionError, match="retrained"):  # the patch is where the job looks fit up
        _small(tmp_path / "fresh")


def test_custom_directions(tmp_path):
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 303))
    _small(tmp_path, reduction_method="custom", custom_directions=(u, v))
    with np.load(tmp_path / "run" / "plane.npz") as plane:
        np.testing.assert_allclose(plane["u"], u / np.linalg.norm(u), rtol=1e-6)


def test_output_to_file_false_writes_no_animation(tmp_path):
    _small(tmp_path, output_to_file=False)
    assert not (tmp_path / "a.gif").exists()


def test_render_redraws_a_saved_run(tmp_path, monkeypatch):
    _small(tmp_path)
    monkeypatch.setattr(
        "losstrail.evaluation.grids.grid_surface", lambda *a, **k: (_ for _ in ()).throw(AssertionError)
    )
    out = losstrail.render(tmp_path / "run", tmp_path / "again.gif", max_frames=4, quiet=True)
    assert _frames(out) == (4, (1280, 600))  # the saved path carries its true and slice losses


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"optimizer": "adamm"},
            ValueError,
            r"optimizer='adamm' is not known; expected one of 'sgd', 'momentum', 'adam'",
        ),
        (
            {"reduction_method": "pcaa"},
            ValueError,
            r"reduction_method='pcaa' is not known; expected one of 'pca', 'random', 'filter', 'layer', "
            r"'hessian', 'interpolation', 'custom'",
        ),
        ({"reduction_method": "custom"}, ValueError, r"reduction_method='custom' needs two directions"),
        (
            {"reduction_method": "custom", "custom_directions": (np.ones(10), np.ones(10))},
            ValueError,
            r"custom_directions u has 10 values but the model has P=303 parameters",
        ),
        ({"n_epochs": 0}, ValueError, r"n_epochs=0 must be a positive integer, e.g. n_epochs=300"),
        ({"n_frames": 1}, ValueError, r"n_frames=1 must be an integer of at least 2"),
        ({"giffps": 0}, ValueError, r"giffps=0 must be a positive number of frames per second"),
        ({"giffps": -5}, ValueError, r"giffps=-5 must be a positive number"),
        ({"output_filename": "out.mov"}, ValueError, r"output 'out.mov' has format 'mov', which is not supported"),
        ({"load_model": True}, FileNotFoundError, r"load_model=True but there is no saved model at '.*model.pt'"),
        ({"gpus": 1}, ValueError, r"gpus=1 but no CUDA device is visible to PyTorch; pass gpus=0"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, monkeypatch, kwargs, error, message):
    if kwargs.get("gpus") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(
        "losstrail.training.fit.train_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained"))
    )
    with pytest.raises(error, match=message):
        _small(tmp_path, **kwargs)
    assert not (tmp_path / "a.gif").exists()


def test_unwritable_output_folders_are_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"output_filename='.*file' cannot be written"):
        _small(tmp_path, output_filename=blocker / "a.gif")
    with pytest.raises(ValueError, match=r"model_dirpath='.*file/run' cannot be written"):
        _small(tmp_path, model_dirpath=blocker / "run")


def test_a_divergent_learning_rate_still_gives_a_picture(tmp_path):
    with pytest.warns(RuntimeWarning, match="grid cells have a non-finite loss"):
        _small(tmp_path, optimizer="sgd", learning_rate=1e8, n_epochs=5, resolution=8)
    assert _frames(tmp_path / "a.gif")[0] == 6


def test_parameters_that_overflow_end_the_path_with_a_warning(tmp_path):
    with pytest.warns(RuntimeWarning, match=r"training diverged: the parameters are NaN or infinite from step \d+ on"):
        optim_path, _, _ = _small(
            tmp_path, optimizer="sgd", learning_rate=1e12, n_epochs=5, resolution=8, reduction_method="random"
        )
    assert len(optim_path) == 6  # return_data still gives everything that was recorded
    assert 3 <= _frames(tmp_path / "a.gif")[0] < 6


def test_user_datamodule_with_minibatches(tmp_path):
    optim_path, _, _ = _small(tmp_path, datamodule=SpiralsDataModule(batch_size=370), n_epochs=2)
    assert len(optim_path) == 2 * 3 + 1


def test_return_data_carries_the_faithfulness_figures(tmp_path):
    data = _small(tmp_path)
    assert len(data) == 3
    assert data.true_loss.shape == data.slice_loss.shape == data.off_plane.shape == (9,)
    assert data.true_loss[-1] == pytest.approx(data.slice_loss[-1], abs=1e-6)  # the centre lies in the plane
    assert 0.5 < data.captured <= 1
    with np.load(tmp_path / "run" / "path.npz") as saved:
        np.testing.assert_allclose(saved["true_loss"], data.true_loss)


def test_a_plane_that_misses_the_path_warns_and_suggests_pca(tmp_path):
    with pytest.warns(UserWarning, match=r"'random' plane captures only .* reduction_method='pca' captures the most"):
        _small(tmp_path, reduction_method="random")


@pytest.mark.parametrize("method", ["filter", "layer", "hessian", "interpolation"])
def test_every_direction_method_makes_an_animation(tmp_path, method):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = _small(tmp_path, reduction_method=method, return_data=True, n_frames=3)
    with np.load(tmp_path / "run" / "plane.npz") as plane:
        assert str(plane["method"]) == method
        assert ("eigenvalues" in plane.files) == (method == "hessian")
    from losstrail._frames import select_frames

    shown = select_frames(len(data.true_loss), 3)  # the truth is measured where the animation shows the path
    assert _frames(tmp_path / "a.gif")[0] == 3 and np.isfinite(data.true_loss[shown]).all()
    assert np.isnan(np.delete(data.true_loss, shown)).all()


def test_grid_control_through_the_one_call_api(tmp_path):
    _small(tmp_path, resolution=(6, 4), xrange=(-3, 1), subset=100, centre="initial", return_data=False)
    with np.load(tmp_path / "run" / "surface.npz") as s:
        assert s["loss"].shape == s["loss_se"].shape == (4, 6)
        assert (s["xs"][0], s["xs"][-1]) == (-3.0, 1.0)
    with np.load(tmp_path / "run" / "plane.npz") as plane, np.load(tmp_path / "run" / "trajectory.npz") as t:
        np.testing.assert_array_equal(plane["origin"], t["params"][0])


def test_a_datamodule_that_yields_no_tensors_is_refused_before_training(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    import losstrail.training.fit

    class Words(pl.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader(["a", "b", "c"], batch_size=2)

    monkeypatch.setattr(
        losstrail.training.fit, "train_model", lambda *a, **k: pytest.fail("trained before checking the data")
    )
    with pytest.raises(ValueError, match=r"datamodule holds no tensors \(got a list\)"):
        losstrail.loss_landscape_anim(
            datamodule=Words(), model_dirpath=tmp_path / "r", output_filename=tmp_path / "x.gif"
        )


def test_a_saved_full_grid_serves_a_later_adaptive_request(tmp_path, monkeypatch):
    _small(tmp_path, grid="full")
    monkeypatch.setattr("losstrail.training.fit.train_model", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr("losstrail.evaluation.grids.grid_surface", lambda *a, **k: pytest.fail("recomputed the grid"))
    _small(tmp_path, load_model=True, grid="adaptive")
    with pytest.raises(pytest.fail.Exception, match="recomputed the grid"):  # the patch is where the job looks
        _small(tmp_path, load_model=True, grid="adaptive", resolution=12)


def test_the_truth_is_measured_at_the_frames_and_redrawn_with_other_frames(tmp_path, monkeypatch):
    from losstrail._frames import MEASURED_POINTS, measured_points, select_frames

    data = _small(tmp_path, datamodule=SpiralsDataModule(batch_size=37), n_epochs=6, n_frames=150)  # 181 points
    shown = select_frames(len(data.steps), 150)
    measured = np.flatnonzero(np.isfinite(data.true_loss))
    assert measured.tolist() == measured_points(shown).tolist() and len(measured) == MEASURED_POINTS
    assert np.isfinite(data.slice_loss[measured]).all() and np.isnan(data.slice_loss[1:-1][~np.isin(
        np.arange(1, len(data.steps) - 1), measured)]).all()  # fmt: skip
    assert measured[0] == 0 and measured[-1] == len(data.steps) - 1  # first and last always in
    monkeypatch.setattr(
        "losstrail.evaluation.grids.grid_surface", lambda *a, **k: (_ for _ in ()).throw(AssertionError)
    )
    for frames, out in ((7, "few.gif"), (181, "all.gif")):  # other frames than measured
        animation = losstrail.render(tmp_path / "run", tmp_path / out, max_frames=frames, quiet=True)
        assert animation.path.is_file() and animation.frames == frames
    assert losstrail.render(tmp_path / "run", tmp_path / "still.png", step=100, quiet=True).path.is_file()
