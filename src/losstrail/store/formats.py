"""Open formats: Li et al.'s HDF5 files in and out, VTK PolyData for ParaView, meshes for Blender, plain tables.

Li et al. (2018, ``tomgoldstein/loss-landscape``) keep a surface in an HDF5 file with the
keys ``xcoordinates`` (nx,), ``ycoordinates`` (ny,), ``train_loss`` and ``train_acc`` (in
percent). Their ``plot_surface.py`` allocates the loss array with shape ``(nx, ny)`` but
fills it at the flat index of ``meshgrid(x, y).ravel()``, so its values are row-major
``(ny, nx)`` (x varies fastest) whatever the stored shape says. Their direction file holds
the groups ``xdirection``/``ydirection`` (datasets ``'0'``, ``'1'``, ... one per tensor in
``model.parameters()`` order), and PCA's ``explained_variance_ratio_``, ``singular_values_``
and ``explained_variance_``; their projection file holds ``proj_xcoord``/``proj_ycoord``.
losstrail writes the same, and its own extras under the group ``losstrail``.

HDF5 needs ``h5py`` (``pip install 'losstrail[h5]'``); VTK XML, OBJ, PLY, CSV and NPZ are
written with NumPy alone. ``EXPORTS`` (at the end) registers each format by name with what it
holds and the functions that write and read it; the names are also ``losstrail._registry``'s
(``EXPORT_FORMATS``, ``PATH_FORMATS``, ``READ_FORMATS``), which the CLI reads without importing
this, and a test checks that the two agree and that the README's table lists exactly these.
"""

from __future__ import annotations

import base64
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from losstrail._files import atomic_path
from losstrail._registry import EXPORT_FORMATS, HEIGHT_FORMATS, PATH_FORMATS, READ_FORMATS, quoted
from losstrail.store.checks import check_outputs
from losstrail.store.rundir import RunDir
from losstrail.values.surface import Surface

__all__ = [
    "EXPORTS",
    "EXPORT_FORMATS",
    "PATH_FORMATS",
    "READ_FORMATS",
    "ExportFormat",
    "export",
    "read_imported",
    "read_surface",
]

_LI_FILE_FORMATS = ("h5",)  # of Li et al.'s projection and direction files
_EXTRAS = "losstrail"  # the HDF5 group of what Li et al.'s files have no key for

# Key names in Li et al.'s files first, then the names forks use for the same arrays.
_X_KEYS = ("xcoordinates", "X", "x", "xcoords", "x_coordinates")
_Y_KEYS = ("ycoordinates", "Y", "y", "ycoords", "y_coordinates")
_LOSS_KEYS = ("train_loss", "losses", "loss", "Z", "test_loss")
_ACC_KEYS = ("train_acc", "accuracies", "accuracy", "acc", "test_acc")
_PROJ_KEYS = (("proj_xcoord", "proj_ycoord"), ("xcoord", "ycoord"))
# Li et al.'s crunch() fills a new surface with -1 and overwrites each point once computed.
_NOT_COMPUTED = -1.0


def _h5py(argument: str, value):
    try:
        import h5py
    except ImportError:
        raise ModuleNotFoundError(
            f"{argument}={str(value)!r} is an HDF5 file, which needs h5py; install it: pip install 'losstrail[h5]'"
        ) from None
    return h5py


@dataclass(frozen=True)
class ExportFormat:
    """One open format, written to files named ``*.{name}``: what it holds and the functions that write and read it.

    A writer takes the run and the export's options and returns ``write(tmp)``, so that everything
    is computed and checked before the first file is written.
    """

    name: str  # the format, and the suffix of the files losstrail writes
    surface: Callable  # (run, options) -> write(tmp): the surface file (export's to=)
    path: Callable | None = None  # (run, options) -> write(tmp): the path alone (export's path=), where it can
    read: Callable | None = None  # (argument, file, key) -> (Surface, extras): read back, where it is
    holds_path: bool = False  # the surface file carries the run's path too
    aliases: tuple[str, ...] = ()  # other suffixes its files are read with
    requires: Callable | None = None  # (argument, file) raising ModuleNotFoundError naming the extra to install

    @property
    def heights(self) -> bool:
        """A z axis, which log=, zmax= and ascii= shape: the cheap registry's ``HEIGHT_FORMATS``."""
        return self.name in HEIGHT_FORMATS

    def check_installed(self, argument: str, file) -> None:
        """Raise ModuleNotFoundError naming what to install when ``file`` (given as ``argument``) needs it."""
        if self.requires is not None:
            self.requires(argument, file)


def _extension(argument: str, value, names, *, reading: bool = False) -> str:
    """The format of the file ``value`` by its suffix, one of ``names`` (and, ``reading``, their aliases)."""
    known = {name: name for name in names}
    if reading:
        known.update({alias: name for name in names for alias in EXPORTS[name].aliases})
        known = dict(sorted(known.items(), key=lambda item: names.index(item[1])))  # each alias beside its name
    kind = Path(value).suffix.lstrip(".").lower()
    if kind not in known:
        raise ValueError(
            f"{argument}={str(value)!r} has extension {('.' + kind) if kind else 'none'!r}, which is not known; "
            f"expected one of {quoted('.' + k for k in known)}"
        )
    return known[kind]


def _existing(argument: str, value) -> Path:
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}={str(value)!r} does not exist; pass the path of a file")
    return path


# ---------------------------------------------------------------------------------------------- reading


def read_surface(path: str | os.PathLike, *, key: str | None = None) -> Surface:
    """Read a loss surface from Li et al.'s HDF5 file (or a fork's), or from a ``.npz``/``.csv`` table.

    Args:
        path: ``.h5``/``.hdf5`` (needs h5py), ``.npz`` (``xs``, ``ys``, ``loss``, ...) or
            ``.csv`` (columns ``x, y, loss[, accuracy, loss_se]``, x varying fastest).
        key: the loss array in an HDF5 file (default: ``train_loss``, or a fork's ``losses``,
            ``loss``, ``Z``, ``test_loss``); its accuracy is read beside it where there is one.

    Returns:
        A ``Surface``: ``loss[i, j]`` at ``(xs[j], ys[i])``; accuracy as a fraction (Li et al.
        store percent); points Li et al.'s code had not computed yet (``-1``) are NaN.

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> _ = open(f, "w").write("x,y,loss\\n0,0,1\\n1,0,2\\n2,0,3\\n0,1,4\\n1,1,5\\n2,1,6\\n")
    >>> read_surface(f).loss.tolist()
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    """
    surface, _ = _read_surface("path", path, key)
    return surface


