"""What the one-call API and ``compare`` return: ``AnimationData`` and ``Comparison``.

Torch is imported only to hand back the reference's parameter tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losstrail.values.plane import Plane
from losstrail.values.projection import Projection
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory

__all__ = ["AnimationData", "Comparison", "animation_data"]


class AnimationData(tuple):
    """``(optim_path, loss_steps, accu_steps)``, as the reference returned, plus the faithfulness figures.

    Unpacks as the reference's triple; the extra attributes are ``steps``, ``xy`` (T, 2)
    plane coordinates, ``off_plane`` (T,), ``true_loss`` and ``slice_loss`` (T,; NaN past a
    divergence), ``captured`` (fraction of the path's variance in the plane) and ``plane``.
    """

    def __new__(cls, optim_path, loss_steps, accu_steps, **extras):
        data = super().__new__(cls, (optim_path, loss_steps, accu_steps))
        data.animation = None
        for name, value in extras.items():
            setattr(data, name, value)
        return data

    def _repr_html_(self) -> str | None:
        return self.animation._repr_html_() if self.animation is not None else None

    def __repr__(self) -> str:
        """One line, never the parameter vectors (unpack it, or read its attributes, for those)."""
        optim_path, loss_steps, _ = self
        size = f" of P={len(optim_path[0])} parameters" if len(optim_path) else ""
        loss = f", last loss {loss_steps[-1]:.4g}" if len(loss_steps) else ""
        captured = getattr(self, "captured", None)
        held = f", the plane holds {captured:.1%} of the path" if captured is not None else ""
        return f"AnimationData({len(optim_path)} points{size}{loss}{held})"


def animation_data(recorded: Trajectory, projection: Projection) -> AnimationData:
    """The reference's triple for the ``recorded`` path, with the faithfulness figures of its ``projection``.

    ``projection`` may hold fewer points (a run that diverged is drawn up to its last finite point).
    """
    import torch

    def padded(values):  # NaN for the points past a divergence, which the plane does not hold
        out = np.full(len(recorded), np.nan)
        if values is not None:
            out[: len(values)] = values
        return out

    return AnimationData(
        [torch.from_numpy(row.copy()) for row in recorded.params],
        recorded.loss.tolist(),
        recorded.accuracy.tolist(),
        steps=recorded.step.copy(),
        xy=np.vstack([projection.xy, np.full((len(recorded) - len(projection), 2), np.nan)]),
        off_plane=padded(projection.off_plane),
        true_loss=padded(projection.true_loss),
        slice_loss=padded(projection.slice_loss),
        captured=projection.plane.captured,
        plane=projection.plane,
    )


@dataclass(frozen=True)
class Comparison:
    """Runs that share a plane and a surface."""

    names: tuple[str, ...]
    projections: tuple[Projection, ...]  # one per run, all in ``plane``
    captured: tuple[float, ...]  # each run's share of its own path variance in the plane
    plane: Plane
    surface: Surface

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        """One line: the runs, the plane and the grid, never the arrays."""
        held = ", ".join(f"{n!r} {c:.0%}" for n, c in zip(self.names, self.captured))
        ny, nx = self.surface.loss.shape
        return (
            f"Comparison({len(self)} runs on one {self.plane.method!r} plane of P={len(self.plane.origin)} "
            f"parameters, {nx}x{ny} grid; share of each path in the plane: {held})"
        )
