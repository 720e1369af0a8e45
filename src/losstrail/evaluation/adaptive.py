"""Adaptive grids: exact evaluations where the picture needs them, checked interpolation elsewhere.

Pure NumPy, no torch: ``evaluate`` is whatever computes exact values for a batch of grid cells.

The scheme. Each axis has a hierarchy of node sets: level 0 is a coarse lattice (``coarse``
intervals, evenly spread, both ends included), and level ``k + 1`` adds the midpoint of every
interval of level ``k`` that is longer than 1, until every index is a node. A *cell* of level
``k`` is the rectangle between two consecutive level-``k`` nodes on each axis.

1. Evaluate the level-0 lattice exactly; every level-0 cell is active.
2. For each active cell, its *check points* are the level-``k + 1`` nodes inside it or on its
   edges (the centre and the four edge midpoints): points its own interpolation does not use.
   All check points of a level are evaluated in one ``evaluate`` call.
3. A cell is interpolated from the level-``k`` lattice: a tensor product of 1-D Lagrange
   stencils, cubic (4 nodes) on each axis where the neighbouring level-``k`` nodes are exact
   and finite, else quadratic (3), else linear (2, the cell's own corners, always exact).
   The cell passes when its corners and check points are finite and ``SAFETY`` times the
   relative error (below) of its interpolation at every check point is at most ``tol``; it is
   then kept. Otherwise it is split into its level-``k + 1`` children, whose corners are
   exactly its check points, and they are checked at the next level.
   Cells one index wide on both axes have nothing to interpolate, so refinement ends at full
   resolution at the latest.
4. The result holds every exact value as ``evaluate`` returned it; every other cell takes the
   interpolation of the finest kept cell that contains it.

The check points of a cell sit where the leading error term of its interpolation peaks (the
middle of each interval for cubic and linear stencils), but the error between them can be
larger where the curvature changes within a cell (measured on real loss surfaces: up to 2 times
the largest checked error, in a corner cell, where the stencils are one-sided). So
the error reported, ``max_error``, is ``SAFETY`` (3) times the largest error the checks found
in the interpolations kept, and cells are kept only while that is at most ``tol``. A feature
smaller than a cell that no check point touches (a narrow spike, a small island of NaN) can
be missed: that is the price of not evaluating every point.

What is interpolated, and the relative error. When every finite value of the coarse lattice is
positive (a loss), the scheme interpolates ``ln(loss)`` and the error is the plain relative
error ``|interpolated - exact| / exact``: the pictures colour by ``ln(loss)``, and a trained
model's loss spans orders of magnitude (1e-5 to 5 on the reference README's LeNet example), where
interpolating the loss itself with an error judged against the surface's range missed basins by
240% and even went negative there. Otherwise (a loss that can be zero or negative) it
interpolates the values and the error is ``|interpolated - exact| / max(|exact|, floor)`` with
``floor = FLOOR * (max - min)`` of the finite exact values (1% of the surface's range), so a
value near zero is judged against the surface's scale rather than against zero (see
``relative_difference``). A later value that is not positive is treated like a non-finite one.

Non-finite values (a diverged region): a cell with a non-finite corner or check point always
splits, so cells next to a non-finite value are refined to full resolution and no
interpolation ever uses a non-finite value; non-finite cells stay non-finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

# The relative error's floor, as a fraction of the range of the surface's finite values.
FLOOR = 0.01
# The reported error is this many times the largest checked error: a margin for the error between check points
# (measured on real loss surfaces: up to 2 times the checked error; see the module's docstring).
SAFETY = 3.0
# Default number of coarse lattice intervals along each axis: the coarse lattice has COARSE + 1 points a side,
# whatever the resolution, since how finely a surface must be sampled depends on the surface, not on the grid.
COARSE = 8

_STENCILS = {4: (-1, 0, 1, 2), 3: (-1, 0, 1), 2: (0, 1)}  # positions relative to a cell's first node
_QUADRATIC_RIGHT = (0, 1, 2)


@dataclass(frozen=True)
class AdaptiveGrid:
    """An adaptively evaluated grid; entry ``[i, j]`` is row ``i`` (y), column ``j`` (x)."""

    loss: np.ndarray  # (ny, nx) exact where ``exact``, interpolated elsewhere
    accuracy: np.ndarray  # (ny, nx) interpolated like the loss (clipped to the exact values' range)
    exact: np.ndarray  # (ny, nx) bool: evaluated exactly
    max_error: float  # SAFETY x the largest relative error the checks found in the kept interpolations (<= tol)
    n_exact: int  # number of exact cells
    floor: float  # the relative error's floor: FLOOR * range of the finite exact losses; 0 when ``log``
    log: bool = False  # ln(loss) was interpolated (every value of the coarse lattice positive)


def _levels(n: int, coarse: int) -> list[np.ndarray]:
    """Node indices of each level on an axis of ``n`` points: coarse lattice, then midpoints, down to all."""
    m = min(coarse, n - 1) + 1
    nodes = np.unique(np.round(np.linspace(0, n - 1, m)).astype(np.int64))
    levels = [nodes]
    while len(nodes) < n:
        gaps = np.diff(nodes)
        mids = (nodes[:-1] + nodes[1:])[gaps >= 2] // 2
        nodes = np.union1d(nodes, mids)
        levels.append(nodes)
    return levels


def coarse_shape(nx: int, ny: int, coarse: int | None = None) -> tuple[int, int]:
    """``(columns, rows)`` of the lattice an adaptive grid evaluates at least: the coarse lattice and its first checks.

    >>> coarse_shape(100, 100), coarse_shape(100, 100, coarse=4), coarse_shape(3, 2)
    ((17, 17), (9, 9), (3, 2))
    """
    coarse = COARSE if coarse is None else coarse
    ly, lx = _levels(ny, coarse), _levels(nx, coarse)
    return len(lx[min(1, len(lx) - 1)]), len(ly[min(1, len(ly) - 1)])


def minimum_points(nx: int, ny: int, coarse: int | None = None) -> int:
    """Exact evaluations an adaptive grid makes at least (see ``coarse_shape``).

    >>> minimum_points(100, 100), minimum_points(100, 20, coarse=4)
    (289, 81)
    """
    columns, rows = coarse_shape(nx, ny, coarse)
    return columns * rows


def relative_difference(approx, exact, floor: float | None = None) -> np.ndarray:
    """``|approx - exact| / max(|exact|, floor)`` elementwise; 0 where both are the same non-finite value.

    Args:
        approx, exact: arrays of one shape.
        floor: default ``FLOOR`` times the range of the finite values of ``exact``.

    Returns:
        float64 array of ``exact``'s shape; ``inf`` where exactly one of the two is non-finite.

    >>> relative_difference([1.01, 0.0, np.nan], [1.0, 0.001, np.nan]).round(2).tolist()  # floor 0.01 * 0.999
    [0.01, 0.1, 0.0]
    """
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    if floor is None:
        floor = _floor(exact)
    finite = np.isfinite(approx) & np.isfinite(exact)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(approx - exact), 0.0)
        scale = np.maximum(np.abs(np.where(finite, exact, 0.0)), floor)
        out = np.where(diff == 0, 0.0, diff / np.where(scale > 0, scale, 1.0))
    same = (approx == exact) | (np.isnan(approx) & np.isnan(exact))
    return np.where(finite, out, np.where(same, 0.0, np.inf))


def _floor(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    return FLOOR * float(finite.max() - finite.min())


def _lagrange(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Weights (len(at), len(nodes)) of the Lagrange polynomial through ``nodes``, evaluated at ``at``."""
    nodes, at = nodes.astype(np.float64), at.astype(np.float64)
    w = np.ones((len(at), len(nodes)))
    for a in range(len(nodes)):
        for b in range(len(nodes)):
            if a != b:
                w[:, a] *= (at - nodes[b]) / (nodes[a] - nodes[b])
    return w