def _read_surface(argument: str, path, key: str | None) -> tuple[Surface, dict]:
    """The surface in ``path`` and what losstrail's extras say about it (plane method, title, ...).

    Everything in the file is checked before it is used: the size every array declares before
    it is read, then finite, strictly monotonic axes (a decreasing one is turned round) and
    arrays of the axes' shape; any fault is one ``ValueError`` naming the file and the array.
    A loss with no finite value, or an axis of one value, is drawn with a warning instead.
    """
    kind = _extension(argument, path, READ_FORMATS, reading=True)
    _existing(argument, path)
    surface, extras = EXPORTS[kind].read(argument, path, key)
    problem = _degenerate(surface)
    if problem is not None:
        warnings.warn(f"{argument}={str(path)!r}: {problem}, so there is no surface to draw", UserWarning, stacklevel=3)
    return surface, extras


def _where(argument: str, path) -> str:
    return f"{argument}={str(path)!r}"


def _check_declared(argument: str, path, name: str, shape) -> None:
    """Refuse an array whose declared ``shape`` holds more values than a grid this machine can hold.

    Through the one memory estimate (``_checks.check_memory``), at ``resolution=``'s
    ``BYTES_PER_GRID_POINT`` a value; checked before the array is read.
    """
    from losstrail._checks import BYTES_PER_GRID_POINT, check_memory

    count = math.prod(int(n) for n in shape)
    subject = f"{_where(argument, path)}: {name!r} declares {count:,} values (shape {tuple(int(n) for n in shape)})"
    check_memory(subject, count * BYTES_PER_GRID_POINT, "It was not read: a surface or path that large is no picture")


def _check_finite(argument: str, path, name: str, values: np.ndarray, what: str = "index") -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        first = np.unravel_index(bad[0], values.shape) if values.ndim > 1 else int(bad[0])
        raise ValueError(
            f"{_where(argument, path)}: {name!r} holds {values.flat[bad[0]]} at {what} {first} "
            f"({bad.size} non-finite in all); coordinates must be finite numbers"
        )


def _check_axis(argument: str, path, name: str, axis: np.ndarray) -> bool:
    """A finite, strictly increasing or decreasing axis (True when decreasing), else a ValueError naming it."""
    where = f"{_where(argument, path)}: {name!r}"
    if axis.size == 0:
        raise ValueError(f"{where} is empty; an axis needs at least one coordinate")
    _check_finite(argument, path, name, axis)
    steps = np.diff(axis)
    if axis.size > 1 and np.all(steps == 0):
        raise ValueError(
            f"{where} has the same value {axis[0]:g} at all {axis.size} coordinates; an axis must increase"
        )
    if np.all(steps > 0) or np.all(steps < 0):
        return bool(axis.size > 1 and steps[0] < 0)
    i = int(np.flatnonzero(steps <= 0)[0] if steps[0] > 0 else np.flatnonzero(steps >= 0)[0])
    raise ValueError(
        f"{where} is not monotonic: {axis[i + 1]:g} follows {axis[i]:g} at index {i + 1}; "
        "the coordinates of an axis must strictly increase (or strictly decrease)"
    )


def _surface_from(argument, path, names: dict, xs, ys, arrays: dict) -> Surface:
    """The ``Surface`` of checked axes ``xs``, ``ys`` and the (ny, nx) ``arrays`` (loss, accuracy, loss_se, ...).

    ``names`` are the file's names of the axes and arrays, for the messages.
    """
    xs, ys = np.asarray(xs, np.float64).reshape(-1), np.asarray(ys, np.float64).reshape(-1)
    shape = (len(ys), len(xs))
    for name, value in arrays.items():
        if value is not None and np.shape(value) != shape:
            raise ValueError(
                f"{_where(argument, path)}: {names[name]!r} has shape {np.shape(value)} but len(ys), len(xs) = "
                f"{shape}; the coordinates do not match the array"
            )
    arrays = {k: None if v is None else np.asarray(v, np.float64) for k, v in arrays.items()}
    if _check_axis(argument, path, names["x"], xs):  # decreasing: turned round, the arrays with it
        xs, arrays = xs[::-1], {k: None if v is None else v[:, ::-1] for k, v in arrays.items()}
    if _check_axis(argument, path, names["y"], ys):
        ys, arrays = ys[::-1], {k: None if v is None else v[::-1] for k, v in arrays.items()}
    accuracy = arrays.get("accuracy")
    accuracy = np.full(shape, np.nan) if accuracy is None else accuracy
    return Surface(xs.copy(), ys.copy(), arrays["loss"].copy(), accuracy.copy(), arrays.get("loss_se"))


def _degenerate(surface: Surface) -> str | None:
    """What makes ``surface`` a picture of nothing (no finite loss, an axis of one value), or None."""
    if not np.isfinite(surface.loss).any():
        return f"the loss holds no finite value (all {surface.loss.size} are NaN or infinite)"
    for label, axis in (("x", surface.xs), ("y", surface.ys)):
        if len(axis) == 1:
            return f"the {label} axis has zero width (its one value is {axis[0]:g})"
    return None


def _drawable(surface: Surface) -> Surface:
    """``surface`` with an axis of one value widened to two, around it, and nothing (NaN) drawn there."""
    if len(surface.xs) > 1 and len(surface.ys) > 1:
        return surface

    def widened(axis, other):
        if len(axis) > 1:
            return axis
        half = (other[-1] - other[0]) / 2 if len(other) > 1 else 1.0
        return np.array([axis[0] - half, axis[0] + half])

    xs, ys = widened(surface.xs, surface.ys), widened(surface.ys, surface.xs)
    nothing = np.full((len(ys), len(xs)), np.nan)
    return Surface(xs, ys, nothing, nothing.copy())


