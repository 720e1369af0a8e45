"""The ways to choose a plane through parameter space: PCA, random, filter, layer, Hessian, interpolation, custom,
and the plane through two or three models ('through').

A ``Plane`` (``losstrail.values.plane``, importable from here too) is an origin and two directions;
the point at plane coordinates ``(x, y)`` is ``origin + x*u + y*v``. Every method is centred
on the final parameters by default, as in the reference package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from losstrail._registry import DIRECTIONS, check_choice
from losstrail.planes.pca import centred_gram, column_blocks, combine_rows, mean_row, principal_directions
from losstrail.values.plane import Plane
from losstrail.values.rows import release_pages, row_block
from losstrail.values.specs import PlaneSpec
from losstrail.values.trajectory import Trajectory

__all__ = ["Plane", "captured_fraction", "make_plane"]


class _Made(NamedTuple):
    u: np.ndarray  # (P,)
    v: np.ndarray  # (P,)
    explained: tuple[float, float] | None = None
    eigenvalues: tuple[float, float] | None = None


def _pca(params: np.ndarray, origin: np.ndarray) -> _Made:
    """Top two principal directions of the path: from its Gram matrix, or sketched for a long, large path."""
    T = params.shape[0]
    if T < 3:
        raise ValueError(f"reduction_method='pca' needs a path of at least 3 points; this one has {T}. Train longer")
    top, dirs, total = principal_directions(params)
    return _Made(dirs[0], dirs[1], (float(top[0] / total), float(top[1] / total)))


def _random(params: np.ndarray, origin: np.ndarray, seed: int | None = None) -> _Made:
    """Two Gaussian directions of unit length, the same for the same seed."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, params.shape[1]))
    return _Made(u / np.linalg.norm(u), v / np.linalg.norm(v))


def _custom(params: np.ndarray, origin: np.ndarray, directions=None) -> _Made:
    """The two given directions (checked already: ``check_custom_directions``), scaled to unit length."""
    u, v = directions
    return _Made(u / np.linalg.norm(u), v / np.linalg.norm(v))


def _drawn(layout, origin: np.ndarray, rule: str, seed, keep_biases: bool) -> _Made:
    """Two random directions drawn tensor by tensor around the flat ``origin`` (see ``_planes.draw_direction``)."""
    import torch

    from losstrail.evaluation.inplace import draw_direction

    centre = layout.split(torch.from_numpy(np.ascontiguousarray(origin, dtype=np.float32)))
    pair = [draw_direction(centre, rule, seed, stream=k, keep_biases=keep_biases)[0] for k in range(2)]
    return _Made(*(torch.cat([t.reshape(-1) for t in d]).double().numpy() for d in pair))


def _check_filters(shapes) -> None:
    if not any(len(shape) >= 2 for shape in shapes):
        raise ValueError(
            "reduction_method='filter' rescales each filter of the weight tensors of rank >= 2, and this model "
            "has none (only vectors such as biases); use 'layer', 'random' or 'pca'"
        )


def _filter(params, origin, *, layout=None, seed=None, keep_biases=False) -> _Made:
    """Filter-normalized random directions, filter by filter of each chosen tensor (Li et al., 2018).

    Each filter (row along the first axis of a tensor of rank >= 2) of a Gaussian direction gets
    the norm of the same filter of the centre; tensors of rank < 2 (biases, normalization scales)
    are zero unless ``keep_biases``, then each is scaled as a whole.
    """
    _check_filters(layout.shapes)
    return _drawn(layout, origin, "filter", seed, keep_biases)


def _layer(params, origin, *, layout=None, seed=None, keep_biases=False) -> _Made:
    """Layer-normalized random directions: each chosen tensor scaled to the centre tensor's norm."""
    return _drawn(layout, origin, "layer", seed, keep_biases)


def _hessian(params, origin, *, model=None, data=None, loss_fn=None, objective=None, names=None, seed=None,
             options=None) -> _Made:  # fmt: skip
    """The Hessian's two largest-curvature eigenvectors at the centre (or largest and most negative)."""
    eig = _hessian_eigen(model, data, origin, "all" if names is None else names, seed, loss_fn, objective, options)
    second = eig.lowest_vector if (options or {}).get("negative_curvature") else eig.vectors[1]
    return _Made(eig.vectors[0], second, eigenvalues=_curvatures(eig, options))


