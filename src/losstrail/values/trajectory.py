"""The ``Trajectory`` value: the parameters a run recorded, with the loss and accuracy at each point.

NumPy only, so a saved run loads and draws without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from losstrail.values.reprs import short_repr
from losstrail.values.rows import SketchedRows, release_pages, row_block

__all__ = ["PathSketch", "Steps", "Trajectory"]

PARAMS_FILE = "params.bin"  # a path kept on disk: its rows, float32 or float16, in the run directory
DTYPES = ("float32", "float16")


def check_dtype(dtype) -> str | None:
    """A recorder's ``dtype`` as a string, or None for its default; a ValueError for any other."""
    if dtype is not None and str(dtype) not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
    return None if dtype is None else str(dtype)


class Steps(NamedTuple):
    """Every recorded step of a path: its global step, epoch, loss and accuracy (each (T,))."""

    step: np.ndarray
    epoch: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray


@dataclass(frozen=True)
class PathSketch:
    """What a long path of a large model keeps of every step besides its snapshots.

    A recorder keeps this when the path would pass its ``memory_limit`` and has more steps than
    snapshots: every recorded step's loss, accuracy, step and epoch, and the path's top two
    principal directions over *every* step, from a Frequent Directions sketch (Liberty, 2013;
    Ghashami et al., 2016) of the rows minus θ_0 (each sketch row the mean of a few consecutive
    steps), streamed during training with the exact running mean. The sketch's covariance Ĉ sits
    below the true centred covariance C of every step by at most ``shrinkage`` in every direction
    (0 ≼ C − Ĉ ≼ shrinkage·I; it counts Frequent Directions' shrinkage and the scatter of the
    steps about those means), so the angle of its principal plane to the exact one is at most
    ``angle_bound`` degrees (Davis–Kahan).
    """

    step: np.ndarray  # (T,) int64, every recorded step
    epoch: np.ndarray  # (T,) int64
    loss: np.ndarray  # (T,) float64
    accuracy: np.ndarray  # (T,) float64
    variances: np.ndarray  # (r,) float64, the sketch's principal variances, largest first (r >= 2 with directions)
    total_variance: float  # of every step, exact (float64 sums)
    shrinkage: float  # every variance is low by at most this (Frequent Directions' shrinkage and the scatter left out)
    directions: np.ndarray | None = None  # (2, P) float32 unit vectors; None: no sketch fitted the memory

    __repr__ = short_repr

    def __len__(self) -> int:
        return self.step.shape[0]

    @property
    def angle_bound(self) -> float:
        """Degrees: how far the sketch's principal plane can be from the exact one of every step (inf: no bound)."""
        if self.directions is None or len(self.variances) < 2:
            return math.inf
        third = self.variances[2] if len(self.variances) > 2 else 0.0
        gap = self.variances[1] - third - self.shrinkage
        if gap <= 0:
            return math.inf
        return math.degrees(math.asin(min(1.0, self.shrinkage / gap)))


@dataclass(frozen=True)
class Trajectory:
    """The recorded parameters θ_k of a run, with the loss and accuracy measured at each.

    Point k holds θ_k and the batch loss of the step that starts from θ_k; the last point
    is the final parameters after the last step.

    A long path of a large model is kept *sketched*: ``params`` holds at most a few hundred
    evenly spaced snapshots (and the final parameters), which frames and projections use, and
    ``sketch`` (a ``PathSketch``) every step's loss and the principal directions of every step,
    which ``make_plane(..., 'pca')`` uses. ``steps()`` gives every recorded step either way.
    """

    params: np.ndarray  # (T, P) float32 (or float16), rows in model.parameters() order; maybe a memmap
    loss: np.ndarray  # (T,) float64
    accuracy: np.ndarray  # (T,) float64, NaN where the task is not classification
    step: np.ndarray  # (T,) int64, global optimizer step at which θ_k was taken
    epoch: np.ndarray  # (T,) int64
    names: tuple[str, ...] | None = None  # the recorded parameters, in order; None: all of the model's
    shapes: tuple[tuple[int, ...], ...] | None = None  # their shapes, with ``names``
    sketch: PathSketch | None = None  # every step of a path kept as snapshots; None: params has every step

    __repr__ = short_repr

    def __post_init__(self):
        n = self.params.shape[0]
        if self.params.ndim != 2:
            raise ValueError(f"Trajectory.params must be 2-D (T, P); got shape {self.params.shape}")
        for name in ("loss", "accuracy", "step", "epoch"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Trajectory.{name} must have shape ({n},); got {getattr(self, name).shape}")
        if self.sketch is not None:
            directions = self.sketch.directions
            if directions is not None and directions.shape != (2, self.params.shape[1]):
                raise ValueError(
                    f"Trajectory.sketch.directions must have shape (2, {self.params.shape[1]}); got {directions.shape}"
                )
            # The rows carry the sketch, so PCA of ``params`` is the PCA of every step.
            object.__setattr__(self, "params", SketchedRows.carrying(self.params, self.sketch))

    def steps(self) -> Steps:
        """Every recorded step (step, epoch, loss, accuracy): the sketch's for a sketched path, else the rows'."""
        source = self.sketch if self.sketch is not None else self
        return Steps(source.step, source.epoch, source.loss, source.accuracy)

    def __len__(self) -> int:
        return self.params.shape[0]

    @property
    def n_params(self) -> int:
        return self.params.shape[1]

    def finite_prefix(self) -> Trajectory:
        """The points before the first one with a NaN or infinite parameter (training diverged there)."""
        end = len(self)
        step = row_block(self.n_params)
        for start in range(0, len(self), step):  # by row blocks: params may be a memory map on disk
            block = np.isfinite(self.params[start : start + step]).all(axis=1)
            release_pages(self.params)
            if not block.all():
                end = start + int(np.argmin(block))
                break
        if end == len(self):
            return self
        cut = (getattr(self, f)[:end] for f in ("params", "loss", "accuracy", "step", "epoch"))
        return Trajectory(*cut, names=self.names, shapes=self.shapes)
