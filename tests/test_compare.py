import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import losstrail
from losstrail.builtin.data import SpiralsDataModule
from losstrail.builtin.models import MLP, flat_params
from losstrail.cli import app
from losstrail.comparison import check_runs, load_comparison
from losstrail.training.fit import fit


def _small(tmp_path, **kwargs):
    args = dict(
        optimizers=["adam", "sgd", "rmsprop"],
        epochs=6,
        resolution=8,
        n_frames=5,
        out=tmp_path / "c.gif",
        run_dir=tmp_path / "cmp",
        quiet=True,
    )
    return losstrail.compare(**{**args, **kwargs})


def test_runs_start_from_identical_weights_and_share_one_plane(tmp_path):
    data = _small(tmp_path, return_data=True)
    assert list(data) == ["adam", "sgd", "rmsprop"]
    starts = [d[0][0] for d in data.values()]
    assert all(torch.equal(starts[0], s) for s in starts[1:])
    assert not torch.equal(data["adam"][0][-1], data["sgd"][0][-1])  # and then go their own ways
    comparison = load_comparison(tmp_path / "cmp")
    plane = comparison.plane
    np.testing.assert_array_equal(plane.origin, data["adam"][0][-1].numpy())  # centred on the first run
    for projection in comparison.projections:
        assert projection.plane is plane and len(projection) == 7
        in_plane = plane.point(*projection.xy[3])
        np.testing.assert_allclose(plane.project(in_plane), projection.xy[3], atol=1e-4)
    with Image.open(tmp_path / "c.gif") as im:
        assert (im.n_frames, im.size) == (5, (1280, 600))


def test_the_animation_has_one_legend_entry_and_curve_per_run(tmp_path):
    from losstrail.renderers.compare import CompareFigure

    comparison = _small(tmp_path, out=None)
    figure = CompareFigure(list(zip(comparison.names, comparison.projections)), comparison.surface, max_frames=4)
    legend = [t.get_text() for t in figure.main_axes[0].get_legend().get_texts()]
    runs = [text.split(" (")[0] for text in legend if not text.startswith("lowest loss")]
    assert runs == ["adam", "sgd", "rmsprop"]
    assert figure.n_frames == 4 and [line[0] for line in figure.label_lines(3)][1:] == [
        f"{name:<12s} loss {float(p.true_loss[-1]):.4f}  off-plane {float(p.off_plane[-1]):.3g}"
        for name, p in zip(comparison.names, comparison.projections)
    ]
    grid = CompareFigure(
        list(zip(comparison.names, comparison.projections)), comparison.surface, layout="grid", max_frames=4
    )
    assert len(grid.main_axes) == 3 and grid.size == (1120, 980)


def test_runs_of_different_lengths_move_by_fraction_of_training():
    from types import SimpleNamespace

    from losstrail._frames import frame_schedule

    long, short = SimpleNamespace(step=np.arange(11)), SimpleNamespace(step=np.arange(0, 6))
    index, times = frame_schedule([long, short], 3)
    assert index.tolist() == [[0, 0], [5, 2], [10, 5]] and times.tolist() == [0.0, 0.5, 1.0]
    index, _ = frame_schedule([long, short], 3, "step")
    assert index[:, 1].tolist() == [0, 5, 5]  # a finished run rests at its end


def test_runs_the_user_trained_and_mean_centre(tmp_path):
    dm = SpiralsDataModule()
    torch.manual_seed(1)
    start = MLP(2, 3, hidden_dim=8)
    runs = {}
    for name, opt in (("mine-adam", "adam"), ("mine-sgd", "sgd")):
        model = MLP(2, 3, hidden_dim=8)
        model.load_state_dict(start.state_dict())
        runs[name] = fit(model, dm, optimizer=opt, learning_rate=0.05, epochs=4, seed=0, quiet=True)
    comparison = _small(tmp_path, trained=runs, centre="mean", reduction_method="random", out=None)
    finals = np.stack([flat_params(r.model).numpy() for r in runs.values()])
    np.testing.assert_allclose(comparison.plane.origin, finals.mean(0), rtol=1e-6)
    assert comparison.names == ("mine-adam", "mine-sgd")


def test_rerender_recomputes_nothing(tmp_path, monkeypatch):
    _small(tmp_path)
    monkeypatch.setattr(
        "losstrail.evaluation.grids.loss_surface", lambda *a, **k: (_ for _ in ()).throw(AssertionError)
    )
    out = losstrail.render(tmp_path / "cmp", tmp_path / "again.gif", max_frames=3, quiet=True)
    with Image.open(out) as im:
        assert im.n_frames == 3


