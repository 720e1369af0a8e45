"""Several runs on one landscape: same start, one shared plane, one surface, one animation."""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from losstrail._checks import check_output_file, output_format
from losstrail._files import removed_if_failed
from losstrail._registry import check_choice, quoted, stated_optimizer
from losstrail._threads import free_core_threads
from losstrail.renderers.formats import picture_format
from losstrail.renderers.redraw import COMPARISON_NAMES, draw_comparison, render_comparison
from losstrail.store.checks import check_outputs
from losstrail.store.rundir import COMPARISON_ROLES, RunDir, Stage, load_comparison
from losstrail.values.results import Comparison, animation_data
from losstrail.values.specs import GridSpec, Style, TrainSpec
from losstrail.values.trajectory import Trajectory

__all__ = ["Comparison", "compare", "load_comparison", "render_comparison"]

COMPARE_DIRECTIONS = ("pca", "random", "filter", "layer", "hessian", "custom")


def _settings_list(runs, optimizers, learning_rates, batch_sizes) -> list[dict]:
    """One settings dict per run, from ``runs`` or the per-setting lists (zipped; a single value is shared)."""
    if runs is not None:
        if isinstance(runs, Mapping):
            return [{"name": str(name), **dict(s)} for name, s in runs.items()]
        return [dict(s) for s in runs]
    lists = {"optimizer": optimizers, "learning_rate": learning_rates, "batch_size": batch_sizes}
    lengths = {k: len(v) for k, v in lists.items() if isinstance(v, (list, tuple))}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"optimizers, learning_rates and batch_sizes must have one length when several are lists; got {lengths}"
        )
    n = max(lengths.values(), default=1)
    out = []
    for k in range(n):
        entry = {}
        for key, value in lists.items():
            if value is None:
                continue
            entry[key] = value[k] if isinstance(value, (list, tuple)) else value
        out.append(entry)
    return out


def _run_name(settings: dict, varying: list[str]) -> str:
    if "name" in settings:
        return str(settings["name"])
    parts = []
    for key in varying:
        value = settings.get(key)
        parts.append(f"{value:g}" if isinstance(value, float) else str(value))
    return " ".join(parts) if parts else "run"


def check_runs(names: Sequence[str], n_params: Sequence[int] | None = None, centre=None) -> None:
    """Raise ValueError for fewer than two runs, repeated names, mismatched models or an unknown centre."""
    if len(names) < 2:
        raise ValueError(f"compare needs at least two runs to compare; got {len(names)} ({quoted(names)})")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"run name {name!r} is used twice; give every run its own name")
        seen.add(name)
    if n_params is not None:
        for name, count in zip(names[1:], n_params[1:]):
            if count != n_params[0]:
                raise ValueError(
                    f"run {names[0]!r} has P={n_params[0]} parameters but run {name!r} has P={count}; "
                    "runs on one plane need the same model architecture"
                )
    if centre is not None and centre != "mean" and centre not in names:
        raise ValueError(f"centre={centre!r} is not one of the runs; expected 'mean' or one of {quoted(names)}")


