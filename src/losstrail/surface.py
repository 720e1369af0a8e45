"""The loss over a grid of points in a plane, evaluated for many points at once.

Each chunk of grid points becomes a batch of parameter vectors; ``torch.func.vmap`` over
``functional_call`` runs the model for the whole chunk in one call per data batch, so
there is no per-point ``load_state_dict`` and one code path serves every model.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from losstrail._loss import correct_count, cross_entropy_logsumexp, is_classification, resolve_loss
from losstrail._progress import bar
from losstrail.directions import Plane

__all__ = ["Surface", "loss_surface", "path_grid"]

# Data held in memory between chunks when it comes from a loader (bytes).
_CACHE_LIMIT = 1 << 30
# Grid points evaluated together at most; more gains nothing on a CPU.
_MAX_CHUNK = 2048


@dataclass(frozen=True)
class Surface:
    """Loss and accuracy on a grid in a plane; entry ``[i, j]`` is at ``(xs[j], ys[i])``."""

    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,)
    loss: np.ndarray  # (ny, nx) mean loss over the data
    accuracy: np.ndarray  # (ny, nx) fraction correct; NaN when the task is not classification

    def __post_init__(self):
        shape = (len(self.ys), len(self.xs))
        if self.loss.shape != shape or self.accuracy.shape != shape:
            raise ValueError(
                f"Surface.loss and .accuracy must have shape {shape}; got {self.loss.shape}, {self.accuracy.shape}"
            )

    @property
    def minimum(self) -> tuple[float, float, float]:
        """``(x, y, loss)`` of the grid cell with the lowest finite loss."""
        masked = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        return float(self.xs[j]), float(self.ys[i]), float(self.loss[i, j])


def path_grid(xy: np.ndarray, resolution: int | tuple[int, int] = 100, margin: float = 0.25):
    """Grid axes ``(xs, ys)`` that hold the whole path ``xy`` (T, 2) with a margin on each side.

    The shorter side spans at least a fifth of the longer one, so a nearly straight path
    still sits in a landscape rather than on a sliver.

    >>> xs, ys = path_grid(np.array([[-2.0, -1.0], [0.0, 0.0]]), resolution=5, margin=0.5)
    >>> xs.tolist()
    [-3.0, -2.0, -1.0, 0.0, 1.0]
    >>> float(ys.min()), float(ys.max())
    (-1.5, 0.5)
    """
    nx, ny = (resolution, resolution) if isinstance(resolution, int) else resolution
    for name, n in (("nx", nx), ("ny", ny)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"resolution {name}={n!r} must be an integer of at least 2, e.g. resolution=100")
    xy = np.asarray(xy, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = hi - lo
    if span.max() == 0:
        span = np.ones(2)
    span = np.maximum(span, 0.2 * span.max())
    centre, half = (lo + hi) / 2, span / 2 * (1 + 2 * margin)
    xs = np.linspace(centre[0] - half[0], centre[0] + half[0], nx)
    ys = np.linspace(centre[1] - half[1], centre[1] + half[1], ny)
    return xs, ys


class _Batches:
    """``(inputs, targets)`` batches from any supported kind of data, held in memory when small."""

    def __init__(self, data, batch_size: int, device: torch.device):
        self.device = device
        self._source = _batch_source(data, batch_size)
        self._cached: list | None = None
        cached, size = [], 0
        for batch in self._source():
            x, y = _pair(batch)
            size += x.element_size() * x.numel() + y.element_size() * y.numel()
            if size > _CACHE_LIMIT:
                cached = None
                break
            cached.append((x.to(device), y.to(device)))
        self._cached = cached
        if self._cached is not None:
            self.n_examples = sum(len(y) for _, y in self._cached)
            self.n_batches = len(self._cached)
        else:
            self.n_examples = sum(len(_pair(b)[1]) for b in self._source())
            self.n_batches = sum(1 for _ in self._source())
        if self.n_examples == 0:
            raise ValueError("data holds no examples; pass at least one (input, target) pair")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._cached is not None:
            yield from self._cached
        else:
            for batch in self._source():
                x, y = _pair(batch)
                yield x.to(self.device), y.to(self.device)


def _pair(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch[0], batch[1]
    kind = type(batch).__name__ if not isinstance(batch, (tuple, list)) else f"{type(batch).__name__} of {len(batch)}"
    raise ValueError(
        f"data must yield (inputs, targets) pairs of tensors; got a {kind}. Wrap it so each batch is (x, y)"
    )


def _batch_source(data, batch_size: int) -> Callable[[], Iterable]:
    """A function that returns a fresh iterable of batches over ``data``, in a fixed order."""
    import lightning.pytorch as pl

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        data = TensorDataset(*data)
    if isinstance(data, pl.LightningDataModule):
        dataset = getattr(data, "dataset", None)
        if isinstance(dataset, Dataset):
            data = dataset
        else:
            data.prepare_data()
            data.setup("fit")
            data = data.train_dataloader()
    if isinstance(data, TensorDataset):
        X, y = data.tensors
        return lambda: ((X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(X), batch_size))
    if isinstance(data, DataLoader):
        return lambda: iter(data)
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        return lambda: iter(loader)
    raise TypeError(
        f"data={type(data).__name__} is not supported; "
        "pass an (X, y) pair of tensors, a Dataset, a DataLoader or a LightningDataModule"
    )


def _activation_elements(model: torch.nn.Module, params: dict, buffers: dict, x: torch.Tensor) -> int:
    """Elements in the outputs of all leaf modules for one forward pass over ``x``."""
    from torch.func import functional_call

    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            functional_call(model, (params, buffers), (x,))
    finally:
        for h in hooks:
            h.remove()
    return total + x.numel()


def _grid_coords(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """All grid points (ny * nx, 2), row-major over ``ys`` then ``xs``."""
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _check_axis(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite plane coordinates; got shape {arr.shape}")
    return arr


def loss_surface(
    model: torch.nn.Module,
    data,
    plane: Plane,
    xs,
    ys,
    *,
    loss_fn: Callable | None = None,
    batch_size: int = 4096,
    chunk_size: int | None = None,
    memory_budget: int = 48 << 20,
    device: str | torch.device = "cpu",
    quiet: bool = False,
) -> Surface:
    """Mean loss and accuracy over ``data`` at every grid point ``origin + xs[j]*u + ys[i]*v``.

    Args:
        model: the network; its own weights are not changed.
        data: an ``(X, y)`` pair of tensors, a Dataset, a DataLoader or a LightningDataModule.
        plane: the plane of the grid.
        xs: (nx,) plane x coordinates.  ys: (ny,) plane y coordinates.
        loss_fn: ``(outputs, targets) -> mean loss``; default ``model.loss_fn``, else cross-entropy.
        batch_size: examples per batch when ``data`` is tensors or a Dataset (default 4096).
        chunk_size: grid points evaluated together; default from ``memory_budget``.
        memory_budget: bytes the working set of one chunk may take (default 48 MiB: small
            enough to stay in cache, which matters more on a CPU than fewer, larger calls).
        device: where to evaluate (default ``'cpu'``).
        quiet: no progress bar.

    Returns:
        ``Surface`` with ``loss`` and ``accuracy`` of shape ``(len(ys), len(xs))``, computed
        with the model in eval mode and no gradients.

    >>> from losstrail.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MLP(input_dim=2, num_classes=3, hidden_dim=4)
    >>> P = sum(p.numel() for p in model.parameters())
    >>> plane = Plane(np.zeros(P, np.float32), np.eye(P, dtype=np.float32)[0], np.eye(P, dtype=np.float32)[1], "custom")
    >>> s = loss_surface(model, (torch.randn(32, 2), torch.randint(0, 3, (32,))), plane, [-1, 0, 1], [0, 1], quiet=True)
    >>> s.loss.shape
    (2, 3)
    """
    xs, ys = _check_axis("xs", xs), _check_axis("ys", ys)
    n_params = sum(p.numel() for p in model.parameters())
    if plane.n_params != n_params:
        raise ValueError(
            f"the plane has P={plane.n_params} parameters but the model has P={n_params}; "
            "make the plane from this model's trajectory"
        )
    device = torch.device(device)
    batches = _Batches(data, batch_size, device)
    coords = torch.from_numpy(_grid_coords(xs, ys).astype(np.float32)).to(device)  # (N, 2)
    origin = torch.from_numpy(plane.origin).to(device)
    basis = torch.from_numpy(np.stack([plane.u, plane.v])).to(device)  # (2, P)
    with _eval_mode(model):
        loss, accuracy = _evaluate(
            model,
            batches,
            lambda sl: origin + coords[sl] @ basis,
            len(coords),
            resolve_loss(model, loss_fn),
            chunk_size,
            memory_budget,
            device,
            quiet,
        )
    loss = loss.reshape(len(ys), len(xs))
    bad = int((~np.isfinite(loss)).sum())
    if bad:
        warnings.warn(
            f"{bad} of {loss.size} grid cells have a non-finite loss (the model diverges there); pictures mask them",
            RuntimeWarning,
            stacklevel=2,
        )
    return Surface(xs=xs, ys=ys, loss=loss, accuracy=accuracy.reshape(len(ys), len(xs)))


def evaluate_points(
    model: torch.nn.Module,
    data,
    params: np.ndarray,
    *,
    loss_fn: Callable | None = None,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy (N,) over ``data`` at each parameter vector of ``params`` (N, P).

    The same batched machinery as the grid, for points that are not on a grid.
    """
    device = torch.device(device)
    rows = torch.from_numpy(np.ascontiguousarray(params, dtype=np.float32))  # (N, P)
    batches = _Batches(data, batch_size, device)
    with _eval_mode(model):
        return _evaluate(
            model,
            batches,
            lambda sl: rows[sl].to(device),
            rows.shape[0],
            resolve_loss(model, loss_fn),
            None,
            48 << 20,
            device,
            quiet,
        )


