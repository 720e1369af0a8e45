"""Planes through parameter space, and the ways to choose one.

A ``Plane`` is an origin and two directions; the point at plane coordinates ``(x, y)`` is
``origin + x*u + y*v``. Every method is centred on the final parameters, as in the
reference package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from losstrail._registry import DIRECTIONS, check_choice
from losstrail.record import Trajectory

__all__ = ["Plane", "captured_fraction", "make_plane"]

# Rows of a (T, P) trajectory read at once when streaming over it.
_ROW_BLOCK = 256
# Columns of a (T, P) trajectory read at once when streaming the Gram matrix.
_COL_BLOCK = 1 << 18


@dataclass(frozen=True)
class Plane:
    """A 2-D plane in parameter space: ``origin + x*u + y*v``.

    ``explained`` is the fraction of the path's variance (about its mean) along ``u`` and
    along the part of ``v`` orthogonal to ``u``; its sum is the fraction the plane captures.
    """

    origin: np.ndarray  # (P,) float32
    u: np.ndarray  # (P,) float32
    v: np.ndarray  # (P,) float32
    method: str
    explained: tuple[float, float] | None = None

    def __post_init__(self):
        n = self.origin.shape
        if len(n) != 1 or self.u.shape != n or self.v.shape != n:
            raise ValueError(
                "origin, u and v must be 1-D arrays of one length; "
                f"got {self.origin.shape}, {self.u.shape}, {self.v.shape}"
            )

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
        for start in range(0, rows.shape[0], _ROW_BLOCK):
            block = rows[start : start + _ROW_BLOCK].astype(np.float64) - self.origin
            out[start : start + _ROW_BLOCK] = np.linalg.solve(gram, basis @ block.T).T
        return out[0] if single else out


def _column_blocks(n_cols: int):
    for start in range(0, n_cols, _COL_BLOCK):
        yield slice(start, min(start + _COL_BLOCK, n_cols))


def _mean(params: np.ndarray) -> np.ndarray:
    return params.mean(axis=0, dtype=np.float64)  # (P,)


def _centred_gram(params: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(T, T) Gram matrix of the mean-centred rows, reading one column block at a time."""
    T = params.shape[0]
    gram = np.zeros((T, T))
    for cols in _column_blocks(params.shape[1]):
        block = params[:, cols].astype(np.float64) - mean[cols]  # (T, B)
        gram += block @ block.T
    return gram


