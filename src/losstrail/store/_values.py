"""The values of a run as files: each value a ``.npz`` of plain arrays, the weights a ``state_dict``.

- ``trajectory.npz``, ``plane.npz``, ``surface.npz``, ``path.npz``, ``decision.npz``: the stage
  values (``VALUE_FILES``), their fields as arrays; a path too large for memory keeps its rows in
  ``params.bin`` beside them, the ``.npz`` recording their shape and dtype.
- the weights (``model.pt`` by default): ``model.state_dict()``, read with
  ``torch.load(weights_only=True)``.

Every file is written to a temporary name and moved into place, so a crash never leaves a
half-written one; arrays load with ``allow_pickle=False``; nothing is unpickled. Loading needs
NumPy only; torch is imported only for the weights. Which file belongs to the run (its digest)
is ``RunDir``'s to check, before anything here opens it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from losstrail._files import atomic_path, open_npz, open_regular
from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.surface import DecisionMaps, Surface
from losstrail.values.trajectory import PARAMS_FILE, PathSketch, Trajectory

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
_SKETCH = "sketch_"  # the arrays of a Trajectory's PathSketch, saved beside its own
# What reading a damaged .npz file raises (numpy, zipfile and zlib each their own).
DAMAGED = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


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


def save_run_value(folder: str | os.PathLike, value) -> Path:
    """Write a ``Trajectory``, ``Plane``, ``Surface``, ``Projection`` or ``DecisionMaps`` into ``folder`` under its
    standard name.

    A trajectory whose parameters are a memory map stays on disk: its rows are (or are
    streamed into) ``folder/params.bin`` and the ``.npz`` records their shape and dtype.
    """
    path = Path(folder) / VALUE_FILES[type(value)]
    arrays = _to_arrays(value)
    if isinstance(value, Trajectory) and value.sketch is not None:
        del arrays["sketch"]
        arrays.update({_SKETCH + name: np.asarray(item) for name, item in _to_arrays(value.sketch).items()})
    if isinstance(value, Trajectory) and isinstance(value.params, np.memmap) and value.params.filename is not None:
        del arrays["params"]
        _keep_on_disk(value.params, Path(folder) / PARAMS_FILE)
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


def read_value(path: Path, cls, linked: dict, open_rows):
    """The ``cls`` value in the ``.npz`` file ``path``; ``linked`` gives fields saved elsewhere (a Projection's
    plane), ``open_rows()`` opens the ``params.bin`` of a trajectory kept on disk (checked by the caller)."""
    with open_npz(path) as data:
        _check_declared(path, data)
        kwargs = dict(linked)
        if cls is Trajectory and "params" not in data.files and "params_shape" in data.files:
            shape = tuple(int(n) for n in data["params_shape"])
            with open_rows() as rows:  # the map keeps its own handle
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
            kwargs[field.name] = _field(field.name, data[field.name])
    return cls(**kwargs)


# The most a deflated zip member can grow when read (deflate's limit is 1032:1).
_INFLATION = 1032


def _check_declared(path: Path, data) -> None:
    """Refuse, before any array is allocated, one whose header declares more bytes than its member of the archive
    holds, or a member that declares more than its stored bytes can inflate to."""
    size = os.fstat(data.fid.fileno()).st_size if hasattr(data.fid, "fileno") else None
    for info in data.zip.infolist():
        stored = info.compress_size if size is None else min(info.compress_size, size)
        with data.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(member)
        declared = dtype.itemsize
        for n in shape:
            declared *= int(n)  # a Python int: no overflow
        if declared > info.file_size or info.file_size > max(stored, 1) * _INFLATION:
            raise ValueError(
                f"{str(path)!r} declares {declared:,} bytes for {info.filename} (shape {tuple(shape)}) in a member of "
                f"{info.file_size:,} bytes ({stored:,} stored); it is damaged or not losstrail's. Run the job that "
                "wrote it again"
            )


def _field(name: str, item: np.ndarray):
    """A field's value from its saved array."""
    if name in _TEXTS:
        return tuple(str(n) for n in item.reshape(-1))
    if name == _SHAPES:
        return tuple(tuple(int(d) for d in s) for s in json.loads(str(item)))
    if item.dtype.kind == "U":
        return str(item)
    if name in _SCALARS:
        return float(item)
    if name in _PAIRS:
        return (float(item[0]), float(item[1]))
    return item


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


def read_state(path: Path) -> dict:
    """The ``state_dict`` saved at ``path`` by ``save_weights``, read with ``weights_only`` (no unpickling)."""
    import pickle

    import torch

    try:
        with open_regular(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(
            f"{str(path)!r} cannot be read as saved weights ({type(err).__name__}: {' '.join(str(err).split())[:200]});"
            " it is damaged or not a state_dict. Run the job that wrote it again"
        ) from None


def put_state(path: Path, state: dict, model) -> None:
    """Load ``state`` (read from ``path``) into ``model``, or say which model it fits."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(
            f"the weights in {str(path)!r} do not fit model={type(model).__name__} ({detail}); "
            "pass the model the run was trained with"
        ) from None