def _labels_in_range(batches: _Batches, n_classes: int) -> bool:
    """True when every target is a class index, so no ``ignore_index`` handling is needed."""
    return batches._cached is not None and all(bool(((y >= 0) & (y < n_classes)).all()) for _, y in batches._cached)


@contextlib.contextmanager
def _reuse_freed_memory():
    """Keep freed blocks in the heap while the grid runs (glibc only; elsewhere a no-op).

    Every chunk allocates the same large activation tensors again. By default glibc hands
    blocks of that size back to the kernel on free and maps fresh zeroed pages on the next
    allocation, and the page faults cost more than the arithmetic (measured 2.5x slower
    per call). Raising the mmap and trim thresholds for the duration keeps the pages, and
    ``malloc_trim`` returns them afterwards.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    m_trim_threshold, m_mmap_threshold, default = -1, -3, 128 * 1024
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(m_trim_threshold, default)
        libc.mallopt(m_mmap_threshold, default)
        libc.malloc_trim(0)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _evaluate(model, batches, chunk_params, n_points, loss_fn, chunk_size, memory_budget, device, quiet):
    """Loss and accuracy (n_points,) at the parameter vectors ``chunk_params(slice) -> (C, P)``."""
    from torch.func import functional_call, vmap

    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    numels = [p.numel() for p in model.parameters()]
    buffers = {name: b.to(device) for name, b in model.named_buffers()}
    own = {name: p.detach().to(device) for name, p in model.named_parameters()}

    x0, y0 = next(iter(batches))
    with torch.no_grad():
        out0 = functional_call(model, (own, buffers), (x0,))
    classify = isinstance(out0, torch.Tensor) and is_classification(out0, y0)
    if loss_fn is F.cross_entropy and classify and _labels_in_range(batches, out0.shape[-1]):
        loss_fn = cross_entropy_logsumexp

    def at_point(flat, x, y):  # flat (P,)
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(flat, numels), shapes)}
        out = functional_call(model, (params, buffers), (x,))
        correct = correct_count(out, y) if classify else torch.zeros((), device=x.device)
        return loss_fn(out, y), correct

    batched = vmap(at_point, in_dims=(0, None, None), randomness="same")
    if chunk_size is None:
        per_point = 4 * (sum(numels) + 3 * _activation_elements(model, own, buffers, x0))
        chunk_size = int(max(1, min(_MAX_CHUNK, memory_budget // per_point)))
    loss_sum = np.zeros(n_points)
    correct = np.zeros(n_points)
    n_chunks = math.ceil(n_points / chunk_size)
    progress = bar(n_chunks * batches.n_batches, "grid", quiet, unit="batch")
    with _reuse_freed_memory(), torch.inference_mode(), progress as pbar:
        for start in range(0, n_points, chunk_size):
            sl = slice(start, min(start + chunk_size, n_points))
            flat = chunk_params(sl)
            for x, y in batches:
                loss, right = batched(flat, x, y)
                loss_sum[sl] += loss.double().cpu().numpy() * len(y)
                correct[sl] += right.double().cpu().numpy()
                pbar.update(1)
    loss = loss_sum / batches.n_examples
    accuracy = correct / batches.n_examples if classify else np.full(n_points, np.nan)
    return loss, accuracy
