"""The ``Plane`` value: an origin and two directions in parameter space.

The point at plane coordinates ``(x, y)`` is ``origin + x*u + y*v``. NumPy only, so a saved
plane loads and draws without torch; ``losstrail.planes.directions`` makes planes.

A plane made around a model (``make_plane(model, 'filter')``) is held per tensor, in the
model's dtype and on its device (``Plane.tensors``, see ``losstrail.evaluation.inplace``): grids use those
tensors directly, and ``origin``, ``u`` and ``v`` become flat float32 arrays only when read
(saving the plane, projecting a path onto it), once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from losstrail.values.derived import MadeOnRead
from losstrail.values.reprs import short_repr
from losstrail.values.rows import plane_coordinates

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
    # The plane per tensor (a ``losstrail.evaluation.inplace.PlaneTensors``) when it was made around a model;
    # origin, u and v may then be None and are made from it, flat, when first read.
    tensors: object = field(default=None, repr=False, compare=False, metadata={"saved": False})

    def __repr__(self) -> str:
        if self.tensors is None or any(self.__dict__[name] is not None for name in _FLAT):
            return short_repr(self)
        t = self.tensors
        return (
            f"Plane(<{len(t.shapes)} tensors, P={t.n_params}, {str(t.origin[0].dtype).replace('torch.', '')} on "
            f"{t.origin[0].device}>, method={self.method!r}, explained={self.explained!r}, names={_few(self.names)})"
        )

    @property
    def captured(self) -> float | None:
        """The fraction of the path's variance that the plane captures (``sum(explained)``)."""
        return None if self.explained is None else float(sum(self.explained))

    def __post_init__(self):
        arrays = [self.__dict__[name] for name in _FLAT]
        if self.tensors is not None and all(a is None for a in arrays):
            return
        if any(a is None for a in arrays):
            raise ValueError("a Plane needs origin, u and v (1-D arrays of one length), or the tensors they come from")
        n = arrays[0].shape
        if len(n) != 1 or arrays[1].shape != n or arrays[2].shape != n:
            raise ValueError(
                f"origin, u and v must be 1-D arrays of one length; got {n}, {arrays[1].shape}, {arrays[2].shape}"
            )
        if (self.marks is None) != (self.marks_xy is None) or (
            self.marks is not None and np.shape(self.marks_xy) != (len(self.marks), 2)
        ):
            raise ValueError("marks (K names) and marks_xy (K, 2) come together, one row of coordinates per name")

    @property
    def n_params(self) -> int:
        return self.tensors.n_params if self.tensors is not None else self.origin.shape[0]

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
        xy, _ = plane_coordinates(params[None, :] if single else params, self.pieces)
        return xy[0] if single else xy

    def pieces(self):
        """``(start, origin, u, v)``: the plane as NumPy vectors over the parameters from ``start`` on, in order.

        The flat vectors whole, or for a plane held per tensor, one tensor at a time (float32,
        on the CPU), so reading the plane never makes flat copies of it.
        """
        if self.tensors is None or all(self.__dict__.get(name) is not None for name in _FLAT):
            yield 0, self.origin, self.u, self.v
            return
        tensors, start = self.tensors, 0
        for k, origin in enumerate(tensors.origin):
            yield (start, *(tensors.piece(which, k) for which in ("origin", "u", "v")))
            start += origin.numel()


def _few(names) -> str:
    return repr(names) if names is None or len(names) <= 3 else f"<{len(names)} names: {names[0]!r}, ...>"


_FLAT = ("origin", "u", "v")
for _name in _FLAT:
    setattr(Plane, _name, MadeOnRead(_name, lambda plane, name: plane.tensors.flat(name)))
