"""A run directory holds one consistent run or says it does not (issue 14): kills, two writers, stale files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import losstrail
from losstrail.cli import app

runner = CliRunner()
SMALL = ["--epochs", "3", "--frames", "2", "--resolution", "6", "-q"]
ARRAYS = {"trajectory.npz": "params", "plane.npz": "u", "surface.npz": "loss", "path.npz": "xy"}


def make_run(run_dir: Path, seed: int, *extra: str) -> None:
    out = run_dir.parent / f"{run_dir.name}-{seed}.gif"
    result = runner.invoke(
        app, ["run", *SMALL, "--seed", str(seed), "--run-dir", str(run_dir), "--out", str(out), *extra]
    )
    assert result.exit_code == 0, result.output


def arrays(run_dir: Path) -> dict:
    """The run's main arrays, read straight from the files (an independent reader)."""
    found = {}
    for name, key in ARRAYS.items():
        with np.load(run_dir / name, allow_pickle=False) as data:
            found[name] = data[key].copy()
    return found


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in ARRAYS)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".incoming-"))


@pytest.fixture
def old_run(tmp_path):
    run_dir = tmp_path / "R"
    make_run(run_dir, 1)
    return run_dir, arrays(run_dir)


def check_the_old_run_whole(run_dir: Path, old: dict, tmp_path: Path, resumes: bool = False) -> None:
    """render, surface and load_model all give the old run, never a mix.

    After a killed surface job (``resumes``), ``losstrail surface`` finishes that job: the same surface again.
    """
    assert same(arrays(run_dir), old)
    assert runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "again.gif"), "-q"]).exit_code == 0
    result = runner.invoke(app, ["surface", str(run_dir), "-q"])
    assert result.exit_code == 0 and ("wrote" in result.output) == resumes
    if resumes:
        np.testing.assert_allclose(arrays(run_dir)["surface.npz"], old["surface.npz"], rtol=1e-5, atol=1e-6)
        old = arrays(run_dir)
    data = losstrail.loss_landscape_anim(
        load_model=True, model_dirpath=run_dir, resolution=6, output_filename=tmp_path / "lm.gif", n_frames=2,
        seed=1, return_data=True, quiet=True,
    )  # fmt: skip
    np.testing.assert_array_equal(np.stack([p.numpy() for p in data[0]]), old["trajectory.npz"])
    assert same(arrays(run_dir), old)
    assert leftovers(run_dir) == []


# A writer started in another process, stopped (asleep) in one phase until killed.
PAUSED_WRITER = """
import sys, time
from pathlib import Path
import {module} as target
real = target.{name}
def paused(*args, **kwargs):
    {before}
    Path({marker!r}).write_text("here")
    time.sleep(600)
target.{name} = paused
sys.argv = ["losstrail", *{argv!r}]
from losstrail.cli import main
main()
"""