def _stencil_choices(p: int, n_nodes: int, width: int) -> list[tuple[int, ...]]:
    """Stencils (positions in a level's node list) for the interval from node ``p``, best first."""
    if width == 1:  # no point strictly inside: the corners alone give the exact values
        return [(p, p + 1)]
    options = [tuple(p + d for d in _STENCILS[4]), tuple(p + d for d in _STENCILS[3])]
    options += [tuple(p + d for d in _QUADRATIC_RIGHT), (p, p + 1)]
    return [s for s in options if s[0] >= 0 and s[-1] < n_nodes]


@dataclass
class _Cell:
    level: int
    py: int  # position of the cell's first row node in the level's y nodes
    px: int
    rows: np.ndarray  # grid rows the cell spans, ends included
    cols: np.ndarray
    stencil: tuple = ()  # (row nodes, col nodes) of the kept interpolation


def _interpolate(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Tensor-product Lagrange interpolation of ``values`` (ny, nx) on the block rows × cols from nodes sy × sx."""
    return _lagrange(sy, rows) @ values[np.ix_(sy, sx)] @ _lagrange(sx, cols).T


def _interpolate_at(values: np.ndarray, ij: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """The same interpolation at the points ``ij`` (K, 2) only."""
    return np.einsum("ka,ab,kb->k", _lagrange(sy, ij[:, 0]), values[np.ix_(sy, sx)], _lagrange(sx, ij[:, 1]))


def _cells(level: int, ny_nodes: np.ndarray, nx_nodes: np.ndarray, pys, pxs) -> list[_Cell]:
    """Cells of ``level`` from node positions; those without a point to interpolate are left out."""
    cells = []
    for py, px in product(pys, pxs):
        rows = np.arange(ny_nodes[py], ny_nodes[py + 1] + 1)
        cols = np.arange(nx_nodes[px], nx_nodes[px + 1] + 1)
        if len(rows) > 2 or len(cols) > 2:
            cells.append(_Cell(level, int(py), int(px), rows, cols))
    return cells


def _halves(ends: np.ndarray) -> np.ndarray:
    """The next level's nodes on a cell's side: its ends and, if it has one inside, the midpoint."""
    a, b = int(ends[0]), int(ends[-1])
    return np.array([a, (a + b) // 2, b]) if b - a >= 2 else np.array([a, b])


def _check_points(cell: _Cell) -> np.ndarray:
    """(K, 2) next-level nodes in and around the cell but not its corners: centre and edge midpoints."""
    rows, cols = _halves(cell.rows), _halves(cell.cols)
    ij = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    corner = np.isin(ij[:, 0], rows[[0, -1]]) & np.isin(ij[:, 1], cols[[0, -1]])
    return ij[~corner]


def _split(cell: _Cell, ny_next: np.ndarray, nx_next: np.ndarray) -> list[_Cell]:
    """The next level's cells inside ``cell``."""
    py = int(np.searchsorted(ny_next, cell.rows[0]))
    px = int(np.searchsorted(nx_next, cell.cols[0]))
    pys = range(py, py + len(_halves(cell.rows)) - 1)
    pxs = range(px, px + len(_halves(cell.cols)) - 1)
    return _cells(cell.level + 1, ny_next, nx_next, pys, pxs)


def _best_stencil(cell: _Cell, ny_nodes: np.ndarray, nx_nodes: np.ndarray, usable: np.ndarray):
    """Grid rows and columns of the highest-order stencil whose nodes are all exact and finite."""
    by_row = _stencil_choices(cell.py, len(ny_nodes), len(cell.rows) - 1)
    by_col = _stencil_choices(cell.px, len(nx_nodes), len(cell.cols) - 1)
    for sy, sx in sorted(product(by_row, by_col), key=lambda pair: -len(pair[0]) - len(pair[1])):
        rows, cols = ny_nodes[list(sy)], nx_nodes[list(sx)]
        if usable[np.ix_(rows, cols)].all():
            return rows, cols
    raise AssertionError("a checked cell's corners are exact and finite")


def adaptive_grid(
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    nx: int,
    ny: int,
    *,
    tol: float,
    coarse: int | None = None,
    quiet: bool = True,
) -> AdaptiveGrid:
    """Loss and accuracy on an ``ny`` × ``nx`` grid, evaluated exactly only where interpolation fails its checks.

    Args:
        evaluate: ``evaluate(ij)`` with ``ij`` an int array (K, 2) of ``(row, column)`` cell
            indices returns ``(loss, accuracy)``, two float arrays (K,) computed exactly. It is
            called once for the coarse lattice and once per refinement level.
        nx, ny: grid columns and rows, at least 2 each.
        tol: the largest relative error (see the module's docstring) an interpolated cell may
            show at its checks, e.g. 0.01.
        coarse: intervals of the coarse lattice along each axis (default ``COARSE``, 8; at most
            ``n - 1``); more is safer for surfaces with small features and costs more.
        quiet: no progress bar.

    Returns:
        ``AdaptiveGrid``: exact cells hold ``evaluate``'s values bit for bit.

    >>> yy, xx = np.mgrid[0:33, 0:41] / 40.0
    >>> bowl = 1 + (xx - 0.3) ** 2 + 2 * (yy - 0.5) ** 2
    >>> g = adaptive_grid(lambda ij: (bowl[ij[:, 0], ij[:, 1]], np.zeros(len(ij))), 41, 33, tol=3e-3)
    >>> g.n_exact < bowl.size / 4, g.max_error <= 3e-3, bool(np.allclose(g.loss, bowl, rtol=3e-3))
    (True, True, True)
    """
    from losstrail._progress import bar

    coarse = _check_arguments(nx, ny, tol, coarse)
    ly, lx = _levels(ny, coarse), _levels(nx, coarse)
    depth = max(len(ly), len(lx))
    ly += [ly[-1]] * (depth - len(ly))  # an axis already at full resolution stays there
    lx += [lx[-1]] * (depth - len(lx))
    with bar(nx * ny, "adaptive grid", quiet, unit="pt") as pbar:
        values = _Values(evaluate, nx, ny, pbar)
        values.run(np.stack(np.meshgrid(ly[0], lx[0], indexing="ij"), -1).reshape(-1, 2))
        values.choose_domain()
        kept, checks = _refine(values, ly, lx, tol)
    return _assemble(values, kept, checks)


def _check_arguments(nx, ny, tol, coarse) -> int:
    """``coarse`` (default ``COARSE``) once every argument is checked."""
    for name, n in (("nx", nx), ("ny", ny)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"{name}={n!r} must be an integer of at least 2, e.g. {name}=100")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol={tol!r} must be a positive finite number, e.g. tol=0.01")
    coarse = COARSE if coarse is None else coarse
    if isinstance(coarse, bool) or not isinstance(coarse, (int, np.integer)) or coarse < 1:
        raise ValueError(f"coarse={coarse!r} must be a positive integer (lattice intervals per axis), e.g. coarse=8")
    return coarse


class _Values:
    """The grid's exact values as they arrive, and the array the interpolation works on (the loss or its log)."""

    def __init__(self, evaluate, nx: int, ny: int, pbar):
        self.evaluate, self.pbar = evaluate, pbar
        self.loss = np.full((ny, nx), np.nan)
        self.accuracy = np.full((ny, nx), np.nan)
        self.exact = np.zeros((ny, nx), bool)
        self.dtype = self.acc_dtype = None
        self.log = False

    def run(self, ij: np.ndarray) -> None:
        """Evaluate the cells ``ij`` (K, 2) not yet exact."""
        ij = ij[~self.exact[ij[:, 0], ij[:, 1]]]
        if len(ij) == 0:
            return
        values, acc = self.evaluate(ij)
        values, acc = np.asarray(values), np.asarray(acc)
        if values.shape != (len(ij),) or acc.shape != (len(ij),):
            raise ValueError(
                f"evaluate must return (loss, accuracy) of shape ({len(ij)},) for {len(ij)} points; "
                f"got {values.shape} and {acc.shape}"
            )
        if self.dtype is None:
            self.dtype = np.result_type(values.dtype, np.float32)
            self.acc_dtype = np.result_type(acc.dtype, np.float32)
        self.loss[ij[:, 0], ij[:, 1]] = values
        self.accuracy[ij[:, 0], ij[:, 1]] = acc
        self.exact[ij[:, 0], ij[:, 1]] = True
        self.pbar.update(len(ij))

    def choose_domain(self) -> None:
        """Interpolate ``ln(loss)`` when every finite value of the coarse lattice is positive (see the module)."""
        finite = self.loss[self.exact & np.isfinite(self.loss)]
        self.log = bool(finite.size) and bool((finite > 0).all())

    @property
    def work(self) -> np.ndarray:
        """What is interpolated: ``ln(loss)`` (non-finite where the loss is not positive) or the loss."""
        if not self.log:
            return self.loss
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.loss > 0, np.log(np.where(self.loss > 0, self.loss, 1.0)), np.nan)

    def floor(self) -> float:
        return 0.0 if self.log else _floor(self.loss[self.exact])

    def error(self, guess: np.ndarray, truth: np.ndarray, floor: float) -> np.ndarray:
        """Relative error of interpolated values ``guess`` against exact ones ``truth``, both in the working domain."""
        if not self.log:
            return relative_difference(guess, truth, floor)
        with np.errstate(over="ignore", invalid="ignore"):
            error = np.abs(np.expm1(np.asarray(guess, np.float64) - truth))  # |e^guess - e^truth| / e^truth
        return np.where(np.isfinite(error), error, np.inf)


