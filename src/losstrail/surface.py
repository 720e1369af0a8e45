"""The loss over a grid of points in a plane, evaluated for many points at once.

Each chunk of grid points becomes a batch of parameter vectors; ``torch.func.vmap`` over
``functional_call`` runs the model for the whole chunk in one call per data batch, so
there is no per-point ``load_state_dict`` and one code path serves every model.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from losstrail._loss import correct_count, cross_entropy_terms, is_classification, resolve_loss
from losstrail._memory import reuse_freed_memory
from losstrail._progress import bar
from losstrail.directions import Plane

__all__ = [
    "DecisionMaps",
    "LossLine",
    "decision_regions",
    "Surface",
    "evaluate_points",
    "loss_line",
    "loss_surface",
    "path_grid",
    "take_subset",
]

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
    loss_se: np.ndarray | None = None  # (ny, nx) standard error of each mean loss, when on a data subset

    def __post_init__(self):
        shape = (len(self.ys), len(self.xs))
        for name in ("loss", "accuracy", "loss_se"):
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ValueError(f"Surface.{name} must have shape {shape}; got {value.shape}")

    @property
    def minimum(self) -> tuple[float, float, float]:
        """``(x, y, loss)`` of the grid cell with the lowest finite loss."""
        masked = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        return float(self.xs[j]), float(self.ys[i]), float(self.loss[i, j])


def path_grid(
    xy: np.ndarray,
    resolution: int | tuple[int, int] = 100,
    margin: float = 0.25,
    *,
    xrange: tuple[float, float] | None = None,
    yrange: tuple[float, float] | None = None,
):
    """Grid axes ``(xs, ys)`` that hold the whole path ``xy`` (T, 2) with a margin on each side.

    The shorter side spans at least a fifth of the longer one, so a nearly straight path
    still sits in a landscape rather than on a sliver. ``resolution`` is one count for both
    axes or ``(nx, ny)``; ``xrange``/``yrange`` ``(low, high)`` replace the fitted extent of
    that axis (they need not be symmetric about anything).

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
    axes = []
    for k, (name, chosen, n) in enumerate((("xrange", xrange, nx), ("yrange", yrange, ny))):
        low, high = (centre[k] - half[k], centre[k] + half[k]) if chosen is None else _check_range(name, chosen)
        axes.append(np.linspace(low, high, n))
    return axes[0], axes[1]


def _check_range(name: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={value!r} must be a pair (low, high) of plane coordinates, e.g. {name}=(-1, 2)"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"{name}={value!r} must have a finite low < high, e.g. {name}=(-1, 2)")
    return low, high


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


def _as_dataset(data) -> Dataset:
    """The Dataset behind any supported kind of data."""

    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorDataset(*data)
    from losstrail.train import is_datamodule

    if is_datamodule(data):
        dataset = getattr(data, "dataset", None)
        if isinstance(dataset, Dataset):
            return dataset
        data.prepare_data()
        data.setup("fit")
        data = data.train_dataloader()
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    raise TypeError(
        f"data={type(data).__name__} is not supported; "
        "pass an (X, y) pair of tensors, a Dataset, a DataLoader or a LightningDataModule"
    )


def take_subset(data, n: int, seed: int | None = 0, *, argument: str = "subset") -> Dataset:
    """A seeded random subset of ``n`` examples of ``data``, in their original order.

    >>> X, y = torch.arange(10.0)[:, None], torch.arange(10)
    >>> sub = take_subset((X, y), 4, seed=0)
    >>> len(sub), sorted(sub.tensors[1].tolist()) == sub.tensors[1].tolist()
    (4, True)
    """
    dataset = _as_dataset(data)
    size = len(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{argument}={n!r} must be a positive number of examples, or None for all of them")
    if n > size:
        raise ValueError(f"{argument}={n} is larger than the data ({size} examples); pass at most {size}, or None")
    index = np.sort(np.random.default_rng(seed).choice(size, int(n), replace=False))
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[torch.from_numpy(index)] for t in dataset.tensors))
    return torch.utils.data.Subset(dataset, index.tolist())


