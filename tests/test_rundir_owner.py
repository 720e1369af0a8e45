"""``store/`` is the only code that opens files in a run directory (``RunDir``); the rest of the package asks it.

Outside ``store/`` (and ``_files.py``, the helpers it is built on) no module
- names a file of a run directory (a path to one is built only where the files are read and written), or joins
  a run directory and a name written out (``Path(run_dir) / f"animation.{kind}"``: ``RunDir`` names its entries),
- imports the helpers that open the entries of an untrusted folder, or the store's private parts,
- opens, loads, saves, replaces or removes a path built from a run directory (``run_dir``, ``model_dirpath``,
  a staging folder).
A message may name a file (inside an f-string); code may not build a path to one.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import losstrail
from losstrail.store.rundir import RunDir, RunDirBusy, load_comparison, load_run_value, save_run_value
from losstrail.values.plane import Plane
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory
from probes import declare_huge

SOURCE = Path(losstrail.__file__).resolve().parent  # the package folder

# The files of a run or comparison directory, written out here as the contract says (the weights' name is the
# caller's, model_filename, default the reference's "model.pt").
RUN_DIR_FILES = {
    "run.json", "comparison.json", "trajectory.npz", "params.bin", "plane.npz", "surface.npz", "path.npz",
    "decision.npz", ".losstrail.lock", "surface.parts", "grid.json",
}  # fmt: skip
STAGING_PREFIX = ".incoming-"
# A name that may stand outside store/, and why.
ALLOWED_NAMES = {
    # The recorder keeps a path too large for memory in the folder it is given (a Stage's, in a run); the
    # Trajectory value records the file's name, and RunDir adopts the file as it is.
    ("losstrail/values/trajectory.py", "params.bin"),
}
# The helpers that open the entries of an untrusted folder (links refused, FIFOs never blocked on).
UNTRUSTED_HELPERS = {"open_regular", "open_npz", "open_fd", "real_folder", "remove_entry"}
# What opens, reads, writes, moves or removes a file.
OPENERS = {
    "open", "load", "save", "savez", "savez_compressed", "memmap", "fromfile", "loadtxt", "dump",
    "read_text", "read_bytes", "write_text", "write_bytes", "atomic_path", "unlink", "remove", "replace",
    "rename", "rmtree", "mkdir", "rmdir", "File",
}  # fmt: skip
RUN_DIR_WORDS = re.compile(r"\b(run_dir|model_dirpath|incoming|staging|stage)\b")


def _callee(call: ast.Call) -> str | None:
    """The name a call calls (``np.load`` -> ``'load'``); None for the store's own ``RunDir.open``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return None if ast.unparse(func.value) == "RunDir" else func.attr
    return func.id if isinstance(func, ast.Name) else None


