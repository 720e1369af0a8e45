"""One run per run directory: a writer's lock, a staging folder, and a manifest written last.

- A writer (``loss_landscape_anim``, ``losstrail run``, ``losstrail surface``, ``compare``) holds
  ``.losstrail.lock``, an OS lock that even ``kill -9`` releases, holding its pid and start
  time; a second writer stops at once with a message naming the first.
- A new run is written into ``.incoming-<pid>/`` inside the directory, so the previous run
  stays whole while the new one trains and evaluates. ``commit`` then switches: it removes
  ``run.json``, moves the new files in, removes the old run's files the new one lacks, and
  writes ``run.json`` last. Killed during the switch (milliseconds), the directory has no
  ``run.json`` and says it holds no finished run.
- ``run.json`` lists every file of the run with its SHA-256; a reader checks each file it
  loads against it, so a file of another run, or one changed or damaged since, is named,
  never drawn. It is written and read here (``write_settings``, ``read_record``); the versions
  it records come from the installed packages' metadata, so neither needs torch imported.
- A run directory is untrusted input (it may have been downloaded): every name ``run.json``
  gives is a plain name inside the directory, a format-2 record must list its files with
  well-formed digests (only one that says format 1 is read without them), and every entry is
  opened as what losstrail writes there, never through a link or a FIFO (``_files.open_fd``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from losstrail._files import (
    UntrustedEntry,
    atomic_path,
    is_plain_name,
    open_fd,
    open_regular,
    pid_alive,
    real_folder,
)

LOCK_FILE = ".losstrail.lock"
STAGING_PREFIX = ".incoming-"
SETTINGS_FILE = "run.json"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before run.json listed the run's files
# Every file a run may hold besides its weights (whose name run.json records).
RUN_FILES = ("trajectory.npz", "params.bin", "plane.npz", "surface.npz", "path.npz", "decision.npz")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_RECORD_BYTES = 64 << 20  # a run.json is a few KiB; a larger one is not read into memory


class RunDirBusy(BlockingIOError):
    """Another process is writing the run directory."""


def _holder(lock: Path) -> dict:
    with contextlib.suppress(OSError, ValueError, RecursionError), open_regular(lock) as f:
        holder = json.loads(f.read(1 << 16) or b"{}")
        if isinstance(holder, dict):
            return holder
    return {}


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')}, started {when}: {holder.get('command', '?')}"


def current_writer(run_dir: str | os.PathLike) -> str | None:
    """``'pid N, started T: command'`` of the process writing ``run_dir`` now, or None."""
    holder = _holder(Path(run_dir) / LOCK_FILE)
    pid = holder.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        return _describe(holder)
    return None


@contextlib.contextmanager
def writer_lock(run_dir: str | os.PathLike, argument: str = "model_dirpath"):
    """Hold the run directory for writing; raise ``RunDirBusy`` naming the process that holds it now."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_FILE
    fd = _take(lock, run_dir, argument)
    try:
        holder = {"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _take(lock: Path, run_dir: Path, argument: str) -> int:
    try:
        import fcntl
    except ImportError:  # Windows: a file made exclusively; one left by a dead process is taken over
        return _take_by_creating(lock, run_dir, argument)
    while True:
        fd = open_fd(lock, os.O_RDWR | os.O_CREAT)  # never a link or a FIFO planted in its place
        if os.fstat(fd).st_nlink > 1:  # a hard link: writing the holder in would change a file elsewhere
            os.close(fd)
            raise UntrustedEntry(
                f"{str(lock)!r} is a hard link to another file, which the lock would overwrite; remove it"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirBusy(_busy(run_dir, argument, _holder(lock))) from None
        try:
            same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: take the new one


def _take_by_creating(lock: Path, run_dir: Path, argument: str) -> int:
    for _ in range(2):
        try:
            return open_fd(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            holder = _holder(lock)
            if isinstance(holder.get("pid"), int) and pid_alive(holder["pid"]):
                raise RunDirBusy(_busy(run_dir, argument, holder)) from None
            with contextlib.suppress(OSError):
                lock.unlink()
    raise RunDirBusy(_busy(run_dir, argument, _holder(lock)))


def _busy(run_dir: Path, argument: str, holder: dict) -> str:
    return (
        f"{argument}={str(run_dir)!r} is being written by another losstrail process ({_describe(holder)}); "
        "wait for it to finish, or pass another directory"
    )


@contextlib.contextmanager
def staging(run_dir: Path):
    """A fresh folder inside ``run_dir`` for the new run's files; removed if the block fails.

    Call with the writer's lock held: folders of earlier writers (killed) are removed first; an
    entry of that name that is not such a folder (a link, a file) is refused, as is a ``run.json``
    of the old run that names files outside the directory (before any work).
    """
    read_record(run_dir, missing_ok=True, damaged_ok=True)  # a damaged record is replaced; one leading out is not
    for old in sorted(run_dir.glob(STAGING_PREFIX + "*")):
        shutil.rmtree(real_folder(old), ignore_errors=True)  # rmtree removes links inside, never follows them
    folder = run_dir / f"{STAGING_PREFIX}{os.getpid()}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # empty after a commit


def digest(path: str | os.PathLike) -> str:
    """``'sha256:<hex>'`` of the file's bytes."""
    sha = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


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
    write_settings(folder, settings, files=files)
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
    write_settings(folder, settings, files=files)  # first, beside the new files: on a full disk nothing moves
    for name, path in written.items():
        os.replace(path, run_dir / name)
    os.replace(folder / SETTINGS_FILE, run_dir / SETTINGS_FILE)


def check_file(run_dir: Path, name: str, files: dict) -> None:
    """Raise ValueError unless ``run_dir/name`` is the file ``run.json`` lists (same bytes)."""
    path = run_dir / name
    fix = (
        f"compute it again with `losstrail surface {run_dir} --force`"
        if name == "surface.npz"
        else f"run the job again (losstrail run --run-dir {run_dir}, or load_model=False)"
    )
    if name not in files:
        raise ValueError(
            f"{str(path)!r} is not part of the run recorded in {SETTINGS_FILE} (a file left by another run); "
            f"delete it or {fix}"
        )
    if digest(path) != files[name]:
        raise ValueError(
            f"{str(path)!r} does not belong to the run recorded in {SETTINGS_FILE}: it was written by another run, "
            f"or changed or damaged since; {fix}"
        )


def require_finished(run_dir: Path, argument: str = "run_dir") -> dict:
    """The ``run.json`` record of the finished run in ``run_dir``, or an error saying why there is none."""
    record = read_record(run_dir, missing_ok=True)
    if record is not None:
        return record
    writer = current_writer(run_dir)
    if writer is not None:
        raise ValueError(
            f"{argument}={str(run_dir)!r} is being written now ({writer}) and holds no finished run yet; "
            "wait for it to finish"
        )
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    if present:
        raise ValueError(
            f"{argument}={str(run_dir)!r} holds no finished run: {SETTINGS_FILE}, written last, is missing beside "
            f"{', '.join(present)} (the run that wrote them was stopped before it finished); run it again"
        )
    raise FileNotFoundError(
        f"{argument}={str(run_dir)!r} holds no run ({SETTINGS_FILE} is missing); pass the model_dirpath of a "
        "finished run, or make one with `losstrail run`"
    )


def check_together(run_dir, trajectory, plane, surface, settings) -> None:
    """Raise ValueError naming the file when the saved trajectory, plane, surface and settings are not one run's."""
    run_dir = Path(run_dir)
    fix = "the files come from different runs; run the job again"
    if plane is not None and (plane.n_params != trajectory.n_params or plane.names != trajectory.names):
        raise ValueError(
            f"{str(run_dir / 'plane.npz')!r} spans P={plane.n_params} parameters but "
            f"{str(run_dir / 'trajectory.npz')!r} records P={trajectory.n_params}: {fix}"
        )
    if surface is not None and "resolution" in settings:
        resolution = settings["resolution"]
        nx, ny = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if surface.loss.shape != (ny, nx):
            raise ValueError(
                f"{str(run_dir / 'surface.npz')!r} is a {surface.loss.shape[1]}x{surface.loss.shape[0]} grid but "
                f"{str(run_dir / 'run.json')!r} says resolution {nx}x{ny}: {fix} "
                f"(or `losstrail surface {run_dir} --force`)"
            )


def write_settings(run_dir: str | os.PathLike, settings: dict, files: dict | None = None) -> Path:
    """Write ``settings`` with the versions that made the run to ``run_dir/run.json``.

    ``files`` maps each other file of the run to its digest (``'sha256:...'``); readers check them
    (none given: the run has no other file, and a reader refuses any).
    """
    record = {
        "format_version": FORMAT_VERSION,
        "versions": {name: _version(name) for name in ("losstrail", "torch", "lightning", "numpy")},
        "settings": settings,
        "files": dict(sorted((files or {}).items())),
    }
    path = Path(run_dir) / SETTINGS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_settings(run_dir: str | os.PathLike) -> dict:
    """The settings saved in ``run_dir/run.json`` (empty if there is none)."""
    record = read_record(run_dir, missing_ok=True)
    return {} if record is None else record["settings"]


def read_record(run_dir: str | os.PathLike, *, missing_ok: bool = False, damaged_ok: bool = False) -> dict | None:
    """The whole ``run_dir/run.json`` record (format, versions, settings, files), checked for its shape.

    Raises ValueError naming the file when it is not JSON, not an object, of another format, or
    (format 2) without a well-formed list of files; returns None for a missing file when
    ``missing_ok`` (and for a damaged one when ``damaged_ok``). A record that names a file outside
    the directory, or a ``run.json`` that is a link or a FIFO, is always refused (``UntrustedEntry``).
    """
    path = Path(run_dir) / SETTINGS_FILE
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            raise OSError(f"larger than {MAX_RECORD_BYTES >> 20} MiB")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{str(path)!r} does not exist; {str(run_dir)!r} holds no finished run") from None
    except (OSError, UnicodeDecodeError) as err:
        if damaged_ok:
            return None
        raise ValueError(f"{str(path)!r} cannot be read ({err}); run the job again to rewrite it") from None
    try:
        return _checked_record(path, text)
    except UntrustedEntry:
        raise
    except ValueError:
        if damaged_ok:
            return None
        raise


def _checked_record(path: Path, text: str) -> dict:
    """The record in ``text`` (the contents of ``path``), or ValueError saying what is wrong with it."""
    fix = "it is damaged; run the job again to rewrite it"
    try:
        record = json.loads(text)
    except RecursionError:
        raise ValueError(f"{str(path)!r} is nested too deeply to be a run record; {fix}") from None
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); {fix}") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ValueError(f"{str(path)!r} is not a losstrail run record (an object with 'settings'); {fix}")
    version = record.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMATS or not isinstance(version, int):
        raise ValueError(
            f"{path} has format_version={version!r}; this losstrail reads "
            f"{' and '.join(map(str, READABLE_FORMATS))}. Re-run the job to rewrite it"
        )
    model = record["settings"].get("model_filename", "model.pt")
    if not is_plain_name(model):
        raise UntrustedEntry(f"{str(path)!r} has model_filename={model!r}, which leaves the run directory; {_OUTSIDE}")
    if version >= 2 or "files" in record:
        check_listing(path, record)
    return record


_OUTSIDE = (
    "losstrail reads and writes only plain file names inside a run directory. The record was edited or is not "
    "losstrail's: delete it (and the run directory's files you do not trust), or pass another directory"
)


def check_listing(path: Path, record: dict, folders=()) -> None:
    """Raise ValueError unless the key ``'files'`` of ``record`` (read from ``path``) maps names to SHA-256 digests.

    Only a record that says format 1 has no list; without one every digest check would be skipped. Each
    name is a plain name in the directory, or ``folder/name`` for one of ``folders`` (a comparison's runs);
    any other is refused as leading out of it (``UntrustedEntry``).
    """
    fix = "so the files it names cannot be checked; run the job again to rewrite it"
    files = record.get("files")
    if "files" not in record:
        raise ValueError(
            f"{str(path)!r} has format_version=2 but no key 'files' (the run's files and their SHA-256), {fix}"
        )
    if not isinstance(files, dict):
        raise ValueError(
            f"{str(path)!r} has 'files' of type {type(files).__name__}, not an object of file names and SHA-256 "
            f"digests, {fix}"
        )
    for name, value in files.items():
        folder, _, rest = name.rpartition("/")
        if not (is_plain_name(name) or (folder in folders and is_plain_name(rest))):
            raise UntrustedEntry(f"{str(path)!r} lists in 'files' the name {name!r}, which leaves the directory; "
                                 f"{_OUTSIDE}")  # fmt: skip
        if not (isinstance(value, str) and DIGEST.fullmatch(value)):
            raise ValueError(
                f"{str(path)!r} has 'files' {name!r}: {value!r}, not a SHA-256 digest ('sha256:' and 64 hex digits), "
                f"{fix}"
            )


def _version(distribution: str) -> str | None:
    """The installed version of ``distribution``, read without importing it (None when it is not installed)."""
    from importlib import metadata

    if distribution == "losstrail":
        from losstrail import __version__

        return __version__
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
