"""Issue 20, class 9: the small ones.

``--custom-directions`` without ``--directions custom`` is an error; the command line's messages
name its flags, not the API's keywords; an infinite learning rate is refused like NaN; a
``run.json`` nested thousands deep is one line, not a ``RecursionError``.
"""

import dataclasses
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from losstrail.cli import app, cli_words

runner = CliRunner()

# API keywords that must never reach a command-line message bare (without their flag's "--").
API_KEYWORDS = ("tol", "grid", "budget", "hidden_dim", "num_hidden_layers", "batch_size", "n_epochs", "learning_rate",
                "reduction_method", "custom_directions", "zmax", "log", "ascii", "path", "to", "resolution", "subset",
                "bn_batches", "output_filename", "model_dirpath", "key", "directions")  # fmt: skip
BARE = re.compile(rf"(?<![\w-])({'|'.join(API_KEYWORDS)})=")


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert not BARE.search(lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("losstrail.training.fit.train_model", refuse)


def test_custom_directions_without_directions_custom_is_an_error(tmp_path, no_training):
    uv = tmp_path / "uv.npz"
    np.savez(uv, u=np.ones(303), v=np.arange(303.0))
    for extra in ([], ["--directions", "random"]):
        args = ["run", *extra, "--custom-directions", str(uv), "--run-dir", str(tmp_path / "ck")]
        line = _one_error_line(runner.invoke(app, args + ["--out", str(tmp_path / "x.gif")]))
        assert f"--custom-directions={str(uv)!r} is given but --directions=" in line
        assert "pass --directions='custom' to use it, or leave --custom-directions out" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uv.npz"]


def test_custom_directions_without_reduction_method_custom_is_an_error_in_python(tmp_path, no_training):
    from losstrail import loss_landscape_anim

    with pytest.raises(ValueError, match=r"custom_directions=\(u, v\) is given but reduction_method='random' does not"):
        loss_landscape_anim(reduction_method="random", custom_directions=(np.ones(303), np.ones(303)),
                            model_dirpath=tmp_path / "ck", output_filename=tmp_path / "x.gif")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--tol", "0"], "--tol=0.0 must be a positive finite number"),
        (["run", "--tol", "inf"], "--tol=inf must be a positive finite number"),
        (["run", "--grid", "half"], "--grid='half' is not known; expected one of 'full', 'adaptive'"),
        (["run", "--budget", "5 parsecs"], "--budget='5 parsecs' is not a duration"),
        (["run", "--bn-batches", "-1"], "--bn-batches=-1 must be an integer of at least 0"),
        (["run", "--hessian-examples", "0", "--directions", "hessian"], "--hessian-examples=0 must be a positive"),
        (["run", "--lr", "inf"], "--lr=inf must be a positive learning rate, e.g. --lr 0.005"),
        (["run", "--lr", "nan"], "--lr=nan must be a positive learning rate"),
        (["compare", "--lrs", "0.1,inf"], "--lrs=0.1,inf must be positive learning rates"),
        (["render", "RUN", "--out", "x.png", "--format", "gif"], "--format='gif' contradicts the extension"),
        (["surface", "RUN", "--resolution", "1"], "--resolution=1 must have at least 2 grid points per axis"),
    ],
)
def test_messages_name_the_flag_not_the_keyword(tmp_path, monkeypatch, no_training, args, expected):
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(runner.invoke(app, [a if a != "RUN" else str(tmp_path) for a in args]))
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_every_setting_a_command_takes_is_translated_to_a_flag_it_has():
    """Each field of the specs the command line fills, written as the API writes it, becomes a real flag."""
    from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec

    help_text = " ".join(
        runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
        for command in ("run", "compare", "render", "surface", "export", "import")
    )
    fields = {f.name for spec in (GridSpec, TrainSpec, Style) for f in dataclasses.fields(spec)}
    fields |= {f.name for f in dataclasses.fields(PlaneSpec)} - {"method"} | {"reduction_method"}
    fields -= {"record_every", "log_scale"}  # no flag: recorded every step; --linear is its negation
    fields |= {"hidden_dim", "num_hidden_layers", "batch_size", "budget", "zmax", "key", "to", "path"}
    for name in sorted(fields):
        flag = cli_words(f"{name}=1 is bad").split("=")[0]
        assert flag.startswith("--"), name
        assert re.search(rf"{re.escape(flag)}\b", help_text), (name, flag)


def test_an_infinite_learning_rate_is_refused_in_python(tmp_path, no_training):
    from losstrail import loss_landscape_anim
    from losstrail.values.specs import TrainSpec

    for rate in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match=r"learning_rate=(-?inf|nan) must be a positive finite number"):
            loss_landscape_anim(learning_rate=rate, model_dirpath=tmp_path / "ck", output_filename=tmp_path / "x.gif")
        with pytest.raises(ValueError, match=r"must be a positive finite number"):
            TrainSpec(learning_rate=rate)
    # A finite rate past float32's range would overflow inside the optimizer's step.
    with pytest.raises(ValueError, match=r"learning_rate=1e\+39 is more than float32 holds"):
        loss_landscape_anim(learning_rate=1e39, model_dirpath=tmp_path / "ck", output_filename=tmp_path / "x.gif")
    assert list(tmp_path.iterdir()) == []


def test_a_run_json_nested_thousands_deep_is_one_line(tmp_path):
    from losstrail import render
    from losstrail.store.rundir import current_writer

    run_dir = tmp_path / "ck"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("[" * 100000)
    (run_dir / ".losstrail.lock").write_text("{" * 100000)
    line = _one_error_line(runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "x.png")]))
    assert f"{str(run_dir / 'run.json')!r} is nested too deeply to be a run record" in line
    assert "run the job again" in line
    with pytest.raises(ValueError, match=r"run\.json' is nested too deeply"):
        render(run_dir, tmp_path / "x.png")
    assert current_writer(run_dir) is None  # a lock nested as deep names no writer
    for command in (["surface", str(run_dir)], ["export", str(run_dir), "--to", str(tmp_path / "s.csv")]):
        _one_error_line(runner.invoke(app, command))  # whatever it meets first, one line and no traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_comparison_json_nested_thousands_deep_is_one_line(tmp_path):
    cmp_dir = tmp_path / "cmp"
    cmp_dir.mkdir()
    (cmp_dir / "comparison.json").write_text('{"runs": ' + "[" * 100000)
    line = _one_error_line(runner.invoke(app, ["render", str(cmp_dir), "--out", str(tmp_path / "x.png")]))
    assert f"{str(cmp_dir / 'comparison.json')!r} is damaged" in line