def test_bad_comparisons_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"compare needs at least two runs to compare; got 1"):
        _small(tmp_path, optimizers=["adam"])
    with pytest.raises(ValueError, match=r"run name 'adam' is used twice"):
        _small(tmp_path, optimizers=["adam", "adam"])
    with pytest.raises(
        ValueError, match=r"centre='nadam' is not one of the runs; expected 'mean' or one of 'adam', 'sgd'"
    ):
        _small(tmp_path, optimizers=["adam", "sgd"], centre="nadam")
    with pytest.raises(ValueError, match=r"run 'a' has P=303 parameters but run 'b' has P=27"):
        check_runs(["a", "b"], [303, 27])
    with pytest.raises(ValueError, match=r"layout='stack' is not known; expected one of 'overlay', 'grid'"):
        _small(tmp_path, layout="stack")


def test_cli_compare(tmp_path):
    out = tmp_path / "c.gif"
    args = ["compare", "--optimizers", "adam,sgd", "--lrs", "0.01", "--epochs", "3", "--resolution", "6"]
    args += ["--frames", "3", "--layout", "grid", "--out", str(out), "--run-dir", str(tmp_path / "d"), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.n_frames == 3
    result = CliRunner().invoke(
        app, ["compare", "--optimizers", "adam", "--out", str(out), "--run-dir", str(tmp_path / "e")]
    )
    assert not (tmp_path / "e").exists()  # a refused comparison makes no folder
    assert result.exit_code == 2 and "at least two runs" in result.output


def test_runs_with_the_same_count_but_other_shapes_are_refused(tmp_path):
    dm, ce = SpiralsDataModule(), torch.nn.functional.cross_entropy
    a = fit(torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Linear(5, 3)), dm, loss_fn=ce, epochs=2, quiet=True)
    b = fit(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 6)), dm, loss_fn=ce, epochs=2, quiet=True)
    assert a.trajectory.n_params == b.trajectory.n_params == 33
    with pytest.raises(ValueError, match=r"run 'a' has parameter shapes .* but run 'b' has .* same model architecture"):
        _small(tmp_path, trained={"a": a, "b": b})


def test_a_regression_comparison_equals_the_single_run_surface_on_its_plane(tmp_path):
    import torch
    import torch.nn.functional as F

    from losstrail import compare, fit, loss_surface

    torch.manual_seed(0)
    X = torch.randn(80, 2)
    y = (X[:, :1] * X[:, 1:]).sin()

    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    runs = {o: fit(net(), (X, y), loss_fn=F.mse_loss, optimizer=o, learning_rate=0.05, epochs=15, quiet=True)
            for o in ("sgd", "adam")}  # fmt: skip
    cmp = compare(trained=runs, datamodule=(X, y), loss_fn=F.mse_loss, resolution=6, out=None,
                  run_dir=tmp_path / "cmp", quiet=True)  # fmt: skip
    alone = loss_surface(runs["sgd"].model, (X, y), cmp.plane, cmp.surface.xs, cmp.surface.ys, loss_fn=F.mse_loss,
                         quiet=True)  # fmt: skip
    np.testing.assert_allclose(cmp.surface.loss, alone.loss, rtol=1e-6)
    assert cmp.surface.loss.min() > 0 and np.isnan(cmp.surface.accuracy).all()  # a real MSE, not 0.0 everywhere
    with pytest.raises(ValueError, match=r"not class logits and labels.*loss_fn=torch.nn.functional.mse_loss"):
        compare(trained=runs, datamodule=(X, y), resolution=6, out=None, run_dir=tmp_path / "c2", quiet=True)


def test_runs_that_recorded_different_parameters_are_refused(tmp_path):
    import torch

    from losstrail import compare, fit

    X, y = torch.randn(40, 2), torch.randint(0, 3, (40,))

    def net():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))

    a = fit(net(), (X, y), epochs=3, quiet=True)
    b = fit(net(), (X, y), epochs=3, params=["2.*"], quiet=True)
    with pytest.raises(ValueError, match=r"runs 'a' and 'b' recorded different parameters.*same params="):
        compare(trained={"a": a, "b": b}, datamodule=(X, y), out=None, run_dir=tmp_path / "c", quiet=True)


def test_runs_whose_names_make_the_same_folder_keep_their_own_paths(tmp_path):
    from losstrail.comparison import load_comparison

    dm = SpiralsDataModule()
    torch.manual_seed(2)
    start = MLP(2, 3, hidden_dim=8)
    names = ("a b", "a_b", "x/y", "x_y")
    runs = {}
    for k, name in enumerate(names):
        model = MLP(2, 3, hidden_dim=8)
        model.load_state_dict(start.state_dict())
        runs[name] = fit(model, dm, optimizer="sgd", learning_rate=0.05 * (k + 1), epochs=3, seed=0, quiet=True)
    made = _small(tmp_path, trained=runs, reduction_method="random", out=None)
    again = load_comparison(tmp_path / "cmp")
    assert again.names == names
    for before, after in zip(made.projections, again.projections):
        np.testing.assert_array_equal(after.xy, before.xy)
    assert len({tuple(p.xy[-1]) for p in again.projections}) == len(names)  # four different paths
