"""The ``Plane`` value: an origin and two directions in parameter space.

The point at plane coordinates ``(x, y)`` is ``origin + x*u + y*v``. NumPy only, so a saved
plane loads and draws without torch; ``losstrail.directions`` makes planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losstrail._repr import short_repr
from losstrail._rows import release_pages, row_block

__all__ = ["Plane"]


@dataclass(frozen=True)
class Plane:
    """A 2-D plane in parameter space: ``origin + x*u + y*v``.

    ``explained`` is the fraction of the path's variance (about its mean) along ``u`` and
    along the part of ``v`` orthogonal to ``u``; its sum is the fraction the plane captures.
    ``eigenvalues`` are the Hessian's curvatures along ``u`` and ``v`` for ``'hessian'`` planes.
    """

    origin: np.ndarray  # (P,) float32
    u: np.ndarray  # (P,) float32
    v: np.ndarray  # (P,) float32
    method: str
    explained: tuple[float, float] | None = None
    eigenvalues: tuple[float, float] | None = None
    names: tuple[str, ...] | None = None  # the parameters the plane spans, in order; None: all of them
    marks: tuple[str, ...] | None = None  # names of the models the plane goes through ('through'), drawn on it
    marks_xy: np.ndarray | None = None  # (K, 2) their plane coordinates

    __repr__ = short_repr

    @property
    def captured(self) -> float | None:
        """The fraction of the path's variance that the plane captures (``sum(explained)``)."""
        return None if self.explained is None else float(sum(self.explained))

    def __post_init__(self):
        n = self.origin.shape
        if len(n) != 1 or self.u.shape != n or self.v.shape != n:
            raise ValueError(
                "origin, u and v must be 1-D arrays of one length; "
                f"got {self.origin.shape}, {self.u.shape}, {self.v.shape}"
            )
        if (self.marks is None) != (self.marks_xy is None) or (
            self.marks is not None and np.shape(self.marks_xy) != (len(self.marks), 2)
        ):
            raise ValueError("marks (K names) and marks_xy (K, 2) come together, one row of coordinates per name")

    @property
    def n_params(self) -> int:
        return self.origin.shape[0]

    def point(self, x: float, y: float) -> np.ndarray:
        """The parameters (P,) at plane coordinates ``(x, y)``."""
        return self.origin + np.float32(x) * self.u + np.float32(y) * self.v

    def project(self, params: np.ndarray) -> np.ndarray:
        """Plane coordinates of ``params`` (P,) or (T, P): (2,) or (T, 2), by least squares.

        Exact for points in the plane even when ``u`` and ``v`` are not orthogonal.

        >>> rng = np.random.default_rng(0)
        >>> plane = Plane(rng.normal(size=5), rng.normal(size=5), rng.normal(size=5), "custom")
        >>> np.round(plane.project(plane.point(0.5, -2.0)), 6)
        array([ 0.5, -2. ])
        """
        params = np.asarray(params) if not isinstance(params, np.memmap) else params
        single = params.ndim == 1
        rows = params[None, :] if single else params
        basis = np.stack([self.u, self.v]).astype(np.float64)  # (2, P)
        gram = basis @ basis.T  # (2, 2)
        out = np.empty((rows.shape[0], 2))
        step = row_block(rows.shape[1])
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step].astype(np.float64) - self.origin
            out[start : start + step] = np.linalg.solve(gram, basis @ block.T).T
            release_pages(rows)
        return out[0] if single else out
