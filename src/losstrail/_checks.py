"""Checks of arguments that run where they enter, before any training, grid or file.

Each names the argument as the caller spelled it (a keyword from Python, a flag from the command
line: the specs pass the caller's names), the bad value and a value that works. The checks of a
run directory's saved settings and of a command's outputs are the store's (``store/checks.py``).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from losstrail._registry import FORMATS, quoted

# The figure: pixels per side, dots per inch.
MIN_SIDE, MAX_SIDE = 160, 16384
MIN_DPI, MAX_DPI = 20, 1200
# Frames per second: a GIF frame lasts at most 655.35 s (a 16-bit count of 1/100 s).
MIN_FPS, MAX_FPS = 0.01, 1000.0
MAX_LEVELS = 1000
# Bytes a grid point holds: loss, accuracy and standard error (float64), the exact mask, the
# axes and the evaluator's per-point results on the way.
BYTES_PER_GRID_POINT = 48
# Bytes a figure pixel costs while drawing: the RGBA canvas, the frame copy and the encoder's.
BYTES_PER_PIXEL = 4 * 8


# A job plans on at most this share of the memory the machine has available when it starts.
MEMORY_SHARE = 0.5
# Bytes a model parameter costs while a run trains and evaluates (float32 each): the weights, their
# gradient, two optimizer moments, the recorded row, the plane's centre and two directions, and the
# evaluator's working copies.
BYTES_PER_PARAMETER = 12 * 4
# Bytes an activation costs in training: its value, kept for the backward pass, and its gradient.
BYTES_PER_ACTIVATION = 2 * 4
# Bytes a recorded step costs besides its parameters: step, epoch, loss, accuracy, its projection.
BYTES_PER_STEP = 64
# Bytes of recorded parameters held in memory before the rest of the path goes to disk (the recorder's
# default ``memory_limit``).
PATH_IN_MEMORY = 1 << 30
# Bytes a drawn frame's decision regions cost (an 80x80 map of classes).
BYTES_PER_DECISION_MAP = 80 * 80


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory a new job can have now: Linux's ``MemAvailable`` (within a cgroup's limit), else physical.

    >>> available_memory() is None or available_memory() > 0
    True
    """
    have = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:  # a container's limit (cgroup v2), less what it uses already
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            have = min(have if have is not None else int(limit), max(int(limit) - int(used), 0))
    except (OSError, ValueError):
        pass
    return have if have is not None else memory_bytes()


def check_memory(subject: str, needed: float, fix: str, parts: dict[str, float] | None = None) -> None:
    """The one memory estimate every size goes through: ValueError when ``needed`` bytes will not fit.

    Args:
        subject: the sizes as the caller gave them and what they make, e.g.
            ``"resolution=100000 is a grid of 10,000,000,000 points"``.
        needed: the bytes the job will need for them.
        fix: what to pass instead.
        parts: where the bytes go, named, for the message.

    Raises:
        ValueError: when ``needed`` is more than ``MEMORY_SHARE`` of the available memory; it says
        the estimate and the memory available.
    """
    have = available_memory()
    if have is None or needed <= have * MEMORY_SHARE:
        return
    shown = [f"{name} {size_text(n)}" for name, n in (parts or {}).items() if n >= 1 << 20]
    detail = f" ({', '.join(shown)})" if shown else ""
    raise ValueError(
        f"{subject}, which needs about {size_text(needed)} of memory{detail}; this machine has "
        f"{size_text(have)} available, and a job plans on at most half. {fix}"
    )


def mlp_parameters(input_dim: int, hidden_dim: int, num_hidden_layers: int, num_classes: int) -> int:
    """Parameters of ``MLP(input_dim, num_classes, num_hidden_layers, hidden_dim)``, counted without building it.

    >>> mlp_parameters(2, 50, 1, 3)  # the default MLP on the spirals
    303
    """
    widths = [input_dim] + [hidden_dim] * num_hidden_layers + [num_classes]
    return sum(w_in * w_out + w_out for w_in, w_out in zip(widths[:-1], widths[1:]))