def _hessian_eigen(model, data, params, names, seed, loss_fn, objective, options):
    """``hessian_eigenpairs`` with a plane's options (a seeded subset of ``hessian_examples``, device, quiet)."""
    from losstrail.evaluation.batches import take_subset
    from losstrail.evaluation.inplace import is_sharded, resharded
    from losstrail.planes.hessian import hessian_eigenpairs

    if resharded(model) or any(is_sharded(p) for p in model.parameters()):
        raise ValueError(
            "reduction_method='hessian' takes its products on whole tensors, and this model's parameters are sharded "
            "across ranks (FSDP2/DTensor); use 'filter', 'layer', 'random' or 'custom' for a sharded model"
        )
    options = options or {}
    examples = options.get("hessian_examples")
    if examples is not None:
        data = take_subset(data, examples, seed, argument="hessian_examples")
    return hessian_eigenpairs(model, data, params, 2, loss_fn=loss_fn, objective=objective, names=names, seed=seed,
                              device=options.get("device", "cpu"), quiet=options.get("quiet", True))  # fmt: skip


def _curvatures(eig, options) -> tuple[float, float]:
    """The curvatures along a Hessian plane's ``u`` and ``v``: the top two, or the top and the most negative."""
    if (options or {}).get("negative_curvature"):
        return float(eig.values[0]), eig.lowest_value
    return float(eig.values[0]), float(eig.values[1])


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
        mean = mean_row(params)
        along = np.zeros(params.shape[0])  # (T,) centred rows dotted with unit
        for cols in column_blocks(params):
            along += (params[:, cols].astype(np.float64) - mean[cols]) @ unit[cols]
        gram = centred_gram(params, mean) - np.outer(along, along)  # Gram of the rows with u projected out
        eigvals, eigvecs = np.linalg.eigh(gram)
        if eigvals[-1] > 1e-12 * max(float(np.trace(gram)), 1e-300):
            top = eigvecs[:, -1:]
            v = combine_rows(params, mean, top)[0] - unit * float(along @ top[:, 0])
    if v is None:  # the path is a straight line (or 'random' was asked): a random v orthogonal to u
        v = np.random.default_rng(seed).standard_normal(params.shape[1])
        v -= (v @ unit) * unit
    return _Made(u, v / np.linalg.norm(v) * length)


def _through(params, origin) -> _Made:
    """A recorded path has no models to go through; ``make_plane([a, b, c], 'through')`` takes them."""
    raise ValueError(
        "reduction_method='through' is the plane through two or three models, not a path's: "
        "make_plane([a, b, c], 'through') with models or state dicts"
    )