def _batch_source(data, batch_size: int) -> Callable[[], Iterable]:
    """A function that returns a fresh iterable of batches over ``data``, in a fixed order."""
    if not isinstance(data, DataLoader):
        data = _as_dataset(data)
    if isinstance(data, TensorDataset):
        X, y = data.tensors
        return lambda: ((X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(X), batch_size))
    if isinstance(data, DataLoader):
        return lambda: iter(data)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return lambda: iter(loader)


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
    subset: int | None = None,
    seed: int | None = 0,
    bn_batches: int = 0,
    batch_size: int = 4096,
    chunk_size: int | None = None,
    memory_budget: int = 48 << 20,
    device: str | torch.device = "cpu",
    autocast: bool = False,
    quiet: bool = False,
) -> Surface:
    """Mean loss and accuracy over ``data`` at every grid point ``origin + xs[j]*u + ys[i]*v``.

    Args:
        model: the network; its own weights are not changed.
        data: an ``(X, y)`` pair of tensors, a Dataset, a DataLoader or a LightningDataModule.
        plane: the plane of the grid.
        xs: (nx,) plane x coordinates.  ys: (ny,) plane y coordinates.
        loss_fn: ``(outputs, targets) -> mean loss``; default ``model.loss_fn``, else cross-entropy.
        subset: evaluate on a random subset of this many examples (seeded by ``seed``) and
            report each cell's standard error in ``Surface.loss_se``.
        seed: seed of the subset (default 0).
        bn_batches: 0 (default) evaluates BatchNorm layers with the centre's running
            statistics, as the reference does; ``n > 0`` recomputes them at every grid point
            from the first ``n`` batches of ``data``, for models where that matters.
        batch_size: examples per batch when ``data`` is tensors or a Dataset (default 4096).
        chunk_size: grid points evaluated together; default from ``memory_budget``.
        memory_budget: bytes the working set of one chunk may take (default 48 MiB: small
            enough to stay in cache, which matters more on a CPU than fewer, larger calls).
        device: where to evaluate (default ``'cpu'``).
        autocast: evaluate in mixed precision (float16 on CUDA, bfloat16 on CPU): faster on
            GPUs, less exact.
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
    _check_bn_batches(model, bn_batches)
    if subset is not None:
        data = take_subset(data, subset, seed)
    device = torch.device(device)
    batches = _Batches(data, batch_size, device)
    coords = torch.from_numpy(_grid_coords(xs, ys).astype(np.float32)).to(device)  # (N, 2)
    origin = torch.from_numpy(plane.origin).to(device)
    basis = torch.from_numpy(np.stack([plane.u, plane.v])).to(device)  # (2, P)
    with _eval_mode(model):
        result = _evaluate(
            model,
            batches,
            lambda sl: origin + coords[sl] @ basis,
            len(coords),
            resolve_loss(model, loss_fn),
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            quiet=quiet,
            bn_batches=bn_batches,
            spread=subset is not None,
            autocast=autocast,
        )
    grid = (len(ys), len(xs))
    loss = result.loss.reshape(grid)
    bad = int((~np.isfinite(loss)).sum())
    if bad:
        warnings.warn(
            f"{bad} of {loss.size} grid cells have a non-finite loss (the model diverges there); pictures mask them",
            RuntimeWarning,
            stacklevel=2,
        )
    se = None if result.loss_se is None else result.loss_se.reshape(grid)
    return Surface(xs=xs, ys=ys, loss=loss, accuracy=result.accuracy.reshape(grid), loss_se=se)


def evaluate_points(
    model: torch.nn.Module,
    data,
    params: np.ndarray,
    *,
    loss_fn: Callable | None = None,
    bn_batches: int = 0,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy (N,) over ``data`` at each parameter vector of ``params`` (N, P).

    The same batched machinery as the grid, for points that are not on a grid (the recorded
    path, a line).
    """
    _check_bn_batches(model, bn_batches)
    device = torch.device(device)
    rows = torch.from_numpy(np.ascontiguousarray(params, dtype=np.float32))  # (N, P)
    batches = _Batches(data, batch_size, device)
    with _eval_mode(model):
        result = _evaluate(
            model,
            batches,
            lambda sl: rows[sl].to(device),
            rows.shape[0],
            resolve_loss(model, loss_fn),
            quiet=quiet,
            bn_batches=bn_batches,
        )
    return result.loss, result.accuracy


@dataclass(frozen=True)
class LossLine:
    """Loss and accuracy along a line ``origin + t * direction`` in parameter space."""

    ts: np.ndarray  # (n,) line coordinates
    loss: np.ndarray  # (n,) mean loss over the data
    accuracy: np.ndarray  # (n,) fraction correct; NaN when not classification