def training_bytes(n_params: int, *, batch_rows: int = 0, activations: int = 0, steps: int = 0, frames: int = 0,
                   decision: bool = False) -> dict[str, int]:  # fmt: skip
    """Where a run's memory goes, in bytes: parameters, activations, the recorded path and the frames, by name.

    Args:
        n_params: the model's parameters.  batch_rows: examples in a training batch.
        activations: activations one example makes in a forward pass.
        steps: recorded steps of the path.  frames: most frames drawn (decision maps, when ``decision``).
    """
    frames = min(frames, steps) if steps else frames
    return {
        "parameters": n_params * BYTES_PER_PARAMETER,
        "activations": batch_rows * activations * BYTES_PER_ACTIVATION,
        "recorded path": min(steps * n_params * 4, PATH_IN_MEMORY) + steps * BYTES_PER_STEP,
        "frames": frames * (BYTES_PER_STEP + (n_params * 4 + BYTES_PER_DECISION_MAP if decision else 0)),
    }


def free_disk(folder) -> int | None:
    """Bytes free on the disk that holds ``folder`` (or its nearest parent that exists), or None."""
    import shutil

    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_training_memory(sizes: dict, n_params: int, fix: str = "Pass smaller sizes", storage=None, **counts) -> None:
    """The memory a run needs for its sizes (``training_bytes(n_params, **counts)``), checked by ``check_memory``;
    and, with ``storage`` (the folder the path is kept in), the disk its recorded path takes.

    ``sizes`` are the arguments that set them, ``{name: value}`` as the caller spelled them.
    """
    parts = training_bytes(n_params, **counts)
    what = f"a model of {n_params:,} parameters"
    if counts.get("batch_rows"):
        what += f" trained on batches of {counts['batch_rows']:,} examples"
    if counts.get("steps"):
        what += f" for {counts['steps']:,} recorded steps"
    given = ", ".join(f"{name}={value!r}" for name, value in sizes.items())
    check_memory(f"{given} make {what}", sum(parts.values()), fix, parts)
    disk, free = counts.get("steps", 0) * n_params * 4, None if storage is None else free_disk(storage)
    if free is not None and disk > free:
        raise ValueError(
            f"{given} make {what}, whose recorded path takes about {size_text(disk)} of disk in {str(storage)!r}; "
            f"that disk has {size_text(free)} free. {fix}"
        )