def start_paused(tmp_path, phase: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    module, name, before = {
        "training": (
            "losstrail.training.fit",
            "train_model",
            "real(*args, **kwargs)",
        ),  # trained and staged, then stopped
        "grid": ("losstrail.evaluation.grids", "grid_surface", "pass"),
        "chunks": ("losstrail.evaluation.grids", "evaluate_grid", "pass"),
        "rendering": ("losstrail.renderers.gif", "write_gif", "Path(args[2]).write_bytes(b'half')"),
    }[phase]
    marker = tmp_path / f"{phase}.marker"
    script = PAUSED_WRITER.format(module=module, name=name, before=before, marker=str(marker), argv=argv)
    env = {**os.environ, "PYTHONPATH": str(Path(losstrail.__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the writer never reached {phase}: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    return process, marker


@pytest.mark.parametrize("phase", ["training", "grid"])
def test_a_run_killed_mid_way_leaves_the_old_run_whole_and_a_second_writer_is_refused(old_run, tmp_path, phase):
    run_dir, old = old_run
    argv = ["run", *SMALL, "--seed", "2", "--run-dir", str(run_dir), "--out", str(tmp_path / "new.gif")]
    process, _ = start_paused(tmp_path, phase, argv)
    try:
        second = runner.invoke(app, ["run", *SMALL, "--seed", "3", "--run-dir", str(run_dir), "--out",
                                     str(tmp_path / "third.gif")])  # fmt: skip
        assert second.exit_code == 2
        assert f"is being written by another losstrail process (pid {process.pid}, started" in second.output
        assert same(arrays(run_dir), old)  # the refused writer touched nothing
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    check_the_old_run_whole(run_dir, old, tmp_path)  # the next writer also swept the killed one's staging folder


def test_a_run_killed_while_rendering_leaves_the_new_run_whole_and_no_part_file(old_run, tmp_path):
    run_dir, old = old_run
    out = tmp_path / "new.gif"
    argv = ["run", *SMALL, "--seed", "2", "--run-dir", str(run_dir), "--out", str(out)]
    process, _ = start_paused(tmp_path, "rendering", argv)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert not out.exists() and leftovers(tmp_path) == []  # the half-written temporary file went too
    new = arrays(run_dir)
    assert not np.array_equal(new["trajectory.npz"], old["trajectory.npz"])
    make_run(tmp_path / "S", 2)  # the same run, undisturbed elsewhere: the new run is whole
    assert same(arrays(tmp_path / "S"), new)
    assert runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "r.gif"), "-q"]).exit_code == 0


def test_two_surface_jobs_on_one_run_the_second_is_refused_and_a_killed_one_changes_nothing(old_run, tmp_path):
    run_dir, old = old_run
    process, _ = start_paused(tmp_path, "chunks", ["surface", str(run_dir), "--force", "--chunk-points", "9", "-q"])
    try:
        second = runner.invoke(app, ["surface", str(run_dir), "--force", "-q"])
        assert second.exit_code == 2 and f"(pid {process.pid}, started" in second.output
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    check_the_old_run_whole(run_dir, old, tmp_path, resumes=True)


def test_a_run_that_fails_after_training_leaves_the_old_run_whole(old_run, tmp_path, monkeypatch):
    run_dir, old = old_run

    def broken(*args, **kwargs):
        raise RuntimeError("the grid failed")

    monkeypatch.setattr("losstrail.evaluation.grids.grid_surface", broken)
    with pytest.raises(RuntimeError, match="the grid failed"):
        losstrail.loss_landscape_anim(n_epochs=3, seed=2, model_dirpath=run_dir, resolution=6, n_frames=2,
                                      output_filename=tmp_path / "x.gif", quiet=True)  # fmt: skip
    monkeypatch.undo()
    check_the_old_run_whole(run_dir, old, tmp_path)


def test_zero_learning_rate_is_refused_before_training_and_touches_nothing(old_run, tmp_path):
    run_dir, old = old_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = runner.invoke(
        app, ["run", *SMALL, "--lr", "0", "--run-dir", str(run_dir), "--out", str(tmp_path / "z.gif")]
    )
    assert result.exit_code == 2 and "--lr=0 must be a positive learning rate" in result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_file_of_another_run_is_named_by_every_reader(old_run, tmp_path):
    run_dir, _ = old_run
    other = tmp_path / "other"
    make_run(other, 5, "--hidden-dim", "12")
    (run_dir / "plane.npz").write_bytes((other / "plane.npz").read_bytes())  # a plane of another size
    for args in (["render", str(run_dir), "--out", str(tmp_path / "m.gif")], ["surface", str(run_dir), "--force"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "plane.npz' does not belong to the run recorded in run.json" in result.output
    with pytest.raises(ValueError, match=r"plane.npz' does not belong to the run recorded in run.json"):
        losstrail.loss_landscape_anim(load_model=True, model_dirpath=run_dir, resolution=6, n_frames=2, seed=1,
                                      output_filename=tmp_path / "lm.gif", quiet=True)  # fmt: skip
    assert not (tmp_path / "m.gif").exists()


def test_an_old_format_run_is_still_read_and_a_mismatched_plane_still_refused(old_run, tmp_path):
    run_dir, old = old_run
    record = json.loads((run_dir / "run.json").read_text())
    record["format_version"] = 1
    del record["files"]
    (run_dir / "run.json").write_text(json.dumps(record))
    assert runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "v1.gif"), "-q"]).exit_code == 0
    other = tmp_path / "other"
    make_run(other, 5, "--hidden-dim", "12")
    (run_dir / "plane.npz").write_bytes((other / "plane.npz").read_bytes())
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "m.gif")])
    assert (
        result.exit_code == 2
        and "plane.npz' spans P=" in result.output
        and "trajectory.npz' records P=" in result.output
    )


