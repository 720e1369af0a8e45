"""A run directory is untrusted input (issue 20, class 1): nothing read, written or deleted outside it.

Each test plants one kind of entry an attacker (or a careless unzip) could leave in a run or
comparison directory — a name leading out of it in ``run.json``/``comparison.json``, a symbolic
link to a file or a folder outside, a lock that is a link, a FIFO in place of a file — and checks,
by hashing a canary folder beside it, that nothing outside changed, and that every command that
meets the entry refuses with one message naming the key or the file.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import losstrail
from losstrail.cli import app

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links, FIFOs and SIGALRM as POSIX has them")
runner = CliRunner()
SMALL = ["--epochs", "3", "--frames", "2", "--resolution", "6", "--seed", "1", "-q"]  # the API's default MLP


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run directory, made once; each test works on its own copy."""
    folder = tmp_path_factory.mktemp("source")
    result = runner.invoke(app, ["run", *SMALL, "--run-dir", str(folder / "R"), "--out", str(folder / "r.gif")])
    assert result.exit_code == 0, result.output
    return folder / "R"


@pytest.fixture
def run(finished_run, tmp_path):
    """``(run_dir, canary)``: a copy of the finished run and a folder beside it that nothing may touch."""
    run_dir = tmp_path / "R"
    shutil.copytree(finished_run, run_dir)
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "victim.pt").write_bytes(b"someone else's weights")
    (canary / "notes.txt").write_text("keep me")
    (canary / "sub" / "deep.bin").write_bytes(os.urandom(64))
    return run_dir, canary


