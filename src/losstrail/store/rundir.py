"""One owner for a run directory: ``RunDir`` is the only code that opens files inside one.

A run directory holds:

- the weights (``model.pt``, or the ``model_filename`` run.json records): a ``state_dict``,
- ``trajectory.npz`` (and ``params.bin``), ``plane.npz``, ``surface.npz``, ``path.npz``,
  ``decision.npz``: the stage values, as plain arrays (``_values``),
- ``run.json``: the settings of the run, the versions that made it and (format 2) the SHA-256
  of every other file of the run; written last (``_record``),
- while a writer works: ``.losstrail.lock`` (``_lock``), ``.incoming-<pid>/`` (the new run,
  staged) and, for the resumable grid, ``surface.parts/`` (``_parts``).

A comparison directory (``compare``) holds the shared ``plane.npz`` and ``surface.npz``, one
folder per run (a member) with its ``trajectory.npz``, ``path.npz`` and ``model.pt``, and
``comparison.json`` (the runs, their folders and every file's SHA-256), written last.

How one is used: ``RunDir.open(path)`` reads and checks the finished run's record once; ``load``
and ``load_weights`` then check each file against it before reading it. A writer holds the lock
(``lock``), stages the new files (``stage``: a ``Stage``, so the previous run stays whole while the
new one trains and evaluates) and switches them in with ``Stage.commit`` (a whole run, or a
comparison with ``commit_comparison``) or ``Stage.update`` (some files of a finished run): the
record is removed first and written last, so a directory killed during the switch (milliseconds)
says it holds no finished run.

A run directory is untrusted input (it may have been downloaded): every name in it is a plain
name inside it, links that leave it are not followed (every entry is opened as what losstrail
writes there, ``_files.open_fd``), its file list and digests cannot be switched off by editing
``run.json``, arrays load with ``allow_pickle=False`` and weights with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from losstrail._files import UntrustedEntry, check_writable_dir, is_plain_name, open_regular, real_folder
from losstrail.store._lock import LOCK_FILE, STAGING_PREFIX, RunDirBusy, current_writer, writer_lock
from losstrail.store._parts import GridParts
from losstrail.store._record import (
    COMPARISON_FILE,
    RUN_FILES,
    SETTINGS_FILE,
    check_file,
    digest,
    read_comparison_record,
    read_record,
    write_record,
    write_settings,
)
from losstrail.store._values import (
    DAMAGED,
    VALUE_FILES,
    put_state,
    read_state,
    read_value,
    save_run_value,
    save_weights,
)
from losstrail.store.checks import check_settings
from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.results import Comparison
from losstrail.values.surface import Surface
from losstrail.values.trajectory import PARAMS_FILE

__all__ = [
    "COMPARISON_FILE",
    "COMPARISON_ROLES",
    "LOCK_FILE",
    "RUN_FILES",
    "SETTINGS_FILE",
    "STAGING_PREFIX",
    "RunDir",
    "RunDirBusy",
    "Stage",
    "commit",
    "current_writer",
    "is_plain_name",
    "load_comparison",
    "load_run_value",
    "load_weights",
    "read_record",
    "read_settings",
    "save_run_value",
    "save_weights",
    "update",
    "write_settings",
]

# The picture a job that names no output file leaves in its run directory, by format: animation.gif, ...
PICTURE_NAME = "animation"
# What a comparison's record is, for a message naming an output that would overwrite it.
COMPARISON_ROLES = {COMPARISON_FILE: f"the comparison's record ({COMPARISON_FILE})"}


class RunDir:
    """A run (or comparison) directory: its record read once, its values loaded and saved, its writes staged.

    Args:
        path: the directory.
        argument: the caller's name for it (``model_dirpath``, ``run_dir``), for messages.

    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp())
    >>> run.settings, run.has(Surface)
    ({}, False)
    """

    def __init__(self, path: str | os.PathLike, argument: str = "run_dir"):
        self.path = Path(path)
        self.argument = argument
        self._record: dict | None = None
        self._read = False  # whether ``_record`` holds what run.json says (None: there is none)
        self._locked = False

    @classmethod
    def open(cls, path: str | os.PathLike, argument: str = "run_dir") -> RunDir:
        """The finished run in ``path`` (see ``finished``)."""
        return cls(path, argument).finished()

    def finished(self) -> RunDir:
        """This directory, its finished run's ``run.json`` read and checked (settings in bounds), once for the job;
        or an error saying why there is none (being written now, stopped before it finished, never made)."""
        self._record, self._read = self._finished_record(), True
        check_settings(self.path, self.settings)
        return self

    @classmethod
    def writable(cls, path: str | os.PathLike, argument: str) -> RunDir:
        """The directory ``path`` for a writer: made if missing and proved writable, else ValueError naming it."""
        return cls(check_writable_dir(argument, path), argument)

    # --- reading ------------------------------------------------------------------------------------------

    @property
    def record(self) -> dict | None:
        """The whole ``run.json`` record (format, versions, settings, files), read once; None when there is none."""
        if not self._read:
            self._record, self._read = read_record(self.path, missing_ok=True), True
        return self._record

    @property
    def settings(self) -> dict:
        """The run's settings (empty when there is no ``run.json``)."""
        return {} if self.record is None else self.record["settings"]

    @property
    def files(self) -> dict | None:
        """``{name: 'sha256:...'}`` of every file of the run, or None (no run.json, or format 1)."""
        files = self.record.get("files") if self.record is not None else None
        return files if isinstance(files, dict) else None

    @property
    def holds_comparison(self) -> bool:
        """Whether this is a comparison directory (a link or FIFO in the record's place is named when read)."""
        return os.path.lexists(self.path / COMPARISON_FILE)

    def has(self, what) -> bool:
        """Whether an entry stands for ``what``: a value class (``Surface``) or a file name of the run."""
        return os.path.lexists(self._entry(VALUE_FILES.get(what, what)))

    def stamp(self, what) -> tuple[int, int] | None:
        """What tells a replaced file of ``what`` (as ``has``) from the same one: its inode and modification time."""
        try:
            found = os.stat(self._entry(VALUE_FILES.get(what, what)))
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns

    def load(self, cls, **linked):
        """The ``cls`` value saved here (checked against run.json); ``linked`` gives fields saved elsewhere
        (a Projection's plane)."""
        path = self.path / VALUE_FILES[cls]
        if not os.path.lexists(path):  # a link or a FIFO in its place is named when it is opened
            raise FileNotFoundError(
                f"run directory {str(self.path)!r} has no {path.name}; it holds {_listing(self.path)}"
            )
        self._check(path.name)
        return _read(path, cls, linked, self._rows)

    def projection(self, plane: Plane, trajectory) -> Projection | None:
        """The path saved with ``plane``, if it is here and matches ``trajectory``."""
        try:
            projection = self.load(Projection, plane=plane)
        except FileNotFoundError:
            return None
        same = len(projection) == len(trajectory) and (projection.step == trajectory.step).all()
        return projection if same else None

    def load_state(self, name: str | None = None) -> dict:
        """The saved ``state_dict`` (checked against run.json, read with ``weights_only``); ``name`` default the
        ``model_filename`` run.json records."""
        name = self._weights(name)
        self._check(name)
        return read_state(self.path / name)

    def load_weights(self, model, name: str | None = None) -> None:
        """Load the saved weights into ``model`` (see ``load_state``); ValueError when they do not fit it."""
        put_state(self.path / self._weights(name), self.load_state(name), model)

    def check_together(self, trajectory, plane, surface) -> None:
        """Raise ValueError naming the file when the loaded trajectory, plane, surface and settings are not one
        run's."""
        fix = "the files come from different runs; run the job again"
        if plane is not None and (plane.n_params != trajectory.n_params or plane.names != trajectory.names):
            raise ValueError(
                f"{str(self.path / VALUE_FILES[Plane])!r} spans P={plane.n_params} parameters but "
                f"{str(self.path / 'trajectory.npz')!r} records P={trajectory.n_params}: {fix}"
            )
        if surface is not None and "resolution" in self.settings:
            resolution = self.settings["resolution"]
            nx, ny = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
            if surface.loss.shape != (ny, nx):
                raise ValueError(
                    f"{str(self.path / VALUE_FILES[Surface])!r} is a {surface.loss.shape[1]}x{surface.loss.shape[0]} "
                    f"grid but {str(self.path / SETTINGS_FILE)!r} says resolution {nx}x{ny}: {fix} "
                    f"(or `losstrail surface {self.path} --force`)"
                )

    def load_comparison(self) -> Comparison:
        """The comparison saved here by ``compare`` (every file checked against ``comparison.json``)."""
        found = read_comparison_record(self.path)
        folders, files = found["folders"], found["files"]
        if files is not None:  # format 2 (or a format 1 that lists them): every file checked
            for name in ("plane.npz", "surface.npz", *(f"{f}/path.npz" for f in folders)):
                check_file(self.path, name, files)
        nothing = contextlib.nullcontext
        plane = _read(self._present(self.path, Plane), Plane, {}, nothing)
        surface = _read(self._present(self.path, Surface), Surface, {}, nothing)
        projections = tuple(
            _read(self._present(self.path / f, Projection), Projection, {"plane": plane}, nothing) for f in folders
        )
        return Comparison(found["names"], projections, found["captured"], plane, surface)

    def grid_parts(self) -> GridParts:
        """The resumable grid's finished chunks (``surface.parts``), refused when a link stands in its place."""
        return GridParts(self.path).checked()

    # --- writing ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self):
        """Hold the directory for writing; raise ``RunDirBusy`` naming the process that holds it now."""
        with writer_lock(self.path, self.argument):
            self._locked = True
            try:
                yield self
            finally:
                self._locked = False

    @contextlib.contextmanager
    def stage(self):
        """A ``Stage``: a fresh folder inside the directory for the new files; removed when the block ends.

        Call with the writer's lock held: folders of earlier writers (killed) are removed first; an
        entry of that name that is not such a folder (a link, a file) is refused, as is a ``run.json``
        of the old run that names files outside the directory (before any work).
        """
        if not self._locked:
            raise RuntimeError("stage a run directory's files with its writer's lock held: `with run.lock(): ...`")
        read_record(self.path, missing_ok=True, damaged_ok=True)  # a damaged record is replaced; one leading out not
        for old in sorted(self.path.glob(STAGING_PREFIX + "*")):
            shutil.rmtree(real_folder(old), ignore_errors=True)  # rmtree removes links inside, never follows them
        folder = self.path / f"{STAGING_PREFIX}{os.getpid()}"
        folder.mkdir()
        try:
            yield Stage(self, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # empty after a commit

    @contextlib.contextmanager
    def writing(self):
        """The writer's lock and a ``Stage`` at once: ``with run.writing() as stage: ...; stage.commit(settings)``."""
        with self.lock(), self.stage() as stage:
            yield stage

    def picture_path(self, format: str) -> Path:
        """Where a job that names no output file writes its picture (``output_to_file=False``): ``animation.<format>``
        in this directory, written under the writer's lock once the run is committed. It is no file of the run
        (``run.json`` does not list it): each job draws it again."""
        if not self._locked:
            raise RuntimeError("write a run directory's picture with its writer's lock held: `with run.lock(): ...`")
        return self._entry(f"{PICTURE_NAME}.{format}")

    def check_members(self, folders) -> None:
        """Refuse, before any work, a comparison's run folder that something else (a link) stands in place of."""
        for folder in folders:
            if os.path.lexists(self._entry(folder)):
                real_folder(self.path / folder)

    # --- private ------------------------------------------------------------------------------------------

    def _entry(self, name: str) -> Path:
        if not is_plain_name(name):
            raise UntrustedEntry(f"{name!r} is not a plain file name inside {str(self.path)!r}")
        return self.path / name

    def _weights(self, name: str | None) -> str:
        name = self.settings.get("model_filename", "model.pt") if name is None else name
        self._entry(name)
        return name

    def _check(self, name: str) -> None:
        """Raise ValueError unless ``name`` is the file run.json lists (when it lists its files)."""
        if self.files is not None:
            check_file(self.path, name, self.files)

    def _rows(self):
        """``params.bin`` opened: the rows of a trajectory kept on disk (checked against run.json)."""
        self._check(PARAMS_FILE)
        return open_regular(self.path / PARAMS_FILE)

    @staticmethod
    def _present(folder: Path, cls) -> Path:
        path = folder / VALUE_FILES[cls]
        if not os.path.lexists(path):
            raise FileNotFoundError(f"run directory {str(folder)!r} has no {path.name}; it holds {_listing(folder)}")
        return path

    def _finished_record(self) -> dict:
        """The ``run.json`` record of the finished run, or an error saying why there is none."""
        record = read_record(self.path, missing_ok=True)
        if record is not None:
            return record
        where = f"{self.argument}={str(self.path)!r}"
        writer = current_writer(self.path)
        if writer is not None:
            raise ValueError(f"{where} is being written now ({writer}) and holds no finished run yet; wait for it to "
                             "finish")  # fmt: skip
        present = [name for name in RUN_FILES if (self.path / name).exists()]
        if present:
            raise ValueError(
                f"{where} holds no finished run: {SETTINGS_FILE}, written last, is missing beside "
                f"{', '.join(present)} (the run that wrote them was stopped before it finished); run it again"
            )
        raise FileNotFoundError(
            f"{where} holds no run ({SETTINGS_FILE} is missing); pass the model_dirpath of a finished run, or make "
            "one with `losstrail run`"
        )


class Stage:
    """The new files of a run (or comparison), written into ``.incoming-<pid>/`` inside its directory while the
    old ones stay whole; nothing is switched in until ``commit``, ``commit_comparison`` or ``update``."""

    def __init__(self, run: RunDir, folder: Path):
        self.run = run
        self.folder = folder  # also where a recorder keeps a path too large for memory (its params.bin)

    def save(self, value, member: str | None = None) -> Path:
        """Stage a ``Trajectory``, ``Plane``, ``Surface``, ``Projection`` or ``DecisionMaps`` (in a comparison's
        ``member`` folder)."""
        return save_run_value(self._where(member), value)

    def save_weights(self, model, name: str = "model.pt", member: str | None = None) -> Path:
        """Stage ``model.state_dict()`` as ``name`` (in a comparison's ``member`` folder)."""
        self.run._entry(name)
        return save_weights(self._where(member) / name, model)

    def commit(self, settings: dict, *, keep: bool = False) -> None:
        """Make the directory hold the staged run, with ``settings`` in its ``run.json``, written last.

        ``keep``: the old run's files the stage does not replace stay (a run drawn again from its own
        weights and path); otherwise they are removed.
        """
        staged = {p.name for p in self.folder.iterdir()}
        names = (settings.get("model_filename", "model.pt"), *RUN_FILES)
        kept = [n for n in names if keep and n not in staged and (self.run._entry(n)).is_file()]
        commit(self.run.path, self.folder, settings, keep=kept)
        self.run._read = False  # the next reader reads the new record

    def update(self, settings: dict) -> None:
        """Replace the staged files of the finished run, with ``settings`` in its ``run.json``, written last."""
        update(self.run.path, settings, {p.name: p for p in sorted(self.folder.iterdir())})
        self.run._read = False

    def commit_comparison(self, runs: list[dict], captured) -> None:
        """Make the directory hold the staged comparison: ``comparison.json``, listing ``runs`` (each with its
        ``folder``) and every file's digest, is removed first and written last."""
        staged = []  # paths relative to the stage: the shared files, then each member's
        for entry in sorted(self.folder.iterdir()):
            staged += [f"{entry.name}/{p.name}" for p in sorted(entry.iterdir())] if entry.is_dir() else [entry.name]
        record = {
            "format_version": 2,
            "runs": runs,
            "captured": list(captured),
            "files": {name: digest(self.folder / name) for name in staged},
        }
        write_record(self.folder / COMPARISON_FILE, record)  # first, beside the new files: on a full disk nothing moves
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run.path / COMPARISON_FILE)  # until it is back, the directory holds no finished comparison
        for name in staged:
            member, _, leaf = name.rpartition("/")
            target = real_folder(self.run.path / member, create=True) if member else self.run.path
            os.replace(self.folder / name, target / leaf)  # a link left in a member's place is refused, not followed
        os.replace(self.folder / COMPARISON_FILE, self.run.path / COMPARISON_FILE)

    def _where(self, member: str | None) -> Path:
        if member is None:
            return self.folder
        self.run._entry(member)
        return real_folder(self.folder / member, create=True)