def _pca(params: np.ndarray, origin: np.ndarray, **_) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Top two principal directions of the path, from the eigenvectors of its Gram matrix."""
    T, P = params.shape
    if T < 3:
        raise ValueError(f"reduction_method='pca' needs a path of at least 3 points; this one has {T}. Train longer")
    mean = _mean(params)
    gram = _centred_gram(params, mean)
    eigvals, eigvecs = np.linalg.eigh(gram)  # ascending
    top = eigvals[::-1][:2]
    if top[1] <= 1e-12 * max(top[0], 1e-300):
        raise ValueError("reduction_method='pca' found a path with fewer than two directions of movement; use 'random'")
    coeffs = eigvecs[:, ::-1][:, :2] / np.sqrt(top)  # (T, 2): PC_k = X_c^T V_k / sqrt(λ_k)
    dirs = np.zeros((2, P))
    for cols in _column_blocks(P):
        dirs[:, cols] = coeffs.T @ (params[:, cols].astype(np.float64) - mean[cols])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    total = float(np.trace(gram))
    return dirs[0], dirs[1], (float(top[0] / total), float(top[1] / total))


def _random(params: np.ndarray, origin: np.ndarray, seed: int | None = None, **_) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian directions of unit length, the same for the same seed."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, params.shape[1]))
    return u / np.linalg.norm(u), v / np.linalg.norm(v)


def _custom(params: np.ndarray, origin: np.ndarray, directions=None, **_) -> tuple[np.ndarray, np.ndarray]:
    """The two given directions, checked and scaled to unit length."""
    u, v = check_custom_directions(directions, params.shape[1])
    return u / np.linalg.norm(u), v / np.linalg.norm(v)


def check_custom_directions(directions, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """Two usable direction vectors of length ``n_params`` from ``directions``, or a ValueError."""
    example = f"custom_directions=(u, v) with u and v NumPy arrays of shape ({n_params},)"
    if directions is None:
        raise ValueError(f"reduction_method='custom' needs two directions; pass {example}")
    try:
        u, v = directions
    except (TypeError, ValueError):
        raise ValueError(f"custom_directions must be a pair of vectors; pass {example}") from None
    pair = []
    for name, d in (("u", u), ("v", v)):
        d = np.asarray(d.detach().cpu() if hasattr(d, "detach") else d, dtype=np.float64).reshape(-1)
        if d.shape[0] != n_params:
            raise ValueError(
                f"custom_directions {name} has {d.shape[0]} values but the model has P={n_params} parameters; "
                f"pass {example}"
            )
        if not np.all(np.isfinite(d)) or np.linalg.norm(d) == 0:
            raise ValueError(
                f"custom_directions {name} has zero length (or NaN/inf values); pass a non-zero finite vector"
            )
        pair.append(d)
    cos = abs(pair[0] @ pair[1]) / (np.linalg.norm(pair[0]) * np.linalg.norm(pair[1]))
    if cos > 1 - 1e-9:
        raise ValueError(
            "custom_directions u and v are parallel, so they span a line, not a plane; pass two independent vectors"
        )
    return pair[0], pair[1]


DIRECTION_BUILDERS: dict[str, Callable] = {"pca": _pca, "random": _random, "custom": _custom}


def captured_fraction(params: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Fractions of the path's variance (about its mean) along ``u`` and along ``v``'s part orthogonal to ``u``.

    Their sum is the fraction of the path that the plane spanned by ``u``, ``v`` explains:
    1 for a path that lies in the plane.

    >>> rng = np.random.default_rng(0)
    >>> u, v = rng.normal(size=(2, 20))
    >>> path = rng.normal(size=(30, 1)) * u + rng.normal(size=(30, 1)) * v
    >>> round(sum(captured_fraction(path, u, v)), 9)
    1.0
    """
    q1 = u / np.linalg.norm(u)
    v_orth = v - (v @ q1) * q1
    q2 = v_orth / np.linalg.norm(v_orth)
    mean = _mean(params)
    along = np.zeros(2)
    total = 0.0
    for start in range(0, params.shape[0], _ROW_BLOCK):
        block = params[start : start + _ROW_BLOCK].astype(np.float64) - mean  # (B, P)
        along += ((block @ np.stack([q1, q2]).T) ** 2).sum(axis=0)
        total += float((block**2).sum())
    if total == 0:
        return (0.0, 0.0)
    return float(along[0] / total), float(along[1] / total)


def _orient(u: np.ndarray, v: np.ndarray, start: np.ndarray, origin: np.ndarray):
    """Flip signs so the path starts at negative coordinates and runs up and to the right."""
    offset = start.astype(np.float64) - origin
    return (u if offset @ u <= 0 else -u), (v if offset @ v <= 0 else -v)


def make_plane(
    trajectory: Trajectory,
    method: str = "pca",
    *,
    directions=None,
    seed: int | None = None,
) -> Plane:
    """A plane through the final parameters of ``trajectory``.

    Args:
        trajectory: the recorded path.
        method: ``'pca'`` (top two principal components of the path, default),
            ``'random'`` (two Gaussian unit vectors) or ``'custom'`` (two given vectors).
        directions: ``(u, v)``, two vectors of length P, for ``'custom'``.
        seed: seed of the random directions.

    >>> rng = np.random.default_rng(0)
    >>> t = 50
    >>> traj = Trajectory(rng.normal(size=(t, 8)).astype(np.float32), np.zeros(t), np.zeros(t),
    ...                   np.arange(t), np.zeros(t, dtype=np.int64))
    >>> plane = make_plane(traj, "pca")
    >>> plane.method, plane.u.shape, 0 < sum(plane.explained) <= 1
    ('pca', (8,), True)
    """
    check_choice("reduction_method", method, DIRECTIONS)
    params = trajectory.params
    if len(trajectory.finite_prefix()) != len(trajectory):
        raise ValueError(
            "the trajectory has NaN or infinite parameters (training diverged); "
            "use trajectory.finite_prefix() or lower the learning rate"
        )
    origin = params[-1].astype(np.float64)
    made = DIRECTION_BUILDERS[method](params, origin, directions=directions, seed=seed)
    u, v = made[0], made[1]
    if method != "custom":  # a user's own directions keep their signs
        u, v = _orient(u, v, params[0], origin)
    explained = made[2] if len(made) == 3 else captured_fraction(params, u, v)
    return Plane(
        origin=params[-1].astype(np.float32).copy(),
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        method=method,
        explained=explained,
    )
