"""The one-call API of the reference package, built from the pipeline's stages."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from losstrail._checks import check_style
from losstrail._files import check_writable_dir, removed_if_failed
from losstrail._registry import DIRECTIONS, check_choice
from losstrail._rundir import check_together, staging, writer_lock
from losstrail._threads import free_core_threads
from losstrail.redraw import render
from losstrail.results import AnimationData, animation_data

__all__ = ["AnimationData", "loss_landscape_anim", "render"]

# Below this share of the path's variance, a picture warns that the plane misses most of the path.
CAPTURED_WARNING = 0.5


def _accelerator(gpus) -> str:
    import torch

    if not gpus:
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"gpus={gpus!r} but no CUDA device is visible to PyTorch; pass gpus=0 to run on the CPU")
    return "gpu"


def _title(model, optimizer, datamodule) -> str:
    lr = getattr(model, "learning_rate", None)
    data = type(datamodule).__name__.removesuffix("DataModule")
    opt = getattr(model, "optimizer", optimizer)
    opt = opt if isinstance(opt, str) else getattr(opt, "__name__", "custom optimizer")
    lr_text = f" (lr {lr:g})" if isinstance(lr, (int, float)) else ""
    return f"{type(model).__name__} trained with {opt}{lr_text} on {data}"


def _saved_plane_and_surface(run_dir: Path, settings: dict, wanted: dict):
    """The plane and surface saved in ``run_dir`` if they were made with the ``wanted`` settings."""
    from losstrail.artifacts import load_run_value
    from losstrail.landscape import Surface
    from losstrail.plane import Plane

    if wanted["reduction_method"] == "custom":
        return None, None  # the vectors themselves are not compared; recompute
    saved = {"grid": "full", **settings}  # runs saved before adaptive grids were full
    if saved["grid"] == "full":  # a full grid is as good as any adaptive one asked for
        wanted = {k: v for k, v in wanted.items() if k not in ("grid", "tol")}
    if any(saved.get(key) != value for key, value in wanted.items()):
        return None, None
    try:
        return load_run_value(run_dir, Plane), load_run_value(run_dir, Surface)
    except FileNotFoundError:
        return None, None


def loss_landscape_anim(
    n_epochs: int = 300,
    datamodule=None,
    model=None,
    optimizer: str = "adam",
    reduction_method: str = "pca",
    custom_directions=None,
    model_dirpath: str | os.PathLike = "checkpoints/",
    model_filename: str = "model.pt",
    gpus: int = 0,
    load_model: bool = False,
    output_to_file: bool = True,
    output_filename: str | os.PathLike = "sample.gif",
    giffps: float = 15,
    sampling: bool = False,
    n_frames: int = 300,
    seed: int | None = None,
    return_data: bool = False,
    *,
    learning_rate: float | None = None,
    resolution: int | tuple[int, int] = 100,
    record_every: int = 1,
    centre: str | int = "final",
    xrange: tuple[float, float] | None = None,
    yrange: tuple[float, float] | None = None,
    subset: int | None = None,
    bn_batches: int = 0,
    keep_biases: bool = False,
    negative_curvature: bool = False,
    hessian_examples: int | None = None,
    faithfulness: bool = True,
    decision: bool = False,
    params="trainable",
    objective=None,
    loss_fn=None,
    grid: str = "adaptive",
    tol: float = 0.01,
    budget=None,
    quiet: bool = False,
    **style,
):
    """Train a network, slice its loss landscape along a plane and animate the path across it.

    Accepts every argument of ``loss_landscape_anim`` from ``loss-landscape-anim`` 0.1.10
    with the same meaning and defaults, plus a few keyword-only extras.

    Args:
        n_epochs: epochs of training (default 300).
        datamodule: a LightningDataModule; default the 2-D spirals.
        model: a LightningModule; default an MLP (1 hidden layer of 50, lr 5e-3).
        optimizer: for the default model: ``'sgd'``, ``'momentum'``, ``'adam'``, ``'adamw'``,
            ``'adagrad'`` or ``'rmsprop'`` (default ``'adam'``). A given model keeps its own.
        reduction_method: ``'pca'`` (default), ``'random'``, ``'filter'``, ``'layer'``,
            ``'hessian'``, ``'interpolation'`` or ``'custom'`` (see ``make_plane``).
        custom_directions: ``(u, v)``, two vectors of the model's parameter count, for ``'custom'``.
        model_dirpath: the run directory, where weights, trajectory, plane and surface are saved.
        model_filename: file name of the weights in ``model_dirpath``.
        gpus: 0 for the CPU (default), 1 to train and evaluate on a CUDA GPU.
        load_model: reuse the run saved in ``model_dirpath`` instead of training; the plane and
            grid are reused too when they were made with the same settings.
        output_to_file: write the animation to ``output_filename``; if False it is shown inline
            when running under IPython/Jupyter.
        output_filename: the animation file (default ``'sample.gif'``).
        giffps: frames per second (default 15).
        sampling: accepted for compatibility; frames are always at most ``n_frames``, spread
            evenly over the steps with the first and last in.
        n_frames: most frames in the animation (default 300).
        seed: seeds the model's initial weights, the data order and random directions.
        return_data: return ``(optim_path, loss_steps, accu_steps)``.
        learning_rate: learning rate of the default model (default 5e-3).
        resolution: grid points per axis (default 100), or ``(nx, ny)``.
        record_every: record the parameters every this many optimizer steps (default 1).
        centre: the plane's origin: ``'final'`` (default), ``'initial'`` or a recorded step.
        xrange, yrange: ``(low, high)`` plane coordinates of the grid; default fits the path.
        subset: evaluate the grid and the path on a seeded subset of this many examples; the
            surface then carries each cell's standard error.
        bn_batches: recompute BatchNorm statistics at every grid point from this many
            batches (default 0: the centre's running statistics, as the reference).
        keep_biases, negative_curvature, hessian_examples: see ``make_plane``.
        faithfulness: evaluate the true loss at recorded points and the slice loss at their
            projections, and draw them beside the contour (default True): at the frames the
            animation shows, at most 100 of them spread evenly (``_frames.MEASURED_POINTS``), since
            each costs as much as two grid points; the curves run through the measured points.
        decision: add a panel with the classifier's decision regions at each step (2-D data).
        params: which parameters the path, plane and grid span: ``'trainable'`` (default),
            ``'all'``, name patterns or a predicate ``(name, param) -> bool``; the others keep
            their values everywhere.
        objective, loss_fn: the loss, by the rule of ``loss_surface``, for training a plain
            module, the path's losses, the plane and the grid alike.
        grid, tol: ``'adaptive'`` (default: exact on a coarse lattice and wherever the checked
            interpolation error exceeds ``tol``, default 0.01) or ``'full'`` (every point exact);
            see ``loss_surface``. The path's true and slice losses are always exact.
        budget: seconds (or ``'60s'``, ``'2min'``) the grid may take: one chunk is timed
            before training and the grid, subset, resolution and ``tol`` that fit are picked
            (and said); an error before training if even the coarse lattice does not fit.
        quiet: no progress bars.
        **style: the look and the format, as ``animate``: ``format``, ``view`` ('2d'/'3d'),
            ``rotate``, ``cmap``, ``levels``, ``log_scale``, ``size``, ``dpi``,
            ``path_color``, ``every``, ``step``, ``title``.

    Returns:
        ``AnimationData`` when ``return_data``: unpacks as ``(optim_path, loss_steps,
        accu_steps)`` — the flat parameter vectors (torch tensors) of every recorded point,
        and the loss and accuracy at each — and carries the faithfulness figures. Otherwise
        the ``Animation`` written (it shows itself inline in Jupyter). With
        ``output_to_file=False`` the animation goes to the run directory and is displayed
        inline under IPython.
    """
    from losstrail._checks import check_centre, check_directions
    from losstrail._rundir import is_plain_name
    from losstrail.renderers import check_animation_args, output_format
    from losstrail.train import check_optimizer, check_positive_int

    optimizer = check_optimizer(optimizer)
    check_choice("reduction_method", reduction_method, DIRECTIONS)
    check_positive_int("n_epochs", n_epochs, 300)
    check_animation_args(giffps, n_frames)
    _check_grid_args(resolution, xrange, yrange, grid, tol)
    check_centre(centre)
    if reduction_method == "custom":
        check_directions(custom_directions)
    if not is_plain_name(model_filename):
        raise ValueError(
            f"model_filename={model_filename!r} must be a plain file name inside model_dirpath, e.g. 'model.pt'"
        )
    if budget is not None:
        from losstrail._plan import parse_budget

        parse_budget(budget)
    check_style(style)
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number, e.g. learning_rate=5e-3")
    if output_to_file:
        output_format(output_filename, style.get("format"))
    out_dir = Path(output_filename).resolve().parent if output_to_file else None
    with removed_if_failed(out_dir, model_dirpath), free_core_threads():  # a failed run leaves no empty folder
        if output_to_file:
            from losstrail._checks import check_output_file

            check_output_file("output_filename", output_filename)
        run_dir = check_writable_dir("model_dirpath", model_dirpath)
        weights = run_dir / model_filename
        if load_model and not weights.is_file():
            raise FileNotFoundError(
                f"load_model=True but there is no saved model at {str(weights)!r} "
                f"(model_dirpath={str(model_dirpath)!r}, model_filename={model_filename!r}); "
                "run once with load_model=False to train and save one"
            )
        accelerator = _accelerator(gpus)
        # One writer at a time; the new run is made in a staging folder and switched in whole.
        with writer_lock(run_dir, "model_dirpath"), staging(run_dir) as incoming:
            return _run_job(**locals())


def _check_grid_args(resolution, xrange, yrange, grid="full", tol=0.01) -> None:
    import numpy as np

    from losstrail._checks import check_resolution
    from losstrail._plan import check_tol
    from losstrail._registry import GRIDS

    check_resolution(resolution)
    check_choice("grid", grid, GRIDS)
    if grid == "adaptive":
        check_tol(tol)
    from losstrail.surface import path_grid

    resolution = tuple(resolution) if isinstance(resolution, list) else resolution
    path_grid(np.zeros((2, 2)), resolution, xrange=xrange, yrange=yrange)  # raises on a bad range


def _run_job(
    n_epochs,
    datamodule,
    model,
    optimizer,
    reduction_method,
    custom_directions,
    model_dirpath,
    model_filename,
    gpus,
    load_model,
    output_to_file,
    output_filename,
    giffps,
    sampling,
    n_frames,
    seed,
    return_data,
    learning_rate,
    resolution,
    record_every,
    centre,
    xrange,
    yrange,
    subset,
    bn_batches,
    keep_biases,
    negative_curvature,
    hessian_examples,
    faithfulness,
    decision,
    params,
    objective,
    loss_fn,
    grid,
    tol,
    budget,
    quiet,
    style,
    run_dir,
    weights,
    accelerator,
    incoming,
    **_,
):
    import lightning.pytorch as pl

    from losstrail._batching import check_first_batch, take_subset
    from losstrail._checks import check_settings
    from losstrail._frames import frames_to_show, measured_points
    from losstrail._rundir import RUN_FILES, commit, require_finished
    from losstrail.artifacts import (
        load_run_value,
        load_weights,
        save_run_value,
        save_weights,
        saved_projection,
    )
    from losstrail.data import SpiralsDataModule
    from losstrail.directions import check_custom_directions, make_plane
    from losstrail.models import MLP
    from losstrail.projection import project
    from losstrail.record import Trajectory
    from losstrail.surface import loss_surface, plane_grid
    from losstrail.train import fit

    if seed is not None:
        pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = datamodule if datamodule is not None else SpiralsDataModule()
    check_first_batch(datamodule, "datamodule")  # batches that are not tensors fail here, before training
    if model is None:
        model = MLP(
            input_dim=datamodule.input_dim,
            num_classes=datamodule.num_classes,
            num_hidden_layers=1,
            hidden_dim=50,
            learning_rate=5e-3 if learning_rate is None else learning_rate,
            optimizer=optimizer,
            gpus=gpus,
        )
        model.recipe = {"name": "mlp", "hidden_dim": 50, "num_hidden_layers": 1}
        learning_rate = None  # already the model's
    n_params = sum(p.numel() for p in model.parameters())
    if n_params == 0:
        raise ValueError(
            f"model={type(model).__name__} has no parameters, so there is no path to record; "
            "pass a model with trainable parameters"
        )
    if decision and getattr(datamodule, "input_dim", 2) != 2:
        raise ValueError(
            f"decision=True draws decision regions of 2-D inputs; {type(datamodule).__name__} has inputs of "
            f"shape {datamodule.input_dim!r}. Leave decision off for image data"
        )
    if reduction_method == "custom":
        check_custom_directions(custom_directions, n_params)
    if budget is not None:
        grid, resolution, subset, tol = _fit_the_budget(model, datamodule, params, objective, loss_fn, budget,
                                                        resolution, subset, grid, tol, quiet)  # fmt: skip
    subset_seed = 0 if seed is None else seed  # the grid and the path see the same examples
    grid_data = datamodule if subset is None else take_subset(datamodule, subset, subset_seed)
    plane_options = {
        "centre": centre,
        "keep_biases": keep_biases,
        "negative_curvature": negative_curvature,
        "hessian_examples": hessian_examples,
    }

    wanted = {
        "reduction_method": reduction_method,
        "seed": seed,
        "resolution": list(resolution) if isinstance(resolution, tuple) else resolution,
        "xrange": None if xrange is None else [float(v) for v in xrange],
        "yrange": None if yrange is None else [float(v) for v in yrange],
        "subset": subset,
        "bn_batches": bn_batches,
        "grid": grid,
        **({"tol": tol} if grid == "adaptive" else {}),
        **plane_options,
    }
    old_settings = {}
    if load_model:
        old_settings = require_finished(run_dir, "model_dirpath")["settings"]
        check_settings(run_dir, old_settings)
        load_weights(weights, model)
        trajectory = load_run_value(run_dir, Trajectory)
        plane, surface = _saved_plane_and_surface(run_dir, old_settings, wanted)
        if plane is not None:
            check_together(run_dir, trajectory, plane, surface, old_settings)
    else:
        run = fit(
            model,
            datamodule,
            learning_rate=learning_rate,
            epochs=n_epochs,
            seed=seed,
            record_every=record_every,
            accelerator=accelerator,
            storage=incoming,  # a path too large for memory is kept in the run directory
            params=params,
            objective=objective,
            loss_fn=loss_fn,
            quiet=quiet,
        )
        trajectory = run.trajectory
        save_weights(incoming / model_filename, model)
        save_run_value(incoming, trajectory)
        plane = surface = None

    recorded, finite = trajectory, trajectory.finite_prefix()
    if len(finite) < len(trajectory):
        warnings.warn(
            f"training diverged: the parameters are NaN or infinite from step {int(trajectory.step[len(finite)])} on; "
            f"the picture shows the {len(finite)} points before that. Lower the learning rate",
            RuntimeWarning,
            stacklevel=3,
        )
        trajectory = finite
        if len(trajectory) < 3 and reduction_method in ("pca", "interpolation"):
            warnings.warn(
                f"reduction_method={reduction_method!r} needs at least 3 finite points and the run diverged after "
                f"{len(trajectory)}; the picture uses reduction_method='random' (seeded) instead",
                RuntimeWarning,
                stacklevel=3,
            )
            reduction_method = wanted["reduction_method"] = "random"
    device = "cuda" if accelerator == "gpu" else "cpu"
    if plane is None:
        plane = make_plane(
            trajectory,
            reduction_method,
            directions=custom_directions,
            seed=seed,
            model=model,
            data=grid_data,
            objective=objective,
            loss_fn=loss_fn,
            device=device,
            quiet=quiet,
            **plane_options,
        )
    loss = {"objective": objective, "loss_fn": loss_fn}
    measure = {"model": model, "data": grid_data, "bn_batches": bn_batches, "device": device, **loss}
    if faithfulness:  # at the frames the animation shows (at most MEASURED_POINTS of them): the rest costs a lot
        measure["at"] = measured_points(frames_to_show(trajectory.step, n_frames, style.get("every")))
    measure = measure if faithfulness else {}
    projection = saved_projection(run_dir, plane, trajectory) if surface is not None else None
    if projection is None or (faithfulness and not projection.measured):
        projection = project(plane, trajectory, **measure)
    if surface is None:
        xs, ys = plane_grid(plane, projection.xy, resolution, xrange=xrange, yrange=yrange)
        surface = loss_surface(
            model,
            datamodule,
            plane,
            xs,
            ys,
            subset=subset,
            seed=subset_seed,
            bn_batches=bn_batches,
            device=device,
            grid=grid,
            tol=tol,
            quiet=quiet,
            **loss,
        )
        save_run_value(incoming, plane)
        save_run_value(incoming, surface)
    save_run_value(incoming, projection)
    _warn_if_unfaithful(plane)
    title = _title(model, optimizer, datamodule)
    maps = _decision_maps(model, datamodule, trajectory, n_frames, incoming) if decision else None
    staged = {p.name for p in incoming.iterdir()}
    keep = [n for n in (model_filename, *RUN_FILES) if load_model and n not in staged and (run_dir / n).is_file()]
    commit(
        run_dir,
        incoming,
        {
            **old_settings,
            **wanted,
            "n_epochs": n_epochs,
            "optimizer": optimizer if isinstance(optimizer, str) else "custom",
            "model": type(model).__name__,
            "model_filename": model_filename,
            "n_params": n_params,
            "title": title,
            # How `losstrail surface` builds the model and data again (built-in ones only).
            "model_recipe": getattr(model, "recipe", None),
            "data_recipe": getattr(datamodule, "recipe", None),
            **({key: old_settings[key] for key in _TRAINING_KEYS if key in old_settings} if load_model else {}),
        },
        keep=keep,
    )
    animation = _output(
        projection, surface, output_to_file, output_filename, run_dir, giffps, n_frames, title, style, maps, quiet
    )
    if return_data:
        data = animation_data(recorded, projection)
        data.animation = animation
        return data
    return animation


# What the training itself was; a run re-drawn with load_model=True keeps them from its run.json.
_TRAINING_KEYS = ("n_epochs", "optimizer", "model_recipe", "data_recipe", "seed")


def _fit_the_budget(model, data, params, objective, loss_fn, budget, resolution, subset, grid, tol, quiet):
    """``(grid, resolution, subset, tol)`` whose grid fits ``budget``, timed on one chunk before training."""
    from losstrail._evaluate import Evaluator, note
    from losstrail._functional import choose_parameters, flat_params
    from losstrail._plan import choose_for_budget
    from losstrail.surface import measure_cost

    names = choose_parameters(model, params)
    evaluator = Evaluator(model, data, names=names, objective=objective, loss_fn=loss_fn)
    rate = measure_cost(evaluator, flat_params(model, names).numpy())
    nx, ny = (resolution, resolution) if isinstance(resolution, int) else resolution
    choice = choose_for_budget(budget, rate, nx, ny, evaluator.batches.n_examples, tol=tol)
    note(choice.sentence, quiet)
    return (
        choice.grid,
        (choice.nx, choice.ny),
        choice.subset if choice.subset is not None else subset,
        choice.tol or tol,
    )


def _decision_maps(model, data, trajectory, n_frames, run_dir):
    """Decision regions at the frames' points, saved in the run directory for re-rendering."""
    from losstrail._frames import select_frames
    from losstrail.artifacts import save_run_value
    from losstrail.surface import decision_regions

    index = select_frames(len(trajectory), n_frames)
    maps = decision_regions(model, data, trajectory.params[index], index, names=trajectory.names)
    save_run_value(run_dir, maps)
    return maps


def _warn_if_unfaithful(plane) -> None:
    captured = plane.captured
    if captured is not None and captured < CAPTURED_WARNING:
        warnings.warn(
            f"the {plane.method!r} plane captures only {captured:.1%} of the path's variance, so the picture shows "
            "little of where the optimizer went; reduction_method='pca' captures the most",
            UserWarning,
            stacklevel=4,
        )


def _output(
    projection, surface, output_to_file, output_filename, run_dir, fps, n_frames, title, style, decision, quiet
):
    """Write the animation (to the run directory when not to a file) and show it inline under IPython."""
    from losstrail.renderers import animate

    style = dict(style)
    title = style.pop("title", None) or title
    kind = style.get("format") or "gif"
    out = output_filename if output_to_file else Path(run_dir) / f"animation.{kind}"
    animation = animate(
        projection, surface, out, fps=fps, max_frames=n_frames, title=title, decision=decision, quiet=quiet, **style
    )
    if not output_to_file:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return animation
        if get_ipython() is not None:
            display(animation)
    return animation
