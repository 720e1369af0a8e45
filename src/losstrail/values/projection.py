"""The ``Projection`` value: a recorded path seen in a plane, with the losses that say how far to trust it.

NumPy only; ``losstrail.planes.projection.project`` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losstrail.values.plane import Plane
from losstrail.values.reprs import short_repr

__all__ = ["Projection"]


@dataclass(frozen=True)
class Projection:
    """A trajectory seen in a plane: what the pictures draw."""

    plane: Plane
    xy: np.ndarray  # (T, 2) plane coordinates, least squares
    off_plane: np.ndarray  # (T,) distance of θ_k from the plane
    loss: np.ndarray  # (T,) loss recorded at θ_k during training
    accuracy: np.ndarray  # (T,) accuracy recorded at θ_k; NaN when not classification
    step: np.ndarray  # (T,) int64 global step
    epoch: np.ndarray  # (T,) int64
    true_loss: np.ndarray | None = None  # (T,) mean loss over the grid's data at θ_k itself; NaN where not measured
    slice_loss: np.ndarray | None = None  # (T,) the same at θ_k's projection onto the plane; NaN where not measured
    loss_label: str | None = None  # what ``loss`` holds when not a training batch's loss (a path read from a file)
    step_label: str = "step"  # what ``step`` counts: "point" (the index along the path) where a file gives no steps,
    # "" for a model drawn alone (a plane with no path: one point at the centre)

    __repr__ = short_repr

    def __len__(self) -> int:
        return self.xy.shape[0]

    @property
    def alone(self) -> bool:
        """True for a model drawn alone at its plane's centre (no path): no steps, no optimizer to follow."""
        return self.step_label == ""

    @property
    def measured(self) -> bool:
        """True when the true and slice losses were evaluated (at some points, at least)."""
        return self.true_loss is not None and self.slice_loss is not None

    @property
    def measured_at(self) -> np.ndarray:
        """Indices of the points whose true and slice losses were evaluated (empty when none were)."""
        if not self.measured:
            return np.zeros(0, np.int64)
        return np.flatnonzero(~(np.isnan(self.true_loss) & np.isnan(self.slice_loss)))
