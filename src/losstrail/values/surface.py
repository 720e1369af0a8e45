"""What the evaluation stages return: a ``Surface`` over a grid in a plane, a ``LossLine``
along a line in parameter space, and a classifier's ``DecisionMaps``.

NumPy only, so a saved run loads and draws without torch; ``losstrail.evaluation.grids`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losstrail.values.reprs import short_repr

__all__ = ["DecisionMaps", "LossLine", "Surface"]


@dataclass(frozen=True)
class Surface:
    """Loss and accuracy on a grid in a plane; entry ``[i, j]`` is at ``(xs[j], ys[i])``."""

    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,)
    loss: np.ndarray  # (ny, nx) mean loss over the data
    accuracy: np.ndarray  # (ny, nx) fraction correct; NaN when the task is not classification
    loss_se: np.ndarray | None = None  # (ny, nx) standard error of each mean loss, when on a data subset
    exact: np.ndarray | None = None  # (ny, nx) bool, adaptive grids: evaluated exactly (others interpolated)
    max_error: float | None = None  # adaptive grids: the largest relative interpolation error the checks allow
    marks_loss: np.ndarray | None = None  # (K,) loss at the plane's marked points (its ``marks``), evaluated exactly

    __repr__ = short_repr

    @property
    def adaptive(self) -> bool:
        """True when only some cells were evaluated exactly (``grid='adaptive'``)."""
        return self.exact is not None and not bool(self.exact.all())

    def describe_grid(self) -> str:
        """One line on how exact the grid is, for read-outs: ``'adaptive: 1,240 of 10,000 points exact, ...'``."""
        if not self.adaptive:
            return f"full grid: all {self.loss.size:,} points exact"
        return (
            f"adaptive: {int(self.exact.sum()):,} of {self.loss.size:,} points exact, "
            f"checked error ≤ {100 * (self.max_error or 0.0):.1f}%"
        )

    def __post_init__(self):
        shape = (len(self.ys), len(self.xs))
        for name in ("loss", "accuracy", "loss_se", "exact"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"Surface.{name} must have shape {shape}; got {value.shape}")

    @property
    def minimum(self) -> tuple[float, float, float]:
        """``(x, y, loss)`` of the grid cell with the lowest finite loss."""
        masked = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        return float(self.xs[j]), float(self.ys[i]), float(self.loss[i, j])


@dataclass(frozen=True)
class LossLine:
    """Loss and accuracy along a line ``origin + t * direction`` in parameter space."""

    ts: np.ndarray  # (n,) line coordinates
    loss: np.ndarray  # (n,) mean loss over the data
    accuracy: np.ndarray  # (n,) fraction correct; NaN when not classification

    __repr__ = short_repr


@dataclass(frozen=True)
class DecisionMaps:
    """A 2-D classifier's predicted class over its input plane, at some recorded points of a path."""

    xs: np.ndarray  # (gw,) input x
    ys: np.ndarray  # (gh,) input y
    labels: np.ndarray  # (F, gh, gw) predicted class at each recorded point in ``index``
    index: np.ndarray  # (F,) recorded-point indices, ascending
    X: np.ndarray  # (N, 2) the training inputs, drawn over the regions
    y: np.ndarray  # (N,) their classes

    __repr__ = short_repr

    def at(self, k: int) -> np.ndarray:
        """The map of the last computed point at or before recorded point ``k``."""
        i = int(np.searchsorted(self.index, k, side="right")) - 1
        return self.labels[max(i, 0)]


def grid_value(surface: Surface, xy: np.ndarray) -> np.ndarray:
    """The surface's loss at points ``xy`` (T, 2), bilinear between grid nodes, clamped at the edges.

    >>> s = Surface(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([[0.0, 1.0], [2.0, 3.0]]), np.zeros((2, 2)))
    >>> grid_value(s, np.array([[0.5, 0.5], [1.0, 0.0]])).tolist()
    [1.5, 1.0]
    """
    xs, ys, z = surface.xs, surface.ys, surface.loss
    fx = np.clip(np.interp(xy[:, 0], xs, np.arange(len(xs))), 0, len(xs) - 1)
    fy = np.clip(np.interp(xy[:, 1], ys, np.arange(len(ys))), 0, len(ys) - 1)
    j0, i0 = np.minimum(fx.astype(int), len(xs) - 2), np.minimum(fy.astype(int), len(ys) - 2)
    tx, ty = fx - j0, fy - i0
    return (
        z[i0, j0] * (1 - tx) * (1 - ty)
        + z[i0, j0 + 1] * tx * (1 - ty)
        + z[i0 + 1, j0] * (1 - tx) * ty
        + z[i0 + 1, j0 + 1] * tx * ty
    )


def path_height(projection, surface: Surface) -> np.ndarray:
    """The loss under each point of the path (T,): its slice loss where measured, else the grid's value there.

    >>> from types import SimpleNamespace
    >>> s = Surface(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([[0.0, 1.0], [2.0, 3.0]]), np.zeros((2, 2)))
    >>> p = SimpleNamespace(xy=np.array([[0.5, 0.5], [1.0, 0.0]]), slice_loss=np.array([np.nan, 1.25]))
    >>> path_height(p, s).tolist()
    [1.5, 1.25]
    """
    height = grid_value(surface, projection.xy)
    if projection.slice_loss is not None:
        measured = ~np.isnan(projection.slice_loss)
        height[measured] = projection.slice_loss[measured]
    return height