def check_custom_directions(directions, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """Two usable direction vectors of length ``n_params`` from ``directions``, or a ValueError: the one check of
    custom directions (their length, their values, their squares summable in float64, not parallel)."""
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
        with np.errstate(over="ignore", invalid="ignore"):
            length = float(np.sqrt(np.sum(d * d)))
        if np.all(np.isfinite(d)) and not (np.isfinite(length) and (length == 0 or length >= 1e-150)):
            raise ValueError(  # 1e300 overflows and breaks every plane
                f"custom_directions {name} has length {length:g}, which float arithmetic cannot use; "
                "scale it to about the size of the parameters (e.g. u / np.linalg.norm(u))"
            )
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
    "through": _through,
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
    mean = mean_row(params)
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
    trajectory,
    method: str | PlaneSpec = "pca",
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
    labels=None,
    params=None,
    store: str = "tensors",
) -> Plane:
    """A plane through a point of ``trajectory`` (the final parameters by default), around a model, or
    through models.

    ``make_plane([a, b, c], "through")`` is the plane through three models (``nn.Module`` or
    state dicts; Garipov et al., 2018): origin ``a``, ``u = b - a``, ``v`` the part of ``c - a``
    orthogonal to ``u``, so ``a`` is at (0, 0), ``b`` at (1, 0) and ``c`` at (x, 1). Pictures
    mark and name the three (``labels``, default ``'a'``, ``'b'``, ``'c'``) and
    ``loss_surface`` evaluates each one's loss exactly (``Surface.marks_loss``). ``[a, b]``
    gives ``u = b - a`` (the line of ``loss_line(model, data, a, plane.u, ts)``) and a second
    direction orthogonal to it, of the same length, from ``second``: ``'random'`` (default
    for two models), ``'filter'`` or ``'layer'`` (at ``a``).

    The plane spans the parameters the trajectory recorded (``trajectory.names``: all of them,
    or the subset chosen with ``params=`` when recording), and records their names.

    Given a model (an ``nn.Module``) or a state dict instead of a trajectory, the plane is centred
    on it as it is (Li et al.'s picture of a trained network), for every method that needs no
    path: ``'filter'``, ``'layer'``, ``'random'``, ``'custom'`` and ``'hessian'``. It is held per
    tensor, in the model's dtype and on its device (see ``Plane.tensors``); its origin is the
    model's own tensors, not a copy, so change the model afterwards and the grid refuses to run.
    ``params`` chooses the tensors (default ``'trainable'``; a state dict: its floating-point
    entries, or with ``model=`` that model's chosen parameters). ``store='seed'`` keeps only the
    seeds and scales of random directions and draws them again tensor by tensor at each grid
    point: half the memory, a random draw per point.

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
            Or, for a trajectory, a ``PlaneSpec`` checked where the call came in (the job runner's): its
            method, ``centre``, ``seed`` and options are taken as they are, not checked again (the keywords of
            the same names are not used), and ``directions`` as ``check_custom_directions`` returned them.
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
        second: ``'interpolation'``: ``'pca'`` (default) or ``'random'`` for ``v``; ``'through'`` of
            two models: ``'random'``, ``'filter'`` or ``'layer'``.
        labels: ``'through'``: the models' names, drawn beside their marks.
        device, quiet: where the Hessian is evaluated, and whether to hide its progress bar.

    >>> rng = np.random.default_rng(0)
    >>> t = 50
    >>> traj = Trajectory(rng.normal(size=(t, 8)).astype(np.float32), np.zeros(t), np.zeros(t),
    ...                   np.arange(t), np.zeros(t, dtype=np.int64))
    >>> plane = make_plane(traj, "pca")
    >>> plane.method, plane.u.shape, 0 < plane.captured <= 1
    ('pca', (8,), True)
    """
    if isinstance(trajectory, (list, tuple)):
        return through_models(trajectory, method, labels=labels, model=model, second=second, seed=seed,
                              keep_biases=keep_biases)  # fmt: skip
    if not isinstance(trajectory, Trajectory):
        return plane_around(
            trajectory, method, directions=directions, seed=seed, model=model, data=data, objective=objective,
            loss_fn=loss_fn, keep_biases=keep_biases, negative_curvature=negative_curvature,
            hessian_examples=hessian_examples, device=device, quiet=quiet, params=params, store=store,
        )  # fmt: skip
    if isinstance(method, PlaneSpec):  # checked where the call came in: taken as it is
        spec = method
        method, centre, seed = spec.method, spec.centre, spec.seed
        keep_biases, negative_curvature, hessian_examples = (
            spec.keep_biases,
            spec.negative_curvature,
            spec.hessian_examples,
        )
    else:
        check_choice("reduction_method", method, DIRECTIONS)
        check_choice("second", second, ("pca", "random"))
        if method == "custom":
            directions = check_custom_directions(directions, trajectory.n_params)
    index = _path_centre(trajectory, centre)
    return plane_through(
        trajectory.params, trajectory.params[index], method, directions=directions, seed=seed, model=model, data=data,
        objective=objective, loss_fn=loss_fn, names=trajectory.names, keep_biases=keep_biases,
        negative_curvature=negative_curvature, hessian_examples=hessian_examples, second=second, device=device,
        quiet=quiet,
    )  # fmt: skip


# Methods a plane around a model (no path) can use, and how each is drawn.
AROUND_A_MODEL = ("filter", "layer", "random", "custom", "hessian")
STORES = ("tensors", "seed")


