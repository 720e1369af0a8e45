"""Where the recorded path lies in a plane, and how far the plane can be trusted there.

For each recorded point: its plane coordinates, its distance from the plane, and (given the
model and data) its **true loss** next to the **slice loss** at its projection. Where the two
differ, the picture's contour is not the landscape the optimizer walked on.
"""

from __future__ import annotations

import numpy as np

from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.rows import plane_coordinates
from losstrail.values.trajectory import Trajectory

__all__ = ["path_evaluator", "project"]


def project(
    plane: Plane,
    trajectory: Trajectory,
    *,
    model=None,
    data=None,
    objective=None,
    loss_fn=None,
    bn_batches: int = 0,
    device: str = "cpu",
    at=None,
    quiet: bool = True,
    evaluator=None,
) -> Projection:
    """Plane coordinates and off-plane distance of every recorded point.

    Given ``model`` and ``data`` (the grid's data), it also evaluates the true loss at the
    recorded points and the slice loss at their projections, with the grid's evaluation core and
    the same ``objective``/``loss_fn`` (see ``loss_surface``), over the parameters the plane spans.
    Each point costs two evaluations over ``data``, as much as two grid points: ``at`` (indices
    of recorded points) measures only those and leaves NaN elsewhere. The one-call API, the
    command line and ``compare`` measure at most ``losstrail._frames.MEASURED_POINTS`` (100) of
    the frames the animation shows; the pictures draw the true and slice curves through the
    measured points. Default: every point. ``evaluator``: an ``Evaluator`` set up already (a job's
    one, on the grid's data), used in place of ``model``, ``data`` and their options.

    >>> rng = np.random.default_rng(0)
    >>> plane = Plane(np.zeros(4, np.float32), np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1], "custom")
    >>> traj = Trajectory(np.array([[1, 2, 0, 0], [0, 0, 3, 4]], np.float32), np.zeros(2), np.zeros(2),
    ...                   np.arange(2), np.zeros(2, dtype=np.int64))
    >>> p = project(plane, traj)
    >>> p.xy.tolist(), p.off_plane.tolist()
    ([[1.0, 2.0], [0.0, 0.0]], [0.0, 5.0])
    """
    chosen = _check_at(at, len(trajectory))
    if trajectory.n_params != plane.n_params:
        raise ValueError(
            f"the trajectory has P={trajectory.n_params} parameters but the plane has P={plane.n_params}; "
            "make the plane from this trajectory"
        )
    xy, off = plane_coordinates(trajectory.params, plane.pieces, distances=True)
    true_loss = slice_loss = None
    if (model is None) != (data is None):
        raise ValueError("pass both model and data to measure the true and slice losses along the path, or neither")
    if model is not None and evaluator is not None:
        raise ValueError("pass an evaluator, or model and data to make one, not both")
    if model is not None:
        evaluator = path_evaluator(plane, trajectory, model, data, objective, loss_fn, bn_batches, device, quiet)
    if evaluator is not None:
        from losstrail.evaluation.evaluator import batch_norms
        from losstrail.evaluation.grids import check_evaluator, evaluate_on_plane

        check_evaluator(evaluator, plane.n_params, "the plane")
        if batch_norms(evaluator.model) and not evaluator.bn_batches:
            import warnings

            warnings.warn(
                f"{type(evaluator.model).__name__} has BatchNorm layers, and with bn_batches=0 every recorded point "
                "is evaluated with the final running statistics, which flattens the true loss early in training; "
                "pass bn_batches=4 (or more) to recompute them at each point",
                UserWarning,
                stacklevel=2,
            )
        index = np.arange(len(trajectory)) if chosen is None else chosen
        true_loss, slice_loss = np.full(len(trajectory), np.nan), np.full(len(trajectory), np.nan)
        if len(index):
            true_loss[index] = evaluator.at_vectors(np.asarray(trajectory.params[index])).loss
            slice_loss[index] = evaluate_on_plane(evaluator, plane, xy[index], desc="path").loss  # projections
    return Projection(
        plane=plane,
        xy=xy,
        off_plane=off,
        loss=trajectory.loss,
        accuracy=trajectory.accuracy,
        step=trajectory.step,
        epoch=trajectory.epoch,
        true_loss=true_loss,
        slice_loss=slice_loss,
    )


def path_evaluator(plane: Plane, trajectory: Trajectory, model, data, objective, loss_fn, bn_batches: int, device: str,
                   quiet: bool, spread: bool = False):  # fmt: skip
    """An ``Evaluator`` of ``model`` on ``data`` over the parameters the plane spans (its names, else the path's):
    the path's true and slice losses, and a job's grid and lines on the same evaluator (``spread``: standard errors,
    for a grid on a subset)."""
    from losstrail.evaluation.evaluator import Evaluator
    from losstrail.evaluation.layout import selected_names

    names = plane.names if plane.names is not None else trajectory.names
    return Evaluator(
        model, data, names=selected_names(model, names, plane.n_params, "path"), objective=objective,
        loss_fn=loss_fn, bn_batches=bn_batches, spread=spread, device=device, quiet=quiet,
    )  # fmt: skip


def _check_at(at, n_points: int) -> np.ndarray | None:
    """``at`` as sorted unique indices of recorded points, or None for every point."""
    if at is None:
        return None
    index = np.asarray(at)
    if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
        raise ValueError(
            f"at={at!r} must be a 1-D sequence of indices of recorded points (integers), e.g. at=[0, 10, 20]"
        )
    if index.size and (index.min() < -n_points or index.max() >= n_points):
        bad = int(index.min() if index.min() < -n_points else index.max())
        raise ValueError(f"at holds {bad}, but the trajectory has {n_points} points; pass indices below {n_points}")
    return np.unique(np.where(index < 0, index + n_points, index).astype(np.int64))