def size_text(n: float) -> str:
    """``1.5 GiB``-style text for a number of bytes.

    >>> size_text(3 * 2**30), size_text(8e12)
    ('3.0 GiB', '7.3 TiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def shown(argument: str, value) -> str:
    """How the caller wrote the argument: ``--budget 5s`` on the command line, ``budget='5s'`` in Python.

    >>> shown("--tol", 0.5), shown("tol", 0.5)
    ('--tol 0.5', 'tol=0.5')
    """
    return f"{argument} {value}" if argument.startswith("-") else f"{argument}={value!r}"


def check_tol(tol, argument: str = "tol", *, as_setting: bool = False) -> float:
    """``tol`` as a float, if it is a positive finite number; else a ValueError naming ``argument``, as typed
    (``--tol 0``), or as the specs name every setting (``--tol=0``) with ``as_setting``.

    >>> check_tol(0.01)
    0.01
    """
    ok = isinstance(tol, numbers.Real) and not isinstance(tol, bool)
    if not ok or not math.isfinite(tol) or tol <= 0:
        given = f"{argument}={tol!r}" if as_setting else shown(argument, tol)
        raise ValueError(
            f"{given} must be a positive finite number, the largest relative error an "
            f"interpolated grid cell may have; e.g. {shown(argument, '0.01')} (1%)"
        )
    return float(tol)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resolution(resolution, argument: str = "resolution") -> int | tuple[int, int]:
    """``resolution`` as ``n`` or ``(nx, ny)``, checked for its type, size and the memory its grid needs.

    >>> check_resolution(20), check_resolution([30, 20])
    (20, (30, 20))
    >>> check_resolution("20")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: resolution='20' must be a number of grid points per axis, e.g. resolution=100, ...
    """
    example = f"e.g. {argument}=100, or (nx, ny) such as {argument}=(120, 80)"
    if _is_int(resolution):
        nx = ny = resolution
    elif isinstance(resolution, (tuple, list)) and len(resolution) == 2 and all(map(_is_int, resolution)):
        nx, ny = resolution
    else:
        raise ValueError(f"{argument}={resolution!r} must be a number of grid points per axis, {example}")
    if nx < 2 or ny < 2:
        raise ValueError(f"{argument}={resolution!r} must have at least 2 grid points per axis, {example}")
    have = available_memory() or 0
    fits = math.isqrt(int(have * MEMORY_SHARE / BYTES_PER_GRID_POINT))
    check_memory(f"{argument}={resolution!r} is a grid of {nx * ny:,} points", nx * ny * BYTES_PER_GRID_POINT,
                 f"Pass at most {argument}={fits} (most pictures need 100 to 300)")  # fmt: skip
    return nx if _is_int(resolution) else (nx, ny)


# LeNet-5 on 28x28 images (the larger of its inputs here): parameters, and activations per example.
LENET_PARAMETERS, LENET_ACTIVATIONS = 61_706, 10_000


def check_builtin_run(dataset: str, model: str, *, hidden_dim: int, num_hidden_layers: int, batch_size: int | None,
                      n_epochs: int, max_frames: int, decision: bool, storage=None) -> None:  # fmt: skip
    """The memory (and the disk in ``storage``) a run of a built-in model on a built-in dataset needs, checked
    before anything is built.

    ``batch_size`` None is the whole dataset; the path records every step. The message suggests
    what to shrink: the steps when the recorded path needs the most, else the MLP's layers.
    """
    from losstrail._registry import DATASET_SIZES

    shape, classes, examples = DATASET_SIZES[dataset]
    rows = examples if batch_size is None else min(batch_size, examples)
    steps = n_epochs * -(-examples // max(rows, 1)) + 1
    counts = {"batch_rows": rows, "steps": steps, "frames": max_frames, "decision": decision}
    inputs = math.prod(shape)

    def needed(layers: int) -> tuple[int, int, dict]:
        if model != "mlp":
            return LENET_PARAMETERS, LENET_ACTIVATIONS, training_bytes(LENET_PARAMETERS, activations=LENET_ACTIVATIONS,
                                                                       **counts)  # fmt: skip
        n_params = mlp_parameters(inputs, hidden_dim, layers, classes)
        activations = inputs + 2 * hidden_dim * layers + classes
        return n_params, activations, training_bytes(n_params, activations=activations, **counts)

    n_params, activations, parts = needed(num_hidden_layers)
    sizes = {"batch_size": batch_size, "n_epochs": n_epochs}
    fix = "Pass fewer n_epochs= (or a larger batch_size=)"
    if model == "mlp":
        sizes = {"num_hidden_layers": num_hidden_layers, "hidden_dim": hidden_dim, **sizes}
        if max(parts, key=parts.get) != "recorded path":
            fix = _fewer_layers(lambda layers: sum(needed(layers)[2].values()), num_hidden_layers, hidden_dim)
    check_training_memory(sizes, n_params, fix, storage, activations=activations, **counts)


def _fewer_layers(needed, layers: int, hidden_dim: int) -> str:
    """What to pass instead of ``layers`` hidden layers: the most that fit (``needed(layers)`` bytes), or narrower."""
    low, high, budget = 0, layers, (available_memory() or 0) * MEMORY_SHARE
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if needed(middle) <= budget else (low, middle - 1)
    if low:
        return f"Pass at most num_hidden_layers={low} at hidden_dim={hidden_dim}, or a smaller hidden_dim="
    return "Pass a smaller hidden_dim= (or batch_size=)"


def check_size(size, argument: str = "size") -> tuple[int, int] | None:
    """``size`` as ``(width, height)`` pixels, or None for the default.

    >>> check_size((900, 600))
    (900, 600)
    >>> check_size("900x600")
    Traceback (most recent call last):
    ...
    ValueError: size='900x600' must be (width, height) in pixels, e.g. size=(900, 600)
    """
    if size is None:
        return None
    example = f"e.g. {argument}=(900, 600)"
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(map(_is_int, size))):
        raise ValueError(f"{argument}={size!r} must be (width, height) in pixels, {example}")
    width, height = size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValueError(f"{argument}={size!r}: each side must be between {MIN_SIDE} and {MAX_SIDE} pixels, {example}")
    check_memory(f"{argument}={size!r} is a figure of {width * height:,} pixels", width * height * BYTES_PER_PIXEL,
                 f"Pass a smaller size, {example}")  # fmt: skip
    return int(width), int(height)


def check_fps(fps, argument: str = "fps") -> float:
    """A frame rate between 0.01 and 1000 frames per second."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(
            f"{argument}={fps!r} must be a positive number of frames per second, e.g. {argument}=15 "
            f"(from {MIN_FPS:g} to {MAX_FPS:g})"
        )
    return float(fps)


