"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    # The temporary name keeps the extension, for writers (ffmpeg) that pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
