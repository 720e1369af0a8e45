"""Principal components of a recorded path (T, P) that may be too large for memory.

Exact from the T x T Gram matrix, streamed one block of columns at a time; or, for a long path
of a large model, a randomized range finder that reads the path twice in row order. The
direction methods (``losstrail.directions``) build on these.
"""

from __future__ import annotations

import numpy as np
import torch

from losstrail._rows import prefetch_rows, release_pages, row_block

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


def column_blocks(params: np.ndarray):
    """Slices of columns of ``params`` (T, P), each few enough that a float64 (T, block) copy fits _BLOCK_BYTES.

    A memory-mapped path has its pages handed back after each block, so streaming it never
    keeps more of it resident than one block.
    """
    n_rows, n_cols = params.shape
    width = max(1, min(_COL_BLOCK, _BLOCK_BYTES // (8 * max(n_rows, 1))))
    for start in range(0, n_cols, width):
        yield slice(start, min(start + width, n_cols))
        release_pages(params)


def mean_row(params: np.ndarray) -> np.ndarray:
    """The mean row (P,), in float64, reading a few rows at a time."""
    total = np.zeros(params.shape[1])
    rows = row_block(params.shape[1])
    for start in range(0, params.shape[0], rows):
        total += params[start : start + rows].sum(axis=0, dtype=np.float64)
        release_pages(params)
    return total / params.shape[0]


def centred_gram(params: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(T, T) Gram matrix of the mean-centred rows, reading one column block at a time."""
    T = params.shape[0]
    gram = np.zeros((T, T))
    for cols in column_blocks(params):
        block = params[:, cols].astype(np.float64) - mean[cols]  # (T, B)
        gram += block @ block.T
    return gram


def principal_directions(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The top two principal directions of the path ``params`` (T, P), T >= 3.

    For the snapshots of a sketched path (``Trajectory.sketch``): the sketch's, of every step.
    Else from the T x T Gram matrix (exact) up to _EXACT_WORK multiply-adds, else sketched (two
    passes over the path). Returns ``(variances (2,), unit directions (2, P), total variance)``;
    a ValueError when the path moves in fewer than two directions.
    """
    T, P = params.shape
    sketch = getattr(params, "sketch", None)  # a sketched path's rows carry the PCA of every step
    if sketch is not None and sketch.directions is not None:
        top = np.asarray(sketch.variances[:2], dtype=np.float64)
        _check_two_directions(top)
        return top, sketch.directions.astype(np.float64), float(sketch.total_variance)
    if float(T) * T * P > _EXACT_WORK and T > _SKETCH:  # long path, many parameters
        top, dirs, total = sketched_pca(params, 2)
        _check_two_directions(top)
    else:
        mean = mean_row(params)
        gram = centred_gram(params, mean)
        eigvals, eigvecs = np.linalg.eigh(gram)  # ascending
        top, vectors, total = eigvals[::-1][:2], eigvecs[:, ::-1][:, :2], float(np.trace(gram))
        _check_two_directions(top)
        dirs = combine_rows(params, mean, vectors / np.sqrt(top))  # PC_k = X_c^T V_k / sqrt(λ_k)
    return top, dirs / np.linalg.norm(dirs, axis=1, keepdims=True), total


def _check_two_directions(variances) -> None:
    if variances[1] <= 1e-12 * max(variances[0], 1e-300):
        raise ValueError("reduction_method='pca' found a path with fewer than two directions of movement; use 'random'")


def combine_rows(params: np.ndarray, mean: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """``coeffs.T @ (params - mean)``: (k, P) combinations of the centred rows, one column block at a time."""
    out = np.zeros((coeffs.shape[1], params.shape[1]))
    for cols in column_blocks(params):
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


def sketched_pca(params: np.ndarray, k: int, width: int = _SKETCH):
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


# Frequent Directions keeps at most this many rows (and as many again while it fills): its
# work per recorded step is about 6 * rows * P multiply-adds, its memory 8 * rows * P bytes.
SKETCH_ROWS = 12
_SKETCH_MIN_ROWS = 6  # below this many rows a sketch of a path is too coarse to be worth its cost
_FD_COLUMNS = 1 << 16  # columns rotated at once when the sketch shrinks


def sketch_rows_within(n_params: int, budget: int) -> int:
    """Rows of a Frequent Directions sketch of a path of ``n_params`` that fit ``budget`` bytes (0: none fit).

    The sketch holds twice its rows in float32, plus θ_0, the float64 running sum and one row.

    >>> [sketch_rows_within(n, 1 << 30) for n in (1000, 5_250_000, 124_000_000)]
    [12, 12, 0]
    """
    rows = (budget - 16 * n_params) // (8 * max(n_params, 1))
    return int(min(SKETCH_ROWS, rows)) if rows >= _SKETCH_MIN_ROWS else 0


class FrequentDirections:
    """A streaming sketch of the principal directions of every row of a path (Liberty, 2013).

    ``add`` takes one row (θ_k, a float32 tensor) at a time. Rows are sketched relative to the
    first one, r_k = θ_k − θ_0, in a (2ℓ, P) float32 buffer; when it is full its rows are
    rotated onto their principal axes and every squared singular value lowered by the
    (ℓ+1)-th, leaving at most ℓ rows (the sum of those amounts is ``shrinkage``). Alongside,
    the exact float64 sum of the r_k and of their squared norms give the mean and the total
    variance. ``result`` turns B^T B − T r̄ r̄^T, the sketch of the centred covariance, into its
    top principal directions. Work per row: about 6ℓP multiply-adds, spread over the shrinks.
    """

    def __init__(self, first: torch.Tensor, rows: int):
        self.ell = rows
        self.origin = first.detach().to("cpu", torch.float32).clone()
        P = self.origin.numel()
        self.buffer = torch.zeros((2 * rows, P))
        self.filled = 0
        self.sum = torch.zeros(P, dtype=torch.float64)
        self.squares = 0.0
        self.count = 0
        self.shrinkage = 0.0

    def add(self, row: torch.Tensor) -> None:
        """Sketch one more row of the path (θ_k, any float tensor of P values)."""
        if self.filled == self.buffer.shape[0]:
            self._shrink()
        target = self.buffer[self.filled]
        torch.sub(row.detach().to("cpu", torch.float32), self.origin, out=target)
        self.sum += target
        self.squares += float(torch.dot(target, target))
        self.filled += 1
        self.count += 1

    def _shrink(self) -> None:
        B = self.buffer[: self.filled]
        gram = (B @ B.T).double().numpy()
        values, vectors = np.linalg.eigh(gram)  # ascending
        values, vectors = values[::-1].clip(min=0.0), vectors[:, ::-1]
        delta = float(values[self.ell]) if len(values) > self.ell else 0.0
        keep = values[: self.ell] > delta
        scale = np.sqrt((values[: self.ell][keep] - delta) / values[: self.ell][keep])
        rotate = torch.from_numpy((vectors[:, : self.ell][:, keep] * scale).T.astype(np.float32).copy())
        kept = rotate.shape[0]
        with torch.inference_mode():
            for start in range(0, B.shape[1], _FD_COLUMNS):  # in place, one column block at a time
                cols = slice(start, start + _FD_COLUMNS)
                B[:kept, cols] = rotate @ B[:, cols]
        B[kept:].zero_()
        self.filled = kept
        self.shrinkage += delta

    def result(self):
        """``(variances (r,), directions (2, P) float32 unit or None, total variance, shrinkage)``."""
        T, n = self.count, self.filled
        mean = self.sum / T
        total = self.squares - T * float(mean @ mean)
        gram = np.zeros((n + 1, n + 1))
        for rows in self._rows64():
            gram += (rows @ rows.T).numpy()
        mu, V = np.linalg.eigh(gram)  # the span of the sketch's rows and the mean
        good = mu > 1e-12 * max(float(mu.max()), 1e-300)
        basis = V[:, good] / np.sqrt(mu[good])  # Q = basis.T @ rows, orthonormal rows
        Z = basis.T @ gram[:, :n]  # Q B^T
        q = basis.T @ gram[:, n]  # Q r̄
        S = Z @ Z.T - T * np.outer(q, q)  # Q (B^T B - T r̄ r̄^T) Q^T
        values, W = np.linalg.eigh(S)
        values, W = values[::-1], W[:, ::-1]
        if len(values) < 2 or values[1] <= 1e-12 * max(values[0], 1e-300):
            return values.clip(min=0.0), None, total, self.shrinkage
        coeffs = torch.from_numpy((basis @ W[:, :2]).T.copy())  # (2, n + 1)
        directions = torch.empty((2, self.origin.numel()), dtype=torch.float64)
        for start, rows in zip(range(0, self.origin.numel(), _FD_COLUMNS), self._rows64()):
            directions[:, start : start + rows.shape[1]] = coeffs @ rows
        directions /= torch.linalg.vector_norm(directions, dim=1, keepdim=True)
        return values.clip(min=0.0), directions.float().numpy(), total, self.shrinkage

    def _rows64(self):
        """Column blocks of the sketch's rows and the mean offset r̄, stacked (n + 1, block), float64."""
        mean = self.sum / self.count
        for start in range(0, self.origin.numel(), _FD_COLUMNS):
            cols = slice(start, start + _FD_COLUMNS)
            yield torch.cat([self.buffer[: self.filled, cols].double(), mean[None, cols]])