def compare(
    runs=None,
    *,
    optimizers: Sequence[str] | str | None = None,
    learning_rates=None,
    batch_sizes=None,
    trained: Mapping | None = None,
    datamodule=None,
    model=None,
    epochs: int = 300,
    seed: int = 0,
    reduction_method: str = "pca",
    centre: str | None = None,
    custom_directions=None,
    resolution: int | tuple[int, int] = 100,
    layout: str = "overlay",
    timeline: str = "auto",
    out: str | os.PathLike | None = "compare.gif",
    run_dir: str | os.PathLike = "comparison",
    fps: float = 15,
    n_frames: int = 300,
    title: str | None = None,
    faithfulness: bool = True,
    params="trainable",
    objective=None,
    loss_fn=None,
    return_data: bool = False,
    quiet: bool = False,
    style: Style | None = None,
    **look,
):
    """Train (or take) several runs from the same weights and animate them on one shared plane.

    Args:
        runs: settings per run: a list of dicts, or ``{name: settings}``; keys ``optimizer``,
            ``learning_rate``, ``batch_size``, ``name``. Or build them from:
        optimizers, learning_rates, batch_sizes: a list each (zipped) or one value shared.
        trained: ``{name: Run}`` runs the user trained already (same architecture) instead; or
            ``{name: folder}``, each a folder of checkpoints (``load_trajectory``), or ``{name: Trajectory}``,
            with ``model`` the network they are of.
        datamodule: default the 2-D spirals; any data ``loss_surface`` takes with ``trained``.
        model: the model every run starts from (its weights are copied, never trained); default
            the reference's MLP. With checkpoint folders in ``trained``: the network they are of,
            whose weights outside the path (buffers) the surface is evaluated with.
        epochs, seed: training length, and the seed of the initial weights and data order.
        reduction_method: ``'pca'`` (joint PCA over all paths, default), ``'random'``,
            ``'filter'``, ``'layer'``, ``'hessian'`` or ``'custom'``.
        centre: a run name (its final point; default the first run) or ``'mean'`` of the
            final points.
        custom_directions: ``(u, v)`` for ``'custom'``.
        resolution: grid points per axis, or ``(nx, ny)``.
        layout: ``'overlay'`` (one contour, a loss panel) or ``'grid'`` (a panel per run).
        timeline: ``'auto'``, ``'step'`` or ``'fraction'`` (see ``frame_schedule``).
        out: the animation (``.gif``); None for none.
        run_dir: the comparison directory: each run's path, the shared plane and surface.
        fps, n_frames, title, quiet: as ``loss_landscape_anim``.
        faithfulness: measure each run's true loss along its path (default True).
        params: which parameters the paths, plane and surface span (see ``fit``); runs in
            ``trained`` must have recorded the same ones.
        objective, loss_fn: the loss, by the rule of ``loss_surface`` (e.g. ``loss_fn=F.mse_loss``
            for regression); used for training, the path's losses and the surface alike.
        return_data: return ``{name: (optim_path, loss_steps, accu_steps)}`` (each an
            ``AnimationData`` with the faithfulness figures).
        style: a ``Style`` made (and checked) where the call came in, as ``losstrail compare`` builds
            one from its flags: the look as it is, checked for the picture once; the look keywords
            (``layout``, ``timeline``, ``fps``, ``n_frames``, ``title``, ``**look``) then replace only
            what they set away from their defaults.
        **look: the rest of the look, fields of ``Style``: ``format``, ``view`` (``'3d'`` for an
            HTML page), ``cmap``, ``levels``, ``log_scale``, ``size``, ``dpi``.

    Returns:
        The ``Comparison`` (or the per-run data when ``return_data``).
    """
    check_choice("reduction_method", reduction_method, COMPARE_DIRECTIONS)
    train = TrainSpec.of({"n_epochs": epochs, "seed": seed, "params": params}, {"n_epochs": "epochs"})
    grid = GridSpec.of({"resolution": resolution, "grid": "full", "seed": seed})
    look, kind = _checked_style(style, look, {"fps": fps, "max_frames": n_frames, "title": title, "layout": layout,
                                              "timeline": timeline}, out)  # fmt: skip
    names, settings = _named_runs(runs, optimizers, learning_rates, batch_sizes, trained)
    check_runs(names, centre=centre)
    check_outputs([("out", out)], run_dir=run_dir, how="written by this comparison", kept=COMPARISON_ROLES)
    if trained is None:
        _check_paths_fit(settings, epochs, datamodule, model)
    centre = names[0] if centre is None else centre
    out_dir = None if out is None else Path(out).resolve().parent
    with removed_if_failed(out_dir, run_dir), free_core_threads():  # a failed comparison leaves no empty folder
        if out is not None:
            check_output_file("out", out)
        run = RunDir.writable(run_dir, "run_dir")
        with run.writing() as stage:
            run.check_members(_folders(names))  # before any training: a link left in a run's place is refused
            datamodule = datamodule if datamodule is not None else _default_data()
            if trained is not None:
                models, trajectories = _trained_runs(trained, model, params, quiet)
            else:
                models, trajectories = _train_runs(names, settings, datamodule, model, train, objective, loss_fn,
                                                   quiet)  # fmt: skip
            _check_recorded(names, trajectories)
            check_runs(names, [t.n_params for t in trajectories], centre)
            _check_shapes(names, models)
            trajectories = [_finite(name, t) for name, t in zip(names, trajectories)]
            loss = {"objective": objective, "loss_fn": loss_fn}
            comparison = _shared_view(names, models, trajectories, datamodule, reduction_method, centre,
                                      custom_directions, grid, faithfulness, quiet, loss,
                                      frames=(look.max_frames, look.timeline))  # fmt: skip
            _save(stage, comparison, trajectories, settings, models)
            if out is not None:
                draw_comparison(comparison, out, look, kind, quiet=quiet)  # the look checked for it above
    if return_data:
        return {n: animation_data(t, p) for n, t, p in zip(names, trajectories, comparison.projections)}
    return comparison