def loss_line(model: torch.nn.Module, data, origin, direction, ts, **options) -> LossLine:
    """Mean loss and accuracy over ``data`` at ``origin + t * direction`` for each ``t`` in ``ts``.

    With ``origin`` the initial parameters and ``direction`` the final minus the initial ones,
    ``t`` runs from the start (0) to the end (1) of training in a straight line (Goodfellow
    et al., 2015). ``options`` are those of ``evaluate_points``.

    >>> model = torch.nn.Linear(2, 2)
    >>> theta = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    >>> line = loss_line(model, (torch.randn(8, 2), torch.randint(0, 2, (8,))), theta, theta, [0.0, 1.0])
    >>> line.loss.shape
    (2,)
    """
    ts = _check_axis("ts", ts)
    origin = np.asarray(origin, dtype=np.float64).reshape(-1)
    direction = np.asarray(direction, dtype=np.float64).reshape(-1)
    n_params = sum(p.numel() for p in model.parameters())
    for name, vector in (("origin", origin), ("direction", direction)):
        if vector.shape[0] != n_params:
            raise ValueError(f"{name} has {vector.shape[0]} values but the model has P={n_params} parameters")
    if not np.linalg.norm(direction) > 0:
        raise ValueError("direction has zero length, so the line is a point; pass a non-zero direction")
    points = origin[None, :] + ts[:, None] * direction[None, :]  # (n, P)
    loss, accuracy = evaluate_points(model, data, points, **options)
    return LossLine(ts=ts, loss=loss, accuracy=accuracy)


@dataclass(frozen=True)
class DecisionMaps:
    """A 2-D classifier's predicted class over its input plane, at some recorded points of a path."""

    xs: np.ndarray  # (gw,) input x
    ys: np.ndarray  # (gh,) input y
    labels: np.ndarray  # (F, gh, gw) predicted class at each recorded point in ``index``
    index: np.ndarray  # (F,) recorded-point indices, ascending
    X: np.ndarray  # (N, 2) the training inputs, drawn over the regions
    y: np.ndarray  # (N,) their classes

    def at(self, k: int) -> np.ndarray:
        """The map of the last computed point at or before recorded point ``k``."""
        i = int(np.searchsorted(self.index, k, side="right")) - 1
        return self.labels[max(i, 0)]


def decision_regions(model: torch.nn.Module, data, params: np.ndarray, index, *, resolution: int = 80) -> DecisionMaps:
    """Predicted classes of a model with 2-D inputs over the data's extent, at each row of ``params`` (F, P).

    ``index`` (F,) says which recorded points the rows are. Evaluated for all rows at once
    (``vmap``), in eval mode.
    """
    from torch.func import functional_call, vmap

    from losstrail._functional import ParamLayout

    X, y = (t.cpu() for t in next(iter(DataLoader(_as_dataset(data), batch_size=1 << 30))))
    if X.dim() != 2 or X.shape[1] != 2:
        raise ValueError(
            f"decision regions need 2-D inputs (N, 2); this data has inputs of shape {tuple(X.shape)}. "
            "Leave the decision panel off for image data"
        )
    lo, hi = X.min(0).values.numpy(), X.max(0).values.numpy()
    pad = 0.08 * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
    layout = ParamLayout(model)
    buffers = dict(model.named_buffers())
    rows = torch.from_numpy(np.ascontiguousarray(params, dtype=np.float32))

    def predict(flat):
        return functional_call(model, (layout.unflatten(flat), buffers), (grid,)).argmax(-1)

    labels = []
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, len(rows), 32):
            labels.append(vmap(predict)(rows[start : start + 32]).to(torch.uint8).numpy())
    maps = np.concatenate(labels).reshape(len(rows), resolution, resolution)
    return DecisionMaps(xs, ys, maps, np.asarray(index), X.numpy(), y.numpy())


