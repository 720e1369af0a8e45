"""Integrity cannot be switched off by the file it protects (issue 20, class 2).

A format-2 ``run.json`` (or ``comparison.json``) whose list of files is missing, of the wrong type
or holds malformed digests is refused naming the key — otherwise every hash check would be skipped
and parts of two runs drawn. Only a record that says format 1 is read without hashes.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import losstrail
from losstrail.cli import app

runner = CliRunner()
SMALL = ["--epochs", "3", "--frames", "2", "--resolution", "6", "--hidden-dim", "8", "-q"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two finished runs of the same shapes (seeds 1 and 2), made once."""
    folder = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        out = ["--run-dir", str(folder / f"R{seed}"), "--out", str(folder / f"{seed}.gif")]
        result = runner.invoke(app, ["run", *SMALL, "--seed", str(seed), *out])
        assert result.exit_code == 0, result.output
    return folder / "R1", folder / "R2"


@pytest.fixture
def run(two_runs, tmp_path):
    """``(run_dir, other)``: a copy of run 1, and run 2 (read only)."""
    shutil.copytree(two_runs[0], tmp_path / "R")
    return tmp_path / "R", two_runs[1]


def edit(run_dir: Path, change, name: str = "run.json") -> None:
    record = json.loads((run_dir / name).read_text())
    change(record)
    (run_dir / name).write_text(json.dumps(record))


def refused(args: list[str], *words: str) -> str:
    """The command fails (status 2) with one line holding ``words``, and draws nothing."""
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(word in " ".join(result.output.split()) for word in words), (words, result.output)
    return result.output


def every_reader_refuses(run_dir: Path, tmp_path: Path, *words: str) -> None:
    from losstrail.jobs.grid import compute_surface

    refused(["render", str(run_dir), "--out", str(tmp_path / "x.gif"), "-q"], *words)
    refused(["surface", str(run_dir), "-q"], *words)
    refused(["export", str(run_dir), "--to", str(tmp_path / "x.csv")], *words)
    for call in (
        lambda: losstrail.render(run_dir, tmp_path / "x.gif", quiet=True),
        lambda: compute_surface(run_dir, quiet=True),
        lambda: losstrail.loss_landscape_anim(
            load_model=True,
            model_dirpath=run_dir,
            resolution=6,
            n_frames=2,
            output_filename=tmp_path / "x.gif",
            quiet=True,
        ),  # fmt: skip
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert all(word in " ".join(str(caught.value).split()) for word in words), (words, caught.value)
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.csv").exists()


def swap_in(run_dir: Path, other: Path, name: str) -> None:
    """Put ``other``'s ``name`` (same shapes, another run's numbers) in ``run_dir``."""
    with np.load(run_dir / name) as a, np.load(other / name) as b:
        assert all(a[k].shape == b[k].shape for k in a.files) and not np.array_equal(a[a.files[0]], b[b.files[0]])
    shutil.copyfile(other / name, run_dir / name)


def test_a_swapped_file_is_refused_and_removing_the_list_does_not_switch_the_check_off(run, tmp_path):
    run_dir, other = run
    swap_in(run_dir, other, "surface.npz")
    refused(["render", str(run_dir), "--out", str(tmp_path / "x.gif")], "surface.npz' does not belong to the run")
    edit(run_dir, lambda r: r.pop("files"))  # what made today's readers skip every check and draw both runs
    every_reader_refuses(run_dir, tmp_path, "run.json' has format_version=2 but no key 'files'", "cannot be checked")


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (["model.pt", "plane.npz"], "has 'files' of type list, not an object"),
        (None, "has 'files' of type NoneType"),
        ("sha256:" + "0" * 64, "has 'files' of type str"),
        ({"plane.npz": "md5:0123"}, "has 'files' 'plane.npz': 'md5:0123', not a SHA-256 digest"),
        ({"plane.npz": "sha256:" + "G" * 64}, "not a SHA-256 digest"),
        ({"plane.npz": 7}, "'plane.npz': 7, not a SHA-256 digest"),
    ],
    ids=["list", "null", "string", "md5", "not-hex", "number"],
)
def test_a_list_of_files_of_the_wrong_type_or_with_malformed_digests_is_refused_naming_the_key(
    run, tmp_path, files, words
):
    run_dir, other = run
    swap_in(run_dir, other, "plane.npz")  # were the list ignored, this plane would be drawn
    edit(run_dir, lambda r: r.update(files=files))
    every_reader_refuses(run_dir, tmp_path, words)


@pytest.mark.parametrize("version", [True, 1.0, "1", None])
def test_only_a_record_that_says_format_1_is_read_without_hashes(run, tmp_path, version):
    run_dir, other = run
    edit(run_dir, lambda r: (r.pop("files"), r.update(format_version=version)))
    refused(["render", str(run_dir), "--out", str(tmp_path / "x.gif")], f"format_version={version!r}")
    edit(run_dir, lambda r: r.update(format_version=1))  # an old run: read, with the checks of shapes
    result = runner.invoke(app, ["render", str(run_dir), "--out", str(tmp_path / "x.gif"), "-q"])
    assert result.exit_code == 0 and (tmp_path / "x.gif").exists(), result.output


def test_a_format_1_record_that_still_lists_files_is_checked_against_them(run, tmp_path):
    run_dir, other = run
    swap_in(run_dir, other, "plane.npz")
    edit(run_dir, lambda r: r.update(format_version=1))
    refused(["render", str(run_dir), "--out", str(tmp_path / "x.gif")], "plane.npz' does not belong to the run")


def test_a_run_written_by_write_settings_alone_lists_no_file_and_every_file_is_refused(tmp_path):
    from losstrail.store.rundir import load_run_value, read_settings, save_run_value, write_settings
    from losstrail.values.surface import Surface

    save_run_value(tmp_path, Surface(np.arange(3.0), np.arange(2.0), np.ones((2, 3)), np.zeros((2, 3))))
    write_settings(tmp_path, {"reduction_method": "pca"})
    assert read_settings(tmp_path) == {"reduction_method": "pca"}
    with pytest.raises(ValueError, match=r"surface.npz' is not part of the run recorded in run.json"):
        load_run_value(tmp_path, Surface)


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cmp")
    losstrail.compare(optimizers=["adam", "sgd"], epochs=2, resolution=5, n_frames=3, out=None,
                      run_dir=folder / "C", quiet=True)  # fmt: skip
    return folder / "C"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r.pop("files"), "comparison.json' has format_version=2 but no key 'files'"),
        (lambda r: r.update(files=[]), "has 'files' of type list"),
        (lambda r: r["files"].update({"plane.npz": "sha1:00"}), "'plane.npz': 'sha1:00', not a SHA-256 digest"),
        (lambda r: r.update(format_version=True), "format_version=True"),
    ],
    ids=["removed", "list", "digest", "bool-version"],
)
def test_a_comparison_record_cannot_switch_its_checks_off(finished_comparison, tmp_path, change, words):
    from losstrail.comparison import load_comparison

    cmp_dir = tmp_path / "C"
    shutil.copytree(finished_comparison, cmp_dir)
    path = cmp_dir / "run-sgd" / "path.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["xy"] = arrays["xy"] + 1.0  # a path that is not the one recorded
    np.savez(path, **arrays)
    edit(cmp_dir, change, "comparison.json")
    with pytest.raises(ValueError) as caught:
        load_comparison(cmp_dir)
    assert words in " ".join(str(caught.value).split())
    refused(["render", str(cmp_dir), "--out", str(tmp_path / "c.gif")], words)
    assert not (tmp_path / "c.gif").exists()
