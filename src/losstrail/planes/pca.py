"""Principal components of a recorded path (T, P) that may be too large for memory.

Exact from the T x T Gram matrix, streamed one block of columns at a time; or, for a long path
of a large model, a randomized range finder that reads the path twice in row order. The
direction methods (``losstrail.planes.directions``) build on these.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from losstrail.values.rows import prefetch_rows, release_pages, row_block

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


# Frequent Directions keeps at most this many rows, and _FILL times as many again while it fills;
# each row entering it is the mean of SKETCH_BLOCK steps. Its work per recorded step is one pass
# over the row and about 4 * rows * P / SKETCH_BLOCK multiply-adds in the shrinks; its memory
# 4 * (1 + _FILL) * rows * P bytes and 24 * P more (see sketch_rows_within).
SKETCH_ROWS = 12
_FILL = 1  # rows added between shrinks, per row kept: more reads the buffer less often, but takes more memory
SKETCH_BLOCK = 4  # consecutive rows of a path that enter the sketch as one (their mean)
_SKETCH_MIN_ROWS = 6  # below this many rows a sketch of a path is too coarse to be worth its cost
_FD_COLUMNS = 1 << 16  # columns rotated at once when the sketch shrinks
# Values of a row summed into the sketch at once: a run of r_k stays in the cache between being
# computed, squared and added. Runs of 1 << 18 take a quarter less time but square r_k only to
# about 1e-6 (1e-7 with these), and the scatter within the 4-step blocks is a small difference of
# two such sums: the angle bound of bench_big_path's 5.26M-parameter path moved from 0.72° to 0.61°.
_GATHER_COLUMNS = 1 << 16


def sketch_rows_within(n_params: int, budget: int) -> int:
    """Rows of a Frequent Directions sketch of a path of ``n_params`` that fit ``budget`` bytes (0: none fit).

    The sketch holds 1 + _FILL times its rows in float32 (the block being gathered is one of them),
    plus θ_0, the float64 sum of the rows, the two float32 rows a recorder fills in turn and two
    float16 snapshots (one being written while the next is made): 24 bytes a parameter.

    >>> [sketch_rows_within(n, 1 << 30) for n in (1000, 5_250_000, 124_000_000)]
    [12, 12, 0]
    """
    rows = (budget - 24 * n_params) // (4 * (1 + _FILL) * max(n_params, 1))
    return int(min(SKETCH_ROWS, rows)) if rows >= _SKETCH_MIN_ROWS else 0


def sketch_bytes(rows: int, n_params: int) -> int:
    """Bytes a Frequent Directions sketch of ``rows`` rows of ``n_params`` holds (see sketch_rows_within)."""
    return (4 * (1 + _FILL) * rows + 24) * n_params


class FrequentDirections:
    """A streaming sketch of the principal directions of every row of a path (Liberty, 2013).

    ``add`` takes one row (θ_k, a float32 tensor) at a time, relative to the first one:
    r_k = θ_k − θ_0. Every ``block`` consecutive rows are summed (straight into the buffer row
    they become) and enter the sketch as one row, √n·(their mean), whose outer product is their
    n·r̄r̄ᵀ (the row is kept as their sum, its factor 1/√n applied by the next shrink, which reads
    it anyway); the scatter of the rows about
    their block's mean (W, its trace exact) is what that leaves out. Sketch rows gather in a
    ((1 + _FILL)ℓ, P) float32 buffer; when it is full its rows are rotated onto their
    principal axes and every squared singular value lowered by the (ℓ+1)-th, leaving at most ℓ
    rows (the sum of those amounts is the Frequent Directions shrinkage). The ℓ rows left are
    orthogonal with known squared norms, so a shrink needs only the products of the new rows
    with all of them (a column block at a time in float32, summed in float64). Alongside,
    float64 sums of the r_k (of the new rows, by each shrink) and of their squared norms give the
    mean and the total variance.
    ``result`` turns B^T B − T r̄ r̄^T, the sketch of the centred covariance C, into its top
    principal directions; 0 ≼ C − sketch ≼ (shrinkage + trace W)·I. Work per row: one pass
    over it and about 4.5ℓP/``block`` multiply-adds in the shrinks.
    """

    def __init__(self, first: torch.Tensor, rows: int, block: int = SKETCH_BLOCK):
        self.ell, self.block = rows, block
        self.origin = first.detach().to("cpu", torch.float32).clone()
        P = self.origin.numel()
        self.buffer = torch.empty(((1 + _FILL) * rows, P))  # a row is written before it is read: pages come as used
        self.kept = 0  # leading rows of the buffer that are the sketch: orthogonal, squared norms ``norms``
        self.norms = np.zeros(0)
        self.filled = 0  # rows of the buffer in use: the sketch, then the rows added since the last shrink
        self.scales = np.ones(self.buffer.shape[0])  # each buffer row's factor: 1/√n for a block's sum, 1 once rotated
        self.scratch = torch.zeros(min(P, _GATHER_COLUMNS))  # one run of r_k
        self.dots = torch.zeros(-(-P // _GATHER_COLUMNS))  # r_k · r_k of each run
        self.gathered = 0  # rows summed into the buffer's next row (``buffer[filled]``)
        self.sum = torch.zeros(P, dtype=torch.float64)  # of the r_k, but those in rows entered since the last shrink
        self.squares = 0.0  # of every r_k
        self.sketched = 0.0  # of every row that entered the buffer
        self.count = 0
        self.shrinkage = 0.0
        self.finite = True  # False once a row with a NaN or infinity was added (training diverged)

    def add(self, row: torch.Tensor) -> bool:
        """Sketch one more row of the path (θ_k, any float tensor of P values); False once a row was not finite."""
        if not self.finite:
            return False
        squares = self._gather(row.detach().to("cpu", torch.float32))
        if not math.isfinite(squares):
            self.finite = False
            return False
        self.squares += squares
        self.count += 1
        self.gathered += 1
        if self.gathered == self.block:
            self._enter()
        return True

    def _gather(self, row: torch.Tensor) -> float:
        """Add r = row − θ_0 to the block's sum, ``buffer[filled]`` (the first row of a block starts it); return r · r.

        One sweep over the row, _GATHER_COLUMNS values at a time, so each run of r is summed and
        squared while it is in the cache. r · r is summed in float32 within a run and in float64
        across runs: accurate to about 1e-7, where one float32 dot product of millions of values
        loses five digits or more.
        """
        first, target = not self.gathered, self.buffer[self.filled]
        for i, start in enumerate(range(0, self.origin.numel(), _GATHER_COLUMNS)):
            cols = slice(start, start + _GATHER_COLUMNS)
            if first:
                r = torch.sub(row[cols], self.origin[cols], out=target[cols])
            else:
                r = torch.sub(row[cols], self.origin[cols], out=self.scratch[: target[cols].numel()])
                target[cols] += r
            torch.dot(r, r, out=self.dots[i])
        return float(self.dots.double().sum())

    def _enter(self) -> None:
        """The block gathered enters the sketch as one row, √n·(its mean − θ_0); a full buffer shrinks.

        The row stays the block's sum, its factor 1/√n in ``scales``: applied in the products
        and the rotation of the next shrink, which read the row anyway.
        """
        self.scales[self.filled] = 1.0 / math.sqrt(self.gathered)
        self.gathered = 0
        self.filled += 1
        if self.filled == self.buffer.shape[0]:
            self._shrink()

    def _take_new(self) -> np.ndarray:
        """Products (filled, new) of every sketch row with those entered since the last shrink; their sums into ``sum``.

        The rows as stored, scaled by ``scales`` afterwards; the new rows are block sums of the
        r_k, added to ``sum`` in float64 while their column block is in the cache.
        """
        new = self.buffer[self.kept : self.filled]
        products = np.zeros((self.filled, new.shape[0]))
        with torch.inference_mode():
            for start in range(0, new.shape[1], _FD_COLUMNS):
                cols = slice(start, start + _FD_COLUMNS)
                # (new, filled) then transposed: MKL takes a third less time this way round than (filled, new)
                products += (new[:, cols] @ self.buffer[: self.filled, cols].T).T.double().numpy()
                self.sum[cols] += new[:, cols].sum(dim=0, dtype=torch.float64)
        products *= np.outer(self.scales[: self.filled], self.scales[self.kept : self.filled])
        self.sketched += float(np.trace(products[self.kept :]))
        return products

    def _shrink(self) -> None:
        products = self._take_new()
        n, kept = self.filled, self.kept
        gram = np.zeros((n, n))
        gram[:kept, :kept] = np.diag(self.norms)
        gram[:, kept:] = products
        gram[kept:, :kept] = products[:kept].T
        values, vectors = np.linalg.eigh(gram)  # ascending
        values, vectors = values[::-1].clip(min=0.0), vectors[:, ::-1]
        delta = float(values[self.ell]) if len(values) > self.ell else 0.0
        keep = values[: self.ell] > delta
        scale = np.sqrt((values[: self.ell][keep] - delta) / values[: self.ell][keep])
        rotate = (vectors[:, : self.ell][:, keep] * scale).T * self.scales[:n]  # (kept, n), of the rows as stored
        rotate = torch.from_numpy(rotate.astype(np.float32))
        B, rotated = self.buffer[:n], torch.empty((rotate.shape[0], min(_FD_COLUMNS, self.buffer.shape[1])))
        with torch.inference_mode():
            for start in range(0, B.shape[1], _FD_COLUMNS):  # in place, one column block at a time
                cols = slice(start, start + _FD_COLUMNS)
                part = rotated[:, : B[0, cols].numel()]  # one scratch block: no new memory each time
                torch.mm(rotate, B[:, cols], out=part)
                B[: rotate.shape[0], cols] = part
        self.kept = self.filled = rotate.shape[0]
        self.scales[:] = 1.0
        self.norms = values[: self.ell][keep] - delta
        self.shrinkage += delta

    def result(self):
        """``(variances (r,), directions (2, P) float32 unit or None, total variance, shrinkage)``."""
        if not self.finite:
            return np.zeros(0), None, math.nan, math.inf
        if self.gathered:
            self._enter()  # the last block, however short
        if self.filled > self.kept:
            self._take_new()  # the rows since the last shrink (they stay in the buffer)
        within = max(0.0, self.squares - self.sketched) if self.block > 1 else 0.0  # trace W, rounding aside
        shrinkage = self.shrinkage + within
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
            return values.clip(min=0.0), None, total, shrinkage
        coeffs = torch.from_numpy((basis @ W[:, :2]).T.copy())  # (2, n + 1)
        directions = torch.empty((2, self.origin.numel()), dtype=torch.float64)
        for start, rows in zip(range(0, self.origin.numel(), _FD_COLUMNS), self._rows64()):
            directions[:, start : start + rows.shape[1]] = coeffs @ rows
        directions /= torch.linalg.vector_norm(directions, dim=1, keepdim=True)
        return values.clip(min=0.0), directions.float().numpy(), total, shrinkage

    def _rows64(self):
        """Column blocks of the sketch's rows and the mean offset r̄, stacked (n + 1, block), float64."""
        mean, scales = self.sum / self.count, torch.from_numpy(self.scales[: self.filled, None])
        for start in range(0, self.origin.numel(), _FD_COLUMNS):
            cols = slice(start, start + _FD_COLUMNS)
            yield torch.cat([self.buffer[: self.filled, cols].double() * scales, mean[None, cols]])
