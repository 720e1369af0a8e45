"""A run directory's writer's lock: one writer at a time, and a second one told who the first is.

(With the lock held, the writer stages its new files in ``.incoming-<pid>/``; ``RunDir.stage``.)

A writer (``loss_landscape_anim``, ``losstrail run``, ``losstrail surface``, ``compare``) holds
``.losstrail.lock``, an OS lock that even ``kill -9`` releases, holding its pid and start time; a
second writer stops at once with a message naming the first. The lock file is opened as a regular
file only, never through a link or a FIFO planted in its place (``_files.open_fd``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from losstrail._files import UntrustedEntry, open_fd, open_regular, pid_alive

LOCK_FILE = ".losstrail.lock"
STAGING_PREFIX = ".incoming-"  # the folder a writer stages its new files in, ``.incoming-<pid>``


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