def _centre_tensors(source, model, params) -> tuple[tuple[str, ...], list, bool]:
    """``(names, tensors, everything)``: the tensors a plane around ``source`` (a model or a state dict) spans."""
    import torch

    from losstrail.evaluation.inplace import resharded
    from losstrail.evaluation.layout import choose_parameters

    if isinstance(source, torch.nn.Module):
        resharded(source)  # a model sharded with FSDP2: its parameters as shards, even after a forward pass
        names = choose_parameters(source, "trainable" if params is None else params)
        named = dict(source.named_parameters())
        return names, [named[n].detach() for n in names], len(names) == len(named)
    if isinstance(source, Mapping) and source and all(isinstance(t, torch.Tensor) for t in source.values()):
        if model is not None:
            names = [n for n in choose_parameters(model, "trainable" if params is None else params) if n in source]
        else:
            names = [n for n, t in source.items() if t.is_floating_point()]
        if not names:
            raise ValueError("the state dict holds no floating-point tensor of the model's chosen parameters to span")
        return tuple(names), [source[n].detach() for n in names], False
    raise ValueError(
        f"make_plane takes a Trajectory, a model (torch.nn.Module) or a state dict; got {type(source).__name__}. "
        "Record a path with lt.fit or lt.Recorder, or pass the model itself"
    )


def plane_around(source, method: str = "filter", *, directions=None, seed=None, model=None, data=None,
                 objective=None, loss_fn=None, keep_biases=False, negative_curvature=False, hessian_examples=None,
                 device="cpu", quiet=True, params=None, store="tensors") -> Plane:  # fmt: skip
    """The plane centred on a model or a state dict as it is, held per tensor (see ``make_plane``)."""
    from losstrail.evaluation.inplace import PlaneTensors, draw_direction, sizes_wanted

    check_choice("reduction_method", method, DIRECTIONS)
    check_choice("store", store, STORES)
    if method not in AROUND_A_MODEL:
        raise ValueError(
            f"reduction_method={method!r} is fitted to a path, and a model alone has none; record one (lt.fit, "
            f"lt.Recorder) and pass the Trajectory, or use one of {', '.join(map(repr, AROUND_A_MODEL))}"
        )
    names, centre, everything = _centre_tensors(source, model, params)
    plane_names = None if everything else names
    if method == "hessian":
        return _hessian_around(source, names, centre, plane_names, seed=seed, data=data, objective=objective,
                               loss_fn=loss_fn, negative_curvature=negative_curvature,
                               hessian_examples=hessian_examples, device=device, quiet=quiet)  # fmt: skip
    if method == "custom":
        u, v = _custom_tensors(directions, names, centre)
        tensors = PlaneTensors(names, centre, u, v, own=True)
    else:
        if method == "filter":
            _check_filters([t.shape for t in centre])
        wanted = sizes_wanted(centre, method, keep_biases)  # the centre's norms, once for both directions
        drawn = [draw_direction(centre, method, seed, stream=k, store=store == "tensors", wanted=wanted)
                 for k in range(2)]  # fmt: skip
        tensors = PlaneTensors(names, centre, drawn[0][0], drawn[1][0], draws=(drawn[0][1], drawn[1][1]), own=True)
    return Plane(None, None, None, method, names=plane_names, tensors=tensors)


def _custom_tensors(directions, names, centre) -> tuple[list, list]:
    """The two given directions per tensor, in the centre's dtype and device, each of unit length overall.

    Both are flat vectors of all P values (NumPy or torch), ``{name: tensor}`` mappings or lists
    of tensors in the plane's order."""
    import torch

    from losstrail.evaluation.inplace import is_sharded, sharded_like

    n_params = sum(t.numel() for t in centre)
    per_tensor = isinstance(directions, (tuple, list)) and len(directions) == 2 and all(
        isinstance(d, Mapping) or (isinstance(d, (list, tuple)) and all(torch.is_tensor(t) for t in d))
        for d in directions
    )  # fmt: skip
    if not per_tensor:
        flat = check_custom_directions(directions, n_params)  # checked: lengths, finite, not parallel
        sizes = [t.numel() for t in centre]
        directions = [[torch.from_numpy(p) for p in np.split(d, np.cumsum(sizes)[:-1])] for d in flat]
    pair = []
    for which, d in zip("uv", directions):
        missing = [n for n in names if n not in d] if isinstance(d, Mapping) else []
        if missing or (not isinstance(d, Mapping) and len(d) != len(centre)):
            raise ValueError(
                f"custom_directions {which} must give one tensor for each of the plane's {len(names)} tensors "
                f"({'no ' + repr(missing[0]) if missing else f'got {len(d)}'})"
            )
        pieces = [torch.as_tensor(d[n]) for n in names] if isinstance(d, Mapping) else list(d)
        for t, c in zip(pieces, centre):
            if t.numel() != c.numel():
                raise ValueError(f"custom_directions {which} has a tensor of shape {tuple(t.shape)} where the "
                                 f"model's is {tuple(c.shape)}")  # fmt: skip
        norm = float(sum(float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2 for t in pieces)) ** 0.5
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"custom_directions {which} has zero length (or NaN/inf values); pass a non-zero "
                             "finite vector")  # fmt: skip
        scaled = [(t.detach().double().reshape(c.shape) / norm).to(dtype=c.dtype, device=c.device)
                  for t, c in zip(pieces, centre)]  # fmt: skip
        pair.append([sharded_like(t, c) if is_sharded(c) else t for t, c in zip(scaled, centre)])  # this rank's part
    return pair[0], pair[1]