def _in_messages(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside f-strings: what a message says, not a path the code opens."""
    return {id(inner) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for inner in ast.walk(node)}


def run_dir_access(package: Path) -> list[str]:
    """``file:line what`` for each place outside ``store/`` and ``_files.py`` that reaches into a run directory."""
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent).as_posix()
        if where.startswith(f"{package.name}/store/") or where == f"{package.name}/_files.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        messages = _in_messages(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in messages:
                named = node.value in RUN_DIR_FILES or node.value.startswith(STAGING_PREFIX)
                if named and (where, node.value) not in ALLOWED_NAMES:
                    found.append(f"{where}:{node.lineno} names {node.value!r}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                taken = sorted({a.name for a in node.names} & UNTRUSTED_HELPERS)
                if node.module.endswith("._files") and taken:
                    found.append(f"{where}:{node.lineno} imports {', '.join(taken)}")
                if re.search(r"\.store\._", node.module):
                    found.append(f"{where}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and id(node) not in messages:
                named = isinstance(node.right, (ast.Constant, ast.JoinedStr))  # a file's name written out
                if named and RUN_DIR_WORDS.search(ast.unparse(node.left)):
                    found.append(f"{where}:{node.lineno} builds {ast.unparse(node)[:100]}")
            elif isinstance(node, ast.Call) and _callee(node) in OPENERS:
                arguments = [*node.args, *(k.value for k in node.keywords)]
                if any(RUN_DIR_WORDS.search(ast.unparse(a)) for a in arguments):
                    found.append(f"{where}:{node.lineno} calls {ast.unparse(node)[:100]}")
    return sorted(found, key=lambda line: (line.split(":")[0], int(line.split(":")[1].split()[0])))


def test_only_the_store_opens_files_in_a_run_directory():
    found = run_dir_access(SOURCE)
    assert not found, "outside store/, code that reaches into a run directory (use RunDir):\n" + "\n".join(found)


def test_the_scan_sees_each_way_into_a_run_directory(tmp_path):
    """The check above can fail: a made-up module reaching in each way is named, line by line, and a message
    naming a file is not."""
    package = tmp_path / "losstrail"
    (package / "store").mkdir(parents=True)
    (package / "store" / "rundir.py").write_text("import numpy as np\nx = np.load(run_dir / 'plane.npz')\n")
    (package / "face.py").write_text(
        "import numpy as np\n"
        "from losstrail._files import atomic_path, open_regular\n"
        "from losstrail.store._values import read_value\n"
        "plane = np.load(run_dir / name)\n"
        "with open(Path(model_dirpath) / name) as f:\n"
        "    pass\n"
        "path = folder / 'surface.npz'\n"
        "print(f\"wrote {run_dir / 'surface.npz'}\")\n"
        "temporary = '.incoming-1'\n"
        "run = RunDir.open(run_dir)\n"
        "out = Path(run_dir) / f'animation.{kind}'\n"
    )
    assert run_dir_access(package) == [
        "losstrail/face.py:2 imports open_regular",
        "losstrail/face.py:3 imports losstrail.store._values",
        "losstrail/face.py:4 calls np.load(run_dir / name)",
        "losstrail/face.py:5 calls open(Path(model_dirpath) / name)",
        "losstrail/face.py:7 names 'surface.npz'",
        "losstrail/face.py:9 names '.incoming-1'",
        "losstrail/face.py:11 builds Path(run_dir) / f'animation.{kind}'",
    ]


def test_the_store_itself_is_where_the_files_are_opened():
    """Scanned as if it were any other folder, ``store/`` is full of what the rule keeps there."""
    inside = run_dir_access(SOURCE / "store")  # the folder alone, as a package of its own: not skipped
    assert any("names 'run.json'" in line for line in inside), inside
    assert any("imports open_regular" in line for line in inside), inside


# --- RunDir: the record read once, every file checked against it -----------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two small finished runs of the same model (seeds 1 and 2), made by the one-call API."""
    folder = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        losstrail.loss_landscape_anim(
            n_epochs=3, model_dirpath=folder / f"R{seed}", output_filename=folder / f"R{seed}.png", resolution=5,
            seed=seed, quiet=True,
        )  # fmt: skip
    return folder


@pytest.fixture
def run_dir(two_runs, tmp_path):
    shutil.copytree(two_runs / "R1", tmp_path / "R")
    return tmp_path / "R"


def test_a_job_reads_run_json_once_and_checks_every_file_it_loads_against_it(run_dir, monkeypatch, tiny_model):
    import losstrail.store.rundir as store

    reads = []
    real = store.read_record
    monkeypatch.setattr(store, "read_record", lambda *a, **k: reads.append(a) or real(*a, **k))
    run = RunDir.open(run_dir)
    trajectory, plane, surface = run.load(Trajectory), run.load(Plane), run.load(Surface)
    run.check_together(trajectory, plane, surface)
    assert run.projection(plane, trajectory) is not None
    assert sorted(run.load_state()) == sorted(losstrail.MLP(2, 3, hidden_dim=50).state_dict())
    assert len(reads) == 1
    (run_dir / "plane.npz").write_bytes((run_dir / "surface.npz").read_bytes())  # changed after it was opened
    with pytest.raises(ValueError, match=r"plane.npz' does not belong to the run recorded in run.json"):
        run.load(Plane)


def test_exporting_the_directions_checks_the_weights_against_run_json(run_dir, two_runs, tmp_path):
    """The parameter shapes come from the run's own weights: another run's, of the same shapes, are refused."""
    shutil.copyfile(two_runs / "R2" / "model.pt", run_dir / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt' does not belong to the run recorded in run.json"):
        losstrail.export(run_dir, tmp_path / "s.h5", directions=tmp_path / "d.h5")
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "d.h5").exists()


def test_files_are_staged_only_under_the_writers_lock(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RuntimeError, match=r"with its writer's lock held"), run.stage():
        pass
    with pytest.raises(RuntimeError, match=r"picture with its writer's lock held"):
        run.picture_path("gif")
    with run.writing() as stage:
        assert stage.folder.parent == tmp_path and stage.folder.name.startswith(".incoming-")
        busy = pytest.raises(RunDirBusy, match=r"run_dir=.* is being written by another losstrail process")
        with busy, RunDir(tmp_path).lock():  # a second writer: this process holds it already, through another handle
            pass
        assert run.picture_path("mp4") == tmp_path / "animation.mp4"  # written under the lock, after the commit
    assert list(tmp_path.iterdir()) == []


def test_a_comparison_stopped_while_it_is_saved_leaves_the_old_one_whole(tmp_path, monkeypatch):
    import losstrail.store.rundir as store

    small = {"optimizers": ["adam", "sgd"], "epochs": 2, "resolution": 5, "out": None, "quiet": True}
    losstrail.compare(run_dir=tmp_path / "C", **small)
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted((tmp_path / "C").rglob("*"))
              if p.is_file()}  # fmt: skip
    saved = []

    def full_disk(path, model):
        saved.append(path)
        if len(saved) == 2:
            raise OSError(28, f"cannot write {str(path)!r}: No space left on device; free some space")
        return real(path, model)

    real = store.save_weights
    monkeypatch.setattr(store, "save_weights", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        losstrail.compare(run_dir=tmp_path / "C", seed=1, **small)
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in sorted((tmp_path / "C").rglob("*"))
             if p.is_file()}  # fmt: skip
    assert after == before  # nothing of the stopped comparison: no staging folder, no lock, the old files as they were
    assert load_comparison(tmp_path / "C").names == ("adam", "sgd")


def test_a_value_file_declaring_more_than_it_holds_is_refused_before_anything_is_allocated(tmp_path):
    """A run directory is untrusted: an array header's shape is checked against the bytes behind it."""
    declare_huge(save_run_value(tmp_path, Surface(np.arange(3.0), np.arange(2.0), np.ones((2, 3)), np.zeros((2, 3)))))
    with pytest.raises(ValueError, match=r"surface.npz' declares 8,000,000,000,000 bytes for loss.npy .* damaged"):
        load_run_value(tmp_path, Surface)