_FLOAT32_MAX = 3.4028234663852886e38


def check_learning_rate(rate, argument: str = "learning_rate") -> float | None:
    """A positive, finite learning rate that float32 can hold, or None (the model's own).

    >>> check_learning_rate(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: learning_rate=inf must be a positive finite number, e.g. learning_rate=5e-3
    """
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{argument}={rate!r} must be a positive finite number, e.g. {argument}=5e-3")
    if rate > _FLOAT32_MAX:  # the optimizers keep it in float32
        raise ValueError(f"{argument}={rate!r} is more than float32 holds ({_FLOAT32_MAX:.4g}): choose a smaller rate")
    return float(rate)


def check_custom_directions_used(reduction_method, custom_directions) -> None:
    """``custom_directions`` are used only by ``reduction_method='custom'``: given with another, they are an error.

    >>> check_custom_directions_used("pca", "uv.npz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: custom_directions='uv.npz' is given but reduction_method='pca' does not use it; ...
    """
    if custom_directions is None or reduction_method == "custom":
        return
    shown = repr(str(custom_directions)) if isinstance(custom_directions, (str, os.PathLike)) else "(u, v)"
    raise ValueError(
        f"custom_directions={shown} is given but reduction_method={reduction_method!r} does not use it; "
        "pass reduction_method='custom' to use it, or leave custom_directions out"
    )


def check_range(argument: str, value) -> tuple[float, float]:
    """``(low, high)`` plane coordinates, finite, low < high.

    >>> check_range("xrange", [-1, 2])
    (-1.0, 2.0)
    """
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{argument}={value!r} must be a pair (low, high) of plane coordinates, e.g. {argument}=(-1, 2)"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{argument}={value!r} must have a finite low < high, e.g. {argument}=(-1, 2)")
    return low, high


def check_centre(centre, argument: str = "centre") -> None:
    """``'final'``, ``'initial'`` or a recorded step (an integer)."""
    if centre in ("final", "initial") or _is_int(centre):
        return
    raise ValueError(f"{argument}={centre!r} is not known; expected 'final', 'initial' or a recorded step (an integer)")


def check_output_file(argument: str, out) -> Path:
    """``out`` names a file that can be made: not an existing folder, in a folder that can be written."""
    from losstrail._files import check_writable_dir

    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{argument}={str(out)!r} is a folder; name a file in it, e.g. {str(path / 'sample.gif')!r}")
    check_writable_dir(argument, path.resolve().parent)
    return path


def check_device(device, argument: str = "device") -> None:
    """A device torch can use here: 'cpu', or 'cuda'/'cuda:N' when CUDA is visible."""
    if device is None:
        return
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{argument}={device!r} is not a device; expected 'cpu' or 'cuda'") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{argument}={device!r} but no CUDA device is visible to PyTorch; pass {argument}='cpu'")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(
                f"{argument}={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"pass {argument}='cuda:0'"
            )
    elif chosen.type != "cpu" and chosen.type != "mps":
        raise ValueError(f"{argument}={device!r} is not supported; expected 'cpu' or 'cuda'")


# Extensions of pictures and videos in formats losstrail does not write: a format given for one is a contradiction.
_PICTURE_SUFFIXES = ("jpg", "jpeg", "webp", "bmp", "tif", "tiff", "avi", "mov", "mkv", "webm", "eps", "ps")


def output_format(out: str | os.PathLike, format: str | None = None, *, allowed=FORMATS) -> str:
    """The format of ``out``: ``format`` if given, else its extension; checked against the known ones.

    >>> output_format("runs/sample.GIF")
    'gif'
    >>> output_format("movie.avi")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: output 'movie.avi' has format 'avi', which is not supported; expected one of 'gif', 'mp4', ...
    """
    suffix = Path(out).suffix.lstrip(".").lower()
    if format is not None and suffix != str(format).lower() and suffix in (*FORMATS, *_PICTURE_SUFFIXES):
        raise ValueError(
            f"format={format!r} contradicts the extension of output {str(out)!r}, a .{suffix} file; name the "
            f"output *.{str(format).lower()}, or drop format={format!r} to write {suffix}"
        )
    chosen = (format or suffix).lower()
    if chosen not in allowed:
        raise ValueError(
            f"output {str(out)!r} has format {chosen!r}, which is not supported; expected one of {quoted(allowed)}"
        )
    return chosen
