"""Saving and loading a run directory, so a picture can be redrawn without retraining.

A run directory holds:

- ``model.pt``: the trained model's ``state_dict`` (``torch.load(weights_only=True)``),
- ``trajectory.npz``, ``plane.npz``, ``surface.npz``: the stage values, as plain arrays,
- ``path.npz``: the path in the plane with its true and slice losses (the plane is in ``plane.npz``),
- ``run.json``: the settings of the run, the versions that made it and (format 2) the
  SHA-256 of every other file of the run; written last.

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
from losstrail._rundir import check_file
from losstrail.directions import Plane
from losstrail.projection import Projection
from losstrail.record import PARAMS_FILE, Trajectory
from losstrail.surface import DecisionMaps, Surface

__all__ = ["load_run_value", "read_record", "read_settings", "save_run_value", "write_settings"]

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before run.json listed the run's files
SETTINGS_FILE = "run.json"
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
    if isinstance(value, Trajectory) and isinstance(value.params, np.memmap):
        del arrays["params"]
        _keep_on_disk(value.params, Path(run_dir) / PARAMS_FILE)
        arrays["params_shape"] = np.asarray(value.params.shape, dtype=np.int64)
        arrays["params_dtype"] = np.array(str(value.params.dtype))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


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


def write_settings(run_dir: str | os.PathLike, settings: dict, files: dict | None = None) -> Path:
    """Write ``settings`` with the versions that made the run to ``run_dir/run.json``.

    ``files`` maps each other file of the run to its digest (``'sha256:...'``); readers check them.
    """
    import lightning
    import torch

    from losstrail import __version__

    record = {
        "format_version": FORMAT_VERSION,
        "versions": {
            "losstrail": __version__,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "numpy": np.__version__,
        },
        "settings": settings,
        **({"files": dict(sorted(files.items()))} if files is not None else {}),
    }
    path = Path(run_dir) / SETTINGS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_settings(run_dir: str | os.PathLike) -> dict:
    """The settings saved in ``run_dir/run.json`` (empty if there is none)."""
    record = read_record(run_dir, missing_ok=True)
    return {} if record is None else record["settings"]


def read_record(run_dir: str | os.PathLike, *, missing_ok: bool = False, damaged_ok: bool = False) -> dict | None:
    """The whole ``run_dir/run.json`` record (format, versions, settings, files), checked for its shape.

    Raises ValueError naming the file when it is not JSON, not an object, or of another format;
    returns None for a missing file when ``missing_ok`` (and for a damaged one when ``damaged_ok``).
    """
    path = Path(run_dir) / SETTINGS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{str(path)!r} does not exist; {str(run_dir)!r} holds no finished run") from None
    except (OSError, UnicodeDecodeError) as err:
        if damaged_ok:
            return None
        raise ValueError(f"{str(path)!r} cannot be read ({err}); run the job again to rewrite it") from None
    fix = "it is damaged; run the job again to rewrite it"
    try:
        record = json.loads(text)
    except ValueError as err:
        if damaged_ok:
            return None
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); {fix}") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        if damaged_ok:
            return None
        raise ValueError(f"{str(path)!r} is not a losstrail run record (an object with 'settings'); {fix}")
    if record.get("format_version") not in READABLE_FORMATS:
        if damaged_ok:
            return None
        raise ValueError(
            f"{path} has format_version={record.get('format_version')!r}; this losstrail reads "
            f"{' and '.join(map(str, READABLE_FORMATS))}. Re-run the job to rewrite it"
        )
    return record


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