def fingerprint(folder: Path) -> dict:
    """Every entry under ``folder`` (links not followed): its kind and, for a file, the SHA-256 of its bytes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                found[str(path.relative_to(folder))] = ("link", os.readlink(path))
            elif path.is_dir():
                found[str(path.relative_to(folder))] = ("folder",)
            else:
                found[str(path.relative_to(folder))] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def edit_record(run_dir: Path, change, name: str = "run.json") -> None:
    record = json.loads((run_dir / name).read_text())
    change(record)
    (run_dir / name).write_text(json.dumps(record))


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail (rather than wait forever) when the block blocks, e.g. opening a FIFO nobody writes."""

    def stop(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli_refuses(args: list[str], *words: str) -> None:
    """The command exits with status 2 and one line that holds every one of ``words``."""
    with no_hang():
        result = runner.invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1, result.output
    assert all(word in text for word in words), (words, result.output)


def api_refuses(call, *words: str) -> None:
    with no_hang(), pytest.raises((ValueError, OSError)) as caught:
        call()
    text = " ".join(str(caught.value).split())
    assert all(word in text for word in words), (words, text)


def commands(run_dir: Path, tmp_path: Path) -> dict:
    """Every way into a run directory, as ``{label: (kind, what)}``: CLI arguments or an API call."""
    from losstrail.jobs.grid import compute_surface

    def anim(**kwargs):
        return lambda: losstrail.loss_landscape_anim(
            model_dirpath=run_dir, n_epochs=3, resolution=6, n_frames=2, seed=1,
            output_filename=tmp_path / "anim.gif", quiet=True, **kwargs,
        )  # fmt: skip

    return {
        "cli render": ("cli", ["render", str(run_dir), "--out", str(tmp_path / "r.gif"), "-q"]),
        "cli surface": ("cli", ["surface", str(run_dir), "-q"]),
        "cli surface --force": ("cli", ["surface", str(run_dir), "--force", "-q"]),
        "cli run into it": ("cli", ["run", *SMALL, "--run-dir", str(run_dir), "--out", str(tmp_path / "n.gif")]),
        "render": ("api", lambda: losstrail.render(run_dir, tmp_path / "r.gif", quiet=True)),
        "compute_surface": ("api", lambda: compute_surface(run_dir, quiet=True)),
        "load_model=True": ("api", anim(load_model=True)),
        "new run into it": ("api", anim(load_model=False)),
    }


def check_all_refuse(run_dir, tmp_path, canary, labels, *words) -> None:
    before = fingerprint(canary)
    for label, (kind, what) in commands(run_dir, tmp_path).items():
        if label not in labels:
            continue
        (cli_refuses if kind == "cli" else api_refuses)(what, *words)
        assert fingerprint(canary) == before, f"{label} changed the folder outside the run directory"
    for picture in ("r.gif", "n.gif", "anim.gif"):
        assert not (tmp_path / picture).exists()


EVERY_COMMAND = (
    "cli render",
    "cli surface",
    "cli surface --force",
    "cli run into it",
    "render",
    "compute_surface",
    "load_model=True",
    "new run into it",
)


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
@pytest.mark.parametrize("key", ["model_filename", "files"])
def test_a_name_leading_out_in_run_json_is_refused_by_every_command_and_nothing_outside_is_deleted(
    run, tmp_path, key, absolute
):
    run_dir, canary = run
    victim = canary / "victim.pt"
    name = str(victim) if absolute else "../canary/victim.pt"
    if key == "model_filename":
        edit_record(run_dir, lambda r: r["settings"].update(model_filename=name))
        words = ("run.json' has model_filename=", repr(name), "leaves the run directory")
    else:  # listed with its true digest: integrity alone does not stop it
        edit_record(run_dir, lambda r: r["files"].update({name: sha256(victim)}))
        words = ("run.json' lists in 'files' the name", repr(name), "leaves the directory")
    check_all_refuse(run_dir, tmp_path, canary, EVERY_COMMAND, *words)
    assert victim.read_bytes() == b"someone else's weights"


def test_the_switch_never_deletes_a_name_outside_even_if_the_record_changes_under_it(run, monkeypatch):
    """``commit`` itself keeps to plain names (a second line of defence behind the check before any work)."""
    import losstrail.store.rundir as rundir
    from losstrail.store.rundir import commit, read_record

    run_dir, canary = run
    before = fingerprint(canary)
    record = read_record(run_dir)
    staged = run_dir / ".incoming-test"
    staged.mkdir()
    (staged / "path.npz").write_bytes((run_dir / "path.npz").read_bytes())
    record["files"]["../canary/victim.pt"] = sha256(canary / "victim.pt")  # past the reader's check
    monkeypatch.setattr(rundir, "read_record", lambda *a, **k: record)
    commit(run_dir, staged, record["settings"], keep=["model.pt", "trajectory.npz", "plane.npz", "surface.npz"])
    assert fingerprint(canary) == before
    assert json.loads((run_dir / "run.json").read_text())["files"].keys() == {
        "model.pt",
        "trajectory.npz",
        "plane.npz",
        "surface.npz",
        "path.npz",
    }


# Which commands read each file of a run (render never reads the weights; a saved surface is reused).
READERS = {
    "run.json": EVERY_COMMAND,
    "trajectory.npz": ("cli render", "cli surface --force", "render", "load_model=True"),
    "plane.npz": ("cli render", "cli surface --force", "render", "load_model=True"),
    "surface.npz": ("cli render", "cli surface", "render", "compute_surface"),
    "model.pt": ("cli surface --force", "load_model=True"),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_file_that_is_a_link_out_of_the_run_is_never_followed(run, tmp_path, name):
    run_dir, canary = run
    target = canary / name  # the same bytes: its digest in run.json still matches
    shutil.move(run_dir / name, target)
    (run_dir / name).symlink_to(target)
    check_all_refuse(run_dir, tmp_path, canary, READERS[name], f"{name}' is a symbolic link", "Remove it")
    assert (run_dir / name).is_symlink()  # refused, not removed: the user decides


def test_a_resume_folder_that_is_a_link_out_of_the_run_is_never_written_through(run, tmp_path):
    run_dir, canary = run
    (run_dir / "surface.parts").symlink_to(canary, target_is_directory=True)
    labels = ("cli surface", "cli surface --force", "compute_surface")
    check_all_refuse(run_dir, tmp_path, canary, labels, "surface.parts' is a symbolic link", "not a folder")
    assert not (canary / "grid.json").exists()


def test_a_staging_folder_that_is_a_link_out_of_the_run_is_refused_not_emptied(run, tmp_path):
    run_dir, canary = run
    (run_dir / ".incoming-1").symlink_to(canary, target_is_directory=True)
    labels = ("cli run into it", "new run into it", "load_model=True")
    check_all_refuse(run_dir, tmp_path, canary, labels, ".incoming-1' is a symbolic link")


def test_a_lock_that_is_a_link_out_of_the_run_is_never_written(run, tmp_path):
    run_dir, canary = run
    (run_dir / ".losstrail.lock").symlink_to(canary / "victim.pt")
    labels = ("cli surface --force", "cli run into it", "compute_surface", "new run into it", "load_model=True")
    check_all_refuse(run_dir, tmp_path, canary, labels, ".losstrail.lock' is a symbolic link")
    assert (canary / "victim.pt").read_bytes() == b"someone else's weights"


def test_a_lock_that_is_a_hard_link_to_a_file_outside_is_never_written(run, tmp_path):
    run_dir, canary = run
    os.link(canary / "victim.pt", run_dir / ".losstrail.lock")
    labels = ("cli surface --force", "cli run into it", "compute_surface", "new run into it")
    check_all_refuse(run_dir, tmp_path, canary, labels, ".losstrail.lock' is a hard link to another file")
    assert (canary / "victim.pt").read_bytes() == b"someone else's weights"


FIFO_READERS = {**READERS, ".losstrail.lock": ("cli surface --force", "compute_surface", "new run into it")}


@pytest.mark.parametrize("name", sorted(FIFO_READERS))
def test_a_fifo_in_place_of_a_file_is_named_and_never_waited_on(run, tmp_path, name):
    run_dir, canary = run
    (run_dir / name).unlink(missing_ok=True)
    os.mkfifo(run_dir / name)
    check_all_refuse(run_dir, tmp_path, canary, FIFO_READERS[name], f"{name}' is a FIFO (named pipe)")


def test_a_fifo_lock_beside_an_unfinished_run_does_not_hang_the_reader(run, tmp_path):
    run_dir, _ = run
    (run_dir / "run.json").unlink()
    os.mkfifo(run_dir / ".losstrail.lock")
    cli_refuses(["render", str(run_dir), "--out", str(tmp_path / "x.gif")], "holds no finished run")


def test_a_fifo_in_place_of_the_resume_manifest_is_named(run, tmp_path):
    run_dir, canary = run
    (run_dir / "surface.parts").mkdir()
    os.mkfifo(run_dir / "surface.parts" / "grid.json")
    labels = ("cli surface", "compute_surface")
    check_all_refuse(run_dir, tmp_path, canary, labels, "grid.json' is a FIFO")


def test_a_data_folder_named_by_run_json_is_never_downloaded_into(run, tmp_path):
    from losstrail.jobs.grid import compute_surface

    run_dir, canary = run
    data_dir = canary / "mnist"
    recipe = {"name": "mnist", "batch_size": 16, "n_examples": 100, "data_dir": str(data_dir), "download": True}
    edit_record(run_dir, lambda r: r["settings"].update(data_recipe=recipe))
    before = fingerprint(canary)
    api_refuses(lambda: compute_surface(run_dir, force=True, quiet=True), "MNIST file", str(data_dir))
    assert fingerprint(canary) == before and not data_dir.exists()


# -- a comparison directory ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cmp-source")
    losstrail.compare(optimizers=["adam", "sgd"], epochs=2, resolution=5, n_frames=3, out=None,
                      run_dir=folder / "C", quiet=True)  # fmt: skip
    return folder / "C"


@pytest.fixture
def comparison(finished_comparison, tmp_path):
    cmp_dir = tmp_path / "C"
    shutil.copytree(finished_comparison, cmp_dir)
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "victim.pt").write_bytes(b"someone else's weights")
    return cmp_dir, canary


def comparison_refuses(cmp_dir: Path, tmp_path: Path, canary: Path, *words: str) -> None:
    from losstrail.comparison import load_comparison

    before = fingerprint(canary)
    api_refuses(lambda: load_comparison(cmp_dir), *words)
    api_refuses(lambda: losstrail.render(cmp_dir, tmp_path / "c.gif", quiet=True), *words)
    cli_refuses(["render", str(cmp_dir), "--out", str(tmp_path / "c.gif")], *words)
    assert fingerprint(canary) == before and not (tmp_path / "c.gif").exists()


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_a_comparison_folder_leading_out_is_refused(comparison, tmp_path, absolute):
    cmp_dir, canary = comparison
    shutil.copytree(cmp_dir / "run-adam", canary / "run-adam")
    name = str(canary / "run-adam") if absolute else "../canary/run-adam"
    edit_record(cmp_dir, lambda r: r["runs"][0].update(folder=name), "comparison.json")
    comparison_refuses(cmp_dir, tmp_path, canary, "comparison.json' gives runs the folders", repr(name), "leave")


def test_a_comparison_file_name_leading_out_is_refused(comparison, tmp_path):
    cmp_dir, canary = comparison
    name = "../canary/victim.pt"
    edit_record(cmp_dir, lambda r: r["files"].update({name: sha256(canary / "victim.pt")}), "comparison.json")
    comparison_refuses(cmp_dir, tmp_path, canary, "lists in 'files' the name", repr(name), "leaves the directory")


@pytest.mark.parametrize("name", ["comparison.json", "plane.npz", "surface.npz", "run-adam", "run-sgd/path.npz"])
def test_a_link_in_a_comparison_is_never_followed(comparison, tmp_path, name):
    cmp_dir, canary = comparison
    target = canary / Path(name).name
    shutil.move(cmp_dir / name, target)
    (cmp_dir / name).symlink_to(target, target_is_directory=target.is_dir())
    comparison_refuses(cmp_dir, tmp_path, canary, f"{Path(name).name}' is a symbolic link")


@pytest.mark.parametrize("name", ["comparison.json", "plane.npz", "run-sgd/path.npz"])
def test_a_fifo_in_a_comparison_is_named_and_never_waited_on(comparison, tmp_path, name):
    cmp_dir, canary = comparison
    (cmp_dir / name).unlink()
    os.mkfifo(cmp_dir / name)
    comparison_refuses(cmp_dir, tmp_path, canary, f"{Path(name).name}' is a FIFO (named pipe)")


def test_compare_into_a_folder_whose_run_folder_is_a_link_refuses_before_training(tmp_path, monkeypatch):
    import losstrail.training.fit as train

    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("keep me")
    cmp_dir = tmp_path / "C"
    cmp_dir.mkdir()
    (cmp_dir / "run-adam").symlink_to(canary, target_is_directory=True)
    monkeypatch.setattr(train, "train_model", lambda *a, **k: pytest.fail("trained before checking the folder"))
    before = fingerprint(canary)
    api_refuses(
        lambda: losstrail.compare(
            optimizers=["adam", "sgd"], epochs=2, resolution=5, out=None, run_dir=cmp_dir, quiet=True
        ),  # fmt: skip
        "run-adam' is a symbolic link",
    )
    assert fingerprint(canary) == before
