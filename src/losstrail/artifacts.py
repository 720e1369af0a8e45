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

from losstrail._files import atomic_path
from losstrail._rundir import check_file, is_plain_name, read_record, read_settings, write_settings
from losstrail.landscape import DecisionMaps, Surface
from losstrail.plane import Plane
from losstrail.projection import Projection
from losstrail.results import Comparison
from losstrail.trajectory import PARAMS_FILE, PathSketch, Trajectory

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


def _to_arrays(value) -> dict[str, np.ndarray]:
    arrays = {}
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if item is None or field.name in _LINKED:
            continue
        if field.name == _SHAPES:
            arrays[field.name] = np.array(json.dumps([list(s) for s in item]), dtype=np.str_)
        elif field.name == _NAMES:
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
    if not path.is_file():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {path.name}; it holds {_listing(run_dir)}")
    files = _listed_files(run_dir)
    if files is not None:
        check_file(Path(run_dir), path.name, files)
    try:
        return _load(path, run_dir, cls, linked, files)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, (ValueError, FileNotFoundError)) and str(path) in str(err):
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
    with np.load(path, allow_pickle=False) as data:
        kwargs = dict(linked)
        if cls is Trajectory and "params" not in data.files and "params_shape" in data.files:
            if files is not None:
                check_file(Path(run_dir), PARAMS_FILE, files)
            shape = tuple(int(n) for n in data["params_shape"])
            kwargs["params"] = np.memmap(Path(run_dir) / PARAMS_FILE, dtype=str(data["params_dtype"]), mode="r",
                                         shape=shape)  # fmt: skip
        if cls is Trajectory:
            kwargs["sketch"] = _sketch_from(data)
        for field in dataclasses.fields(cls):
            if field.name in _LINKED or field.name in kwargs:
                continue
            if field.name not in data.files:
                if field.default is dataclasses.MISSING:
                    raise ValueError(
                        f"{path} has no array {field.name!r}; it was written by another version of losstrail"
                    )
                continue
            item = data[field.name]
            if field.name == _NAMES:
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
    """Read a comparison directory written by ``compare``; recomputes nothing."""
    run_dir = Path(run_dir)
    path = run_dir / COMPARISON_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no {COMPARISON_FILE}; pass a directory written by compare")
    try:
        record = json.loads(path.read_text())
        runs = record["runs"]
        folders = [r["folder"] for r in runs]
        names = tuple(str(r["name"]) for r in runs)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is damaged ({err!r}); run compare again to rewrite it") from None
    if len(set(folders)) != len(folders) or not all(is_plain_name(f) for f in folders):
        raise ValueError(
            f"{str(path)!r} gives runs {', '.join(map(repr, folders))} folders that are repeated or leave the "
            "directory, so their files cannot be told apart; run compare again to rewrite it"
        )
    files = record.get("files")
    if isinstance(files, dict):  # format 2: every file checked against its digest
        for name in ("plane.npz", "surface.npz", *(f"{f}/path.npz" for f in folders)):
            check_file(run_dir, name, files)
    plane, surface = load_run_value(run_dir, Plane), load_run_value(run_dir, Surface)
    projections = tuple(load_run_value(run_dir / f, Projection, plane=plane) for f in folders)
    return Comparison(names, projections, tuple(record["captured"]), plane, surface)


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
        state = torch.load(path, map_location="cpu", weights_only=True)
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
