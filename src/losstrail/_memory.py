"""Allocator settings for loops that allocate the same large arrays over and over."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys


@contextlib.contextmanager
def reuse_freed_memory():
    """Keep freed blocks in the heap for the duration (glibc only; elsewhere a no-op).

    Every grid chunk allocates the same large activation tensors again, and every frame of an
    animation the same frame-sized arrays. By default glibc hands
    blocks of that size back to the kernel on free and maps fresh zeroed pages on the next
    allocation, and the page faults cost more than the arithmetic (measured 2.5x slower
    per call). Raising the mmap and trim thresholds for the duration keeps the pages, and
    ``malloc_trim`` returns them afterwards.

    Once set, glibc never goes back to adjusting the thresholds itself, so afterwards they
    are left where that adjustment ends for a process that frees large blocks (mmap at
    32 MiB on 64-bit, trim at twice that), not at its 128 KiB start: left there, every later
    large allocation anywhere in the process would fault in fresh pages (measured: the same
    vmap loop 4x slower after a grid).
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    m_trim_threshold, m_mmap_threshold, settled = -1, -3, 32 << 20
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(m_trim_threshold, 2 * settled)
        libc.mallopt(m_mmap_threshold, settled)
        libc.malloc_trim(0)


@functools.cache  # find_library runs ldconfig in a subprocess: 2 ms a grid, more on a busy machine
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the kernel now (glibc only; elsewhere a no-op).

    Rows of tens of megabytes are carved from the heap once glibc has raised its mmap
    threshold, and freeing them does not lower the resident size until this is called.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
