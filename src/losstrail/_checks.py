"""Checks of arguments and saved settings that run where they enter, before any training, grid or file.

Each names the argument as the caller spelled it, the bad value and a value that works; the
CLI translates the API's names into its flags (``cli_words``).
"""

from __future__ import annotations

import math
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


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


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
    needed, have = nx * ny * BYTES_PER_GRID_POINT, memory_bytes()
    if have is not None and needed > have / 2:
        fits = math.isqrt(int(have / 2 / BYTES_PER_GRID_POINT))
        raise ValueError(
            f"{argument}={resolution!r} is a grid of {nx * ny:,} points, which needs {size_text(needed)} of memory; "
            f"this machine has {size_text(have)}. Pass at most {argument}={fits} (most pictures need 100 to 300)"
        )
    return nx if _is_int(resolution) else (nx, ny)


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
    needed, have = width * height * BYTES_PER_PIXEL, memory_bytes()
    if have is not None and needed > have / 2:
        raise ValueError(
            f"{argument}={size!r} needs {size_text(needed)} of memory to draw; this machine has {size_text(have)}. "
            f"Pass a smaller size, {example}"
        )
    return int(width), int(height)


def check_fps(fps, argument: str = "fps") -> float:
    """A frame rate between 0.01 and 1000 frames per second."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(
            f"{argument}={fps!r} must be a positive number of frames per second, e.g. {argument}=15 "
            f"(from {MIN_FPS:g} to {MAX_FPS:g})"
        )
    return float(fps)


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


def check_directions(directions) -> None:
    """Custom directions whose squares can be summed in float64 (1e300 overflows and breaks every plane)."""
    import numpy as np

    if directions is None:
        return
    try:
        u, v = directions
    except (TypeError, ValueError):
        return  # the shape is checked where the parameter count is known
    for name, d in (("u", u), ("v", v)):
        d = np.asarray(d.detach().cpu() if hasattr(d, "detach") else d, dtype=np.float64).reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.sqrt(np.sum(d * d)))
        if not math.isfinite(norm) or (norm > 0 and norm < 1e-150):
            raise ValueError(
                f"custom_directions {name} has length {norm:g}, which float arithmetic cannot use; "
                "scale it to about the size of the parameters (e.g. u / np.linalg.norm(u))"
            )


# Bounds a run.json value must keep before a reader acts on it.
_RECIPE_INT_BOUNDS = {
    "hidden_dim": 65536,
    "num_hidden_layers": 1000,
    "batch_size": 10_000_000,
    "n_per_class": 10_000_000,
    "n_examples": 10_000_000,
}


def check_settings(run_dir: Path, settings: dict) -> None:
    """Raise ValueError for ``run.json`` settings outside sane bounds (names leading out: ``read_record``)."""
    where = f"{str(Path(run_dir) / 'run.json')!r}"
    fix = "the file was edited or damaged; run the job again to rewrite it"
    resolution = settings.get("resolution", 100)
    try:
        check_resolution(tuple(resolution) if isinstance(resolution, list) else resolution)
    except ValueError as err:
        raise ValueError(f"{where} has {err}; {fix}") from None
    for key in ("subset", "bn_batches", "seed", "n_params", "plane_seed", "subset_seed"):
        value = settings.get(key)
        if value is not None and (not _is_int(value) or value < 0 or value > 2**62):
            raise ValueError(f"{where} has {key}={value!r}, not a count; {fix}")
    for key in ("xrange", "yrange"):
        value = settings.get(key)
        ok = value is None or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and all(math.isfinite(v) for v in value) and value[0] < value[1]
        )  # fmt: skip
        if not ok:
            raise ValueError(f"{where} has {key}={value!r}, not a range [low, high]; {fix}")
    for kind in ("model_recipe", "data_recipe"):
        recipe = settings.get(kind)
        if recipe is None:
            continue
        if not isinstance(recipe, dict):
            raise ValueError(f"{where} has {kind}={recipe!r}, not an object; {fix}")
        for key, value in recipe.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} has {kind} {key}={value!r}; {fix}")
            bound = _RECIPE_INT_BOUNDS.get(key)
            if bound is not None and value is not None and (not _is_int(value) or not 1 <= value <= bound):
                raise ValueError(f"{where} has {kind} {key}={value!r}, outside 1..{bound}; {fix}")


def output_format(out: str | os.PathLike, format: str | None = None, *, allowed=FORMATS) -> str:
    """The format of ``out``: ``format`` if given, else its extension; checked against the known ones.

    >>> output_format("runs/sample.GIF")
    'gif'
    >>> output_format("movie.avi")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: output 'movie.avi' has format 'avi', which is not supported; expected one of 'gif', 'mp4', ...
    """
    chosen = (format or Path(out).suffix.lstrip(".")).lower()
    if chosen not in allowed:
        raise ValueError(
            f"output {str(out)!r} has format {chosen!r}, which is not supported; expected one of {quoted(allowed)}"
        )
    return chosen
