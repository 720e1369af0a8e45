"""No output on an input, no two outputs on one file: refused before any work, naming both roles.

Issue 20, class 3. Each refused command must leave every file of the run (and every input)
byte for byte as it was, checked by hash, and leave no staging folder or lock behind.
"""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from losstrail.cli import app

runner = CliRunner()


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (and the names of its folders), by relative path."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run made by the CLI (tiny: 3 epochs, a 5x5 grid)."""
    root = tmp_path_factory.mktemp("made")
    run_dir = root / "ck"
    args = ["run", "--epochs", "3", "--resolution", "5", "--frames", "2", "--grid", "full", "-q"]
    result = runner.invoke(app, args + ["--out", str(root / "first.gif"), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(finished_run, copy)
    return copy


def _refused(args, *phrases, folder: Path):
    """Run ``args``; it must exit 2 with one line holding every phrase, and leave ``folder`` unchanged."""
    before = _hashes(folder)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    assert _hashes(folder) == before
    assert not list(folder.glob(".incoming-*")) and not (folder / ".losstrail.lock").exists()
    return lines[0]


def test_run_out_onto_its_own_weights_is_refused_before_training(run_dir):
    for out in (run_dir / "model.pt", run_dir / ".." / "ck" / "model.pt", Path(f"{run_dir}/./model.pt")):
        line = _refused(
            ["run", "--epochs", "3", "-q", "--out", str(out), "--run-dir", str(run_dir)],
            f"--out={str(out)!r}",
            "the run's weights file",
            "choose another path",
            folder=run_dir,
        )
        assert "output_filename" not in line


def test_run_out_onto_any_file_or_folder_the_run_keeps(run_dir):
    for name, role in (
        ("run.json", "the run's record"),
        ("trajectory.npz", "the run's recorded path"),
        ("surface.npz", "the run's surface"),
        (".losstrail.lock", "lock"),
        (".incoming-99/x.gif", "staging folder"),
        ("surface.parts/x.gif", "surface.parts"),
    ):
        _refused(["run", "-q", "--out", str(run_dir / name), "--run-dir", str(run_dir)], role, folder=run_dir)
    _refused(["run", "-q", "--out", str(run_dir), "--run-dir", str(run_dir)], "is the run directory itself",
             folder=run_dir)  # fmt: skip


def test_a_symbolic_or_hard_link_to_a_run_file_is_seen_through(run_dir, tmp_path):
    (tmp_path / "soft.gif").symlink_to(run_dir / "plane.npz")
    os.link(run_dir / "model.pt", tmp_path / "hard.gif")
    _refused(["render", str(run_dir), "--out", str(tmp_path / "soft.gif")], "the run's plane", folder=run_dir)
    _refused(["render", str(run_dir), "--out", str(tmp_path / "hard.gif")], "the run's weights file", folder=run_dir)
    assert (tmp_path / "soft.gif").is_symlink()


def test_render_onto_its_own_run_is_refused(run_dir):
    _refused(
        ["render", str(run_dir), "--out", str(run_dir / "plane.npz"), "--format", "png"],
        f"--out={str(run_dir / 'plane.npz')!r} is the run's plane in the run directory",
        "(an input)",
        folder=run_dir,
    )


def test_export_onto_its_own_run_and_two_exports_onto_one_file(run_dir, tmp_path):
    _refused(["export", str(run_dir), "--to", str(run_dir / "surface.npz")], "--to=", "the run's surface",
             folder=run_dir)  # fmt: skip
    _refused(
        ["export", str(run_dir), "--to", str(tmp_path / "t.csv"), "--path", str(tmp_path / "." / "t.csv")],
        f"--path={str(tmp_path / 't.csv')!r} is the same file as --to={str(tmp_path / 't.csv')!r}",
        folder=tmp_path,
    )
    assert not (tmp_path / "t.csv").exists()


def test_import_onto_its_own_surface_is_refused(run_dir, tmp_path):
    from losstrail.store.formats import export

    table = export(run_dir, tmp_path / "s.npz")
    _refused(["import", str(table), "--out", str(table), "--format", "png"], "is also surface=", "an input",
             folder=tmp_path)  # fmt: skip


def test_compare_out_onto_its_own_directory_is_refused(tmp_path):
    cmp_dir = tmp_path / "cmp"
    _refused(
        ["compare", "--epochs", "2", "--run-dir", str(cmp_dir), "--out", str(cmp_dir / "comparison.json"),
         "--format", "gif"],
        "the comparison's record (comparison.json)",
        folder=tmp_path,
    )  # fmt: skip
    assert not cmp_dir.exists()


def test_run_out_onto_its_custom_directions_file_is_refused(tmp_path):
    uv = tmp_path / "uv.npz"
    np.savez(uv, u=np.ones(303), v=np.arange(303.0))
    _refused(
        ["run", "--directions", "custom", "--custom-directions", str(uv), "--out", str(uv), "--format", "gif",
         "--run-dir", str(tmp_path / "ck")],
        f"--out={str(uv)!r} is also --custom-directions={str(uv)!r}, an input",
        folder=tmp_path,
    )  # fmt: skip
    assert not (tmp_path / "ck").exists()


def test_python_api_refuses_the_same_before_any_work(run_dir, tmp_path):
    from losstrail import loss_landscape_anim, render
    from losstrail.store.formats import export

    before = _hashes(run_dir)
    with pytest.raises(ValueError, match=r"out='.*surface\.npz' is the run's surface in the run directory"):
        render(run_dir, run_dir / "surface.npz", format="png")
    with pytest.raises(ValueError, match=r"path='.*path\.npz' is the run's projected path"):
        export(run_dir, tmp_path / "s.csv", path=run_dir / "path.npz")
    with pytest.raises(ValueError, match=r"path='.*a\.npz' is the same file as to="):
        export(run_dir, tmp_path / "a.npz", path=tmp_path / "sub" / ".." / "a.npz")
    with pytest.raises(ValueError, match=r"output_filename='.*model\.pt' is the run's weights file .*\(an input\)"):
        loss_landscape_anim(model_dirpath=run_dir, output_filename=run_dir / "model.pt", load_model=True,
                            format="gif")  # fmt: skip
    with pytest.raises(ValueError, match=r"output_filename='.*w\.bin' is the run's weights file"):
        loss_landscape_anim(model_dirpath=tmp_path / "new", model_filename="w.bin",
                            output_filename=tmp_path / "new" / "w.bin", format="gif")  # fmt: skip
    assert _hashes(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_format_that_contradicts_the_extension_is_an_error(run_dir, tmp_path):
    line = _refused(["render", str(run_dir), "--out", str(tmp_path / "x.png"), "--format", "gif"],
                    "--format='gif' contradicts the extension", ".png", folder=tmp_path)  # fmt: skip
    assert "format=" not in line.replace("--format=", "")
    from losstrail import render

    with pytest.raises(ValueError, match=r"format='mp4' contradicts the extension of output '.*x\.jpg'"):
        render(run_dir, tmp_path / "x.jpg", format="mp4")
    # An extension that names no picture format does not contradict one given.
    written = render(run_dir, tmp_path / "x.still", format="png")
    assert written.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