def commit(run_dir: Path, folder: Path, settings: dict, keep=()) -> None:
    """Make ``run_dir`` hold the run staged in ``folder`` (plus the ``keep`` files already in ``run_dir``).

    ``run.json``, with every file's digest, is the last file written; from removing the old
    one until then the directory holds no finished run.
    """
    files = {name: digest(run_dir / name) for name in keep}
    new = sorted(p.name for p in folder.iterdir())
    files.update({name: digest(folder / name) for name in new})
    old = read_record(run_dir, missing_ok=True, damaged_ok=True) or {}
    old_names = set(RUN_FILES) | set(old.get("files") or ()) | {old.get("settings", {}).get("model_filename")}
    old_names = {name for name in old_names if is_plain_name(name)}  # read_record refused any other; never outside
    write_settings(folder, settings, files)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run_dir / SETTINGS_FILE)
    for name in sorted(old_names - set(files)):  # the old run's files the new one does not have
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(run_dir / name)
    for name in new:
        os.replace(folder / name, run_dir / name)
    os.replace(folder / SETTINGS_FILE, run_dir / SETTINGS_FILE)


def update(run_dir: Path, settings: dict, written: dict[str, Path]) -> None:
    """Replace some files of a finished run (``{name: staged file}``, all in one folder of ``run_dir``'s disk).

    The new ``run.json`` is written beside them first and moved in last, after them.
    """
    record = read_record(run_dir)
    files = record.get("files")
    if not isinstance(files, dict):  # format 1: list the run's files now
        model = record["settings"].get("model_filename", "model.pt")
        files = {n: digest(run_dir / n) for n in (model, *RUN_FILES) if (run_dir / n).is_file()}
    files = dict(files)
    files.update({name: digest(path) for name, path in written.items()})
    folder = next(iter(written.values())).parent
    write_settings(folder, settings, files)  # first: on a full disk nothing moves
    for name, path in written.items():
        os.replace(path, run_dir / name)
    os.replace(folder / SETTINGS_FILE, run_dir / SETTINGS_FILE)


