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
    "AnimationData": "values.results",
    "Comparison": "values.results",
    "compare": "comparison",
    "hessian_eigenpairs": "planes.hessian",
    "LossLine": "values.surface",
    "loss_line": "evaluation.grids",
    "take_subset": "evaluation.batches",
    "plot_loss_line": "renderers",
    "render": "renderers.redraw",
    "compute_surface": "jobs.grid",
    "SpiralsDataModule": "datamodule",
    "MoonsDataModule": "datamodule",
    "DigitsDataModule": "datamodule",
    "MNISTDataModule": "datamodule",
    "make_datamodule": "builtin.data",
    "GenericModel": "builtin.models",
    "LeNet": "builtin.models",
    "MLP": "builtin.models",
    "make_model": "builtin.nets",
    "Trajectory": "values.trajectory",
    "load_trajectory": "training.checkpoints",
    "TrajectoryRecorder": "training.lightning",
    "Recorder": "training.record",
    "LosstrailCallback": "training.huggingface",
    "Run": "training.fit",
    "fit": "training.fit",
    "make_optimizer": "training.fit",
    "Plane": "values.plane",
    "captured_fraction": "planes.directions",
    "make_plane": "planes.directions",
    "Projection": "values.projection",
    "project": "planes.projection",
    "Surface": "values.surface",
    "loss_surface": "evaluation.grids",
    "path_grid": "evaluation.grids",
    "plane_grid": "evaluation.grids",
    "animate": "renderers",
    "Style": "values.specs",
    "export": "store.formats",
    "read_surface": "store.formats",
    "render_surface": "renderers.redraw",
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
