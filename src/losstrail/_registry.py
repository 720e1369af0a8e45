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
FORMATS = ("gif", "mp4", "html", "png", "pdf", "svg")
ANIMATED_FORMATS = ("gif", "mp4")
STILL_FORMATS = ("png", "pdf", "svg")
VIEWS = ("2d", "3d")


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


def stated_optimizer(optimizer: str, argument: str = "optimizer") -> str:
    """The canonical name of the optimizer named ``optimizer`` (the reference's aliases resolved).

    >>> stated_optimizer("sgd+momentum")
    'momentum'
    """
    return check_choice(argument, OPTIMIZER_ALIASES.get(optimizer, optimizer), OPTIMIZERS)