def _refine(values: _Values, ly: list, lx: list, tol: float):
    """Check and split cells level by level; the kept cells and ``(check points, interpolated there)`` of each."""
    active = _cells(0, ly[0], lx[0], np.arange(len(ly[0]) - 1), np.arange(len(lx[0]) - 1))
    kept: list[_Cell] = []
    checks: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(len(ly) - 1):
        if not active:
            break
        points = [_check_points(c) for c in active]
        values.run(np.unique(np.concatenate(points), axis=0))
        work, floor = values.work, values.floor()
        usable = values.exact & np.isfinite(work)
        diverged = values.exact & ~np.isfinite(work)
        children = []
        for cell, pts in zip(active, points):
            corners = diverged[np.ix_(cell.rows[[0, -1]], cell.cols[[0, -1]])]
            ok = not (corners.any() or diverged[pts[:, 0], pts[:, 1]].any())
            if ok:
                cell.stencil = _best_stencil(cell, ly[k], lx[k], usable)
                guess = _interpolate_at(work, pts, *cell.stencil)
                ok = bool((SAFETY * values.error(guess, work[pts[:, 0], pts[:, 1]], floor) <= tol).all())
            if ok:
                kept.append(cell)
                checks.append((pts, guess))
            else:
                children += _split(cell, ly[k + 1], lx[k + 1])
        active = children
    if active:  # the last level's cells are one index wide: nothing left to interpolate
        raise AssertionError("adaptive grid: cells left unchecked at full resolution")
    return kept, checks


