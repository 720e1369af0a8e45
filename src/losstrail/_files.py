"""Writing files so that a crash never leaves a half-written one behind; opening the files of a folder
that came from elsewhere (a run directory) without being led out of it.

A run directory is untrusted input: a name it records is used only when it is a plain name
(``is_plain_name``), and an entry in it is opened only when it is what losstrail writes there,
a regular file (``open_regular``, ``open_fd``) or a folder (``real_folder``) — never through a
symbolic link, never a FIFO or a device, which could lead outside the directory or block the
reader forever. An entry is removed as itself (``remove_entry``): a link, never what it points to.
"""

from __future__ import annotations

import contextlib
import os
import stat
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


class UntrustedEntry(ValueError):
    """A name, or an entry of a folder, that losstrail will not use: it would lead out of the folder, or block."""


def is_plain_name(name) -> bool:
    """True for a file name that stays in its folder (no separator, not '..', not absolute).

    >>> is_plain_name("model.pt"), is_plain_name("/etc/passwd"), is_plain_name("../x.pt")
    (True, False, False)
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and Path(name).name == name
    )


def _kind(mode: int) -> str:
    """What an entry is, in words, from its ``st_mode``."""
    kinds = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
             (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"))  # fmt: skip
    return next((word for test, word in kinds if test(mode)), "regular file")


def _refused(path, kind: str, expected: str = "regular file") -> UntrustedEntry:
    where = "it could lead outside the folder" if kind == "symbolic link" else "losstrail never writes one there"
    return UntrustedEntry(
        f"{str(path)!r} is a {kind}, not a {expected} ({where}); losstrail does not follow or open it. "
        f"Remove it, or replace it with the {expected} itself"
    )


def open_fd(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """``os.open(path, flags)`` of a regular file only: never through a symbolic link, never blocking on a FIFO.

    Raises ``UntrustedEntry`` naming ``path`` when it is a link, a FIFO, a device or a folder.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow and os.path.islink(path):  # no O_NOFOLLOW (Windows): look first
        raise _refused(path, "symbolic link")
    flags |= nofollow | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as err:
        import errno

        if err.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise _refused(path, "symbolic link") from None
        if err.errno in (errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):  # a socket, a FIFO opened to write, a folder
            raise _refused(path, _kind(os.lstat(path).st_mode)) from None
        raise
    kind = _kind(os.fstat(fd).st_mode)
    if kind != "regular file":
        os.close(fd)
        raise _refused(path, kind)
    return fd


def open_regular(path: str | os.PathLike):
    """``open(path, 'rb')`` of a regular file only (see ``open_fd``); the file object's ``name`` is ``path``."""
    return open(path, "rb", opener=open_fd)


@contextlib.contextmanager
def open_npz(path: str | os.PathLike):
    """``np.load(path, allow_pickle=False)`` of a regular file that is a ``.npz`` archive (else ValueError)."""
    import numpy as np

    with open_regular(path) as f:
        data = np.load(f, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{str(path)!r} holds a single array, not a .npz archive of named arrays")
        with data:
            yield data


def real_folder(path: str | os.PathLike, *, create: bool = False) -> Path:
    """``path``, checked to be a folder itself, not a link to one (made first when ``create`` and missing).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> real_folder(d / "parts", create=True) == d / "parts"
    True
    """
    path = Path(path)
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    kind = _kind(os.lstat(path).st_mode)
    if kind != "folder":
        raise _refused(path, kind, "folder")
    return path


def remove_entry(path: str | os.PathLike) -> None:
    """Remove ``path`` itself (nothing if it is missing): a file or link unlinked, a folder with what it holds.

    A link is removed, never what it points to (``shutil.rmtree`` does not follow links inside a folder).
    """
    import shutil

    try:
        folder = stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    if folder:
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