def _hessian_around(source, names, centre, plane_names, *, seed=None, data=None, objective=None, loss_fn=None,
                    **options) -> Plane:  # fmt: skip
    """The Hessian plane at a model as it is, held per tensor: its products and Lanczos basis are per tensor
    too (see ``losstrail.planes.hessian``), and ``u``, ``v`` are the eigenvectors in the centre's dtype and on
    its device."""
    import torch

    from losstrail.evaluation.inplace import PlaneTensors

    if not isinstance(source, torch.nn.Module):
        raise ValueError(
            "reduction_method='hessian' evaluates the loss, so it needs the model itself, not a state dict"
        )
    _check_data("hessian", data)
    chosen = set(names)  # exactly these (a name is not read as a pattern)
    eig = _hessian_eigen(source, data, centre, lambda n, p: n in chosen, seed, loss_fn, objective, options)
    second = eig.tensors[-1] if options.get("negative_curvature") else eig.tensors[1]
    u, v = ([t.to(device=c.device, dtype=c.dtype) for t, c in zip(d, centre)] for d in (eig.tensors[0], second))
    eigenvalues = _curvatures(eig, options)
    del eig, second  # the vector the plane does not use
    tensors = PlaneTensors(names, centre, u, v, own=True)
    return Plane(None, None, None, "hessian", eigenvalues=eigenvalues, names=plane_names, tensors=tensors)


