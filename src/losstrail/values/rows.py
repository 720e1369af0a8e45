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

    PCA of these rows (``losstrail.planes.pca.principal_directions``) is then the sketch's PCA of
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


# Projecting a path onto a plane reads it a block of rows at a time, as many as fit _PLANE_BLOCK_BYTES in
# float32 (at least one), and works on them _PLANE_COLUMNS columns at a time, so the work stays in the cache.
_PLANE_BLOCK_BYTES = 64 << 20
_PLANE_COLUMNS = 1 << 14
_RESIDUAL_ROWS = 16


def plane_coordinates(rows: np.ndarray, pieces, distances: bool = False):
    """Least-squares coordinates (T, 2) of the rows (T, P) of a path in a plane, and their distances (T,) from it.

    ``pieces()`` yields ``(start, origin, u, v)``: the plane's vectors over the columns from
    ``start`` on, in order and covering all P (the whole vectors at once, or tensor by tensor).
    The rows are read once, a block at a time, widened to float32 (float64 where the rows or
    the plane are) into one reused buffer of at most _PLANE_BLOCK_BYTES (one row if a row is
    larger); products are summed in float32 over _PLANE_COLUMNS columns and in float64 across
    them. ``pieces()`` is called once per block for the coordinates and once more for the
    distances. Returns ``(xy, off)``, ``off`` None unless ``distances``.

    >>> x = np.array([[1, 2, 0, 0], [0, 0, 3, 4]], np.float32)
    >>> origin, u, v = np.zeros(4, np.float32), np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    >>> xy, off = plane_coordinates(x, lambda: iter([(0, origin, u, v)]), distances=True)
    >>> xy.tolist(), off.tolist()
    ([[1.0, 2.0], [0.0, 0.0]], [0.0, 5.0])
    """
    T, P = rows.shape
    xy, off = np.zeros((T, 2)), np.zeros(T) if distances else None
    height = int(max(1, min(T, _PLANE_BLOCK_BYTES // (4 * max(P, 1)))))
    buffers: dict = {}
    gram = None
    for start in range(0, T, height):
        at = slice(start, min(start + height, T))
        dots, block_gram = np.zeros((at.stop - at.start, 2)), np.zeros((2, 2))
        for cols, origin, u, v in _plane_chunks(pieces, P):
            dtype = np.result_type(np.float32, rows.dtype, origin.dtype, u.dtype, v.dtype)
            if dtype not in buffers:
                buffers[dtype] = np.empty((height, P), dtype)
            part = buffers[dtype][: at.stop - at.start, cols]
            np.copyto(part, rows[at, cols], casting="same_kind")  # float16 rows widen here, a chunk at a time
            part -= origin.astype(dtype, copy=False)
            dots[:, 0] += part @ u.astype(dtype, copy=False)  # two matrix-vector products: faster than one (2, w)
            dots[:, 1] += part @ v.astype(dtype, copy=False)
            if gram is None:
                b64 = np.stack([u, v]).astype(np.float64)
                block_gram += b64 @ b64.T
        release_pages(rows)
        gram = block_gram if gram is None else gram
        xy[at] = np.linalg.solve(gram, dots.T).T
        if distances:
            for cols, origin, u, v in _plane_chunks(pieces, P):
                dtype = np.result_type(np.float32, rows.dtype, origin.dtype, u.dtype, v.dtype)
                for first in range(0, at.stop - at.start, _RESIDUAL_ROWS):  # a few rows: small temporaries
                    part = buffers[dtype][first : min(first + _RESIDUAL_ROWS, at.stop - at.start), cols]
                    x, y = xy[at][first : first + len(part), :, None].astype(dtype).swapaxes(0, 1)
                    part -= x * u.astype(dtype, copy=False)  # the buffer is not needed afterwards
                    part -= y * v.astype(dtype, copy=False)
                    off[at.start + first : at.start + first + len(part)] += np.einsum("ij,ij->i", part, part)
    return xy, None if off is None else np.sqrt(off)


def _plane_chunks(pieces, n_params: int):
    """``(columns, origin, u, v)`` for every run of at most _PLANE_COLUMNS columns of the plane."""
    done = 0
    for start, origin, u, v in pieces():
        if start != done:
            raise ValueError(f"the plane's pieces must cover its parameters in order; one starts at {start}")
        for first in range(0, origin.shape[0], _PLANE_COLUMNS):
            part = slice(first, first + _PLANE_COLUMNS)
            cols = slice(start + first, start + min(first + _PLANE_COLUMNS, origin.shape[0]))
            yield cols, origin[part], u[part], v[part]
        done = start + origin.shape[0]
    if done != n_params:
        raise ValueError(f"the plane spans {done} parameters but the path has {n_params}")