def _open_h5(argument: str, path):
    h5py = _h5py(argument, path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{argument}={str(path)!r} is not a readable HDF5 file ({err})") from None


def _h5_item(argument: str, path, group, name: str, label: str | None = None):
    """The dataset or group ``name`` of ``group``, when it is stored in this file (no link or storage outside)."""
    import h5py

    label = label or name
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise ValueError(
            f"{_where(argument, path)}: {label!r} is a link to the file {link.filename!r}; "
            "links to other files are not followed"
        )
    try:
        item = group[name]
    except (KeyError, OSError, ValueError) as err:
        raise ValueError(f"{_where(argument, path)}: {label!r} cannot be opened ({err})") from None
    if isinstance(item, h5py.Dataset) and (item.is_virtual or item.external):
        raise ValueError(
            f"{_where(argument, path)}: {label!r} keeps its values in other files; "
            "only values stored in the file itself are read"
        )
    return item


def _h5_array(argument: str, path, group, name: str, label: str | None = None, numeric: bool = True):
    """The values of the dataset ``name``, read once its size and type are checked: float64 if ``numeric``."""
    import h5py

    label = label or name
    item = _h5_item(argument, path, group, name, label)
    if not isinstance(item, h5py.Dataset):
        raise ValueError(f"{_where(argument, path)}: {label!r} is a group, not an array")
    _check_declared(argument, path, label, item.shape if item.shape is not None else ())
    if numeric and item.dtype.kind not in "biuf":
        raise ValueError(f"{_where(argument, path)}: {label!r} holds {item.dtype} values, not numbers")
    try:
        value = item[()]
        return np.asarray(value, dtype=np.float64) if numeric else value
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{_where(argument, path)}: {label!r} cannot be read ({err})") from None


def _pick(argument, path, keys_found, wanted, candidates) -> str:
    for name in candidates:
        if name in keys_found:
            return name
    raise ValueError(
        f"{argument}={str(path)!r} has no {wanted} (looked for {quoted(candidates)}); it holds "
        f"{quoted(sorted(keys_found)) or 'nothing'}"
    )


def _read_h5_surface(argument: str, path, key: str | None) -> tuple[Surface, dict]:
    with _open_h5(argument, path) as f:
        names = set(f.keys())
        loss_key = _pick(argument, path, names, "loss array", _LOSS_KEYS if key is None else (key,))
        x_key = _pick(argument, path, names, "x coordinates", _X_KEYS)
        y_key = _pick(argument, path, names, "y coordinates (a 2-D surface)", _Y_KEYS)
        acc_key = next((k for k in _accuracy_keys(loss_key) if k in names), None)
        keys = {"x": x_key, "y": y_key, "loss": loss_key, "accuracy": acc_key}
        arrays = {}
        for name, k in keys.items():
            arrays[name] = None if k is None else _h5_array(argument, path, f, k)
            if name in ("x", "y"):
                _check_finite(argument, path, k, arrays[name])
        extras = _read_extras(argument, path, f)
    xs, ys, grids = _grid(argument, path, keys, arrays)
    loss, accuracy = grids["loss"], grids.get("accuracy")
    # Only Li et al.'s own files mark uncomputed points; a fork's -1 may be a real value.
    missing = (loss == _NOT_COMPUTED) if loss_key in ("train_loss", "test_loss") else np.zeros(loss.shape, bool)
    if missing.any():  # counted and said, not silently turned to NaN
        import warnings

        warnings.warn(
            f"{argument}={str(path)!r}: {int(missing.sum()):,} cells not computed (-1 in {loss_key!r}: Li et al.'s run "
            "had not finished the grid); they are left out of the surface and drawn grey",
            UserWarning,
            stacklevel=4,
        )
    loss = np.where(missing, np.nan, loss)
    accuracy = None if accuracy is None else np.where(missing, np.nan, accuracy / 100)
    loss_se = extras.pop("loss_se", None)
    loss_se = loss_se if isinstance(loss_se, np.ndarray) else None
    found = {"loss": loss, "accuracy": accuracy, "loss_se": loss_se}
    keys["loss_se"] = f"{_EXTRAS}/loss_se"
    return _surface_from(argument, path, keys, xs, ys, found), extras


def _accuracy_keys(loss_key: str) -> tuple[str, ...]:
    paired = loss_key.replace("_loss", "_acc") if loss_key.endswith("_loss") else None
    return ((paired,) if paired else ()) + tuple(k for k in _ACC_KEYS if not k.endswith("_acc"))


def _grid(argument: str, path, keys: dict, arrays: dict):
    """Axes (nx,), (ny,) and the (ny, nx) grids, from 1-D axes (Li et al.'s order) or 2-D meshgrids (forks')."""
    x, y = arrays["x"], arrays["y"]
    where = f"{argument}={str(path)!r}"
    grids = {}
    if x.ndim == 2 and y.ndim == 2 and x.shape == y.shape:
        # A fork's meshgrid: the values sit beside their coordinates, in 'xy' or 'ij' indexing.
        if np.all(x == x[:1]) and np.all(y == y[:, :1]):
            xs, ys, flip = x[0], y[:, 0], False
        elif np.all(x == x[:, :1]) and np.all(y == y[:1]):
            xs, ys, flip = x[:, 0], y[0], True
        else:
            raise ValueError(f"{where}: {keys['x']!r} and {keys['y']!r} are 2-D but not a meshgrid of axes")
        for name, value in arrays.items():
            if name in ("x", "y") or value is None:
                continue
            if value.shape != x.shape:
                raise ValueError(
                    f"{where}: {keys[name]!r} has shape {value.shape} but the coordinate grids "
                    f"{keys['x']!r}/{keys['y']!r} have shape {x.shape}; they must match"
                )
            grids[name] = value.T if flip else value
        return xs, ys, grids
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"{where}: {keys['x']!r} and {keys['y']!r} must be 1-D axes (or 2-D meshgrids of one shape); "
            f"got shapes {x.shape} and {y.shape}"
        )
    for name, value in arrays.items():
        if name in ("x", "y") or value is None:
            continue
        if value.size != len(x) * len(y):
            raise ValueError(
                f"{where}: {keys[name]!r} has {value.size} values (shape {value.shape}) but "
                f"{keys['x']!r} ({len(x)}) x {keys['y']!r} ({len(y)}) needs {len(x) * len(y)}; "
                "the coordinates do not match the array"
            )
        grids[name] = value.reshape(len(y), len(x))  # flat order of meshgrid(x, y): x fastest
    return x, y, grids