def _path_centre(trajectory: Trajectory, centre: str | int) -> int:
    """The row of ``trajectory`` a plane goes through, once the path is known to be finite."""
    if len(trajectory.finite_prefix()) != len(trajectory):
        raise ValueError(
            "the trajectory has NaN or infinite parameters (training diverged); "
            "use trajectory.finite_prefix() or lower the learning rate"
        )
    return centre_index(trajectory, centre)


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
    the parameters a row holds (None: all of the model's), as ``Trajectory.names``. The caller
    has checked the settings (once, where its call came in): ``method`` one of ``DIRECTIONS``,
    ``second`` 'pca' or 'random', and for ``'custom'`` ``directions`` as ``check_custom_directions``
    returned them.
    """
    layout = _check_model(method, model, params.shape[1], names) if method in _NEEDS_MODEL else None
    _check_data(method, data)
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


def _check_data(method: str, data) -> None:
    if method in _NEEDS_DATA and data is None:
        raise ValueError(f"reduction_method={method!r} evaluates the loss; pass the data: make_plane(..., data=...)")


def _check_model(method: str, model, n_params: int, names):
    """The layout of the recorded parameters on ``model``, checked to fit the path."""
    import torch

    from losstrail.evaluation.layout import ParamLayout

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


def through_models(models, method: str = "through", *, labels=None, model=None, second: str = "random", seed=None,
                   keep_biases: bool = False) -> Plane:  # fmt: skip
    """The plane through two or three models (see ``make_plane``), with their names and coordinates as marks."""
    check_choice("reduction_method", method, DIRECTIONS)
    if method != "through":
        raise ValueError(
            f"make_plane was given a list of {len(models)} models; a plane through models is "
            f"make_plane([a, b, c], 'through'), and reduction_method={method!r} takes a trajectory"
        )
    if len(models) not in (2, 3):
        raise ValueError(f"make_plane([...], 'through') takes two or three models; got {len(models)}")
    labels = tuple(str(n) for n in (labels if labels is not None else "abc"[: len(models)]))
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise ValueError(f"labels={labels!r} must give each of the {len(models)} models its own name")
    layout, layout_names, vectors = _model_vectors(models, model)
    a, b = vectors[0], vectors[1]
    u = b - a
    if not np.linalg.norm(u) > 0:
        raise ValueError(
            f"models {labels[0]!r} and {labels[1]!r} have the same weights, so there is no line between them"
        )
    if len(vectors) == 3:
        offset = vectors[2] - a
        along = float(offset @ u / (u @ u))
        v = offset - along * u
        if not np.linalg.norm(v) > 1e-6 * (np.linalg.norm(offset) + np.linalg.norm(a)):  # float32 rounding
            raise ValueError(
                f"model {labels[2]!r} lies on the line through {labels[0]!r} and {labels[1]!r}, so the three span no "
                "plane; pass [a, b] for the line and a second direction"
            )
        marks_xy = np.array([[0.0, 0.0], [1.0, 0.0], [along, 1.0]])
    else:
        v = _second_direction(second, layout, a, u, seed, keep_biases)
        marks_xy = np.array([[0.0, 0.0], [1.0, 0.0]])
    names = tuple(layout_names) if layout is None else None if layout.everything else tuple(layout.names)
    return Plane(origin=a.astype(np.float32), u=u.astype(np.float32), v=v.astype(np.float32), method="through",
                 names=names, marks=labels, marks_xy=marks_xy)  # fmt: skip


def _second_direction(second: str, layout, a: np.ndarray, u: np.ndarray, seed, keep_biases: bool) -> np.ndarray:
    """A direction orthogonal to ``u`` and as long, for the plane through two models."""
    check_choice("second", "random" if second == "pca" else second, ("random", "filter", "layer"))
    rng = np.random.default_rng(seed)
    if second in ("filter", "layer"):
        if layout is None:
            raise ValueError(f"second={second!r} rescales the model's tensors; pass models, or model= with state dicts")
        v = _drawn(layout, a, second, seed, keep_biases).u  # drawn tensor by tensor, as the filter plane
    else:
        v = rng.standard_normal(u.shape[0])
    unit = u / np.linalg.norm(u)
    v = v - (v @ unit) * unit
    return v / np.linalg.norm(v) * np.linalg.norm(u)


def _model_vectors(models, model=None):
    """``(layout, names, vectors)``: each of ``models`` (modules or state dicts) as one float64 vector of the same
    parameters, named as the first module's (or ``model``'s) ``named_parameters()``."""
    import torch

    from losstrail.evaluation.layout import ParamLayout

    reference = model if model is not None else next((m for m in models if isinstance(m, torch.nn.Module)), None)
    if reference is None:
        first = models[0]
        if not isinstance(first, dict):
            raise ValueError(
                f"make_plane([...], 'through') takes nn.Module models or state dicts; got {type(first).__name__}"
            )
        names = [k for k, t in first.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
        shapes = {k: tuple(first[k].shape) for k in names}
        layout = None
    else:
        layout = ParamLayout(reference)
        names, shapes = layout.names, {n: tuple(s) for n, s in zip(layout.names, layout.shapes)}
    vectors = []
    for k, m in enumerate(models):
        if isinstance(m, torch.nn.Module):
            state = dict(m.named_parameters())
        elif isinstance(m, dict):
            state = m
        else:
            raise ValueError(f"model {k} of make_plane([...], 'through') is a {type(m).__name__}; pass an nn.Module or "
                             "a state dict")  # fmt: skip
        pieces = []
        for name in names:
            tensor = state.get(name)
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"model {k} of make_plane([...], 'through') has no tensor {name!r}; the models must "
                                 "share one architecture")  # fmt: skip
            if tuple(tensor.shape) != shapes[name]:
                raise ValueError(f"model {k}: tensor {name!r} has shape {tuple(tensor.shape)}, not {shapes[name]}; "
                                 "the models must share one architecture")  # fmt: skip
            pieces.append(tensor.detach().reshape(-1).to("cpu", torch.float64).numpy())
        vectors.append(np.concatenate(pieces))
    return layout, names, vectors
