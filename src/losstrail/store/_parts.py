"""The resumable grid's finished chunks, in ``surface.parts/`` inside a run directory.

Each finished chunk is a ``chunk-NNNNN.npz`` of ``(rows,)`` float arrays; ``grid.json`` says which
grid they belong to. When it is missing or damaged, or names another grid, the chunks are
discarded; a chunk that cannot be read or holds arrays of the wrong names or lengths is named in a
warning and dropped, to be computed again alone. ``surface.parts`` (and each file in it) is used
only as a folder (files) of its own, never through a link (``_files.real_folder``, ``open_regular``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from losstrail._files import UntrustedEntry, atomic_path, open_npz, open_regular, real_folder, remove_entry
from losstrail.store._values import DAMAGED

PARTS = "surface.parts"
MANIFEST = "grid.json"
# What reading a damaged chunk raises: a chunk is small, so running out of memory reading one says it is damaged too.
_DAMAGED = (*DAMAGED, MemoryError)


class GridParts:
    """The folder of a grid job's finished chunks (``run_dir/surface.parts``)."""

    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / PARTS

    def checked(self) -> GridParts:
        """This folder, refused when something other than a folder (a link) stands in its place."""
        if os.path.lexists(self.folder):
            real_folder(self.folder)  # never a link that would take the chunks (and their removal) elsewhere
        return self

    def unfinished(self) -> bool:
        """Whether a job that was stopped left chunks to go on with (its manifest is there)."""
        return os.path.lexists(self.folder / MANIFEST)

    def start(self, key: str, n_chunks: int, chunk_points: int, force: bool) -> None:
        """The folder, emptied when it holds another grid's chunks (or ``force``), with its manifest.

        A manifest that is missing beside chunks, or damaged, cannot tell whose chunks they are: they are discarded.
        """
        manifest = self.folder / MANIFEST
        expected = {"key": key, "chunks": n_chunks, "chunk_points": chunk_points}
        stale = force
        if not stale and os.path.lexists(manifest):
            stale = _read_manifest(manifest) != expected
        elif not stale and os.path.lexists(self.folder):
            stale = bool(os.listdir(self.folder))  # chunks without the manifest that says which grid they are of
        if stale:
            remove_entry(self.folder)
        real_folder(self.folder, create=True)
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps(expected))

    def path(self, c: int) -> Path:
        return self.folder / f"chunk-{c:05d}.npz"

    def has(self, c: int) -> bool:
        return os.path.lexists(self.path(c))

    def write(self, c: int, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path(c)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def drop_damaged(self, rows: list[int], keys: set[str]) -> None:
        """Remove each saved chunk that cannot be read, with a warning naming it: it is computed again, alone."""
        for c, n in enumerate(rows):
            path = self.path(c)
            if not os.path.lexists(path):
                continue
            try:
                _read_chunk(path, n, keys)
            except UntrustedEntry:
                raise
            except _DAMAGED as err:
                warnings.warn(
                    f"{str(path)!r} is damaged ({_reason(err)}); this chunk is computed again, the other saved "
                    "chunks are kept",
                    RuntimeWarning,
                    stacklevel=4,
                )
                remove_entry(path)

    def read_all(self, rows: list[int], keys: set[str]) -> list[dict[str, np.ndarray]]:
        """Every chunk's arrays, to join the surface: one damaged since the check is named, never a traceback."""
        chunks = []
        for c, n in enumerate(rows):
            try:
                chunks.append(_read_chunk(self.path(c), n, keys))
            except UntrustedEntry:
                raise
            except _DAMAGED as err:
                raise ValueError(
                    f"{str(self.path(c))!r} was damaged while the job ran ({_reason(err)}); run the same command "
                    "again: it computes that chunk again"
                ) from None
        return chunks

    def remove(self) -> None:
        remove_entry(self.folder)


def _read_manifest(manifest: Path) -> dict | None:
    """The manifest of the saved chunks, or None (with a warning naming it) when it is damaged."""
    try:
        with open_regular(manifest) as f:
            found = json.loads(f.read(1 << 16))
        if isinstance(found, dict):
            return found
        reason = f"a JSON {type(found).__name__}, not an object"
    except UntrustedEntry:
        raise
    except (OSError, ValueError, RecursionError) as err:
        reason = f"{type(err).__name__}: {err}"
    warnings.warn(
        f"{str(manifest)!r} is damaged ({reason}); the saved chunks beside it cannot be matched to this grid "
        "and are computed again",
        RuntimeWarning,
        stacklevel=5,
    )
    return None


def _read_chunk(path: Path, rows: int, keys: set[str]) -> dict[str, np.ndarray]:
    """The arrays of one saved chunk, checked (a regular file, the expected names, ``(rows,)`` floats each)."""
    with open_npz(path) as data:
        if set(data.files) != keys:
            raise ValueError(f"it holds arrays {sorted(data.files)}, not {sorted(keys)}")
        for info in data.zip.infolist():  # before reading: never allocate what a damaged header declares
            if info.file_size > rows * 16 + 4096:
                raise ValueError(f"{info.filename} declares {info.file_size} bytes for {rows} grid points")
        arrays = {k: data[k] for k in sorted(keys)}
    for k, a in arrays.items():
        if a.shape != (rows,) or a.dtype.kind != "f":
            raise ValueError(f"{k} is a {a.dtype} array of shape {a.shape}, not {rows} floats")
    return arrays


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