def _assemble(values: _Values, kept: list, checks: list) -> AdaptiveGrid:
    """The grid: exact values as evaluated, every other cell from the finest kept cell that holds it."""
    exact, work, floor = values.exact, values.work, values.floor()
    max_error = 0.0
    for pts, guess in checks:
        errors = values.error(guess, work[pts[:, 0], pts[:, 1]], floor)
        max_error = max(max_error, SAFETY * float(errors.max()))
    out_loss, out_acc = values.loss.copy(), values.accuracy.copy()
    for cell in kept:  # coarse first, so a finer kept cell overrides the edge it shares with a coarser one
        sy, sx = cell.stencil
        inside = ~exact[np.ix_(cell.rows, cell.cols)]
        block = _interpolate(work, cell.rows, cell.cols, sy, sx)
        block = np.exp(block) if values.log else block
        acc_block = _interpolate(values.accuracy, cell.rows, cell.cols, sy, sx)
        region = out_loss[cell.rows[0] : cell.rows[-1] + 1, cell.cols[0] : cell.cols[-1] + 1]
        region[inside] = block[inside]
        region = out_acc[cell.rows[0] : cell.rows[-1] + 1, cell.cols[0] : cell.cols[-1] + 1]
        region[inside] = acc_block[inside]
    acc_exact = values.accuracy[exact & np.isfinite(values.accuracy)]
    if acc_exact.size:
        out_acc = np.where(exact, out_acc, np.clip(out_acc, acc_exact.min(), acc_exact.max()))
    return AdaptiveGrid(
        loss=out_loss.astype(values.dtype),
        accuracy=out_acc.astype(values.acc_dtype),
        exact=exact,
        max_error=max_error,
        n_exact=int(exact.sum()),
        floor=floor,
        log=values.log,
    )