def test_a_surface_of_another_resolution_is_recomputed_for_load_model(old_run, tmp_path):
    run_dir, _ = old_run
    result = runner.invoke(app, ["surface", str(run_dir), "--force", "--resolution", "5", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["settings"]["resolution"] == 5
    assert arrays(run_dir)["surface.npz"].shape == (5, 5)
    losstrail.loss_landscape_anim(load_model=True, model_dirpath=run_dir, resolution=7, n_frames=2, seed=1,
                                  output_filename=tmp_path / "lm.gif", quiet=True)  # fmt: skip
    assert arrays(run_dir)["surface.npz"].shape == (7, 7)
    assert json.loads((run_dir / "run.json").read_text())["settings"]["resolution"] == 7


def test_a_killed_run_before_its_manifest_says_it_holds_no_finished_run(old_run, tmp_path):
    run_dir, _ = old_run
    (run_dir / "run.json").unlink()  # as a kill in the switch's few milliseconds leaves it
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "n.gif")])
    assert result.exit_code == 2 and "holds no finished run: run.json, written last, is missing" in result.output
    result = runner.invoke(app, ["surface", str(run_dir)])
    assert result.exit_code == 2 and "holds no finished run" in result.output


def test_damaged_files_are_named_with_what_to_do(old_run, tmp_path):
    run_dir, _ = old_run
    data = (run_dir / "surface.npz").read_bytes()
    (run_dir / "surface.npz").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "d.gif")])
    assert result.exit_code == 2 and "surface.npz' does not belong to the run" in result.output
    assert "losstrail surface" in result.output and "--force" in result.output
    record = json.loads((run_dir / "run.json").read_text())
    del record["files"]  # an old-format run: the damage itself is found on reading
    (run_dir / "run.json").write_text(json.dumps({**record, "format_version": 1}))
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "d.gif")])
    assert (
        result.exit_code == 2
        and "surface.npz' cannot be read" in result.output
        and "damaged or truncated" in result.output
    )
    for text, message in (("{not json", "is not valid JSON"), ("[1, 2]", "is not a losstrail run record")):
        (run_dir / "run.json").write_text(text)
        result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "d.gif")])
        assert result.exit_code == 2 and f"run.json' {message}" in result.output
    assert not (tmp_path / "d.gif").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("resolution", 1000000, r"resolution=1000000 is a grid of .* points, which needs .* TiB of memory"),
        ("resolution", 1e6, r"resolution=1000000.0 must be a number of grid points"),
        ("model_filename", "/etc/passwd", r"model_filename='/etc/passwd', which leaves the run directory"),
        ("model_recipe", {"name": "mlp", "hidden_dim": 1e9}, r"model_recipe hidden_dim=1000000000.0, outside 1..65536"),
    ],
)
def test_absurd_run_json_values_are_refused_by_the_surface_job(old_run, key, value, message):
    run_dir, _ = old_run
    record = json.loads((run_dir / "run.json").read_text())
    record["settings"][key] = value
    (run_dir / "run.json").write_text(json.dumps(record))
    result = runner.invoke(app, ["surface", str(run_dir), "--force"])
    assert result.exit_code == 2 and "run.json' has " in result.output
    assert __import__("re").search(message, " ".join(result.output.split())), result.output
    assert not (run_dir / "surface.parts").exists()


def test_seeded_runs_write_byte_identical_files(tmp_path):
    make_run(tmp_path / "A", 4)
    make_run(tmp_path / "B", 4)
    a = {p.name: p.read_bytes() for p in (tmp_path / "A").iterdir()}
    b = {p.name: p.read_bytes() for p in (tmp_path / "B").iterdir()}
    assert set(a) == {"model.pt", "run.json", *ARRAYS} and a == b


def test_a_finished_surface_is_not_reported_as_written(old_run):
    run_dir, _ = old_run
    result = runner.invoke(app, ["surface", str(run_dir), "-q"])
    assert result.exit_code == 0 and "wrote" not in result.output
    result = runner.invoke(app, ["surface", str(run_dir), "--force", "-q"])
    assert result.exit_code == 0 and f"wrote {run_dir / 'surface.npz'}" in result.output


def test_a_temporary_file_of_a_killed_writer_is_swept_by_the_next(tmp_path):
    from losstrail._files import atomic_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.gif.{int(dead.stdout)}.abc123.part.gif"
    stale.write_bytes(b"")
    with atomic_path(tmp_path / "x.gif") as tmp:
        tmp.write_bytes(b"GIF89a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gif"]
