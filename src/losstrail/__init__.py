"""losstrail: watch a neural network train, as a path across its loss landscape.

The public API is exactly what this module exports. Names load on first use, so
``import losstrail`` (and the ``losstrail`` command's ``--help``) stay fast.

>>> import losstrail
>>> "loss_landscape_anim" in losstrail.__all__
True
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "loss_landscape_anim": "api",
    "AnimationData": "results",
    "Comparison": "results",
    "compare": "comparison",
    "hessian_eigenpairs": "hessian",
    "LossLine": "landscape",
    "loss_line": "surface",
    "take_subset": "_batching",
    "plot_loss_line": "renderers",
    "render": "redraw",
    "compute_surface": "grid_job",
    "SpiralsDataModule": "data",
    "MoonsDataModule": "data",
    "DigitsDataModule": "data",
    "MNISTDataModule": "data",
    "make_datamodule": "data",
    "GenericModel": "models",
    "LeNet": "models",
    "MLP": "models",
    "make_model": "models",
    "Trajectory": "trajectory",
    "load_trajectory": "checkpoints",
    "TrajectoryRecorder": "_lightning",
    "Recorder": "record",
    "LosstrailCallback": "integrations",
    "Run": "train",
    "fit": "train",
    "make_optimizer": "train",
    "Plane": "plane",
    "captured_fraction": "directions",
    "make_plane": "directions",
    "Projection": "projection",
    "project": "projection",
    "Surface": "landscape",
    "loss_surface": "surface",
    "path_grid": "surface",
    "animate": "renderers",
    "Style": "_specs",
    "export": "formats",
    "read_surface": "formats",
    "render_surface": "formats",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'losstrail' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"losstrail.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