def _checked_style(style: Style | None, options: dict, own: dict, out) -> tuple[Style, str | None]:
    """``(style, format)``: the comparison's ``Style`` (the one given, or made of its own look arguments and
    ``**look``), checked once for the picture it draws, and that picture's format (None: no picture)."""
    if "max_frames" in options:
        raise TypeError("compare() got an unexpected keyword argument 'max_frames'; the most frames are n_frames=")
    if style is None:
        look = Style.of({**options, **own}, COMPARISON_NAMES, where="compare")
    else:  # checked where it was made: only what the keywords set away from their defaults is checked here
        changed = {field: value for field, value in own.items() if value != _OWN_LOOK[field]}
        look = style.updated({**options, **changed}, COMPARISON_NAMES, where="compare")
    if out is None:
        return look, None
    kind = output_format(out, look.format)
    look.check_for("comparison", kind, COMPARISON_NAMES)
    picture_format(kind).check_installed()  # before any training
    return look, kind


# compare's defaults of the look arguments it takes as its own, by the Style fields they set.
_OWN_LOOK = {
    field: inspect.signature(compare).parameters[argument].default
    for field, argument in (("fps", "fps"), ("max_frames", "n_frames"), ("title", "title"), ("layout", "layout"),
                            ("timeline", "timeline"))
}  # fmt: skip


def _named_runs(runs, optimizers, learning_rates, batch_sizes, trained) -> tuple[list[str], list[dict]]:
    """Each run's name and settings: the trained runs' names, or the settings given (optimizers checked)."""
    if trained is not None:
        names = [str(n) for n in trained]
        return names, [{"name": n} for n in names]
    optimizers = optimizers if optimizers is not None else ["adam", "sgd"]
    settings = _settings_list(runs, optimizers, learning_rates, batch_sizes)
    varying = [k for k in ("optimizer", "learning_rate", "batch_size") if len({str(s.get(k)) for s in settings}) > 1]
    names = [_run_name(s, varying or ["optimizer"]) for s in settings]
    for s in settings:
        if "optimizer" in s and not callable(s["optimizer"]):
            s["optimizer"] = stated_optimizer(s["optimizer"])
    return names, settings


