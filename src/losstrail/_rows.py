"""Reading a (T, P) path a block of rows at a time, whether it is in memory or memory-mapped on disk.

NumPy only: the values, PCA and the renderers stream paths with these.
"""

from __future__ import annotations

import numpy as np

# Bytes a float64 copy of one block of path rows may take when streaming over a path.
BLOCK_BYTES = 64 << 20


def row_block(n_params: int) -> int:
    """Rows of a (T, P) path to read at once: at most 256, and few enough for BLOCK_BYTES in float64.

    >>> row_block(27), row_block(1_000_000)
    (256, 8)
    """
    return int(max(1, min(256, BLOCK_BYTES // (8 * max(n_params, 1)))))


def _mapping(array: np.ndarray):
    """The ``mmap`` behind a memory-mapped array, if it has one that takes advice (else None)."""
    mapped = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    return mapped if mapped is not None and hasattr(mapped, "madvise") else None


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array (read again from disk when needed).

    Streaming code calls this after each block so a path on disk never becomes resident.
    """
    import mmap

    mapped = _mapping(array)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def prefetch_rows(array: np.ndarray, start: int, stop: int) -> None:
    """Ask the kernel to start reading rows ``start:stop`` of a memory-mapped array (no-op otherwise)."""
    import mmap

    mapped = _mapping(array)
    if mapped is None or not hasattr(mmap, "MADV_WILLNEED"):
        return
    row = array.strides[0]
    first = array.offset + start * row
    first -= first % mmap.ALLOCATIONGRANULARITY
    length = min(array.offset + min(stop, array.shape[0]) * row, len(mapped)) - first
    if length > 0:
        mapped.madvise(mmap.MADV_WILLNEED, first, length)


class SketchedRows(np.memmap):
    """The snapshot rows of a sketched path (in memory or memory-mapped), carrying its ``PathSketch``.

    PCA of these rows (``losstrail._pca.principal_directions``) is then the sketch's PCA of
    every step. Only the array the ``Trajectory`` holds carries it: a slice or a copy is rows only.
    """

    sketch = None

    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self.sketch = None

    @classmethod
    def carrying(cls, rows: np.ndarray, sketch) -> SketchedRows:
        """``rows`` (the same memory, on disk or not) with ``sketch`` attached."""
        view = rows.view(cls)
        view.sketch = sketch
        return view