def _batch_norms(model: torch.nn.Module) -> list:
    return [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def _check_bn_batches(model: torch.nn.Module, bn_batches: int) -> None:
    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
        raise ValueError(f"bn_batches={bn_batches!r} must be 0 (keep the running statistics) or a number of batches")
    if bn_batches and not _batch_norms(model):
        raise ValueError(
            f"bn_batches={bn_batches} recomputes BatchNorm statistics, but {type(model).__name__} has no BatchNorm "
            "layers with running statistics; leave bn_batches=0"
        )


def _labels_in_range(batches: _Batches, n_classes: int) -> bool:
    """True when every target is a class index, so no ``ignore_index`` handling is needed."""
    return batches._cached is not None and all(bool(((y >= 0) & (y < n_classes)).all()) for _, y in batches._cached)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class _Evaluated:
    loss: np.ndarray  # (n_points,)
    accuracy: np.ndarray  # (n_points,)
    loss_se: np.ndarray | None  # (n_points,)


def _evaluate(
    model,
    batches: _Batches,
    chunk_params: Callable[[slice], torch.Tensor],
    n_points: int,
    loss_fn: Callable,
    *,
    chunk_size: int | None = None,
    memory_budget: int = 48 << 20,
    quiet: bool = True,
    bn_batches: int = 0,
    spread: bool = False,
    autocast: bool = False,
) -> _Evaluated:
    """Loss and accuracy (n_points,) at the parameter vectors ``chunk_params(slice) -> (C, P)``.

    With ``spread`` it also returns each point's standard error of the mean loss, from the
    per-example losses; with ``bn_batches`` each point gets its own BatchNorm statistics.
    """
    from torch.func import functional_call, vmap

    from losstrail._functional import ParamLayout

    layout = ParamLayout(model)
    device = batches.device
    buffers = {name: b.to(device) for name, b in model.named_buffers()}
    own = {name: p.detach().to(device) for name, p in model.named_parameters()}

    x0, y0 = next(iter(batches))
    with torch.no_grad():
        out0 = functional_call(model, (own, buffers), (x0,))
    classify = isinstance(out0, torch.Tensor) and is_classification(out0, y0)
    # Plain cross-entropy with every label a valid class: one pass gives loss and accuracy.
    fused = loss_fn is F.cross_entropy and classify and _labels_in_range(batches, out0.shape[-1])

    def per_example(out, y):  # (N,) the loss of each example alone
        return vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)

    def at_point(flat, bufs, x, y):  # flat (P,)
        out = functional_call(model, (layout.unflatten(flat), bufs), (x,))
        if fused:
            losses, correct = cross_entropy_terms(out, y)
        else:
            correct = correct_count(out, y) if classify else torch.zeros((), device=x.device)
            if not spread:
                return loss_fn(out, y), correct, torch.zeros((), device=x.device)
            losses = per_example(out, y)
        squares = (losses * losses).sum() if spread else torch.zeros((), device=x.device)
        return losses.mean(), correct, squares

    buffer_dim = 0 if bn_batches else None
    batched = vmap(at_point, in_dims=(0, buffer_dim, None, None), randomness="same")
    if chunk_size is None:
        per_point = 4 * (layout.n_params + 3 * _activation_elements(model, own, buffers, x0))
        chunk_size = int(max(1, min(_MAX_CHUNK, memory_budget // per_point)))
    loss_sum, correct, squares = np.zeros(n_points), np.zeros(n_points), np.zeros(n_points)
    n_chunks = math.ceil(n_points / chunk_size)
    progress = bar(n_chunks * batches.n_batches, "grid", quiet, unit="batch")
    precision = (
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
        if autocast
        else contextlib.nullcontext()
    )
    with reuse_freed_memory(), torch.inference_mode(), precision, progress as pbar:
        for start in range(0, n_points, chunk_size):
            sl = slice(start, min(start + chunk_size, n_points))
            flat = chunk_params(sl)
            bufs = _recomputed_statistics(model, layout, buffers, flat, batches, bn_batches) if bn_batches else buffers
            for x, y in batches:
                loss, right, sq = batched(flat, bufs, x, y)
                loss_sum[sl] += loss.double().cpu().numpy() * len(y)
                correct[sl] += right.double().cpu().numpy()
                squares[sl] += sq.double().cpu().numpy()
                pbar.update(1)
    n = batches.n_examples
    loss = loss_sum / n
    accuracy = correct / n if classify else np.full(n_points, np.nan)
    loss_se = None
    if spread:
        variance = np.maximum(squares - n * loss**2, 0) / max(n - 1, 1)
        loss_se = np.sqrt(variance / n)
    return _Evaluated(loss, accuracy, loss_se)


def _recomputed_statistics(model, layout, buffers: dict, flat: torch.Tensor, batches: _Batches, n_batches: int):
    """Per-point BatchNorm buffers (C, ...): the mean of the batch statistics over the first ``n_batches``.

    Runs the BatchNorm layers in training mode with momentum 1, so after each batch their
    running buffers hold that batch's statistics; averaging over batches gives what
    ``momentum=None`` (a cumulative average) would, without the ``.item()`` it needs.
    """
    from torch.func import functional_call, vmap

    norms = _batch_norms(model)
    saved = [(m, m.training, m.momentum) for m in norms]
    n_points = flat.shape[0]
    state = {name: b.unsqueeze(0).repeat(n_points, *([1] * b.dim())).clone() for name, b in buffers.items()}
    totals = {name: torch.zeros_like(b) for name, b in state.items() if b.is_floating_point()}

    def forward(params_flat, bufs, x):
        functional_call(model, (layout.unflatten(params_flat), bufs), (x,))
        return bufs

    used = 0
    try:
        for m in norms:
            m.train()
            m.momentum = 1.0
        for x, _ in itertools.islice(iter(batches), n_batches):
            vmap(lambda p, b, x=x: forward(p, b, x), in_dims=(0, 0))(flat, state)
            for name in totals:
                totals[name] += state[name]
            used += 1
    finally:
        for m, training, momentum in saved:
            m.train(training)
            m.momentum = momentum
    return {name: (totals[name] / used if name in totals else b) for name, b in state.items()}