def _read_extras(argument: str, path, f) -> dict:
    if _EXTRAS not in set(f.keys()):
        return {}
    group = _h5_item(argument, path, f, _EXTRAS)
    if not hasattr(group, "keys"):
        return {}
    extras = {}
    for name in list(group.keys()):
        value = _h5_array(argument, path, group, name, f"{_EXTRAS}/{name}", numeric=False)
        extras[name] = value.decode(errors="replace") if isinstance(value, bytes) else np.asarray(value)
    return extras


def _npz_arrays(argument: str, path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, each read once the shape its header declares is checked."""
    try:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                with data.zip.open(f"{name}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0  # fmt: skip
                    shape = read(member)[0]
                _check_declared(argument, path, name, shape)
            return {k: data[k] for k in data.files}
    except ValueError as err:
        if str(err).startswith(_where(argument, path)):
            raise
        raise ValueError(f"{argument}={str(path)!r} is not a readable .npz file ({err})") from None
    except Exception as err:  # zipfile, pickle and format errors all mean the same thing here
        raise ValueError(f"{argument}={str(path)!r} is not a readable .npz file ({err})") from None


def _read_npz_surface(argument: str, path) -> Surface:
    arrays = _npz_arrays(argument, path)
    missing = [k for k in ("xs", "ys", "loss") if k not in arrays]
    if missing:
        raise ValueError(
            f"{argument}={str(path)!r} has no array {quoted(missing)}; it holds {quoted(sorted(arrays)) or 'nothing'}"
        )
    for name, value in arrays.items():
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{_where(argument, path)}: {name!r} holds {value.dtype} values, not numbers")
    if arrays["xs"].ndim != 1 or arrays["ys"].ndim != 1:
        raise ValueError(
            f"{_where(argument, path)}: 'xs' and 'ys' must be 1-D axes; got shapes {arrays['xs'].shape} and "
            f"{arrays['ys'].shape}"
        )
    names = {k: k for k in ("xs", "ys", "loss", "accuracy", "loss_se")} | {"x": "xs", "y": "ys"}
    found = {k: arrays.get(k) for k in ("loss", "accuracy", "loss_se")}
    return _surface_from(argument, path, names, arrays["xs"], arrays["ys"], found)


def _read_csv_surface(argument: str, path) -> Surface:
    where = _where(argument, path)
    _check_declared(argument, path, "the table", (os.path.getsize(path) // 2,))  # a value takes 2 bytes at least
    try:
        with open(path, encoding="utf-8") as f:
            header = [h.strip() for h in f.readline().split(",")]
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not a text table ({err})") from None
    if header[:3] != ["x", "y", "loss"]:
        raise ValueError(
            f"{argument}={str(path)!r} has columns {quoted(header)}; expected 'x', 'y', 'loss' first "
            "(and optionally 'accuracy', 'loss_se')"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty table: said below, as an error
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{argument}={str(path)!r} is not a table of numbers ({err})") from None
    if table.shape[0] == 0:
        raise ValueError(f"{where} has the header {','.join(header)!r} but no rows of values")
    if table.shape[1] != len(header):
        raise ValueError(f"{where} has {len(header)} columns in its header but {table.shape[1]} in its rows")
    x, y = table[:, 0], table[:, 1]
    for k in (0, 1):
        _check_finite(argument, path, header[k], table[:, k], what="row")
    nx = int(np.argmax(y != y[0])) if np.any(y != y[0]) else len(y)
    xs, ys = x[:nx], y[::nx] if nx else y
    if len(x) % nx or not (np.array_equal(np.tile(xs, len(ys)), x) and np.array_equal(np.repeat(ys, nx), y)):
        raise ValueError(
            f"{argument}={str(path)!r}: the rows are not a grid with x varying fastest, as losstrail writes"
        )
    column = {name: table[:, k].reshape(len(ys), nx) for k, name in enumerate(header) if k >= 2}
    names = {name: name for name in header}
    found = {k: column.get(k) for k in ("loss", "accuracy", "loss_se")}
    return _surface_from(argument, path, names, xs, ys, found)


def _read_projection(path) -> dict:
    """The arrays of a projection file: ``xy`` (T, 2) and, when losstrail wrote it, step, epoch, loss, ..."""
    _extension("path", path, _LI_FILE_FORMATS, reading=True)
    _existing("path", path)
    with _open_h5("path", path) as f:
        names = set(f.keys())
        pair = next((p for p in _PROJ_KEYS if p[0] in names and p[1] in names), None)
        if pair is None:
            raise ValueError(
                f"path={str(path)!r} is not a projection file: it has no 'proj_xcoord' and 'proj_ycoord'; it holds "
                f"{quoted(sorted(names)) or 'nothing'}"
            )
        x, y = (_h5_array("path", path, f, k).ravel() for k in pair)
        extras = _read_extras("path", path, f)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"path={str(path)!r}: {pair[0]!r} has {len(x)} values and {pair[1]!r} {len(y)}; "
                         "they must be equally long and not empty")  # fmt: skip
    for k, values in zip(pair, (x, y)):
        _check_finite("path", path, k, values)
    extras = {k: v for k, v in extras.items() if isinstance(v, np.ndarray) and v.shape == (len(x),)}
    for k in ("step", "epoch"):
        if k in extras and not np.all(np.isfinite(extras[k])):
            del extras[k]  # numbered in order instead
    return {"xy": np.stack([x, y], axis=1), **extras}


def _read_directions(path) -> dict:
    """What a direction file says about the plane: its method and, for PCA, the explained variance ratios."""
    _extension("directions", path, _LI_FILE_FORMATS, reading=True)
    _existing("directions", path)
    with _open_h5("directions", path) as f:
        names = set(f.keys())
        if "xdirection" not in names or "ydirection" not in names:
            raise ValueError(
                f"directions={str(path)!r} is not a 2-D direction file: it has no 'xdirection' and 'ydirection'; "
                f"it holds {quoted(sorted(names)) or 'nothing'}"
            )
        extras = _read_extras("directions", path, f)
        if "explained_variance_ratio_" in names:
            ratio = _h5_array("directions", path, f, "explained_variance_ratio_").ravel()
            if len(ratio) >= 2 and np.all(np.isfinite(ratio[:2])):
                return {"method": "pca", "explained": (float(ratio[0]), float(ratio[1]))}
            return {"method": "pca"}
    return {"method": str(extras.get("method", "custom"))}


@dataclass(frozen=True)
class Imported:
    """A surface made elsewhere (e.g. by Li et al.'s ``plot_surface.py``), its path and directions, read to draw."""

    surface: Surface  # drawable: an axis of one value widened, with nothing (NaN) drawn there
    problem: str | None  # what makes the file's surface a picture of nothing, or None
    extras: dict  # what losstrail's extras in the file say (plane method, title, loss label, ...)
    path: dict  # the projection file's arrays: ``xy`` (T, 2) and, when losstrail wrote it, step, epoch, loss, ...
    about: dict  # what the direction file says about the plane (method, explained variance)


def read_imported(surface, *, path=None, directions=None, key: str | None = None) -> Imported:
    """Read ``surface`` (as ``read_surface`` does), Li et al.'s projection file ``path`` and direction file
    ``directions`` for drawing; without ``path`` the one point is the plane's centre, the trained model."""
    found = _read_projection(path) if path is not None else {"xy": np.zeros((1, 2))}
    about = _read_directions(directions) if directions is not None else {}
    grid, extras = _read_surface("surface", surface, key)
    problem = _degenerate(grid)  # said as a warning by _read_surface, and in the picture's title
    return Imported(_drawable(grid), problem, extras, found, about)


# ---------------------------------------------------------------------------------------------- writing


def export(
    run_dir: str | os.PathLike | Surface,
    to: str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    directions: str | os.PathLike | None = None,
    log: bool = False,
    zmax: float | None = None,
    ascii: bool = False,
    model=None,
    projection=None,
    plane=None,
    trajectory=None,
) -> Path:
    """Write a saved run's surface (and its path, plane directions) in a format other tools read.

    Args:
        run_dir: a run directory written by ``loss_landscape_anim`` or ``losstrail run``, or a
            ``Surface`` (e.g. from ``loss_surface``); then ``projection`` gives the path to write
            and ``plane`` (default ``projection.plane``) the directions.
        to: the surface file; its extension picks the format:
            ``.h5`` Li et al.'s surface file (``xcoordinates``, ``ycoordinates``, ``train_loss``,
            ``train_acc`` in percent, their orientation; losstrail's extras in the group ``losstrail``);
            ``.vtp`` VTK PolyData for ParaView, as ``h52vtp.py`` writes (a ``zvalue`` point array
            and point heights, an ``averaged zvalue`` per cell), for any rectangular grid;
            ``.obj``/``.ply`` a triangle mesh with the path as a polyline (OBJ ``l``, PLY edges);
            ``.csv`` one row per grid point ``x, y, loss, accuracy[, loss_se]``, x fastest;
            ``.npz`` the arrays ``xs``, ``ys``, ``loss``, ``accuracy`` (and the path's ``path_*``).
        path: also write the path in the plane: ``.h5`` Li et al.'s projection file
            (``proj_xcoord``, ``proj_ycoord``), ``.vtp`` a polyline lying on the ``.vtp`` surface,
            ``.csv`` or ``.npz``.
        directions: also write the plane as Li et al.'s direction file (``.h5``): ``xdirection``
            and ``ydirection`` with one dataset per parameter tensor, and for a PCA plane
            ``explained_variance_ratio_``, ``singular_values_``, ``explained_variance_``.
        log: heights ``log(loss + 0.1)`` in ``.vtp``/``.obj``/``.ply``, as ``h52vtp.py --log``.
        zmax: clip the loss at ``zmax`` before ``log``, as ``h52vtp.py --zmax``.
        ascii: ``.vtp``/``.ply`` as text instead of binary.
        model: the run's model, for the shapes of its parameter tensors (``directions``);
            default: read from the run's saved weights (or ``trajectory.shapes``).
        projection, plane, trajectory: with a ``Surface``: the path in the plane (``project``), the
            plane, and the trajectory (its shapes, and for a PCA plane the variance figures).

    Returns:
        The path of the surface file. Every file appears only once complete, and none is
        written unless all the arguments are good.
    """
    files = {"to": to, "path": path, "directions": directions}
    names = {"to": EXPORT_FORMATS, "path": PATH_FORMATS, "directions": _LI_FILE_FORMATS}
    formats = {arg: EXPORTS[_extension(arg, file, names[arg])] for arg, file in files.items() if file is not None}
    if (log or zmax is not None or ascii) and not any(f.heights for f in formats.values()):
        with_heights = [f".{name}" for name, f in EXPORTS.items() if f.heights]
        raise ValueError(
            f"log=, zmax= and ascii= shape the heights of a {', '.join(with_heights[:-1])} or {with_heights[-1]} "
            f"file; to={str(to)!r} and path={None if path is None else str(path)!r} are neither"
        )
    if zmax is not None and not (isinstance(zmax, (int, float)) and np.isfinite(zmax)):
        raise ValueError(f"zmax={zmax!r} must be a finite number, the loss at which to clip, e.g. zmax=10")
    for argument, format in formats.items():
        format.check_installed(argument, files[argument])
    in_memory = isinstance(run_dir, Surface)
    check_outputs(list(files.items()), run_dir=None if in_memory else run_dir)
    if in_memory:
        run = _given_run(run_dir, projection, plane, trajectory, path is not None, directions is not None)
    else:
        run = _load_run(run_dir, want_path=path is not None or formats["to"].holds_path)
    options = _Options(_height(log, zmax), ascii, directions)
    writes = []  # (file, writer): everything is computed and checked before the first file is written
    writes.append((to, formats["to"].surface(run, options)))
    if path is not None:
        writes.append((path, formats["path"].path(run, options)))
    if directions is not None:
        writes.append((directions, _directions_writer(run, model)))
    for target, write in writes:
        with atomic_path(target) as tmp:
            write(tmp)
    return Path(to)


@dataclass(frozen=True)
class _Run:
    """What an export reads from a run directory."""

    surface: Surface
    plane: object  # Plane
    settings: dict
    projection: object | None  # Projection, when the export writes the path
    trajectory: Callable  # () -> Trajectory, read only when needed (PCA figures)
    store: RunDir | None = None  # the run directory read (None: a surface made in memory), for the weights' shapes


def _load_run(run_dir, want_path: bool) -> _Run:
    from losstrail.planes.projection import project
    from losstrail.values.plane import Plane
    from losstrail.values.projection import Projection
    from losstrail.values.trajectory import Trajectory

    if not Path(run_dir).is_dir():
        raise FileNotFoundError(
            f"run_dir={str(run_dir)!r} is not a directory; pass a run directory written by loss_landscape_anim "
            "or `losstrail run` (or, in Python, a Surface)"
        )
    store = RunDir(run_dir)
    surface, plane = store.load(Surface), store.load(Plane)
    trajectory = lambda: store.load(Trajectory).finite_prefix()
    projection = None
    if want_path:
        try:
            projection = store.load(Projection, plane=plane)
        except FileNotFoundError:
            projection = project(plane, trajectory())
    return _Run(surface, plane, store.settings, projection, trajectory, store)


def _given_run(surface: Surface, projection, plane, trajectory, want_path: bool, want_directions: bool) -> _Run:
    """What an export of a ``Surface`` made in memory writes, with the values given beside it."""
    from losstrail.values.plane import Plane
    from losstrail.values.projection import Projection
    from losstrail.values.trajectory import Trajectory

    for name, value, cls in (("projection", projection, Projection), ("plane", plane, Plane),
                             ("trajectory", trajectory, Trajectory)):  # fmt: skip
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"{name}= must be a losstrail.{cls.__name__}; got {type(value).__name__}")
    if want_path and projection is None:
        raise ValueError(
            "path= writes the path in the plane; pass it too: export(surface, to, projection=lt.project(...))"
        )
    plane = plane if plane is not None else getattr(projection, "plane", None)
    if want_directions and (plane is None or plane.n_params == 0):
        raise ValueError("directions= writes the plane's directions; pass the plane: export(surface, to, plane=plane)")
    if plane is None:
        empty = np.zeros(0, np.float32)
        plane = Plane(empty, empty, empty, "custom")

    def path() -> Trajectory | None:  # None: a PCA plane's figures are then its explained ratios alone
        return None if trajectory is None else trajectory.finite_prefix()

    settings = {} if trajectory is None or trajectory.shapes is None else {"shapes": trajectory.shapes}
    return _Run(surface, plane, settings, projection, path)


def _height(log: bool, zmax: float | None):
    """The height of a loss in the 3-D formats, as ``h52vtp.py``: clipped at ``zmax``, then ``log(z + 0.1)``."""

    def height(loss):
        z = np.array(loss, dtype=np.float64)
        if zmax is not None:
            z = np.where(z > zmax, zmax, z)
        if log:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.log(z + 0.1)
        return z

    return height


@dataclass(frozen=True)
class _Options:
    """How an export writes: the heights of the 3-D formats, text or binary, the direction file to name."""

    height: Callable  # (loss array) -> its heights, as h52vtp.py
    ascii: bool
    directions: str | os.PathLike | None


def _csv_surface(run: _Run, options: _Options):
    columns = _surface_columns(run.surface)
    return lambda tmp: _write_csv(tmp, columns)


def _csv_path(run: _Run, options: _Options):
    columns = _path_columns(run.projection, run.surface)
    return lambda tmp: _write_csv(tmp, columns)


def _npz_surface(run: _Run, options: _Options):
    s = run.surface
    arrays = {"xs": s.xs, "ys": s.ys, "loss": s.loss, "accuracy": s.accuracy}
    if s.loss_se is not None:
        arrays["loss_se"] = s.loss_se
    arrays.update({f"path_{k}": v for k, v in _path_columns(run.projection, s).items()})
    return lambda tmp: _write_npz(tmp, arrays)


def _npz_path(run: _Run, options: _Options):
    columns = _path_columns(run.projection, run.surface)
    return lambda tmp: _write_npz(tmp, columns)


def _table(read: Callable):
    """The reader of a table (``.npz``, ``.csv``): ``read(argument, file)``, which has no array to pick by key."""

    def read_table(argument: str, path, key: str | None) -> tuple[Surface, dict]:
        if key is not None:
            kind = Path(path).suffix.lstrip(".").lower()
            raise ValueError(f"key={key!r} picks an array of an HDF5 file; {argument}={str(path)!r} is a .{kind} table")
        return read(argument, path), {}

    return read_table


def _grid_mesh(s: Surface, height):
    """Points (ny*nx, 3) in the row-major order of ``loss`` and the quads (F, 4) between them, counter-clockwise."""
    nx, ny = len(s.xs), len(s.ys)
    gx, gy = np.meshgrid(s.xs, s.ys)  # (ny, nx)
    points = np.stack([gx.ravel(), gy.ravel(), height(s.loss).ravel()], axis=1)
    corner = (np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)[None, :]).ravel()
    quads = np.stack([corner, corner + 1, corner + nx + 1, corner + nx], axis=1)
    return points, quads


