"""A run directory's record, ``run.json`` (a comparison's, ``comparison.json``): read, checked and written here.

The record lists every file of the run with its SHA-256; a reader checks each file it loads
against it (``check_file``), so a file of another run, or one changed or damaged since, is named,
never drawn. A record is untrusted input: every name it gives is a plain name inside the
directory, a format-2 record must list its files with well-formed digests (only one that says
format 1 is read without them), and it is opened as a regular file, never through a link or a
FIFO. The versions it records come from the installed packages' metadata, so neither reading nor
writing one imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from losstrail._files import UntrustedEntry, atomic_path, is_plain_name, open_regular, real_folder

SETTINGS_FILE = "run.json"
COMPARISON_FILE = "comparison.json"  # a comparison directory's record, written last by ``compare``
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before run.json listed the run's files
# Every file a run may hold besides its weights (whose name run.json records).
RUN_FILES = ("trajectory.npz", "params.bin", "plane.npz", "surface.npz", "path.npz", "decision.npz")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_RECORD_BYTES = 64 << 20  # a run.json is a few KiB; a larger one is not read into memory

_OUTSIDE = (
    "losstrail reads and writes only plain file names inside a run directory. The record was edited or is not "
    "losstrail's: delete it (and the run directory's files you do not trust), or pass another directory"
)


def digest(path: str | os.PathLike) -> str:
    """``'sha256:<hex>'`` of the file's bytes."""
    sha = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


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


def run_record(settings: dict, files: dict | None = None) -> dict:
    """The record of a run: ``settings``, ``files`` (name -> ``'sha256:...'``) and the versions that made it."""
    return {
        "format_version": FORMAT_VERSION,
        "versions": {name: _version(name) for name in ("losstrail", "torch", "lightning", "numpy")},
        "settings": settings,
        "files": dict(sorted((files or {}).items())),
    }


def write_record(path: Path, record: dict) -> Path:
    """Write ``record`` as JSON to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def write_settings(run_dir: str | os.PathLike, settings: dict, files: dict | None = None) -> Path:
    """Write ``settings`` with the versions that made the run to ``run_dir/run.json``.

    ``files`` maps each other file of the run to its digest (``'sha256:...'``); readers check them
    (none given: the run has no other file, and a reader refuses any).
    """
    return write_record(Path(run_dir) / SETTINGS_FILE, run_record(settings, files))


def _read_bounded(path: Path) -> bytes:
    """The bytes of the record at ``path`` (a regular file), refused past ``MAX_RECORD_BYTES``."""
    with open_regular(path) as f:
        raw = f.read(MAX_RECORD_BYTES + 1)
    if len(raw) > MAX_RECORD_BYTES:
        raise OSError(f"larger than {MAX_RECORD_BYTES >> 20} MiB")
    return raw


def read_record(run_dir: str | os.PathLike, *, missing_ok: bool = False, damaged_ok: bool = False) -> dict | None:
    """The whole ``run_dir/run.json`` record (format, versions, settings, files), checked for its shape.

    Raises ValueError naming the file when it is not JSON, not an object, of another format, or
    (format 2) without a well-formed list of files; returns None for a missing file when
    ``missing_ok`` (and for a damaged one when ``damaged_ok``). A record that names a file outside
    the directory, or a ``run.json`` that is a link or a FIFO, is always refused (``UntrustedEntry``).
    """
    path = Path(run_dir) / SETTINGS_FILE
    try:
        text = _read_bounded(path).decode("utf-8")
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


def read_comparison_record(run_dir: Path) -> dict:
    """The ``comparison.json`` record of ``run_dir``, checked: ``{'names', 'folders', 'captured', 'record'}``.

    Untrusted like a run's: (format 2) it must list every file with its SHA-256, and each run's folder is a
    plain name and a folder itself (no link).
    """
    path = run_dir / COMPARISON_FILE
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{str(run_dir)!r} has no {COMPARISON_FILE}; pass a directory written by compare")
    fix = "run compare again to rewrite it"
    with open_regular(path) as f:
        raw = f.read(MAX_RECORD_BYTES + 1)
    try:
        if len(raw) > MAX_RECORD_BYTES:
            raise ValueError(f"larger than {MAX_RECORD_BYTES >> 20} MiB")
        record = json.loads(raw)
        folders = [r["folder"] for r in record["runs"]]
        names = tuple(str(r["name"]) for r in record["runs"])
        captured = tuple(float(c) for c in record["captured"])
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise ValueError(f"{str(path)!r} is damaged ({type(err).__name__}: {err}); {fix}") from None
    version = record.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in (1, 2):
        raise ValueError(f"{str(path)!r} has format_version={version!r}; this losstrail reads 1 and 2; {fix}")
    if not all(is_plain_name(f) for f in folders):
        raise UntrustedEntry(
            f"{str(path)!r} gives runs the folders {', '.join(map(repr, folders))}, names that leave the directory; "
            "losstrail reads only plain names inside it. Delete it, or pass another directory"
        )
    if len(set(folders)) != len(folders):
        raise ValueError(f"{str(path)!r} gives two runs one folder ({', '.join(map(repr, folders))}); {fix}")
    for folder in folders:
        real_folder(run_dir / folder)
    if version == 2 or "files" in record:  # every file checked against its digest; only format 1 has no list
        check_listing(path, record, folders)
    return {"names": names, "folders": folders, "captured": captured, "files": record.get("files")}


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
