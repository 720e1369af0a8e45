"""Resume that heals (issue 20, class 7): a damaged chunk in ``surface.parts/`` is named and recomputed
alone, the other chunks reused; a damaged ``grid.json`` is named; never a ``BadZipFile`` traceback.

The healed surface is compared with one computed without interruption, and which chunks were
evaluated is counted on ``evaluate_grid``, the function each chunk goes through.
"""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import losstrail.evaluation.grids as surface_module
from losstrail.cli import app
from losstrail.jobs.grid import compute_surface

runner = CliRunner()
CHUNK = 10  # 9x7 = 63 grid points: chunks 0..6, the last of 3 points


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished run and its surface computed in one go by the job (the reference)."""
    folder = tmp_path_factory.mktemp("made")
    args = ["run", "--epochs", "5", "--resolution", "9x7", "--frames", "2", "--seed", "0", "--hidden-dim", "8", "-q"]
    result = runner.invoke(app, [*args, "--out", str(folder / "a.gif"), "--run-dir", str(folder / "R")])
    assert result.exit_code == 0, result.output
    reference = compute_surface(folder / "R", chunk_points=CHUNK, force=True, quiet=True)
    return folder / "R", reference


@pytest.fixture
def stopped(made, tmp_path, monkeypatch):
    """``(run_dir, reference, evaluated)``: a copy of the run whose surface job was stopped after 4 of 7 chunks.

    ``evaluated`` lists the first grid point of every chunk evaluated from then on.
    """
    source, reference = made
    run_dir = tmp_path / "R"
    shutil.copytree(source, run_dir)
    real, evaluated = surface_module.evaluate_grid, []

    def stops_after_four(evaluator, plane, xs, ys, *, only, **options):
        if len(evaluated) == 4:
            raise KeyboardInterrupt("killed")
        evaluated.append(int(only[0]))
        return real(evaluator, plane, xs, ys, only=only, **options)

    monkeypatch.setattr(surface_module, "evaluate_grid", stops_after_four)
    with pytest.raises(KeyboardInterrupt):
        compute_surface(run_dir, chunk_points=CHUNK, force=True, quiet=True)
    parts = run_dir / "surface.parts"
    assert sorted(p.name for p in parts.glob("chunk-*")) == [f"chunk-0000{c}.npz" for c in range(4)]
    evaluated.clear()

    def counted(*args, only, **options):
        evaluated.append(int(only[0]))
        return real(*args, only=only, **options)

    monkeypatch.setattr(surface_module, "evaluate_grid", counted)
    return run_dir, reference, evaluated


def same_surface(a, b) -> None:
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a.accuracy, b.accuracy, rtol=1e-6, atol=1e-7)


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\x00not a zip archive\xff" * 20)


def _empty(path):
    path.write_bytes(b"")


def _wrong_names(path):
    np.savez(path, loss=np.zeros(CHUNK))


def _wrong_length(path):
    np.savez(path, loss=np.zeros(CHUNK + 5), accuracy=np.zeros(CHUNK + 5))


def _not_floats(path):
    np.savez(path, loss=np.array(["x"] * CHUNK), accuracy=np.zeros(CHUNK))


def _single_array(path):
    with open(path, "wb") as f:
        np.save(f, np.zeros(CHUNK))


def _pickled(path):
    np.savez(path, loss=np.array([{"a": 1}] * CHUNK, dtype=object), accuracy=np.zeros(CHUNK))


DAMAGE = [_truncated, _garbage, _empty, _wrong_names, _wrong_length, _not_floats, _single_array, _pickled]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__.strip("_") for d in DAMAGE])
def test_a_damaged_chunk_is_named_and_recomputed_alone(stopped, damage):
    run_dir, reference, evaluated = stopped
    parts = run_dir / "surface.parts"
    damage(parts / "chunk-00001.npz")
    with pytest.warns(RuntimeWarning, match=r"chunk-00001.npz' is damaged .*computed again, the other saved chunks"):
        healed = compute_surface(run_dir, chunk_points=CHUNK, quiet=True)
    assert sorted(evaluated) == [10, 40, 50, 60]  # chunk 1 again, and 4..6 that were never computed
    same_surface(healed, reference)
    assert not parts.exists()


def test_the_reused_chunks_are_left_as_they_were(stopped, monkeypatch):
    """Between the check and the join, the kept chunks are not rewritten (same mtimes), only chunk 2 is."""
    import losstrail.jobs.grid as job

    run_dir, _, evaluated = stopped
    parts = run_dir / "surface.parts"
    _truncated(parts / "chunk-00002.npz")
    before = {c: (parts / f"chunk-0000{c}.npz").stat().st_mtime_ns for c in (0, 1, 3)}
    seen = {}
    real_join = job._join_parts

    def look_first(run_dir, *args):
        seen.update({c: (parts / f"chunk-0000{c}.npz").stat().st_mtime_ns for c in range(7)})
        return real_join(run_dir, *args)

    monkeypatch.setattr(job, "_join_parts", look_first)
    with pytest.warns(RuntimeWarning, match="chunk-00002.npz' is damaged"):
        compute_surface(run_dir, chunk_points=CHUNK, quiet=True)
    assert {c: seen[c] for c in (0, 1, 3)} == before
    assert sorted(evaluated) == [20, 40, 50, 60]


def test_the_command_line_names_the_chunk_in_one_warning_line_and_finishes(stopped):
    run_dir, reference, evaluated = stopped
    _truncated(run_dir / "surface.parts" / "chunk-00003.npz")
    result = runner.invoke(app, ["surface", str(run_dir), "--chunk-points", str(CHUNK), "-q"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "chunk-00003.npz' is damaged" in warnings[0], result.output
    assert "Traceback" not in result.output
    assert sorted(evaluated) == [30, 40, 50, 60]
    with np.load(run_dir / "surface.npz") as s:
        np.testing.assert_allclose(s["loss"], reference.loss, rtol=1e-6, atol=1e-7)
    again = runner.invoke(app, ["surface", str(run_dir), "-q"])  # finished: no traceback on a rerun either
    assert again.exit_code == 0 and "Traceback" not in again.output


@pytest.mark.parametrize(
    ("text", "reason"),
    [("{not json", "JSONDecodeError"), ("[1, 2]", "a JSON list, not an object"), ("", "JSONDecodeError")],
    ids=["not-json", "list", "empty"],
)
def test_a_damaged_grid_manifest_is_named_and_its_chunks_recomputed(stopped, text, reason):
    run_dir, reference, evaluated = stopped
    (run_dir / "surface.parts" / "grid.json").write_text(text)
    with pytest.warns(RuntimeWarning, match=rf"grid.json' is damaged \({reason}.*cannot be matched to this grid"):
        healed = compute_surface(run_dir, chunk_points=CHUNK, quiet=True)
    assert sorted(evaluated) == [0, 10, 20, 30, 40, 50, 60]  # whose chunks they were cannot be told: all again
    same_surface(healed, reference)


def test_a_manifest_of_another_grid_discards_its_chunks(stopped):
    run_dir, reference, evaluated = stopped
    manifest = run_dir / "surface.parts" / "grid.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "key": "0" * 16}))
    healed = compute_surface(run_dir, chunk_points=CHUNK, quiet=True)
    assert sorted(evaluated) == [0, 10, 20, 30, 40, 50, 60]
    same_surface(healed, reference)


def test_chunks_without_their_manifest_are_not_trusted(stopped):
    run_dir, reference, evaluated = stopped
    (run_dir / "surface.parts" / "grid.json").unlink()
    for c in range(4):  # chunks of some other grid, left without the manifest that would say so
        np.savez(run_dir / "surface.parts" / f"chunk-0000{c}.npz", loss=np.full(CHUNK, 9.0), accuracy=np.zeros(CHUNK))
    healed = compute_surface(run_dir, chunk_points=CHUNK, resolution=(9, 7), quiet=True)  # a grid is asked for
    assert sorted(evaluated) == [0, 10, 20, 30, 40, 50, 60]
    same_surface(healed, reference)


def test_an_intact_resume_still_reuses_every_chunk(stopped):
    run_dir, reference, evaluated = stopped
    healed = compute_surface(run_dir, chunk_points=CHUNK, quiet=True)
    assert sorted(evaluated) == [40, 50, 60]
    same_surface(healed, reference)