def _path_points(projection, surface: Surface, height) -> np.ndarray:
    """The path as (T, 3) points lying on the surface: at its slice loss, else the grid's value under it."""
    from losstrail.values.surface import path_height

    return np.column_stack([projection.xy, height(path_height(projection, surface))])


def _path_columns(projection, surface: Surface) -> dict[str, np.ndarray]:
    if projection is None:
        return {}
    from losstrail.values.surface import grid_value

    columns = {"step": projection.step, "epoch": projection.epoch, "x": projection.xy[:, 0],
               "y": projection.xy[:, 1], "loss": projection.loss, "accuracy": projection.accuracy,
               "off_plane": projection.off_plane}  # fmt: skip
    columns["surface_loss"] = grid_value(surface, projection.xy)
    if projection.measured:
        columns["true_loss"], columns["slice_loss"] = projection.true_loss, projection.slice_loss
    return columns


def _surface_columns(s: Surface) -> dict[str, np.ndarray]:
    gx, gy = np.meshgrid(s.xs, s.ys)
    columns = {"x": gx.ravel(), "y": gy.ravel(), "loss": s.loss.ravel(), "accuracy": s.accuracy.ravel()}
    if s.loss_se is not None:
        columns["loss_se"] = s.loss_se.ravel()
    return columns