def _trained_runs(trained: Mapping, model, params, quiet: bool) -> tuple[list, list[Trajectory]]:
    """``(models, trajectories)`` of runs given already: ``Run`` values, or checkpoint folders (or trajectories)
    of ``model``, read with ``load_trajectory``."""
    models, trajectories = [], []
    for name, value in trained.items():
        if hasattr(value, "model") and hasattr(value, "trajectory"):  # a Run
            models.append(value.model)
            trajectories.append(value.trajectory)
            continue
        if model is None:
            raise ValueError(
                f"trained[{name!r}] is a checkpoint folder or a trajectory, not a Run; pass the network it is of: "
                "compare(trained={...}, model=model)"
            )
        if not isinstance(value, Trajectory):
            from losstrail.training.checkpoints import load_trajectory

            value = load_trajectory(value, model, params="all" if params == "trainable" else params, quiet=quiet)
        models.append(model)
        trajectories.append(value)
    return models, trajectories


def _check_paths_fit(settings: list[dict], epochs: int, datamodule, model) -> None:
    """The runs' paths, held in memory while they train, checked against the memory before the first is trained.

    With the caller's own data the steps of an epoch are not known yet: one per epoch is counted.
    """
    from losstrail._checks import BYTES_PER_STEP, check_memory, mlp_parameters
    from losstrail._registry import DATASET_SIZES

    shape, classes, examples = DATASET_SIZES["spirals"]  # the default data and MLP (_default_data, _train_runs)
    n_params = mlp_parameters(shape[0], 50, 1, classes) if model is None else sum(p.numel() for p in model.parameters())
    if datamodule is not None:
        examples = None
    rows = sum(
        epochs * (-(-examples // min(s.get("batch_size") or examples, examples)) if examples else 1) + 1
        for s in settings
    )
    check_memory(
        f"epochs={epochs!r} for {len(settings)} runs records {rows:,} steps of {n_params:,} parameters",
        rows * (n_params * 4 + BYTES_PER_STEP),
        "Pass fewer epochs= (or larger batch_sizes=)",
    )


def _default_data():
    from losstrail.builtin.data import SpiralsDataModule

    return SpiralsDataModule()


def _train_runs(names, settings, datamodule, model, train: TrainSpec, objective, loss_fn, quiet):
    """``(models, trajectories)``: a copy of ``model`` (the same initial weights) trained per run with its settings."""
    from losstrail.builtin.nets import MLP
    from losstrail.training.fit import train_model
    from losstrail.training.optim import seed_all

    if model is None:
        seed_all(train.seed)
        model = MLP(datamodule.input_dim, datamodule.num_classes, learning_rate=5e-3)
    models, trajectories = [], []
    for name, s in zip(names, settings):
        net = copy.deepcopy(model)  # the same initial weights for every run
        data = datamodule
        if s.get("batch_size") is not None:
            data = copy.copy(datamodule)
            data.batch_size = int(s["batch_size"])
        if not quiet:
            print(f"training {name!r}")
        run = train_model(
            net,
            data,
            optimizer=s.get("optimizer"),
            learning_rate=s.get("learning_rate"),
            epochs=train.n_epochs,
            seed=train.seed,
            record_every=1,
            params=train.params,
            objective=objective,
            loss_fn=loss_fn,
            quiet=quiet,
        )  # fmt: skip  (checked by _named_runs)
        models.append(run.model)
        trajectories.append(run.trajectory)
    return models, trajectories


def _recorded(names) -> str:
    if names is None:
        return "all parameters"
    return f"{len(names)} tensors ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def _check_recorded(names, trajectories) -> None:
    """One plane needs every run to have recorded the same parameters."""
    first = trajectories[0].names
    for name, t in zip(names[1:], trajectories[1:]):
        if t.names != first:
            raise ValueError(
                f"runs {names[0]!r} and {name!r} recorded different parameters "
                f"({_recorded(first)} vs {_recorded(t.names)}); record every run with the same params="
            )


def _check_shapes(names, models) -> None:
    """Same parameter count is not enough: one plane needs the same tensors in the same order."""
    first = [tuple(p.shape) for p in models[0].parameters()]
    for name, model in zip(names[1:], models[1:]):
        shapes = [tuple(p.shape) for p in model.parameters()]
        if shapes != first:
            raise ValueError(
                f"run {names[0]!r} has parameter shapes {first} but run {name!r} has {shapes}; "
                "runs on one plane need the same model architecture"
            )


def _finite(name: str, trajectory: Trajectory) -> Trajectory:
    finite = trajectory.finite_prefix()
    if len(finite) < len(trajectory):
        warnings.warn(f"run {name!r} diverged; it is drawn up to step {int(finite.step[-1])}", RuntimeWarning, 3)
    return finite


def _shared_view(names, models, trajectories, data, method, centre, directions, grid: GridSpec, faithfulness, quiet,
                 loss, frames=(300, "auto")):  # fmt: skip
    """The shared plane (joint over all paths), each run's projection and the one surface.

    ``frames``: ``(n_frames, timeline)`` of the animation; each run's true loss is measured at the
    points its frames show (at most ``MEASURED_POINTS`` of them).
    """
    from losstrail._frames import frame_schedule, measured_points
    from losstrail.evaluation.grids import loss_surface, plane_grid
    from losstrail.planes.directions import captured_fraction, check_custom_directions, plane_through
    from losstrail.planes.projection import project

    stacked = np.concatenate([t.params for t in trajectories])  # (sum T, P): joint PCA sees every path
    if method == "custom":  # the method was checked where compare was called; the vectors once P is known
        directions = check_custom_directions(directions, stacked.shape[1])
    finals = np.stack([t.params[-1] for t in trajectories])
    origin = finals.mean(axis=0) if centre == "mean" else trajectories[names.index(centre)].params[-1]
    reference = models[names.index(centre)] if centre != "mean" else models[0]
    plane = plane_through(
        stacked,
        origin,
        method,
        start=trajectories[0].params[0],
        directions=directions,
        seed=grid.seed,
        model=reference,
        data=data,
        names=trajectories[0].names,
        quiet=quiet,
        **loss,
    )
    measure = {"model": reference, "data": data, **loss} if faithfulness else {}
    shown = frame_schedule(trajectories, *frames)[0]  # (F, R): the point each run shows in each frame
    projections = tuple(
        project(plane, t, **measure, **({"at": measured_points(shown[:, r])} if measure else {}))
        for r, t in enumerate(trajectories)
    )
    captured = tuple(float(sum(captured_fraction(t.params, plane.u, plane.v))) for t in trajectories)
    xs, ys = plane_grid(plane, np.concatenate([p.xy for p in projections]), grid.resolution)
    surface = loss_surface(reference, data, plane, xs, ys, quiet=quiet, **loss)
    return Comparison(tuple(names), projections, captured, plane, surface)


def _save(stage: Stage, comparison: Comparison, trajectories, settings, models) -> None:
    """Stage the comparison and switch it in; ``comparison.json``, with every file's digest, is written last."""
    stage.save(comparison.plane)
    stage.save(comparison.surface)
    folders = _folders(comparison.names)
    for folder, trajectory, projection, model in zip(folders, trajectories, comparison.projections, models):
        stage.save(trajectory, member=folder)
        stage.save(projection, member=folder)
        stage.save_weights(model, member=folder)
    stage.commit_comparison(
        [{"name": n, "folder": f, **s} for n, f, s in zip(comparison.names, folders, settings)], comparison.captured
    )


def _folder(name: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _folders(names) -> list[str]:
    """One folder per run: the name made safe for a file system, with ``-2``, ``-3`` ... where two collide.

    >>> _folders(["a b", "a_b", "x/y"])
    ['run-a_b', 'run-a_b-2', 'run-x_y']
    """
    folders, seen = [], set()
    for name in names:
        base = _folder(name)
        folder, k = base, 1
        while folder.lower() in seen:  # also distinct on case-insensitive file systems
            k += 1
            folder = f"{base}-{k}"
        seen.add(folder.lower())
        folders.append(folder)
    return folders
