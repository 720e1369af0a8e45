"""Saving and loading a run directory, so a picture can be redrawn without retraining.

A run directory holds:

- ``model.pt``: the trained model's ``state_dict`` (``torch.load(weights_only=True)``),
- ``trajectory.npz``, ``plane.npz``, ``surface.npz``: the stage values, as plain arrays,
- ``path.npz``: the path in the plane with its true and slice losses (the plane is in ``plane.npz``),
- ``run.json``: the settings of the run, the versions that made it and (format 2) the
  SHA-256 of every other file of the run; written last.

A comparison directory (``compare``) holds the shared ``plane.npz`` and ``surface.npz``, one
folder per run with its ``trajectory.npz``, ``path.npz`` and ``model.pt``, and
``comparison.json`` (the runs, their folders and every file's SHA-256), written last.

Loading needs NumPy only; torch is imported only to save or load weights.

Every file is written to a temporary name and moved into place, so a crash never leaves
a half-written file; arrays load with ``allow_pickle=False``; nothing is unpickled. A file
that ``run.json`` lists is checked against its digest when loaded (see ``_rundir``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from losstrail._files import UntrustedEntry, atomic_path, is_plain_name, open_npz, open_regular, real_folder
from losstrail.store.rundir import (
    MAX_RECORD_BYTES,
    check_file,
    check_listing,
    read_record,
    read_settings,
    write_settings,
)
from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.results import Comparison
from losstrail.values.surface import DecisionMaps, Surface
from losstrail.values.trajectory import PARAMS_FILE, PathSketch, Trajectory

__all__ = [
    "load_comparison",
    "load_run_value",
    "read_record",
    "read_settings",
    "save_run_value",
    "saved_projection",
    "write_settings",
]

COMPARISON_FILE = "comparison.json"  # a comparison directory's record, written last by ``compare``
# What it is, for a message naming an output that would overwrite it.
COMPARISON_ROLES = {COMPARISON_FILE: f"the comparison's record ({COMPARISON_FILE})"}

VALUE_FILES = {
    Trajectory: "trajectory.npz",
    Plane: "plane.npz",
    Surface: "surface.npz",
    Projection: "path.npz",
    DecisionMaps: "decision.npz",
}
# Fields held by reference to another saved value rather than as arrays.
_LINKED = {"plane"}
_PAIRS = {"explained", "eigenvalues"}
_SCALARS = {"max_error"}
# Parameter names (an array of strings) and shapes (JSON text) of a parameter subset.
_NAMES, _SHAPES = "names", "shapes"
_TEXTS = (_NAMES, "marks")  # tuples of strings


def _to_arrays(value) -> dict[str, np.ndarray]:
    arrays = {}
    for field in dataclasses.fields(value):
        if field.name in _LINKED or not field.metadata.get("saved", True):
            continue  # a Plane's tensors live in memory only: its flat arrays are saved
        item = getattr(value, field.name)
        if item is None:
            continue
        if field.name == _SHAPES:
            arrays[field.name] = np.array(json.dumps([list(s) for s in item]), dtype=np.str_)
        elif field.name in _TEXTS:
            arrays[field.name] = np.array(list(item), dtype=np.str_)
        else:
            arrays[field.name] = np.asarray(item) if not isinstance(item, str) else np.array(item, dtype=np.str_)
    return arrays


def save_run_value(run_dir: str | os.PathLike, value) -> Path:
    """Write a ``Trajectory``, ``Plane``, ``Surface`` or ``Projection`` into ``run_dir`` under its standard name.

    A trajectory whose parameters are a memory map stays on disk: its rows are (or are
    streamed into) ``run_dir/params.bin`` and the ``.npz`` records their shape and dtype.
    """
    path = Path(run_dir) / VALUE_FILES[type(value)]
    arrays = _to_arrays(value)
    if isinstance(value, Trajectory) and value.sketch is not None:
        del arrays["sketch"]
        arrays.update(_sketch_arrays(value.sketch))
    if isinstance(value, Trajectory) and isinstance(value.params, np.memmap) and value.params.filename is not None:
        del arrays["params"]
        _keep_on_disk(value.params, Path(run_dir) / PARAMS_FILE)
        arrays["params_shape"] = np.asarray(value.params.shape, dtype=np.int64)
        arrays["params_dtype"] = np.array(str(value.params.dtype))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


_SKETCH = "sketch_"  # the arrays of a Trajectory's PathSketch, saved beside its own


def _sketch_arrays(sketch: PathSketch) -> dict[str, np.ndarray]:
    return {_SKETCH + name: np.asarray(item) for name, item in _to_arrays(sketch).items()}


def _sketch_from(data) -> PathSketch | None:
    """The ``PathSketch`` saved in an opened ``trajectory.npz``, or None (a path kept whole)."""
    if _SKETCH + "step" not in data.files:
        return None
    fields = {}
    for field in dataclasses.fields(PathSketch):
        key = _SKETCH + field.name
        if key not in data.files:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"the saved trajectory's sketch has no array {key!r}")
            continue
        fields[field.name] = float(data[key]) if data[key].ndim == 0 else data[key]
    return PathSketch(**fields)


def _keep_on_disk(params: np.memmap, target: Path) -> None:
    """Make ``target`` hold the rows of ``params`` (nothing to do when it is already that file)."""
    if Path(params.filename).resolve() == target.resolve():
        return
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        for start in range(0, params.shape[0], 64):
            f.write(np.ascontiguousarray(params[start : start + 64]).tobytes())


def load_run_value(run_dir: str | os.PathLike, cls, **linked):
    """Read the ``cls`` value saved in ``run_dir``; ``linked`` gives fields saved elsewhere (a Projection's plane)."""
    path = Path(run_dir) / VALUE_FILES[cls]
    if not os.path.lexists(path):  # a link or a FIFO in its place is named when it is opened
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {path.name}; it holds {_listing(run_dir)}")
    files = _listed_files(run_dir)
    if files is not None:
        check_file(Path(run_dir), path.name, files)
    try:
        return _load(path, run_dir, cls, linked, files)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        named = isinstance(err, (ValueError, FileNotFoundError)) and str(path) in str(err)
        if named or isinstance(err, UntrustedEntry):
            raise
        raise ValueError(
            f"{str(path)!r} cannot be read ({type(err).__name__}: {err}); it is damaged or truncated. "
            "Run the job that wrote it again"
        ) from None


def _listed_files(run_dir) -> dict | None:
    """The files (name -> digest) that ``run_dir/run.json`` lists, or None (no run.json, or format 1)."""
    record = read_record(run_dir, missing_ok=True)
    files = record.get("files") if record is not None else None
    return files if isinstance(files, dict) else None


def _load(path: Path, run_dir, cls, linked: dict, files: dict | None):
    with open_npz(path) as data:
        kwargs = dict(linked)
        if cls is Trajectory and "params" not in data.files and "params_shape" in data.files:
            if files is not None:
                check_file(Path(run_dir), PARAMS_FILE, files)
            shape = tuple(int(n) for n in data["params_shape"])
            with open_regular(Path(run_dir) / PARAMS_FILE) as rows:  # the map keeps its own handle
                kwargs["params"] = np.memmap(rows, dtype=str(data["params_dtype"]), mode="r", shape=shape)
        if cls is Trajectory:
            kwargs["sketch"] = _sketch_from(data)
        for field in dataclasses.fields(cls):
            if field.name in _LINKED or field.name in kwargs or not field.metadata.get("saved", True):
                continue
            if field.name not in data.files:
                if field.default is dataclasses.MISSING:
                    raise ValueError(
                        f"{path} has no array {field.name!r}; it was written by another version of losstrail"
                    )
                continue
            item = data[field.name]
            if field.name in _TEXTS:
                item = tuple(str(n) for n in item.reshape(-1))
            elif field.name == _SHAPES:
                item = tuple(tuple(int(d) for d in s) for s in json.loads(str(item)))
            elif item.dtype.kind == "U":
                item = str(item)
            elif field.name in _SCALARS:
                item = float(item)
            elif field.name in _PAIRS:
                item = (float(item[0]), float(item[1]))
            kwargs[field.name] = item
    return cls(**kwargs)


def _listing(run_dir) -> str:
    names = sorted(p.name for p in Path(run_dir).iterdir()) if Path(run_dir).is_dir() else []
    return ", ".join(names) if names else "nothing"


def saved_projection(run_dir: str | os.PathLike, plane: Plane, trajectory: Trajectory) -> Projection | None:
    """The path saved with ``plane`` in ``run_dir``, if it is there and matches ``trajectory``."""
    try:
        projection = load_run_value(run_dir, Projection, plane=plane)
    except FileNotFoundError:
        return None
    same = len(projection) == len(trajectory) and (projection.step == trajectory.step).all()
    return projection if same else None


def load_comparison(run_dir: str | os.PathLike) -> Comparison:
    """Read a comparison directory written by ``compare``; recomputes nothing.

    Untrusted like a run directory: ``comparison.json`` (format 2) must list every file with its
    SHA-256, each run's folder is a plain name and a folder itself (no link), each file a regular one.
    """
    run_dir = Path(run_dir)
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
        runs = record["runs"]
        folders = [r["folder"] for r in runs]
        names = tuple(str(r["name"]) for r in runs)
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
        for name in ("plane.npz", "surface.npz", *(f"{f}/path.npz" for f in folders)):
            check_file(run_dir, name, record["files"])
    plane, surface = load_run_value(run_dir, Plane), load_run_value(run_dir, Surface)
    projections = tuple(load_run_value(run_dir / f, Projection, plane=plane) for f in folders)
    return Comparison(names, projections, captured, plane, surface)


def save_weights(path: str | os.PathLike, model) -> Path:
    """Write ``model.state_dict()`` to ``path`` atomically; the same weights give the same bytes.

    Saved through a file object, so the archive inside is always named ``archive`` (saved to a
    path, torch names it after the file, here a random temporary one).
    """
    import torch

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)
    return path


def load_weights(path: str | os.PathLike, model) -> None:
    """Load a ``state_dict`` saved by ``save_weights`` into ``model`` (no unpickling).

    In a run directory whose ``run.json`` lists its files, the weights are checked to be that run's.
    """
    import pickle

    import torch

    path = Path(path)
    files = _listed_files(path.parent)
    if files is not None:
        check_file(path.parent, path.name, files)
    try:
        with open_regular(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(
            f"{str(path)!r} cannot be read as saved weights ({type(err).__name__}: {' '.join(str(err).split())[:200]});"
            " it is damaged or not a state_dict. Run the job that wrote it again"
        ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"the weights in {str(path)!r} do not fit model={type(model).__name__} ({detail}); "
            "pass the model the run was trained with"
        ) from None
