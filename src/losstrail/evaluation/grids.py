"""The loss over a grid of points in a plane, along a line, and a classifier's decision regions.

Every value here comes from the one evaluation core (``evaluation.evaluator.Evaluator``): chunks of
points as parameter vectors, run with ``functional_call`` (``vmap`` where it pays), so there
is no per-point ``load_state_dict`` and one code path serves every model.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
import torch

from losstrail._checks import check_range
from losstrail.evaluation.batches import as_dataset, take_subset
from losstrail.evaluation.evaluator import Evaluator
from losstrail.evaluation.layout import selected_names
from losstrail.values.plane import Plane
from losstrail.values.surface import DecisionMaps, LossLine, Surface

__all__ = [
    "decision_regions",
    "evaluate_points",
    "grid_surface",
    "loss_line",
    "loss_surface",
    "path_grid",
    "plane_grid",
]


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
        low, high = (centre[k] - half[k], centre[k] + half[k]) if chosen is None else check_range(name, chosen)
        axes.append(np.linspace(low, high, n))
    return axes[0], axes[1]


# Planes whose directions are not fitted to the path: the path's projection on them is tiny,
# so a grid fitted to it alone shows a flat patch. Li et al. (2018) draw them on a fixed
# extent, ±1 in units of the filter-normalized direction, whose length is about |θ|.
def fixed_extent(plane: Plane) -> float | None:
    """The half-width the grid of ``plane`` spans at least: 1 for filter/layer-normalized directions
    (as Li et al.), the centre's norm for unit random or custom directions (the same in their units);
    None for planes fitted to the path (PCA, interpolation, Hessian)."""
    if plane.method in ("filter", "layer"):
        return 1.0
    if plane.method in ("random", "custom"):
        return _centre_norm(plane) or 1.0
    return None


def _centre_norm(plane: Plane) -> float:
    if plane.tensors is not None:  # no flat copy of a plane held per tensor
        return float(sum(torch.linalg.vector_norm(t.float()) ** 2 for t in plane.tensors.origin) ** 0.5)
    return float(np.linalg.norm(plane.origin.astype(np.float64)))


def plane_grid(plane: Plane, xy: np.ndarray | None = None, resolution=100, *, xrange=None, yrange=None):
    """Grid axes ``(xs, ys)`` for ``plane``: the window every face (one-call API, CLI, pipeline) draws it on.

    Planes not fitted to a path (filter, layer, random, custom) span ``fixed_extent(plane)`` on
    each side of the centre (±1 filter-normalized unit, as Li et al.), widened with a margin to
    hold the path ``xy`` (T, 2) when one is given; other planes fit the path (see ``path_grid``).
    A plane around a model with no path gets the fixed window alone.

    >>> plane = Plane(np.zeros(2, np.float32), np.float32([1, 0]), np.float32([0, 1]), "filter")
    >>> [a.tolist() for a in plane_grid(plane, resolution=3)]
    [[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]
    """
    half = fixed_extent(plane)
    if xy is None:
        if half is None:
            raise ValueError(
                f"a {plane.method!r} plane is fitted to a path; pass the path's plane coordinates: "
                "plane_grid(plane, lt.project(plane, trajectory).xy)"
            )
        xy = np.zeros((0, 2))
    if half is not None:
        corners = np.array([[-half, -half], [half, half]])
        xy = np.concatenate([np.asarray(xy, dtype=np.float64).reshape(-1, 2), corners])
        margin = 0.0 if np.abs(xy).max() <= half else 0.25
        return path_grid(xy, resolution, margin, xrange=xrange, yrange=yrange)
    return path_grid(xy, resolution, xrange=xrange, yrange=yrange)


def _grid_coords(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """All grid points (ny * nx, 2), row-major over ``ys`` then ``xs``."""
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def check_evaluator(evaluator: Evaluator, n_params: int, what: str) -> None:
    """An evaluator handed in sets ``n_params`` values per point, as ``what`` (the plane, the rows) has."""
    if evaluator.layout.n_params != n_params:
        raise ValueError(
            f"the evaluator sets P={evaluator.layout.n_params} parameters per point but {what} has P={n_params}; "
            "pass an evaluator over the parameters it spans (Evaluator(model, data, names=plane.names))"
        )


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
    params=None,
    objective: Callable | None = None,
    loss_fn: Callable | None = None,
    subset: int | None = None,
    seed: int | None = 0,
    bn_batches: int = 0,
    batch_size: int = 4096,
    chunk_size: int | None = None,
    memory_budget: int = 48 << 20,
    device: str | torch.device = "cpu",
    autocast: bool = False,
    mode: str = "auto",
    grid: str = "full",
    tol: float = 0.01,
    quiet: bool = False,
) -> Surface:
    """Mean loss and accuracy over ``data`` at every grid point ``origin + xs[j]*u + ys[i]*v``.

    Args:
        model: the network; its own weights are not changed.
        data: a tree of tensors (``(X, y)``, a dict of model inputs, ...), a Dataset, a
            DataLoader or a LightningDataModule.
        plane: the plane of the grid.
        xs: (nx,) plane x coordinates.  ys: (ny,) plane y coordinates.
        params: the parameters the plane spans; default the plane's own (``plane.names``),
            else ``'trainable'``. Every other tensor keeps its value at every grid point.
        objective: ``(model, batch) -> mean loss`` (or ``(loss, {name: value})``); default the
            rule of ``LossRule``: ``loss_fn`` on ``(x, y)`` pairs, ``model(**batch).loss`` on mappings.
        loss_fn: ``(outputs, targets) -> mean loss``; default ``model.loss_fn``, else
            cross-entropy for class logits (any other output needs a loss).
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
        mode: ``'auto'`` (default: the faster of ``vmap`` over grid points and point by point, each
            on torch's threads and on one, timed on interleaved chunks and re-checked as chunks run, the
            trials costing at most 10% of the rest: a grid too short to repay them runs by the way tried
            first; points set in place at once where a point's parameters outnumber its activations, and
            timed too on 100 plane points or more where the rest repays it), ``'vmap'``, ``'loop'`` or
            ``'inplace'`` (each point set in the model's own parameters, module by module).
        grid: ``'full'`` (default: every value returned is measured, as a pipeline that exports or
            compares surfaces needs; the picture jobs default to adaptive) or ``'adaptive'``: a coarse lattice
            exact, cubic interpolation (of ``ln(loss)`` when the loss is positive, so the error is
            relative to each cell's own loss) checked against exact values at points it did not use,
            and refinement where the check fails, so only a few percent of a smooth 100×100
            surface is evaluated; ``Surface.exact`` marks the exact cells and
            ``Surface.max_error`` states the error (see ``losstrail.evaluation.adaptive``).
        tol: ``grid='adaptive'``: the largest relative interpolation error allowed (default 0.01).
        quiet: no progress bar.

    Returns:
        ``Surface`` with ``loss`` and ``accuracy`` of shape ``(len(ys), len(xs))``, computed
        with the model in eval mode and no gradients.

    >>> from losstrail.builtin.models import MLP
    >>> torch.manual_seed(0) and None
    >>> model = MLP(input_dim=2, num_classes=3, hidden_dim=4)
    >>> P = sum(p.numel() for p in model.parameters())
    >>> plane = Plane(np.zeros(P, np.float32), np.eye(P, dtype=np.float32)[0], np.eye(P, dtype=np.float32)[1], "custom")
    >>> s = loss_surface(model, (torch.randn(32, 2), torch.randint(0, 3, (32,))), plane, [-1, 0, 1], [0, 1], quiet=True)
    >>> s.loss.shape
    (2, 3)
    """
    from losstrail._checks import check_tol
    from losstrail._registry import GRIDS, check_choice

    xs, ys = _check_axis("xs", xs), _check_axis("ys", ys)  # before the evaluator's forward pass
    check_choice("grid", grid, GRIDS)
    if grid == "adaptive":
        check_tol(tol)
    names = selected_names(model, params if params is not None else plane.names, plane.n_params, "plane")
    if subset is not None:
        data = take_subset(data, subset, seed)
    evaluator = Evaluator(
        model, data, names=names, objective=objective, loss_fn=loss_fn, batch_size=batch_size, device=device,
        bn_batches=bn_batches, spread=subset is not None, autocast=autocast, mode=mode, quiet=quiet,
    )  # fmt: skip
    return grid_surface(evaluator, plane, xs, ys, grid=grid, tol=tol, subset=subset, chunk_size=chunk_size,
                        memory_budget=memory_budget, quiet=quiet)  # fmt: skip


def grid_surface(
    evaluator: Evaluator,
    plane: Plane,
    xs,
    ys,
    *,
    grid: str = "full",
    tol: float = 0.01,
    subset: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int = 48 << 20,
    quiet: bool = False,
) -> Surface:
    """``loss_surface`` on an evaluator set up already (a job's one ``Evaluator``: its data, the subset drawn,
    its way of running points chosen once), with ``grid`` and ``tol`` checked by the caller (``GridSpec``).

    ``subset``: the examples the evaluator's data were drawn to, or None (for the cost it says).
    """
    xs, ys = _check_axis("xs", xs), _check_axis("ys", ys)
    check_evaluator(evaluator, plane.n_params, "the plane")
    options = {"chunk_size": chunk_size, "memory_budget": memory_budget}
    if not quiet:
        options["on_first_chunk"] = _say_the_cost(len(xs), len(ys), evaluator.batches.n_examples, grid, tol, subset)
    if grid == "adaptive":
        result = _adaptive_surface(evaluator, plane, xs, ys, tol, quiet, options)
    else:
        result = evaluate_grid(evaluator, plane, xs, ys, **options)
    if plane.marks_xy is not None:  # the models a 'through' plane goes through: their loss exactly
        result = dataclasses.replace(result, marks_loss=evaluate_on_plane(evaluator, plane, plane.marks_xy).loss)
    bad = int((~np.isfinite(result.loss)).sum())
    if bad:
        warnings.warn(
            f"{bad} of {result.loss.size} grid cells have a non-finite loss (the model diverges there); "
            "pictures mask them",
            RuntimeWarning,
            stacklevel=3,
        )
    return result


def _say_the_cost(nx: int, ny: int, examples: int, grid: str, tol: float, subset):
    """A callback for the grid's units of work: say what the grid will cost once the timings leave warm-up out
    (if more than a few seconds), and say it again when the rate measured since moves the whole by 2x or more."""
    from losstrail.evaluation.evaluator import note
    from losstrail.evaluation.plan import estimate

    stated: list[float] = []  # the total said last

    def say(seconds: float, points: int) -> None:
        already = examples if subset else None  # on a subset already: suggest no other
        plan = estimate(seconds / (points * examples), nx, ny, examples, tol=tol, subset=already)
        total = plan.adaptive if grid == "adaptive" else plan.full
        if not stated:
            stated.append(total)
            if total > 5:
                note(plan.line(grid, style="python"))
        elif total > 5 and not 0.5 < total / stated[-1] < 2:
            stated.append(total)
            note(f"the machine's pace changed; revised: {plan.line(grid, style='python')}")

    return say


def measure_cost(evaluator: Evaluator, centre: np.ndarray) -> float:
    """Seconds per (grid point × example) of ``evaluator``, timed on one chunk of points at ``centre`` (K,)."""
    import time

    points = min(evaluator.chunk_size(48 << 20), 64)
    rows = np.repeat(np.asarray(centre, np.float32)[None, :], points, axis=0)
    evaluator.at_vectors(rows[:2], quiet=True)  # chooses vmap or point by point, and warms up
    start = time.perf_counter()
    evaluator.at_vectors(rows, quiet=True)
    return (time.perf_counter() - start) / (points * evaluator.batches.n_examples)


def _adaptive_surface(evaluator: Evaluator, plane: Plane, xs, ys, tol: float, quiet: bool, options: dict) -> Surface:
    """The surface from exact values where the adaptive scheme asks for them, interpolated elsewhere."""
    from losstrail.evaluation.adaptive import adaptive_grid

    se = np.full(len(xs) * len(ys), np.nan) if evaluator.spread else None

    def evaluate(ij: np.ndarray):
        flat = ij[:, 0] * len(xs) + ij[:, 1]
        arrays = evaluate_grid(evaluator, plane, xs, ys, only=flat, quiet=True, **options)
        if se is not None:
            se[flat] = arrays["loss_se"]
        return arrays["loss"], arrays["accuracy"]

    made = adaptive_grid(evaluate, len(xs), len(ys), tol=tol, quiet=quiet)
    grid = (len(ys), len(xs))
    loss_se = None if se is None else se.reshape(grid)
    return Surface(xs=xs, ys=ys, loss=made.loss, accuracy=made.accuracy, loss_se=loss_se, exact=made.exact,
                   max_error=made.max_error)  # fmt: skip


def evaluate_grid(evaluator: Evaluator, plane: Plane, xs: np.ndarray, ys: np.ndarray, *, only=None, **options):
    """The ``Surface`` of the grid ``xs`` × ``ys`` on ``plane``, from a ready evaluator.

    With ``only`` (flat, row-major indices of grid points) it evaluates just those points and
    returns their arrays ``{'loss', 'accuracy'[, 'loss_se']}`` (each ``(len(only),)``).
    """
    coords = _grid_coords(xs, ys)
    result = evaluate_on_plane(evaluator, plane, coords if only is None else coords[np.asarray(only)], **options)
    if only is not None:
        arrays = {"loss": result.loss, "accuracy": result.accuracy}
        return arrays if result.loss_se is None else {**arrays, "loss_se": result.loss_se}
    grid = (len(ys), len(xs))
    se = None if result.loss_se is None else result.loss_se.reshape(grid)
    return Surface(xs=xs, ys=ys, loss=result.loss.reshape(grid), accuracy=result.accuracy.reshape(grid), loss_se=se)


def evaluate_on_plane(evaluator: Evaluator, plane: Plane, coords: np.ndarray, **options):
    """``Evaluated`` at the plane points ``origin + x*u + y*v`` for each ``(x, y)`` of ``coords`` (N, 2).

    Evaluated in place in the model's own tensors (``Evaluator.run_in_place``) for a plane held
    per tensor or a model too big for flat copies; else as flat vectors, where the points being on
    the plane lets the model's first layer be computed once per batch (see
    ``evaluation.evaluator.FirstLayer``). ``options`` are those of ``Evaluator.run``.
    """
    if evaluator.in_place(plane.tensors is not None):
        from losstrail.evaluation.inplace import PlaneTensors

        tensors = plane.tensors
        if tensors is None:
            tensors = PlaneTensors.from_flat(evaluator.layout, plane.origin, plane.u, plane.v)
        return evaluator.run_in_place(tensors, coords, **options)
    device, layout = evaluator.device, evaluator.layout  # points in the dtype the model's parameters need
    coords = layout.tensor(coords, device)  # (N, 2)
    origin = layout.tensor(plane.origin, device)
    basis = layout.tensor(np.stack([plane.u, plane.v]), device)  # (2, P)
    from losstrail.evaluation.inplace import PlaneTensors

    def tensors():
        return PlaneTensors.from_flat(evaluator.layout, plane.origin, plane.u, plane.v)

    return evaluator.plane_points(origin, basis, coords, tensors, **options)


def evaluate_points(
    model: torch.nn.Module,
    data,
    params: np.ndarray,
    *,
    names=None,
    objective: Callable | None = None,
    loss_fn: Callable | None = None,
    bn_batches: int = 0,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    quiet: bool = True,
    evaluator: Evaluator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy (N,) over ``data`` at each parameter vector of ``params`` (N, P).

    The same evaluation core as the grid, for points that are not on a grid (the recorded
    path, a line). ``names`` are the parameters a vector sets (default: as ``loss_surface``).
    ``evaluator``: one set up already (a job's), used in place of ``model``, ``data`` and the options.
    """
    if evaluator is None:
        names = selected_names(model, names, np.shape(params)[1], "path")
        evaluator = Evaluator(
            model, data, names=names, objective=objective, loss_fn=loss_fn, batch_size=batch_size, device=device,
            bn_batches=bn_batches, quiet=quiet,
        )  # fmt: skip
    check_evaluator(evaluator, np.shape(params)[1], "each row of params")
    result = evaluator.at_vectors(params)
    return result.loss, result.accuracy


def loss_line(model: torch.nn.Module, data, origin, direction, ts, **options) -> LossLine:
    """Mean loss and accuracy over ``data`` at ``origin + t * direction`` for each ``t`` in ``ts``.

    With ``origin`` the initial parameters and ``direction`` the final minus the initial ones,
    ``t`` runs from the start (0) to the end (1) of training in a straight line (Goodfellow
    et al., 2015). ``options`` are those of ``evaluate_points`` (``names`` for a parameter subset,
    ``objective``, ``loss_fn``, ..., or ``evaluator``: one set up already, in place of the others).

    ``origin`` may be a ``Plane`` and ``direction`` ``'u'`` or ``'v'``: the line through its
    centre along that axis, evaluated like its grid (in place for a plane around a model, with no
    flat copy of the parameters); or the two flat vectors, as above, for a model too big for a
    chunk of flat copies, also set point by point in place.

    >>> model = torch.nn.Linear(2, 2)
    >>> theta = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    >>> line = loss_line(model, (torch.randn(8, 2), torch.randint(0, 2, (8,))), theta, theta, [0.0, 1.0])
    >>> line.loss.shape
    (2,)
    """
    ts = _check_axis("ts", ts)
    if isinstance(origin, Plane):
        if direction not in ("u", "v"):
            raise ValueError(f"direction={direction!r}: along a Plane, pass direction='u' or direction='v'")
        coords = np.stack([ts, np.zeros_like(ts)] if direction == "u" else [np.zeros_like(ts), ts], axis=1)
        return _line(model, data, ts, coords, options, plane=origin)
    origin = np.asarray(origin, dtype=np.float64).reshape(-1)
    direction = np.asarray(direction, dtype=np.float64).reshape(-1)
    if not (origin.shape == direction.shape):
        raise ValueError(
            f"origin has {origin.shape[0]} values but direction has {direction.shape[0]}; pass two of one length"
        )
    if not np.linalg.norm(direction) > 0:
        raise ValueError("direction has zero length, so the line is a point; pass a non-zero direction")
    return _line(model, data, ts, np.stack([ts, np.zeros_like(ts)], axis=1), options, flat=(origin, direction))


def _line(model, data, ts, coords, options: dict, plane: Plane | None = None, flat=None) -> LossLine:
    """The loss along a line at plane coordinates ``coords`` (n, 2) of ``plane``, or along ``flat`` =
    ``(origin, direction)`` (P,) at ``coords[:, 0]``: in place where a grid would be, else as flat points."""
    from losstrail.evaluation.inplace import PlaneTensors

    options = dict(options)
    names = options.pop("names", None)
    evaluator = options.pop("evaluator", None)
    n_params = plane.n_params if plane is not None else flat[0].shape[0]
    if evaluator is None:
        names = selected_names(model, names if names is not None else getattr(plane, "names", None), n_params, "path")
        evaluator = Evaluator(model, data, names=names, **options)
    check_evaluator(evaluator, n_params, "the line")
    if evaluator.in_place(plane is not None and plane.tensors is not None):
        if plane is not None:
            tensors = plane.tensors or PlaneTensors.from_flat(evaluator.layout, plane.origin, plane.u, plane.v)
        else:  # v is zero along a line: a zero of stride 0 per tensor, no vector of zeros
            origin, u = (evaluator.layout.split(torch.from_numpy(a.astype(np.float32))) for a in flat)
            zeros = [torch.zeros((), dtype=t.dtype).expand(t.shape) for t in origin]
            tensors = PlaneTensors(evaluator.layout.names, origin, u, zeros)
        result = evaluator.run_in_place(tensors, coords, desc="line", quiet=True)
    elif plane is not None:
        c = coords.astype(np.float32)
        result = evaluator.at_vectors(plane.origin[None, :] + c[:, :1] * plane.u[None, :] + c[:, 1:] * plane.v[None, :])
    else:
        result = evaluator.at_vectors(flat[0][None, :] + ts[:, None] * flat[1][None, :])  # (n, P)
    return LossLine(ts=ts, loss=result.loss, accuracy=result.accuracy)


def decision_regions(
    model: torch.nn.Module,
    data,
    params: np.ndarray,
    index,
    *,
    names=None,
    resolution: int = 80,
    evaluator: Evaluator | None = None,
) -> DecisionMaps:
    """Predicted classes of a model with 2-D inputs over the data's extent, at each row of ``params`` (F, P).

    ``index`` (F,) says which recorded points the rows are. Evaluated for all rows at once by
    the evaluation core, in eval mode; the data must be ``(X, y)`` pairs with ``X`` of shape (N, 2).
    ``evaluator``: one of ``model`` set up already (a job's), run on the grid of inputs in place of its data.
    """
    from losstrail.evaluation.batches import Batches

    batch = next(iter(Batches(as_dataset(data), 1 << 30)))
    X, y = (batch[0], batch[-1]) if isinstance(batch, (tuple, list)) and len(batch) == 2 else (None, None)
    if X is None or X.dim() != 2 or X.shape[1] != 2:
        raise ValueError(
            "decision regions need (X, y) data with 2-D inputs X of shape (N, 2); this data has "
            f"{'inputs of shape ' + str(tuple(X.shape)) if X is not None else 'batches that are not (X, y) pairs'}. "
            "Leave the decision panel off for such data"
        )
    lo, hi = X.min(0).values.numpy(), X.max(0).values.numpy()
    pad = 0.08 * (hi - lo)
    xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))
    inputs = (grid, torch.zeros(len(grid), dtype=torch.long))
    if evaluator is None:
        names = selected_names(model, names, np.shape(params)[1], "path")
        evaluator = Evaluator(model, inputs, names=names, loss_fn=_no_loss, batch_size=len(grid))
    check_evaluator(evaluator, np.shape(params)[1], "each row of params")
    labels = evaluator.outputs(params, lambda m, b: m(b[0]).argmax(-1).to(torch.uint8), batch=inputs)
    return DecisionMaps(xs, ys, labels.reshape(len(params), resolution, resolution), np.asarray(index), X.numpy(),
                        y.numpy())  # fmt: skip


def _no_loss(outputs, targets):
    return outputs.sum() * 0
