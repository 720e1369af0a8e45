"""The declared specs: their checks, their keys, and reuse of a saved run decided by comparing them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import losstrail
from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec


def test_each_spec_checks_itself_naming_the_callers_argument():
    with pytest.raises(ValueError, match=r"^epochs=0 must be a positive integer, e.g. epochs=300"):
        TrainSpec.of({"n_epochs": 0}, {"n_epochs": "epochs"})
    with pytest.raises(ValueError, match=r"^optimizer='adma' is not known; expected one of 'sgd'"):
        TrainSpec(optimizer="adma")
    with pytest.raises(ValueError, match=r"^reduction_method='pcaa' is not known"):
        PlaneSpec.of({"method": "pcaa"}, {"method": "reduction_method"})
    with pytest.raises(ValueError, match=r"^centre='middle' is not known"):
        PlaneSpec(centre="middle")
    with pytest.raises(ValueError, match=r"^resolution=1 must have at least 2 grid points per axis"):
        GridSpec(resolution=1)
    with pytest.raises(ValueError, match=r"^xrange=\(2, 1\) must have a finite low < high"):
        GridSpec(xrange=(2, 1))
    with pytest.raises(ValueError, match=r"^tol=0 must be a positive finite number"):
        GridSpec(tol=0)
    with pytest.raises(ValueError, match=r"^giffps=0 must be a positive number"):
        Style.of({"fps": 0}, {"fps": "giffps"})
    with pytest.raises(TypeError, match=r"^animate\(\) got unexpected keyword argument\(s\) 'colour'"):
        Style.of({"colour": "red"}, where="animate")


def test_a_spec_checks_each_value_once_where_it_is_made(monkeypatch):
    """``of`` checks what it is given and makes the value without a second check; ``replace`` and ``updated``
    check only the values they change; a value made directly checks itself."""
    seen = []
    for spec in (GridSpec, Style):
        original = spec._check

        def checking(values, names, _original=original):
            seen.append(sorted(values))
            return _original(values, names)

        monkeypatch.setattr(spec, "_check", staticmethod(checking))
    grid = GridSpec.of({"resolution": [12, 8], "subset": 5})
    assert seen == [["resolution", "subset"]] and grid.resolution == (12, 8)
    seen.clear()
    assert grid.replace(tol=0.05).tol == 0.05 and seen == [["tol"]]
    seen.clear()
    look = Style(cmap="magma")
    assert len(seen) == 1 and look.updated({}) is look and len(seen) == 1
    assert look.updated({"size": [300, 200]}).size == (300, 200) and seen[-1] == ["size"]
    with pytest.raises(ValueError, match=r"^tol=-1 must be a positive finite number"):
        GridSpec(grid="full", tol=-1).replace(grid="adaptive")  # a full grid's tol is checked once it is used
    with pytest.raises(ValueError, match=r"^--levels=1 must be from 2 to"):
        look.updated({"levels": 1}, {"levels": "--levels"})


def test_keys_are_the_names_run_json_has_always_used():
    assert TrainSpec(optimizer="sgd+momentum", n_epochs=5).key() == {
        "n_epochs": 5, "optimizer": "momentum", "learning_rate": None, "seed": None, "record_every": 1,
        "params": "trainable",
    }  # fmt: skip
    custom = TrainSpec(optimizer=lambda params, lr: None, params=["layers.0.*"]).key()
    assert (custom["optimizer"], custom["params"]) == ("custom", ["layers.0.*"])
    assert TrainSpec(params=lambda name, p: True).key()["params"] == "custom"  # a predicate is not compared
    assert PlaneSpec(method="filter", seed=2).key() == {
        "reduction_method": "filter", "plane_seed": 2, "centre": "final", "keep_biases": False,
        "negative_curvature": False, "hessian_examples": None,
    }  # fmt: skip
    key = GridSpec(resolution=(12, 8), xrange=(-1, 2), grid="full").key()
    assert key == {"resolution": [12, 8], "xrange": [-1.0, 2.0], "yrange": None, "subset": None, "bn_batches": 0,
                   "subset_seed": 0, "grid": "full"}  # fmt: skip
    assert json.loads(json.dumps(key)) == key  # what run.json stores reads back the same


def test_a_spec_is_made_by_its_own_key_and_a_full_grid_serves_an_adaptive_one():
    plane, grid = PlaneSpec(method="random", seed=1), GridSpec(resolution=10, grid="adaptive")
    assert plane.made(plane.key()) and not plane.made({**plane.key(), "plane_seed": 2})
    old = {k: v for k, v in plane.key().items() if k != "plane_seed"}
    assert plane.made({**old, "seed": 1}) and not plane.made({**old, "seed": 2})  # before: one seed for all
    subset = GridSpec(subset=20, seed=3)
    assert subset.made(subset.key()) and not subset.made({**subset.key(), "subset_seed": 4})
    assert GridSpec(seed=3).made(GridSpec(seed=4).key())  # no subset: its seed draws nothing
    assert not PlaneSpec(method="custom").made(PlaneSpec(method="custom").key())  # the vectors are not compared
    assert grid.made(grid.key()) and not grid.made({**grid.key(), "resolution": 12})
    assert grid.made(GridSpec(resolution=10, grid="full").key())  # exact everywhere is as good as adaptive
    assert not GridSpec(grid="full").made(GridSpec(grid="adaptive").key())
    old = {k: v for k, v in GridSpec(resolution=10, grid="full").key().items() if k != "grid"}
    assert grid.made(old)  # runs saved before adaptive grids were full


def _run(tmp_path, **kwargs):
    args = dict(n_epochs=5, model_dirpath=tmp_path / "run", output_filename=tmp_path / "a.gif", seed=1,
                resolution=8, n_frames=3, quiet=True)  # fmt: skip
    return losstrail.loss_landscape_anim(**{**args, **kwargs})


@pytest.fixture
def counted(monkeypatch):
    """How many times the run trained, chose a plane and evaluated a grid."""
    import losstrail.evaluation.grids
    import losstrail.planes.directions
    import losstrail.training.fit

    calls = {"fit": 0, "make_plane": 0, "loss_surface": 0}
    # where the job runner looks them up; "loss_surface" counts the grids (the runner's grid_surface)
    for module, name, key in ((losstrail.training.fit, "train_model", "fit"),
                              (losstrail.planes.directions, "make_plane", "make_plane"),
                              (losstrail.evaluation.grids, "grid_surface", "loss_surface")):  # fmt: skip
        original = getattr(module, name)

        def counting(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return calls


@pytest.mark.parametrize(
    "change",
    [
        {"centre": "initial"},
        {"reduction_method": "random"},
        {"seed": 2},
        {"resolution": 9},
        {"xrange": (-1, 1)},
        {"subset": 50},
        {"yrange": (-1, 1)},
        {"grid": "full"},
        {"tol": 0.05},
    ],  # fmt: skip
)
def test_a_changed_plane_or_grid_setting_is_not_reused_an_unchanged_one_is(tmp_path, counted, change):
    _run(tmp_path)
    assert counted == {"fit": 1, "make_plane": 1, "loss_surface": 1}
    _run(tmp_path, load_model=True)  # the same specs: the saved plane and grid
    assert counted == {"fit": 1, "make_plane": 1, "loss_surface": 1}
    _run(tmp_path, load_model=True, **change)
    plane_changed = set(change) & {"centre", "reduction_method", "seed"}
    assert counted == {"fit": 1, "make_plane": 1 + bool(plane_changed), "loss_surface": 2}
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    name, value = next(iter(change.items()))
    saved_as = {"seed": "plane_seed"}.get(name, name)  # "seed" itself stays the training's, which was loaded
    assert saved[saved_as] == (list(value) if isinstance(value, tuple) else value)
    _run(tmp_path, load_model=True, **change)  # and now that is what is saved
    assert counted["loss_surface"] == 2


def test_a_changed_training_setting_trains_again_and_a_loaded_run_keeps_its_own(tmp_path, counted):
    _run(tmp_path, n_epochs=4)
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert (settings["n_epochs"], settings["optimizer"], settings["record_every"]) == (4, "adam", 1)
    data = _run(tmp_path, n_epochs=6, optimizer="sgd", record_every=2, return_data=True)
    assert counted["fit"] == 2 and counted["loss_surface"] == 2
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert (settings["n_epochs"], settings["optimizer"], settings["record_every"]) == (6, "sgd", 2)
    assert len(data[0]) == len(np.load(tmp_path / "run" / "trajectory.npz")["step"])
    # load_model=True draws the saved training, whatever the call's training arguments: run.json says what it is
    _run(tmp_path, n_epochs=50, optimizer="adam", load_model=True)
    assert counted["fit"] == 2 and counted["loss_surface"] == 2
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert (settings["n_epochs"], settings["optimizer"], settings["record_every"]) == (6, "sgd", 2)


def _rewrite_settings(run_dir, drop):
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["settings"] = {k: v for k, v in record["settings"].items() if k not in drop}
    path.write_text(json.dumps(record))


def test_a_run_json_written_before_the_specs_still_loads_and_is_reused(tmp_path, counted):
    _run(tmp_path)
    # Written before the training spec: no learning_rate, record_every or params; the plane and grid keys as now.
    _rewrite_settings(tmp_path / "run", ("learning_rate", "record_every", "params"))
    losstrail.render(tmp_path / "run", tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000
    _run(tmp_path, load_model=True)
    assert counted == {"fit": 1, "make_plane": 1, "loss_surface": 1}  # the same plane and grid: reused
    assert json.loads((tmp_path / "run" / "run.json").read_text())["settings"]["n_epochs"] == 5


def test_a_run_json_missing_a_plane_or_grid_setting_is_drawn_but_not_reused(tmp_path, counted):
    _run(tmp_path)
    _rewrite_settings(tmp_path / "run", ("centre", "keep_biases", "negative_curvature", "hessian_examples", "grid",
                                         "tol"))  # fmt: skip
    losstrail.render(tmp_path / "run", tmp_path / "again.gif", max_frames=3)
    assert (tmp_path / "again.gif").stat().st_size > 1000
    _run(tmp_path, load_model=True)  # what the saved plane was made with is not known: made again
    assert counted == {"fit": 1, "make_plane": 2, "loss_surface": 2}
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert settings["centre"] == "final" and settings["grid"] == "adaptive"  # and now recorded
