"""The one job runner (``losstrail.jobs.run``) behind ``loss_landscape_anim`` and ``losstrail run``: each setting
checked once, under the caller's name for it; one ``Evaluator`` per job; the subset drawn once; the seed set once;
and the stage functions tests patch are the ones the runner calls."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

import losstrail
import losstrail.api  # its import makes specs of its own: before any test counts checks
from losstrail.cli import app
from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec

runner = CliRunner()
SMALL = ["--epochs", "4", "--resolution", "6", "--frames", "3", "-q"]


def _small(tmp_path, **kwargs):
    args = dict(n_epochs=4, model_dirpath=tmp_path / "run", output_filename=tmp_path / "a.gif", seed=3, resolution=6,
                n_frames=3, quiet=True)  # fmt: skip
    return losstrail.loss_landscape_anim(**{**args, **kwargs})


def _counted_everywhere(monkeypatch, function, counts: Counter, key):
    """Count the calls of ``function`` in every losstrail module that holds it (imported at the top or looked up
    when called), and in torch when it is torch's. ``key`` names what is counted, or gives it from the call's
    arguments (None: not counted)."""

    def counting(*args, **kwargs):
        name = key(*args, **kwargs) if callable(key) else key
        if name is not None:
            counts[name] += 1
        return function(*args, **kwargs)

    holders = [m for n, m in list(sys.modules.items()) if n == "losstrail" or n.startswith("losstrail.")]
    holders += [torch] if getattr(torch, function.__name__, None) is function else []
    patched = 0
    for module in holders:
        for attribute, value in list(vars(module).items()):
            if value is function:
                monkeypatch.setattr(module, attribute, counting)
                patched += 1
    assert patched, f"{function.__name__} is held by no module"


@pytest.fixture
def checks(monkeypatch):
    """``{(spec, field): times checked}`` over every spec's field checks, and ``fit``'s own checks of the training's
    epochs and recording interval counted as the TrainSpec fields they are."""
    from losstrail.training.fit import check_positive_int

    counts = Counter()
    fields = {"epochs": "n_epochs", "record_every": "record_every"}
    _counted_everywhere(monkeypatch, check_positive_int, counts, lambda argument, *_: ("TrainSpec", fields[argument]))
    for spec in (Style, TrainSpec, PlaneSpec, GridSpec):
        original = spec._check

        def counting(values, names, _spec=spec.__name__, _original=original):
            counts.update((_spec, field) for field in values)
            return _original(values, names)

        monkeypatch.setattr(spec, "_check", staticmethod(counting))
    return counts


def _checked_twice(counts: Counter) -> list:
    return sorted(key for key, n in counts.items() if isinstance(key, tuple) and n > 1)


def _count_named_settings(monkeypatch, counts: Counter) -> None:
    """Count, as ``("choice", setting)``, each check of a name against the registry of the directions, the
    optimizers, the datasets or the models (``check_choice``, wherever it is called from); each check of the
    custom directions (``check_custom_directions``); and each check of a style against a picture (``check_for``)."""
    from losstrail import _registry
    from losstrail.planes.directions import check_custom_directions

    registries = {
        _registry.DIRECTIONS: "reduction_method",
        _registry.PATH_DIRECTIONS: "reduction_method",
        _registry.OPTIMIZERS: "optimizer",
        _registry.DATASETS: "dataset",
        _registry.MODELS: "model",
    }

    def setting(argument, value, names):
        kind = registries.get(tuple(names))
        return None if kind is None else ("choice", kind)

    _counted_everywhere(monkeypatch, _registry.check_choice, counts, setting)
    _counted_everywhere(monkeypatch, check_custom_directions, counts, ("custom", "custom_directions"))
    check_for = Style.check_for

    def counting_check_for(self, *args, **kwargs):
        counts[("Style", "check_for")] += 1
        return check_for(self, *args, **kwargs)

    monkeypatch.setattr(Style, "check_for", counting_check_for)


def test_one_job_checks_each_setting_once_from_python_and_from_the_command_line(tmp_path, monkeypatch, checks):
    import losstrail._checks
    import losstrail.store.checks

    _counted_everywhere(monkeypatch, losstrail.store.checks.check_outputs, checks, "check_outputs")
    _counted_everywhere(monkeypatch, losstrail._checks.check_custom_directions_used, checks, "custom_directions_used")
    _small(tmp_path / "py", cmap="magma", subset=200)
    assert checks[("Style", "cmap")] == checks[("Style", "fps")] == checks[("GridSpec", "subset")] == 1
    assert checks[("TrainSpec", "optimizer")] == checks[("PlaneSpec", "method")] == 1
    assert _checked_twice(checks) == [] and checks["check_outputs"] == checks["custom_directions_used"] == 1
    checks.clear()
    out = tmp_path / "cli.gif"
    result = runner.invoke(app, ["run", *SMALL, "--cmap", "magma", "--subset", "200", "--out", str(out), "--run-dir",
                                 str(tmp_path / "ck")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert checks[("Style", "cmap")] == checks[("TrainSpec", "n_epochs")] == checks[("GridSpec", "resolution")] == 1
    assert _checked_twice(checks) == [] and checks["check_outputs"] == checks["custom_directions_used"] == 1


@pytest.mark.filterwarnings("ignore:the 'custom' plane captures only")
@pytest.mark.parametrize("method", ["pca", "custom"])
def test_one_job_checks_each_named_setting_once_from_python_and_from_the_command_line(tmp_path, monkeypatch, method):
    """The plane's method, the optimizer, the custom directions, the dataset and the model are each checked once,
    and the style against its picture once: the stages take them as the specs (and the face) checked them."""
    import numpy as np

    counts = Counter()
    _count_named_settings(monkeypatch, counts)
    u, v = np.random.default_rng(0).normal(size=(2, 303))  # the default MLP on the spirals: P=303
    custom = {"reduction_method": "custom", "custom_directions": (u, v)} if method == "custom" else {}
    _small(tmp_path / "py", optimizer="sgd", **custom)
    once = {("choice", "reduction_method"): 1, ("choice", "optimizer"): 1, ("Style", "check_for"): 1}
    once.update({("custom", "custom_directions"): 1} if custom else {})
    assert counts == once
    counts.clear()
    np.savez(tmp_path / "uv.npz", u=u, v=v)
    flags = ["--directions", "custom", "--custom-directions", str(tmp_path / "uv.npz")] if custom else []
    result = runner.invoke(app, ["run", *SMALL, "--dataset", "spirals", "--model", "mlp", "--optimizer", "sgd", *flags,
                                 "--out", str(tmp_path / "c.gif"), "--run-dir", str(tmp_path / "ck")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert counts == {**once, ("choice", "dataset"): 1, ("choice", "model"): 1}


def test_compare_from_the_command_line_takes_its_style_as_the_flags_built_it(tmp_path, monkeypatch, checks):
    """``losstrail compare`` builds its ``Style`` once, by the flags' names, and hands it to ``compare`` whole: no
    field is checked again, and the style is checked against the comparison's picture once."""
    _count_named_settings(monkeypatch, checks)
    result = runner.invoke(app, ["compare", "--optimizers", "adam,sgd", "--epochs", "2", "--resolution", "5", "-q",
                                 "--frames", "3", "--fps", "5", "--cmap", "magma", "--layout", "grid",
                                 "--out", str(tmp_path / "c.gif"), "--run-dir", str(tmp_path / "C")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert checks[("Style", "cmap")] == checks[("Style", "fps")] == checks[("Style", "layout")] == 1
    assert [key for key in _checked_twice(checks) if key[0] == "Style"] == [] and checks[("Style", "check_for")] == 1


def test_compare_takes_a_style_and_the_look_keywords_set_away_from_their_defaults(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("losstrail.comparison.draw_comparison", lambda *args, **kwargs: drawn.append(args))
    look = Style(cmap="magma", layout="grid", fps=5)
    losstrail.compare(optimizers=["adam", "sgd"], epochs=2, resolution=5, out=tmp_path / "c.gif", quiet=True,
                      run_dir=tmp_path / "C", style=look, fps=15, title="T")  # fmt: skip
    ((_, _, style, kind),) = drawn
    assert (style.cmap, style.layout, style.fps, style.title, kind) == ("magma", "grid", 5, "T", "gif")
    with pytest.raises(ValueError, match=r"^path_color='blue' does not apply to a comparison's animation"):
        losstrail.compare(optimizers=["adam", "sgd"], epochs=2, out=tmp_path / "d.gif", run_dir=tmp_path / "D",
                          style=Style(path_color="blue"))  # fmt: skip
    assert not (tmp_path / "D").exists()


def test_without_an_output_file_the_picture_goes_where_the_run_directory_says(tmp_path, monkeypatch):
    """``output_to_file=False``: ``RunDir`` names the file the animation is written to (``animation.gif`` in the run
    directory, drawn again by each job, not one of the run's files)."""
    from losstrail.store.rundir import RunDir, read_record

    asked = []
    picture_path = RunDir.picture_path

    def spy(self, format):
        asked.append(format)
        return picture_path(self, format)

    monkeypatch.setattr(RunDir, "picture_path", spy)
    animation = _small(tmp_path, output_to_file=False)
    assert asked == ["gif"] and animation.path == tmp_path / "run" / "animation.gif" and animation.path.is_file()
    assert "animation.gif" not in read_record(tmp_path / "run")["files"] and not (tmp_path / "a.gif").exists()


def test_render_checks_its_style_against_the_picture_once(tmp_path, monkeypatch):
    counts = Counter()
    _small(tmp_path)
    _count_named_settings(monkeypatch, counts)
    losstrail.render(tmp_path / "run", tmp_path / "again.png", cmap="magma", quiet=True)
    assert counts[("Style", "check_for")] == 1 and (tmp_path / "again.png").is_file()
    with pytest.raises(ValueError, match=r"^decision regions are drawn beside the 2-D contour .* view='3d'"):
        losstrail.render(tmp_path / "run", tmp_path / "3d.png", view="3d", decision=True, quiet=True)
    assert not (tmp_path / "3d.png").exists()


def test_animate_takes_a_style_as_it_is(tmp_path, checks):
    from losstrail.renderers import animate
    from losstrail.store.rundir import load_run_value
    from losstrail.values.plane import Plane
    from losstrail.values.projection import Projection
    from losstrail.values.surface import Surface

    _small(tmp_path)
    look = Style.of({"cmap": "magma", "max_frames": 3})
    checks.clear()
    run = tmp_path / "run"
    projection = load_run_value(run, Projection, plane=load_run_value(run, Plane))
    animate(projection, load_run_value(run, Surface), tmp_path / "b.gif", style=look, quiet=True)
    assert not checks  # checked when made, not again


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs=0 must be a positive integer, e.g. --epochs=300"),
        (["--fps", "0"], "--fps=0.0 must be a positive number of frames per second, e.g. --fps=15"),
        (["--directions", "pcaa"], "--directions='pcaa' is not known; expected one of 'pca'"),
        (["--xrange", "2,1"], "--xrange=(2.0, 1.0) must have a finite low < high, e.g. --xrange=(-1, 2)"),
        (["--cmap", "nocmap"], "--cmap='nocmap' is not a matplotlib colormap"),
        (["--resolution", "1"], "--resolution=1 must have at least 2 grid points per axis"),
    ],
)
def test_the_specs_name_the_flag_themselves(tmp_path, monkeypatch, args, message):
    """The command line builds its specs with its flags' names: no translation of the API's words needed."""
    monkeypatch.setattr("losstrail.cli.cli_words", lambda text: text)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"giffps": 0}, r"^giffps=0 must be a positive number of frames per second"),
        ({"n_frames": 1}, r"^n_frames=1 must be an integer of at least 2, e.g. n_frames=300"),
        ({"reduction_method": "pcaa"}, r"^reduction_method='pcaa' is not known"),
        ({"xrange": (2, 1)}, r"^xrange=\(2, 1\) must have a finite low < high"),
        ({"every": 0}, r"^every=0 must be a positive number of steps"),
    ],
)
def test_errors_from_python_name_the_keyword(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _small(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def _count_evaluators(monkeypatch) -> Counter:
    from losstrail.evaluation.evaluator import Evaluator

    counts = Counter()
    original = Evaluator.__init__

    def counting(self, *args, **kwargs):
        counts["Evaluator"] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "__init__", counting)
    return counts


@pytest.mark.parametrize("options", [{}, {"subset": 150, "decision": True, "grid": "full"}])
def test_one_job_sets_up_one_evaluator(tmp_path, monkeypatch, options):
    """The path's true and slice losses, the grid and the decision regions all run on the job's one evaluator."""
    counts = _count_evaluators(monkeypatch)
    data = _small(tmp_path, return_data=True, **options)
    assert counts["Evaluator"] == 1
    assert data.true_loss is not None and (tmp_path / "run" / "surface.npz").is_file()
    counts.clear()
    _small(tmp_path, load_model=True, **options)  # the path, the plane and the grid saved: nothing to evaluate
    assert counts["Evaluator"] == (1 if options.get("decision") else 0)


def test_the_subset_is_drawn_once_and_the_seed_set_once(tmp_path, monkeypatch):
    from losstrail.evaluation.batches import take_subset
    from losstrail.training.optim import seed_all

    counts = Counter()
    _counted_everywhere(monkeypatch, take_subset, counts, "take_subset")
    _counted_everywhere(monkeypatch, seed_all, counts, "seed_all")
    _counted_everywhere(monkeypatch, torch.manual_seed, counts, "manual_seed")
    out = tmp_path / "s.gif"
    result = runner.invoke(
        app, ["run", *SMALL, "--subset", "300", "--out", str(out), "--run-dir", str(tmp_path / "ck")]
    )
    assert result.exit_code == 0, result.output
    assert counts == {"take_subset": 1, "seed_all": 1, "manual_seed": 1}
    counts.clear()
    _small(tmp_path, subset=300)
    assert counts == {"take_subset": 1, "seed_all": 1, "manual_seed": 1}


def test_the_seed_set_once_still_gives_the_same_run_from_python_and_the_command_line(tmp_path):
    """The model is built on a copy of the seeded random state, so training starts from the seed itself: the
    command line (its own builder of the MLP) and Python (the default MLP) train the same path."""
    import numpy as np

    out = tmp_path / "c.gif"
    result = runner.invoke(app, ["run", *SMALL, "--seed", "3", "--out", str(out), "--run-dir", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    _small(tmp_path)
    with np.load(tmp_path / "ck" / "trajectory.npz") as a, np.load(tmp_path / "run" / "trajectory.npz") as b:
        np.testing.assert_array_equal(a["params"], b["params"])
    assert out.read_bytes() == (tmp_path / "a.gif").read_bytes()


def test_a_budget_leaves_training_on_the_seed(tmp_path):
    """Timing the grid for budget= runs the model on the data before training; from a shuffling DataLoader that
    draws from torch's generator. Training still starts from the seed: the same path with a budget as without."""
    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 2, generator=g)
    y = (X[:, 0] * X[:, 1] > 0).long()

    def path(name, **budget):
        torch.manual_seed(1)  # the same initial weights for both
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        loader = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True)
        losstrail.loss_landscape_anim(model=model, datamodule=loader, n_epochs=2, seed=0, resolution=5,
                                      model_dirpath=tmp_path / name, output_filename=tmp_path / f"{name}.png",
                                      quiet=True, **budget)  # fmt: skip
        with np.load(tmp_path / name / "trajectory.npz") as saved:
            return saved["params"]

    np.testing.assert_array_equal(path("plain"), path("timed", budget="1h"))


@pytest.mark.parametrize(
    "target",
    [
        "losstrail.training.fit.train_model",
        "losstrail.planes.directions.make_plane",
        "losstrail.evaluation.grids.grid_surface",
    ],
)
def test_the_stage_functions_tests_patch_are_the_ones_the_job_calls(tmp_path, monkeypatch, target):
    """Tests forbid retraining (or a new plane or grid) by patching these names: a job must call them there."""

    def called(*args, **kwargs):
        raise RuntimeError(f"called {target}")

    monkeypatch.setattr(target, called)
    with pytest.raises(RuntimeError, match=f"called {target}"):
        _small(tmp_path)
    result = runner.invoke(app, ["run", *SMALL, "--out", str(tmp_path / "c.gif"), "--run-dir", str(tmp_path / "c")])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == f"called {target}"
