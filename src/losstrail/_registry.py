"""Names of every strategy chosen by name, and the one check that validates them.

This module imports nothing heavy: the CLI reads its choices from here so that
``losstrail --help`` answers without importing torch. Each heavy module maps the same
names to implementations, and a test checks the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop")
# Names the reference package used for the same optimizers.
OPTIMIZER_ALIASES = {"sgd+momentum": "momentum"}
DIRECTIONS = ("pca", "random", "filter", "layer", "hessian", "interpolation", "custom", "through")
# The methods that choose a plane for a recorded path ('through' takes models: make_plane([a, b, c], "through")).
PATH_DIRECTIONS = DIRECTIONS[:-1]
DATASETS = ("spirals", "moons", "digits", "mnist")
# Each built-in dataset's input shape, classes and examples by default, for the memory a run will need,
# estimated before torch is imported (a test checks they are the DataModules').
DATASET_SIZES = {
    "spirals": ((2,), 3, 1110),
    "moons": ((2,), 2, 1000),
    "digits": ((1, 8, 8), 10, 1797),
    "mnist": ((1, 28, 28), 10, 3000),
}
MODELS = ("mlp", "lenet")
GRIDS = ("full", "adaptive")
# Picture formats by name (each one's file suffix), grouped by what a picture in it is: an animation,
# an interactive page, or a still of one frame. renderers/formats.py's PICTURES gives each its writer.
ANIMATED_FORMATS = ("gif", "mp4")
PAGE_FORMATS = ("html",)
STILL_FORMATS = ("png", "pdf", "svg")
FORMATS = (*ANIMATED_FORMATS, *PAGE_FORMATS, *STILL_FORMATS)
MEDIA = {"animation": ANIMATED_FORMATS, "page": PAGE_FORMATS, "still": STILL_FORMATS}
# The view a picture draws, in any medium: the 2-D contour or the 3-D surface.
VIEWS = ("2d", "3d")
# Open formats a surface is exported to, by name (each one's file suffix); store/formats.py's EXPORTS gives
# each its writers and reader. PATH_FORMATS also hold a path alone (export's path=); READ_FORMATS are read
# back (read_surface, render_surface, `losstrail import`), in the order their messages list them;
# HEIGHT_FORMATS have a z axis, which log= and zmax= shape.
EXPORT_FORMATS = ("h5", "vtp", "obj", "ply", "csv", "npz")
PATH_FORMATS = ("h5", "vtp", "csv", "npz")
READ_FORMATS = ("h5", "npz", "csv")
HEIGHT_FORMATS = ("vtp", "obj", "ply")


def quoted(names: Iterable[str]) -> str:
    """``'a', 'b', 'c'`` for an error message."""
    return ", ".join(repr(n) for n in names)


def check_choice(argument: str, value: object, names: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``names``, else raise a ValueError that lists them.

    >>> check_choice("optimizer", "adam", OPTIMIZERS)
    'adam'
    >>> check_choice("optimizer", "adma", OPTIMIZERS)
    Traceback (most recent call last):
    ...
    ValueError: optimizer='adma' is not known; expected one of 'sgd', 'momentum', 'adam', 'adamw', 'adagrad', 'rmsprop'
    """
    names = tuple(names)
    if value not in names:
        raise ValueError(f"{argument}={value!r} is not known; expected one of {quoted(names)}")
    return value  # type: ignore[return-value]


def medium(format: str) -> str:
    """What a picture in ``format`` is: ``'animation'``, ``'page'`` or ``'still'``.

    >>> medium("mp4"), medium("html"), medium("svg")
    ('animation', 'page', 'still')
    """
    return next(name for name, formats in MEDIA.items() if check_choice("format", format, FORMATS) in formats)


def stated_optimizer(optimizer: str, argument: str = "optimizer") -> str:
    """The canonical name of the optimizer named ``optimizer`` (the reference's aliases resolved).

    >>> stated_optimizer("sgd+momentum")
    'momentum'
    """
    return check_choice(argument, OPTIMIZER_ALIASES.get(optimizer, optimizer), OPTIMIZERS)