def _read(path: Path, cls, linked: dict, open_rows):
    """The ``cls`` value in ``path``; a file that cannot be read is named as damaged, never a traceback."""
    try:
        return read_value(path, cls, linked, open_rows)
    except DAMAGED as err:
        named = isinstance(err, (ValueError, FileNotFoundError)) and str(path) in str(err)
        if named or isinstance(err, UntrustedEntry):
            raise
        raise ValueError(
            f"{str(path)!r} cannot be read ({type(err).__name__}: {err}); it is damaged or truncated. "
            "Run the job that wrote it again"
        ) from None


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(names) if names else "nothing"


# One call each, for a folder that is not opened as a job's run directory (tests, a quick look).


def load_run_value(run_dir: str | os.PathLike, cls, **linked):
    """``RunDir(run_dir).load(cls, **linked)``."""
    return RunDir(run_dir).load(cls, **linked)


def load_weights(path: str | os.PathLike, model) -> None:
    """Load the weights saved at ``path`` into ``model``; checked to be the run's when its ``run.json`` lists files."""
    path = Path(path)
    RunDir(path.parent).load_weights(model, path.name)


def read_settings(run_dir: str | os.PathLike) -> dict:
    """The settings saved in ``run_dir/run.json`` (empty if there is none)."""
    return RunDir(run_dir).settings


def load_comparison(run_dir: str | os.PathLike) -> Comparison:
    """Read a comparison directory written by ``compare``; recomputes nothing (see ``RunDir.load_comparison``)."""
    return RunDir(run_dir).load_comparison()
