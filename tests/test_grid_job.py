"""Resumable and distributed surfaces of a saved run."""

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from losstrail.cli import app
from losstrail.jobs.grid import compute_surface


@pytest.fixture
def run_dir(tmp_path):
    args = ["run", "--epochs", "5", "--resolution", "9x7", "--frames", "2", "--seed", "0", "--hidden-dim", "8"]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.gif"), "--run-dir", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with np.load(out / "surface.npz") as s:
        reference = s["loss"].copy()
    return out, reference


def test_the_surface_job_equals_the_run_surface(run_dir):
    path, reference = run_dir
    surface = compute_surface(path, chunk_points=10, force=True, quiet=True)
    np.testing.assert_allclose(surface.loss, reference, rtol=1e-5, atol=1e-6)
    assert not (path / "surface.parts").exists()
    again = compute_surface(path, quiet=True)  # finished: loaded, never recomputed
    np.testing.assert_array_equal(again.loss, surface.loss)


def test_a_killed_job_restarted_computes_only_the_missing_chunks(run_dir, monkeypatch):
    import losstrail.evaluation.grids as surface_module

    path, reference = run_dir
    real, seen = surface_module.evaluate_grid, []

    def crashes_after_three(evaluator, plane, xs, ys, *, only, **options):
        if len(seen) == 3:
            raise KeyboardInterrupt("killed")
        seen.append(int(only[0]))
        return real(evaluator, plane, xs, ys, only=only, **options)

    monkeypatch.setattr(surface_module, "evaluate_grid", crashes_after_three)
    with pytest.raises(KeyboardInterrupt):
        compute_surface(path, chunk_points=10, force=True, quiet=True)  # 63 points: 7 chunks
    assert sorted(p.name for p in (path / "surface.parts").glob("chunk-*")) == [f"chunk-0000{c}.npz" for c in range(3)]
    first = list(seen)
    seen.clear()
    monkeypatch.setattr(
        surface_module, "evaluate_grid", lambda *a, only, **o: (seen.append(int(only[0])), real(*a, only=only, **o))[1]
    )
    surface = compute_surface(path, chunk_points=10, quiet=True)
    assert len(seen) == 4 and not set(seen) & set(first)  # chunks 3..6 only
    np.testing.assert_allclose(surface.loss, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["auto", "inplace"])
def test_two_processes_with_gloo_equal_one(run_dir, mode):
    """Each rank evaluates its chunks as one process would: functionally, or set in place in its model."""
    path, reference = run_dir
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "losstrail", "surface", str(path), "--force", "--chunk-points", "8", "-q", "--mode", mode]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "whole working copy" not in done.stderr  # in place: module by module on each rank, no fallback
    with np.load(path / "surface.npz") as s:
        np.testing.assert_allclose(s["loss"], reference, rtol=1e-5, atol=1e-6)


def test_surface_without_a_plane_says_which_command_makes_one(tmp_path):
    result = CliRunner().invoke(app, ["surface", str(tmp_path)])
    assert result.exit_code == 2 and "has no plane.npz" in result.output and "losstrail run" in result.output


def test_the_surface_job_honours_the_runs_subset_and_writes_its_standard_error(tmp_path):
    args = ["run", "--epochs", "3", "--resolution", "6x5", "--frames", "2", "--seed", "0", "--hidden-dim", "8"]
    out = tmp_path / "sub"
    result = CliRunner().invoke(
        app, [*args, "--subset", "100", "--out", str(tmp_path / "s.gif"), "--run-dir", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    with np.load(out / "surface.npz") as s:
        loss, se = s["loss"].copy(), s["loss_se"].copy()
    surface = compute_surface(out, chunk_points=7, force=True, quiet=True)
    np.testing.assert_allclose(surface.loss, loss, rtol=1e-5, atol=1e-7)  # the same 100 examples, not all of them
    np.testing.assert_allclose(surface.loss_se, se, rtol=1e-4, atol=1e-7)


def test_surface_grid_full_upgrades_an_adaptive_run(tmp_path):
    args = ["run", "--epochs", "5", "--resolution", "30", "--frames", "2", "--seed", "0", "--hidden-dim", "8"]
    out = tmp_path / "ad"
    result = CliRunner().invoke(app, [*args, "--grid", "adaptive", "--out", str(tmp_path / "a.gif"),
                                      "--run-dir", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    from losstrail.store.rundir import load_run_value
    from losstrail.values.surface import Surface

    adaptive = load_run_value(out, Surface)
    assert adaptive.adaptive and adaptive.max_error <= 0.01
    result = CliRunner().invoke(app, ["surface", str(out), "--grid", "full", "-q"])
    assert result.exit_code == 0, result.output
    full = load_run_value(out, Surface)
    assert not full.adaptive
    np.testing.assert_allclose(full.loss[adaptive.exact], adaptive.loss[adaptive.exact], rtol=1e-6)
