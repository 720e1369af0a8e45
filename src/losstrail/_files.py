"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name carries this process's id, so a later writer of the same file removes
    what a killed one (``kill -9``) left. An ``OSError`` in the block (full disk, read-only
    folder) comes out naming ``path``, never the temporary name.
    """
    path = Path(path)
    _sweep_dead_parts(path)
    # The temporary name keeps the extension, for writers (ffmpeg) that pick the format from it.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".part{path.suffix}", dir=path.parent)
    except OSError as err:
        raise _naming(err, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode a plain open() would
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            raise _naming(err, path) from None
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` as an OSError that names ``path`` and says what to do (same errno, same type)."""
    import errno

    fixes = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "the folder is read-only; write elsewhere",
        errno.EACCES: "you may not write there; write elsewhere or change its permissions",
        errno.EPERM: "you may not write there; write elsewhere or change its permissions",
        errno.EISDIR: "that is a folder; name a file",
    }
    if (err.strerror or "").startswith("cannot write "):
        return err  # named already, by an inner writer
    reason = err.strerror or str(err)
    fix = fixes.get(err.errno, "check the disk and the folder")
    message = f"cannot write {str(path)!r}: {reason}; {fix}"
    return OSError(err.errno, message) if err.errno else OSError(message)


def describe_os_error(err: OSError) -> str:
    """One line for an environment error: its message, with the file it names.

    >>> describe_os_error(OSError(28, "cannot write 'a.gif': No space left on device; free some space"))
    "cannot write 'a.gif': No space left on device; free some space"
    >>> describe_os_error(PermissionError(13, "Permission denied", "/x/y"))
    "Permission denied: '/x/y'"
    """
    if err.strerror is None:
        return str(err)
    return f"{err.strerror}: {err.filename!r}" if err.filename else err.strerror


def _sweep_dead_parts(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers that no longer run (killed mid-write)."""
    import glob

    pattern = f".{glob.escape(path.name)}.*.part{glob.escape(path.suffix)}"
    for part in path.parent.glob(pattern):
        pid = part.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()


def pid_alive(pid: int) -> bool:
    """True when a process with id ``pid`` runs on this machine.

    >>> pid_alive(os.getpid())
    True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_dir(argument: str, directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove a file can be written there, else raise ValueError.

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> check_writable_dir("model_dirpath", d) == Path(d)
    True
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise ValueError(
            f"{argument}={str(directory)!r} cannot be written ({err.strerror or err}); pass a folder you can write to"
        ) from None
    return directory


@contextlib.contextmanager
def removed_if_failed(*directories: str | os.PathLike | None):
    """On an exception in the block, remove the ``directories`` (and parents) it made and left empty.

    A failed run then leaves no empty run directory behind.

    >>> import tempfile; d = Path(tempfile.mkdtemp()) / "runs" / "a"
    >>> try:
    ...     with removed_if_failed(d):
    ...         d.mkdir(parents=True)
    ...         raise ValueError("bad argument")
    ... except ValueError:
    ...     pass
    >>> d.parent.exists()
    False
    """
    missing = []
    for directory in directories:
        if directory is None:
            continue
        path = Path(directory).absolute()
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
    try:
        yield
    except BaseException:
        for path in sorted(set(missing), key=lambda p: len(p.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()  # only ever an empty directory
        raise
