"""Planes through parameter space, and the ways to choose one.

A ``Plane`` is an origin and two directions; the point at plane coordinates ``(x, y)`` is
``origin + x*u + y*v``. Every method is centred on the final parameters, as in the
reference package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from losstrail._registry import DIRECTIONS, check_choice
from losstrail._repr import short_repr
from losstrail.record import Trajectory, prefetch_rows, release_pages, row_block

__all__ = ["Plane", "captured_fraction", "make_plane"]

# PCA forms the T x T Gram matrix (exact, T^2 P multiply-adds in float64) up to this much
# work, a few seconds. Beyond it a randomized range finder with a power iteration reads the
# path twice, in row order, at 2 T P _SKETCH multiply-adds a pass in float32: 5,000 steps of
# 1M parameters take 5e13 the exact way (hours here), 6e11 this way.
_EXACT_WORK = 4e10
_SKETCH = 16  # sketch columns: the two directions wanted and 14 more, so they converge in one iteration
# Rows of a long path read at once by the sketch: every block adds into a (P, _SKETCH) sum,
# so taller blocks mean fewer passes over it.
_SKETCH_BLOCK_BYTES = 256 << 20
# Columns of a (T, P) trajectory read at once when streaming the Gram matrix: at most
# _COL_BLOCK, and few enough that one (T, block) slice stays within _BLOCK_BYTES.
_COL_BLOCK = 1 << 18
_BLOCK_BYTES = 64 << 20


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


def _column_blocks(params: np.ndarray):
    """Slices of columns of ``params`` (T, P), each few enough that a float64 (T, block) copy fits _BLOCK_BYTES.

    A memory-mapped path has its pages handed back after each block, so streaming it never
    keeps more of it resident than one block.
    """
    n_rows, n_cols = params.shape
    width = max(1, min(_COL_BLOCK, _BLOCK_BYTES // (8 * max(n_rows, 1))))
    for start in range(0, n_cols, width):
        yield slice(start, min(start + width, n_cols))
        release_pages(params)


def _mean(params: np.ndarray) -> np.ndarray:
    """The mean row (P,), in float64, reading a few rows at a time."""
    total = np.zeros(params.shape[1])
    rows = row_block(params.shape[1])
    for start in range(0, params.shape[0], rows):
        total += params[start : start + rows].sum(axis=0, dtype=np.float64)
        release_pages(params)
    return total / params.shape[0]


def _centred_gram(params: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(T, T) Gram matrix of the mean-centred rows, reading one column block at a time."""
    T = params.shape[0]
    gram = np.zeros((T, T))
    for cols in _column_blocks(params):
        block = params[:, cols].astype(np.float64) - mean[cols]  # (T, B)
        gram += block @ block.T
    return gram


class _Made(NamedTuple):
    u: np.ndarray  # (P,)
    v: np.ndarray  # (P,)
    explained: tuple[float, float] | None = None
    eigenvalues: tuple[float, float] | None = None


def _pca(params: np.ndarray, origin: np.ndarray) -> _Made:
    """Top two principal directions of the path: from its Gram matrix, or sketched for a long, large path."""
    T, P = params.shape
    if T < 3:
        raise ValueError(f"reduction_method='pca' needs a path of at least 3 points; this one has {T}. Train longer")
    if float(T) * T * P > _EXACT_WORK and T > _SKETCH:  # long path, many parameters
        top, dirs, total = _sketched_pca(params, 2)
        _check_two_directions(top)
    else:
        mean = _mean(params)
        gram = _centred_gram(params, mean)
        eigvals, eigvecs = np.linalg.eigh(gram)  # ascending
        top, vectors, total = eigvals[::-1][:2], eigvecs[:, ::-1][:, :2], float(np.trace(gram))
        _check_two_directions(top)
        dirs = _combine_rows(params, mean, vectors / np.sqrt(top))  # PC_k = X_c^T V_k / sqrt(λ_k)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return _Made(dirs[0], dirs[1], (float(top[0] / total), float(top[1] / total)))