def _write_csv(tmp: Path, columns: dict[str, np.ndarray]) -> None:
    table = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    integer = [k for k, v in enumerate(columns.values()) if np.asarray(v).dtype.kind in "iu"]
    formats = ["%d" if k in integer else "%.17g" for k in range(table.shape[1])]
    np.savetxt(tmp, table, fmt=formats, delimiter=",", header=",".join(columns), comments="")


def _write_npz(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


# ---------------------------------------------------------------------------------------------- HDF5


def _write_extras(f, extras: dict) -> None:
    group = f.create_group(_EXTRAS)
    for name, value in extras.items():
        if value is not None:
            group[name] = value


def _h5_surface(run: _Run, options: _Options):
    return lambda tmp: _write_h5_surface(tmp, run, options.directions)


def _h5_path(run: _Run, options: _Options):
    return lambda tmp: _write_h5_projection(tmp, run.projection)


def _write_h5_surface(tmp: Path, run: _Run, directions) -> None:
    import h5py

    s, plane = run.surface, run.plane
    nx, ny = len(s.xs), len(s.ys)
    with h5py.File(tmp, "w") as f:
        if directions is not None:
            f["dir_file"] = str(directions)
        f["xcoordinates"] = s.xs
        f["ycoordinates"] = s.ys
        # Li et al.'s layout: an (nx, ny) array holding the row-major (ny, nx) values.
        f["train_loss"] = s.loss.reshape(nx, ny)
        f["train_acc"] = (100 * s.accuracy).reshape(nx, ny)
        _write_extras(f, {"loss_se": s.loss_se, "method": plane.method, "explained": plane.explained,
                          "eigenvalues": plane.eigenvalues, "title": run.settings.get("title")})  # fmt: skip


def _write_h5_projection(tmp: Path, p) -> None:
    import h5py

    with h5py.File(tmp, "w") as f:
        f["proj_xcoord"] = p.xy[:, 0]
        f["proj_ycoord"] = p.xy[:, 1]
        extras = {"step": p.step, "epoch": p.epoch, "loss": p.loss, "accuracy": p.accuracy, "off_plane": p.off_plane}
        if p.measured:
            extras.update(true_loss=p.true_loss, slice_loss=p.slice_loss)
        _write_extras(f, extras)


def _directions_writer(run: _Run, model):
    plane = run.plane
    shapes = _parameter_shapes(run.store, run.settings, plane.n_params, model)
    pca = None
    if plane.method == "pca":
        trajectory = run.trajectory()
        if trajectory is not None:
            pca = _pca_figures(trajectory, plane)
        elif plane.explained is not None:
            pca = {"explained_variance_ratio_": np.asarray(plane.explained, dtype=np.float64)}

    def write(tmp: Path) -> None:
        import h5py

        with h5py.File(tmp, "w") as f:
            for name, vector in (("xdirection", plane.u), ("ydirection", plane.v)):
                group = f.create_group(name)
                start = 0
                for k, shape in enumerate(shapes):
                    size = int(np.prod(shape))
                    group.create_dataset(str(k), data=vector[start : start + size].reshape(shape))
                    start += size
            if pca is not None:
                for name, value in pca.items():
                    f[name] = value
            _write_extras(f, {"origin": plane.origin, "method": plane.method})

    return write


def _parameter_shapes(store: RunDir | None, settings: dict, n_params: int, model) -> list[tuple[int, ...]]:
    """Shapes of the parameter tensors the plane spans, in ``model.parameters()`` order."""
    if model is not None:
        shapes = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
        source = "model.parameters()"
    elif "shapes" in settings:  # a surface exported from memory, with the trajectory's tensor shapes
        shapes, source = [tuple(s) for s in settings["shapes"]], "trajectory.shapes"
    elif store is None:
        raise ValueError("directions= needs the shapes of the parameter tensors; pass model= (the network)")
    else:
        weights = store.path / settings.get("model_filename", "model.pt")
        if not store.has(weights.name):
            raise FileNotFoundError(
                f"run_dir={str(store.path)!r} has no {weights.name} to read the parameter shapes from; pass model="
            )
        state = store.load_state()  # checked against run.json, never through a link out of the run directory
        # A state_dict lists each module's parameters then its buffers, modules in the order
        # parameters() visits them; without the buffers it is that order.
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        shapes = [tuple(t.shape) for name, t in state.items() if not name.endswith(buffers) and t.is_floating_point()]
        source = str(weights)
    if sum(int(np.prod(s)) for s in shapes) != n_params:
        raise ValueError(
            f"the parameter tensors of {source} hold {sum(int(np.prod(s)) for s in shapes)} numbers but the plane "
            f"has P={n_params}; pass model= (the run's model) to export directions="
        )
    return shapes


def _pca_figures(trajectory, plane) -> dict[str, np.ndarray]:
    """sklearn's PCA attributes for the plane's directions over the path: the ratios, singular values, variances."""
    from losstrail.values.rows import release_pages, row_block

    params = trajectory.params
    n = len(trajectory)
    mean = np.zeros(trajectory.n_params)
    step = row_block(trajectory.n_params)
    for start in range(0, n, step):
        mean += params[start : start + step].sum(axis=0, dtype=np.float64)
        release_pages(params)
    mean /= n
    basis = np.stack([plane.u, plane.v]).astype(np.float64)  # (2, P)
    total, along = 0.0, np.zeros(2)
    for start in range(0, n, step):
        block = params[start : start + step].astype(np.float64) - mean  # (B, P)
        total += float(np.sum(block * block))
        along += np.sum((block @ basis.T) ** 2, axis=0) / np.sum(basis * basis, axis=1)
        release_pages(params)
    return {
        "explained_variance_ratio_": along / total,
        "singular_values_": np.sqrt(along),
        "explained_variance_": along / max(n - 1, 1),
    }


# ---------------------------------------------------------------------------------------------- VTK, OBJ, PLY


def _vtp_surface(run: _Run, options: _Options):
    s = run.surface
    points, quads = _grid_mesh(s, options.height)
    z = points[:, 2]
    cell_z = z[quads].mean(axis=1)  # as h52vtp.py's 'averaged zvalue'
    point_data = {"zvalue": z, "loss": s.loss.ravel()}
    if np.isfinite(s.accuracy).any():
        point_data["accuracy"] = s.accuracy.ravel()
    if s.loss_se is not None:
        point_data["loss_se"] = s.loss_se.ravel()
    text = _vtp(points, point_data, polys=quads, cell_data={"averaged zvalue": cell_z}, binary=not options.ascii)
    return lambda tmp: tmp.write_text(text)


def _vtp_path(run: _Run, options: _Options):
    columns = _path_columns(run.projection, run.surface)
    points = _path_points(run.projection, run.surface, options.height)
    point_data = {"zvalue": points[:, 2], **{k: v for k, v in columns.items() if k not in ("x", "y")}}
    line = np.arange(len(points))[None, :]
    text = _vtp(points, point_data, lines=line, binary=not options.ascii)
    return lambda tmp: tmp.write_text(text)


def _mesh(run: _Run, options: _Options):
    """The surface's points and quads (``_grid_mesh``), and the path's points on it (None without a path)."""
    points, quads = _grid_mesh(run.surface, options.height)
    path_points = None
    if run.projection is not None:
        path_points = _path_points(run.projection, run.surface, options.height)
    return points, quads, path_points


def _obj_surface(run: _Run, options: _Options):
    points, quads, path_points = _mesh(run, options)
    return lambda tmp: _write_obj(tmp, points, quads, path_points)


def _ply_surface(run: _Run, options: _Options):
    points, quads, path_points = _mesh(run, options)
    return lambda tmp: _write_ply(tmp, points, quads, path_points, binary=not options.ascii)


def _vtp(points, point_data: dict, *, polys=None, lines=None, cell_data=None, binary=True) -> str:
    """A VTK XML PolyData file: ``points`` (N, 3), cells as (C, k) index arrays, data arrays by name."""

    def data_array(values, name=None, components=1):
        values = np.ascontiguousarray(values)
        vtk_type = "Int64" if values.dtype.kind in "iub" else "Float64"
        values = values.astype("<i8" if vtk_type == "Int64" else "<f8")
        named = f' Name="{name}"' if name else ""
        head = f'<DataArray type="{vtk_type}"{named} NumberOfComponents="{components}"'
        if binary:
            raw = np.array(values.nbytes, dtype="<u8").tobytes() + values.tobytes()
            return f'{head} format="binary">{base64.b64encode(raw).decode("ascii")}</DataArray>'
        text = " ".join(map(str, values.ravel().tolist()))
        return f'{head} format="ascii">{text}</DataArray>'

    def cells(tag, index):
        if index is None:
            return ""
        offsets = np.arange(1, len(index) + 1) * index.shape[1]
        return f"<{tag}>{data_array(index.ravel(), 'connectivity')}{data_array(offsets, 'offsets')}</{tag}>"

    n_polys, n_lines = (0 if c is None else len(c) for c in (polys, lines))
    scalars = next(iter(point_data), "")
    point_arrays = "".join(data_array(v, k) for k, v in point_data.items())
    cell_arrays = "".join(data_array(v, k) for k, v in (cell_data or {}).items())
    return (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
        "<PolyData>\n"
        f'<Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="{n_lines}" '
        f'NumberOfStrips="0" NumberOfPolys="{n_polys}">\n'
        f'<PointData Scalars="{scalars}">{point_arrays}</PointData>\n'
        f"<CellData>{cell_arrays}</CellData>\n"
        f"<Points>{data_array(points, components=3)}</Points>\n"
        f"{cells('Lines', lines)}{cells('Polys', polys)}\n"
        "</Piece>\n</PolyData>\n</VTKFile>\n"
    )


def _triangles(points, quads) -> np.ndarray:
    """Two counter-clockwise triangles per quad (F*2, 3), leaving out those with a non-finite corner."""
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return tris[np.isfinite(points[tris, 2]).all(axis=1)]


def _finite_heights(points) -> np.ndarray:
    """Points with non-finite heights set to the highest finite one (their triangles are left out)."""
    z = points[:, 2]
    finite = np.isfinite(z)
    top = z[finite].max() if finite.any() else 0.0
    return np.column_stack([points[:, :2], np.where(finite, z, top)])


def _write_obj(tmp: Path, points, quads, path_points) -> None:
    tris = _triangles(points, quads)
    with open(tmp, "w") as f:
        f.write("# losstrail loss surface: x, y in plane coordinates, z the loss (Blender: import with Up = Z)\n")
        f.write("o surface\n")
        np.savetxt(f, _finite_heights(points), fmt="v %.17g %.17g %.17g")
        np.savetxt(f, tris + 1, fmt="f %d %d %d")
        if path_points is not None:
            f.write("o path\n")
            np.savetxt(f, _finite_heights(path_points), fmt="v %.17g %.17g %.17g")
            first = len(points) + 1
            f.write("l " + " ".join(str(k) for k in range(first, first + len(path_points))) + "\n")


def _write_ply(tmp: Path, points, quads, path_points, *, binary: bool) -> None:
    tris = _triangles(points, quads)
    vertices = _finite_heights(points)
    edges = np.zeros((0, 2), dtype=np.int64)
    if path_points is not None:
        first = len(vertices)
        vertices = np.concatenate([vertices, _finite_heights(path_points)])
        edges = np.stack([np.arange(len(path_points) - 1), np.arange(1, len(path_points))], axis=1) + first
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment losstrail loss surface: x, y in plane coordinates, z the loss; edges: the path",
        f"element vertex {len(vertices)}",
        "property double x",
        "property double y",
        "property double z",
        f"element face {len(tris)}",
        "property list uchar int vertex_indices",
        f"element edge {len(edges)}",
        "property int vertex1",
        "property int vertex2",
        "end_header",
    ]
    with open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(vertices.astype("<f8").tobytes())
            face = np.zeros(len(tris), dtype=[("n", "u1"), ("v", "<i4", (3,))])
            face["n"], face["v"] = 3, tris
            f.write(face.tobytes())
            f.write(edges.astype("<i4").tobytes())
        else:
            np.savetxt(f, vertices, fmt="%.17g")
            np.savetxt(f, tris, fmt="3 %d %d %d")
            np.savetxt(f, edges, fmt="%d")


# ---------------------------------------------------------------------------------------------- the registry

EXPORTS = {
    export.name: export
    for export in (
        ExportFormat("h5", _h5_surface, _h5_path, _read_h5_surface, aliases=("hdf5",), requires=_h5py),
        ExportFormat("vtp", _vtp_surface, _vtp_path),
        ExportFormat("obj", _obj_surface, holds_path=True),
        ExportFormat("ply", _ply_surface, holds_path=True),
        ExportFormat("csv", _csv_surface, _csv_path, _table(_read_csv_surface)),
        ExportFormat("npz", _npz_surface, _npz_path, _table(_read_npz_surface), holds_path=True),
    )
}