def _check_two_directions(variances) -> None:
    if variances[1] <= 1e-12 * max(variances[0], 1e-300):
        raise ValueError("reduction_method='pca' found a path with fewer than two directions of movement; use 'random'")


def _combine_rows(params: np.ndarray, mean: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """``coeffs.T @ (params - mean)``: (k, P) combinations of the centred rows, one column block at a time."""
    out = np.zeros((coeffs.shape[1], params.shape[1]))
    for cols in _column_blocks(params):
        out[:, cols] = coeffs.T @ (params[:, cols].astype(np.float64) - mean[cols])
    return out


class _ShiftedRows:
    """Row blocks of a (T, P) path minus a point near its mean, float32 tensors of up to _SKETCH_BLOCK_BYTES.

    Subtracting a fixed point leaves the centred path unchanged; one near the mean removes
    the offset every row shares, so float32 products of the differences stay accurate (a
    path that settles far from where it started would lose most digits to it). Each pass
    runs the other way from the one before: the rows read last are those still in the page
    cache when a path on disk is larger than the cache. The next block is asked of the
    kernel while this one is used, and a memory-mapped path has its pages handed back after
    each block.
    """

    def __init__(self, params: np.ndarray):
        self.params = params
        spread = np.unique(np.linspace(0, params.shape[0] - 1, 32).round().astype(int))
        self.shift = torch.from_numpy(np.mean([np.asarray(params[i], dtype=np.float64) for i in spread], axis=0))
        self.shift = self.shift.float()  # a first guess at the mean; the first pass gives the mean itself
        self.step = max(1, _SKETCH_BLOCK_BYTES // (4 * params.shape[1]))
        self._backwards = True  # the end of a path just recorded is what the cache holds

    def __iter__(self):
        T = self.params.shape[0]
        starts = list(range(0, T, self.step))
        if self._backwards:
            starts.reverse()
        self._backwards = not self._backwards
        buffer = torch.empty((min(self.step, T), self.params.shape[1]))
        for i, start in enumerate(starts):
            rows = slice(start, min(start + self.step, T))
            if i + 1 < len(starts):
                prefetch_rows(self.params, starts[i + 1], starts[i + 1] + self.step)
            block = buffer[: rows.stop - rows.start]
            np.subtract(self.params[rows], self.shift.numpy(), out=block.numpy())  # read and shift in one sweep
            yield rows, block
            release_pages(self.params)


def _sketched_pca(params: np.ndarray, k: int, width: int = _SKETCH):
    """Top ``k`` principal directions of a long path from two passes over it (Halko et al., 2011).

    For the centred rows A (T, P): a Gaussian sketch Y0 = A Omega, and in the same pass
    A^T Y0, whose span is that of one power iteration; then Y = A Z for an orthonormal basis
    Z of it, and again in the same pass A^T Y. With Y = Q R, the small matrix
    B = Q^T A = R^-T Y^T A gives the directions and their variances. Returns
    ``(variances (k,), directions (k, P) of length sqrt(variance), total variance)``.
    """
    T, P = params.shape
    width = min(width, T - 1)
    rows = _ShiftedRows(params)
    omega = torch.from_numpy(np.random.default_rng(0).standard_normal((P, width), dtype=np.float32))
    Y0, AtY0 = torch.empty((T, width)), torch.zeros((P, width))
    with torch.inference_mode():
        sums, ones = torch.zeros(P, dtype=torch.float64), torch.ones(rows.step)
        for at, block in rows:  # pass 1: A Omega and A^T A Omega, and the mean row
            torch.mm(block, omega, out=Y0[at])
            AtY0.addmm_(block.T, Y0[at])
            sums += torch.mv(block.T, ones[: len(block)])  # float32 within a block, float64 across
        del omega
        mean = sums / T  # of the shifted rows
        Z = np.linalg.qr(_centred_product(AtY0.double().numpy(), Y0.double().numpy(), mean.numpy()))[0]
        del AtY0
        Z = torch.from_numpy(Z.astype(np.float32))  # (P, width)
        rows.shift = (rows.shift.double() + mean).float()  # now the mean itself, to float32 precision
        sums.zero_()
        squares = 0.0
        Y, AtY = torch.empty((T, width)), torch.zeros((P, width))
        for at, block in rows:  # pass 2: A Z and A^T A Z, and the total variance
            torch.mm(block, Z, out=Y[at])
            AtY.addmm_(block.T, Y[at])
            sums += torch.mv(block.T, ones[: len(block)])
            squares += float((torch.linalg.vector_norm(block, dim=1).double() ** 2).sum())
    mean = sums.numpy() / T  # what is left of the mean after the shift: rounding only
    total = squares - T * float(mean @ mean)
    Y = Y.double().numpy()
    Q, R = np.linalg.qr(Y - Y.mean(axis=0))
    Bt = np.linalg.solve(R.T, _centred_product(AtY.double().numpy(), Y, mean).T).T  # A^T Y_c R^-1 = A^T Q
    values, W = np.linalg.eigh(Bt.T @ Bt)  # ascending
    top = values[::-1][:k]
    return top, (Bt @ W[:, ::-1][:, :k]).T, total


def _centred_product(AtY: np.ndarray, Y: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``A_c^T Y_c`` from ``A^T Y`` of the uncentred rows: A_c = A - 1 mean^T, Y_c = Y - 1 mean(Y)^T.

    Since the columns of Y_c sum to zero, A_c^T Y_c = A^T Y_c = A^T Y - T mean mean(Y)^T.
    """
    return AtY - Y.shape[0] * np.outer(mean, Y.mean(axis=0))


def _random(params: np.ndarray, origin: np.ndarray, seed: int | None = None) -> _Made:
    """Two Gaussian directions of unit length, the same for the same seed."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, params.shape[1]))
    return _Made(u / np.linalg.norm(u), v / np.linalg.norm(v))


def _custom(params: np.ndarray, origin: np.ndarray, directions=None) -> _Made:
    """The two given directions, checked and scaled to unit length."""
    u, v = check_custom_directions(directions, params.shape[1])
    return _Made(u / np.linalg.norm(u), v / np.linalg.norm(v))


def _scaled_direction(rng, layout, centre: np.ndarray, per_filter: bool, keep_biases: bool, method: str) -> np.ndarray:
    """A Gaussian direction rescaled piece by piece to the size of the ``centre`` weights (Li et al., 2018).

    Each filter (row along the first axis of a tensor of rank >= 2) when ``per_filter``, else
    each whole tensor, gets the norm of the same piece of ``centre``. Tensors of rank < 2
    (biases, normalization scales) are zero unless ``keep_biases``; then each is scaled as a whole.
    """
    direction = rng.standard_normal(layout.n_params)
    for d, c in zip(layout.split(direction), layout.split(centre)):
        if d.ndim >= 2 and per_filter:
            axes = tuple(range(1, d.ndim))
            d *= np.sqrt((c**2).sum(axis=axes, keepdims=True) / (d**2).sum(axis=axes, keepdims=True))
        elif d.ndim >= 2 or keep_biases:
            d *= np.linalg.norm(c) / np.linalg.norm(d)
        else:
            d[...] = 0.0
    if not np.linalg.norm(direction) > 0:
        raise ValueError(
            f"reduction_method={method!r} made a zero-length direction: the centre's weights are all zero. "
            "Centre the plane elsewhere (centre='final') or use 'random'"
        )
    return direction


def _filter(params, origin, *, layout=None, seed=None, keep_biases=False) -> _Made:
    """Filter-normalized random directions, filter by filter of each chosen tensor."""
    if not any(len(shape) >= 2 for shape in layout.shapes):
        raise ValueError(
            "reduction_method='filter' rescales each filter of the weight tensors of rank >= 2, and this model "
            "has none (only vectors such as biases); use 'layer', 'random' or 'pca'"
        )
    rng = np.random.default_rng(seed)
    return _Made(*(_scaled_direction(rng, layout, origin, True, keep_biases, "filter") for _ in range(2)))


def _layer(params, origin, *, layout=None, seed=None, keep_biases=False) -> _Made:
    """Layer-normalized random directions: each chosen tensor scaled to the centre tensor's norm."""
    rng = np.random.default_rng(seed)
    return _Made(*(_scaled_direction(rng, layout, origin, False, keep_biases, "layer") for _ in range(2)))


def _hessian(params, origin, *, model=None, data=None, loss_fn=None, objective=None, names=None, seed=None,
             options=None) -> _Made:  # fmt: skip
    """The Hessian's two largest-curvature eigenvectors at the centre (or largest and most negative)."""
    from losstrail._batching import take_subset
    from losstrail.hessian import hessian_eigenpairs

    options = options or {}
    examples = options.get("hessian_examples")
    if examples is not None:
        data = take_subset(data, examples, seed, argument="hessian_examples")
    eig = hessian_eigenpairs(
        model,
        data,
        origin,
        2,
        loss_fn=loss_fn,
        objective=objective,
        names="all" if names is None else names,
        seed=seed,
        device=options.get("device", "cpu"),
        quiet=options.get("quiet", True),
    )
    if options.get("negative_curvature"):
        return _Made(eig.vectors[0], eig.lowest_vector, eigenvalues=(float(eig.values[0]), eig.lowest_value))
    return _Made(eig.vectors[0], eig.vectors[1], eigenvalues=(float(eig.values[0]), float(eig.values[1])))


def _interpolation(params, origin, *, seed=None, options=None) -> _Made:
    """u from the initial to the final parameters; v the path's top principal direction orthogonal to u.

    Both have the length of u, so plane coordinates count in initial-to-final distances.
    """
    u = params[-1].astype(np.float64) - params[0]
    length = float(np.linalg.norm(u))
    if not length > 0:
        raise ValueError(
            "reduction_method='interpolation' made a zero-length direction: the final parameters equal the "
            "initial ones. Train for at least one step, or use 'random'"
        )
    unit = u / length
    v = None
    if (options or {}).get("second", "pca") == "pca" and params.shape[0] >= 3:
        mean = _mean(params)
        along = np.zeros(params.shape[0])  # (T,) centred rows dotted with unit
        for cols in _column_blocks(params):
            along += (params[:, cols].astype(np.float64) - mean[cols]) @ unit[cols]
        gram = _centred_gram(params, mean) - np.outer(along, along)  # Gram of the rows with u projected out
        eigvals, eigvecs = np.linalg.eigh(gram)
        if eigvals[-1] > 1e-12 * max(float(np.trace(gram)), 1e-300):
            top = eigvecs[:, -1:]
            v = _combine_rows(params, mean, top)[0] - unit * float(along @ top[:, 0])
    if v is None:  # the path is a straight line (or 'random' was asked): a random v orthogonal to u
        v = np.random.default_rng(seed).standard_normal(params.shape[1])
        v -= (v @ unit) * unit
    return _Made(u, v / np.linalg.norm(v) * length)


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


DIRECTION_BUILDERS: dict[str, Callable] = {
    "pca": _pca,
    "random": _random,
    "filter": _filter,
    "layer": _layer,
    "hessian": _hessian,
    "interpolation": _interpolation,
    "custom": _custom,
}
# Methods that read the model's parameter shapes, and those that also evaluate it on data.
_NEEDS_MODEL = ("filter", "layer", "hessian")
_NEEDS_DATA = ("hessian",)
CENTRES = ("final", "initial")


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
    step = row_block(params.shape[1])
    for start in range(0, params.shape[0], step):
        block = params[start : start + step].astype(np.float64) - mean  # (B, P)
        along += ((block @ np.stack([q1, q2]).T) ** 2).sum(axis=0)
        total += float((block**2).sum())
        release_pages(params)
    if total == 0:
        return (0.0, 0.0)
    return float(along[0] / total), float(along[1] / total)


def _orient(u: np.ndarray, v: np.ndarray, start: np.ndarray, origin: np.ndarray):
    """Flip signs so the path starts at negative coordinates and runs up and to the right."""
    offset = start.astype(np.float64) - origin
    return (u if offset @ u <= 0 else -u), (v if offset @ v <= 0 else -v)


def centre_index(trajectory: Trajectory, centre: str | int = "final") -> int:
    """Row of ``trajectory`` that ``centre`` names: ``'final'``, ``'initial'`` or a recorded global step.

    >>> t = Trajectory(np.zeros((3, 2), np.float32), np.zeros(3), np.zeros(3), np.array([0, 5, 10]), np.zeros(3, int))
    >>> centre_index(t, "final"), centre_index(t, "initial"), centre_index(t, 5)
    (2, 0, 1)
    """
    if centre == "final":
        return len(trajectory) - 1
    if centre == "initial":
        return 0
    if isinstance(centre, (int, np.integer)) and not isinstance(centre, bool):
        hits = np.flatnonzero(trajectory.step == centre)
        if len(hits):
            return int(hits[0])
    steps = trajectory.step
    raise ValueError(
        f"centre={centre!r} is not 'final', 'initial' or a recorded step; "
        f"the recorded steps run from {int(steps[0])} to {int(steps[-1])}"
        + (f" every {int(steps[1] - steps[0])}" if len(steps) > 1 else "")
    )


def make_plane(
    trajectory: Trajectory,
    method: str = "pca",
    *,
    directions=None,
    seed: int | None = None,
    centre: str | int = "final",
    model=None,
    data=None,
    objective: Callable | None = None,
    loss_fn: Callable | None = None,
    keep_biases: bool = False,
    negative_curvature: bool = False,
    hessian_examples: int | None = None,
    second: str = "pca",
    device: str = "cpu",
    quiet: bool = True,
) -> Plane:
    """A plane through a point of ``trajectory`` (the final parameters by default).

    The plane spans the parameters the trajectory recorded (``trajectory.names``: all of them,
    or the subset chosen with ``params=`` when recording), and records their names.

    Args:
        trajectory: the recorded path.
        method: how to choose the directions:
            ``'pca'`` (top two principal components of the path, default);
            ``'random'`` (two Gaussian unit vectors);
            ``'filter'`` (Gaussian, each filter rescaled to the centre filter's norm; Li et al., 2018);
            ``'layer'`` (Gaussian, each tensor rescaled to the centre tensor's norm);
            ``'hessian'`` (the Hessian's top-2 eigenvectors at the centre);
            ``'interpolation'`` (u from the initial to the final parameters, v the path's top
            principal direction orthogonal to u; Goodfellow et al., 2015);
            ``'custom'`` (two given vectors).
        directions: ``(u, v)``, two vectors of length P, for ``'custom'``.
        seed: seed of every random choice (directions, Hessian start vector, data subset).
        centre: the plane's origin: ``'final'`` (default, as the reference), ``'initial'``,
            or the global step of a recorded point.
        model: the network; needed by ``'filter'``, ``'layer'`` and ``'hessian'``.
        data: the data the Hessian is taken on (anything ``loss_surface`` accepts).
        objective, loss_fn: the loss for ``'hessian'``, by the rule of ``loss_surface``.
        keep_biases: ``'filter'``/``'layer'``: give tensors of rank < 2 (biases, normalization
            scales) a direction too, scaled as a whole; default zero, as Li et al.
        negative_curvature: ``'hessian'``: make ``v`` the most negative curvature direction.
        hessian_examples: ``'hessian'``: take it on a seeded subset of this many examples.
        second: ``'interpolation'``: ``'pca'`` (default) or ``'random'`` for ``v``.
        device, quiet: where the Hessian is evaluated, and whether to hide its progress bar.

    >>> rng = np.random.default_rng(0)
    >>> t = 50
    >>> traj = Trajectory(rng.normal(size=(t, 8)).astype(np.float32), np.zeros(t), np.zeros(t),
    ...                   np.arange(t), np.zeros(t, dtype=np.int64))
    >>> plane = make_plane(traj, "pca")
    >>> plane.method, plane.u.shape, 0 < plane.captured <= 1
    ('pca', (8,), True)
    """
    check_choice("reduction_method", method, DIRECTIONS)
    if len(trajectory.finite_prefix()) != len(trajectory):
        raise ValueError(
            "the trajectory has NaN or infinite parameters (training diverged); "
            "use trajectory.finite_prefix() or lower the learning rate"
        )
    index = centre_index(trajectory, centre)
    return plane_through(
        trajectory.params,
        trajectory.params[index],
        method,
        directions=directions,
        seed=seed,
        model=model,
        data=data,
        objective=objective,
        loss_fn=loss_fn,
        names=trajectory.names,
        keep_biases=keep_biases,
        negative_curvature=negative_curvature,
        hessian_examples=hessian_examples,
        second=second,
        device=device,
        quiet=quiet,
    )


def plane_through(
    params: np.ndarray,
    centre: np.ndarray,
    method: str,
    *,
    start: np.ndarray | None = None,
    directions=None,
    seed: int | None = None,
    model=None,
    data=None,
    objective: Callable | None = None,
    loss_fn: Callable | None = None,
    names=None,
    keep_biases: bool = False,
    negative_curvature: bool = False,
    hessian_examples: int | None = None,
    second: str = "pca",
    device: str = "cpu",
    quiet: bool = True,
) -> Plane:
    """The plane through ``centre`` (P,) chosen by ``method`` for the path rows ``params`` (T, P).

    What ``make_plane`` does once it knows the centre; ``compare`` calls it with the
    stacked paths of several runs. ``start`` (default ``params[0]``) is where the path
    begins, used only to orient the axes so it starts at negative coordinates. ``names`` are
    the parameters a row holds (None: all of the model's), as ``Trajectory.names``.
    """
    check_choice("reduction_method", method, DIRECTIONS)
    check_choice("second", second, ("pca", "random"))
    layout = _check_model(method, model, params.shape[1], names) if method in _NEEDS_MODEL else None
    if method in _NEEDS_DATA and data is None:
        raise ValueError(f"reduction_method={method!r} evaluates the loss; pass the data: make_plane(..., data=...)")
    origin = np.asarray(centre).astype(np.float64)
    start = params[0] if start is None else start
    options = {
        "hessian_examples": hessian_examples,
        "negative_curvature": negative_curvature,
        "second": second,
        "device": device,
        "quiet": quiet,
    }
    offered = {
        "directions": directions, "seed": seed, "model": model, "data": data, "objective": objective,
        "loss_fn": loss_fn, "names": names, "layout": layout, "keep_biases": keep_biases, "options": options,
    }  # fmt: skip
    builder = DIRECTION_BUILDERS[method]
    uses = inspect.signature(builder).parameters  # each way declares what it takes; none swallows the rest
    made = builder(params, origin, **{name: value for name, value in offered.items() if name in uses})
    u, v = made.u, made.v
    if method not in ("custom", "interpolation"):  # their signs carry meaning
        u, v = _orient(u, v, start, origin)
    elif method == "interpolation":
        v = _orient(u, v, start, origin)[1]
    explained = made.explained if made.explained is not None else captured_fraction(params, u, v)
    return Plane(
        origin=np.asarray(centre).astype(np.float32).copy(),
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        method=method,
        explained=explained,
        eigenvalues=made.eigenvalues,
        names=None if names is None else tuple(names),
    )


def _check_model(method: str, model, n_params: int, names):
    """The layout of the recorded parameters on ``model``, checked to fit the path."""
    import torch

    from losstrail._functional import ParamLayout

    if not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"reduction_method={method!r} reads the model's layers; pass it: make_plane(trajectory, {method!r}, "
            "model=model)"
        )
    layout = ParamLayout(model, names)
    if layout.n_params != n_params:
        which = "all its parameters" if names is None else f"the {len(names)} recorded tensors"
        raise ValueError(
            f"the model has P={layout.n_params} in {which} but the trajectory has P={n_params}; "
            "pass the model it recorded"
        )
    return layout
