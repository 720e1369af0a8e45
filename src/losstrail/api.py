"""The one-call API of the reference package, built from the pipeline's stages."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from losstrail._checks import check_training_memory, output_format
from losstrail._files import removed_if_failed
from losstrail._registry import quoted
from losstrail._threads import free_core_threads
from losstrail.renderers.formats import picture_format
from losstrail.renderers.redraw import render
from losstrail.store.checks import check_outputs
from losstrail.store.rundir import RunDir, Stage
from losstrail.values.results import AnimationData, animation_data
from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec

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
        **style: the look and the format, the fields of ``Style``: ``format``, ``view``
            ('2d'/'3d'), ``rotate``, ``cmap``, ``levels``, ``log_scale``, ``size``, ``dpi``,
            ``path_color``, ``every``, ``step``, ``title`` (``giffps`` and ``n_frames`` are its
            ``fps`` and ``max_frames``). One the picture cannot show is an error naming it.

    Returns:
        ``AnimationData`` when ``return_data``: unpacks as ``(optim_path, loss_steps,
        accu_steps)`` — the flat parameter vectors (torch tensors) of every recorded point,
        and the loss and accuracy at each — and carries the faithfulness figures. Otherwise
        the ``Animation`` written (it shows itself inline in Jupyter). With
        ``output_to_file=False`` the animation goes to the run directory and is displayed
        inline under IPython.
    """
    train = TrainSpec.of(
        {"n_epochs": n_epochs, "optimizer": optimizer, "learning_rate": learning_rate, "seed": seed,
         "record_every": record_every, "params": params},
    )  # fmt: skip
    plane = PlaneSpec.of(
        {"method": reduction_method, "centre": centre, "keep_biases": keep_biases, "seed": seed,
         "negative_curvature": negative_curvature, "hessian_examples": hessian_examples},
        {"method": "reduction_method"},
    )  # fmt: skip
    grid_spec = GridSpec.of(
        {"resolution": resolution, "xrange": xrange, "yrange": yrange, "subset": subset, "bn_batches": bn_batches,
         "grid": grid, "tol": tol, "seed": seed},
    )  # fmt: skip
    look = _checked_style(style, giffps, n_frames, output_filename if output_to_file else None, decision)
    _check_job_args(reduction_method, custom_directions, model_filename, budget)
    if output_to_file:
        how = "an input" if load_model else "written by this run"
        check_outputs([("output_filename", output_filename)], run_dir=model_dirpath, model_filename=model_filename,
                      how=how)  # fmt: skip
    job = _Job(
        train, plane, grid_spec, look, datamodule=datamodule, model=model, custom_directions=custom_directions,
        objective=objective, loss_fn=loss_fn, budget=budget, model_filename=model_filename, load_model=load_model,
        output=Path(output_filename) if output_to_file else None, faithfulness=faithfulness, decision=decision,
        return_data=return_data, quiet=quiet, gpus=gpus,
    )  # fmt: skip
    out_dir = job.output.resolve().parent if job.output is not None else None
    with removed_if_failed(out_dir, model_dirpath), free_core_threads():  # a failed run leaves no empty folder
        if job.output is not None:
            from losstrail._checks import check_output_file

            check_output_file("output_filename", output_filename)
        run = RunDir.writable(model_dirpath, "model_dirpath")
        if load_model and not run.has(model_filename):  # a link or FIFO there is named when it is read
            raise FileNotFoundError(
                f"load_model=True but there is no saved model at {str(run.path / model_filename)!r} "
                f"(model_dirpath={str(model_dirpath)!r}, model_filename={model_filename!r}); "
                "run once with load_model=False to train and save one"
            )
        accelerator = _accelerator(gpus)
        # One writer at a time; the new run is made in a staging folder and switched in whole.
        with run.writing() as stage:
            return _run_job(job, run, stage, accelerator)


# The names loss_landscape_anim gives the Style fields it takes as arguments of its own.
_STYLE_NAMES = {"fps": "giffps", "max_frames": "n_frames"}


def _checked_style(style: dict, giffps, n_frames, output, decision) -> Style:
    """The ``Style`` of ``loss_landscape_anim``'s look arguments, checked for the picture it will draw."""
    taken = sorted(set(style) & set(_STYLE_NAMES))
    if taken:
        raise TypeError(
            f"loss_landscape_anim() got unexpected keyword argument(s) {quoted(taken)}; "
            "frames per second are giffps= and the most frames n_frames="
        )
    look = Style.of({**style, "fps": giffps, "max_frames": n_frames}, _STYLE_NAMES, where="loss_landscape_anim")
    kind = output_format(output, look.format) if output is not None else (look.format or "gif")
    look.check_for("run", kind, _STYLE_NAMES)
    picture = picture_format(kind)
    if decision and (look.view == "3d" or picture.medium == "page"):
        raise ValueError(
            f"decision=True draws decision regions beside the 2-D contour of a GIF, MP4 or still; leave it out "
            f"for view={look.view!r} and format {kind!r}"
        )
    picture.check_installed()
    return look


def _check_job_args(reduction_method, custom_directions, model_filename, budget) -> None:
    """The arguments no spec holds: the custom vectors, the weights' file name and the time budget."""
    from losstrail._checks import check_custom_directions_used, check_directions
    from losstrail.store.rundir import is_plain_name

    check_custom_directions_used(reduction_method, custom_directions)
    if reduction_method == "custom":
        check_directions(custom_directions)
    if not is_plain_name(model_filename):
        raise ValueError(
            f"model_filename={model_filename!r} must be a plain file name inside model_dirpath, e.g. 'model.pt'"
        )
    if budget is not None:
        from losstrail.evaluation.plan import parse_budget

        parse_budget(budget)


@dataclass(frozen=True)
class _Job:
    """What one call of ``loss_landscape_anim`` asks for: the specs, the objects it was given and the flags."""

    train: TrainSpec
    plane: PlaneSpec
    grid: GridSpec
    style: Style
    datamodule: object = None
    model: object = None
    custom_directions: object = None
    objective: object = None
    loss_fn: object = None
    budget: object = None
    model_filename: str = "model.pt"
    load_model: bool = False
    output: Path | None = None  # the animation file; None: in the run directory, shown inline
    faithfulness: bool = True
    decision: bool = False
    return_data: bool = False
    quiet: bool = False
    gpus: int = 0


def _run_job(job: _Job, run: RunDir, stage: Stage, accelerator: str):
    """Train (or load), choose the plane, project the path, evaluate the grid, save, draw: the pipeline in order."""
    from losstrail._frames import frames_to_show, measured_points
    from losstrail.evaluation.batches import take_subset
    from losstrail.planes.directions import make_plane

    model, datamodule = _model_and_data(job)
    grid = _fit_the_budget(model, datamodule, job) if job.budget is not None else job.grid
    grid_data = datamodule if grid.subset is None else take_subset(datamodule, grid.subset, grid.subset_seed)
    old_settings, plane, surface = {}, None, None
    if job.load_model:
        old_settings, recorded, plane, surface = _load_saved(job, run, model, grid)
    else:
        recorded = _train(job, model, datamodule, stage, accelerator)
    trajectory, plane_spec = _finite_part(recorded, job.plane)
    device = "cuda" if accelerator == "gpu" else "cpu"
    loss = {"objective": job.objective, "loss_fn": job.loss_fn}
    if plane is None:
        plane = make_plane(
            trajectory, plane_spec.method, directions=job.custom_directions, seed=plane_spec.seed, model=model,
            data=grid_data, device=device, quiet=job.quiet, **plane_spec.options, **loss,
        )  # fmt: skip
    projection = run.projection(plane, trajectory) if surface is not None else None
    if projection is None or (job.faithfulness and not projection.measured):
        measure = {"model": model, "data": grid_data, "bn_batches": grid.bn_batches, "device": device, **loss}
        # at the frames the animation shows (at most MEASURED_POINTS of them): every step costs a lot
        measure["at"] = measured_points(frames_to_show(trajectory.step, job.style.max_frames, job.style.every))
        projection = _project(plane, trajectory, measure if job.faithfulness else {})
    if surface is None:
        surface = _surface(model, datamodule, plane, projection, grid, device, job.quiet, loss)
        stage.save(plane)
        stage.save(surface)
    stage.save(projection)
    _warn_if_unfaithful(plane)
    title = _title(model, job.train.optimizer, datamodule)
    maps = _decision_maps(model, datamodule, trajectory, job.style.max_frames, stage) if job.decision else None
    settings = {**plane_spec.key(), **grid.key(), "title": title, **_described(job, model, datamodule)}
    _commit(job, stage, old_settings, settings)
    animation = _output(projection, surface, job, run.path, title, maps)
    if job.return_data:
        data = animation_data(recorded, projection)
        data.animation = animation
        return data
    return animation


def _project(plane, trajectory, measure: dict):
    from losstrail.planes.projection import project

    return project(plane, trajectory, **measure)


def _model_and_data(job: _Job):
    """The model and data the job trains and evaluates: the given ones, or the default MLP on the spirals."""
    from losstrail.builtin.data import SpiralsDataModule
    from losstrail.builtin.nets import MLP
    from losstrail.evaluation.batches import check_first_batch
    from losstrail.planes.directions import check_custom_directions
    from losstrail.training.optim import seed_all

    if job.train.seed is not None:
        seed_all(job.train.seed)
    datamodule = job.datamodule if job.datamodule is not None else SpiralsDataModule()
    check_first_batch(datamodule, "datamodule")  # batches that are not tensors fail here, before training
    model = job.model
    if model is None:
        rate = 5e-3 if job.train.learning_rate is None else job.train.learning_rate
        model = MLP(input_dim=datamodule.input_dim, num_classes=datamodule.num_classes, num_hidden_layers=1,
                    hidden_dim=50, learning_rate=rate, optimizer=job.train.optimizer)  # fmt: skip
        model.recipe = {"name": "mlp", "hidden_dim": 50, "num_hidden_layers": 1}
    n_params = sum(p.numel() for p in model.parameters())
    if n_params == 0:
        raise ValueError(
            f"model={type(model).__name__} has no parameters, so there is no path to record; "
            "pass a model with trainable parameters"
        )
    check_training_memory({"model": type(model).__name__, "n_epochs": job.train.n_epochs}, n_params,
                          "Pass a smaller model or fewer n_epochs=", steps=job.train.n_epochs + 1,
                          frames=job.style.max_frames, decision=job.decision)  # fmt: skip
    if job.decision and getattr(datamodule, "input_dim", 2) != 2:
        raise ValueError(
            f"decision=True draws decision regions of 2-D inputs; {type(datamodule).__name__} has inputs of "
            f"shape {datamodule.input_dim!r}. Leave decision off for image data"
        )
    if job.plane.method == "custom":
        check_custom_directions(job.custom_directions, n_params)
    return model, datamodule


def _train(job: _Job, model, datamodule, stage: Stage, accelerator: str):
    """Train ``model`` as ``job.train`` says; the weights and the trajectory go to the stage."""
    from losstrail.training.fit import fit

    spec = job.train
    run = fit(
        model,
        datamodule,
        learning_rate=spec.learning_rate if job.model is not None else None,  # the default MLP has it already
        epochs=spec.n_epochs,
        seed=spec.seed,
        record_every=spec.record_every,
        accelerator=accelerator,
        storage=stage.folder,  # a path too large for memory is kept in the run directory
        params=spec.params,
        objective=job.objective,
        loss_fn=job.loss_fn,
        quiet=job.quiet,
    )
    stage.save_weights(model, job.model_filename)
    stage.save(run.trajectory)
    return run.trajectory


def _load_saved(job: _Job, run: RunDir, model, grid: GridSpec):
    """``(settings, trajectory, plane, surface)`` of the run saved in ``run_dir``; the plane only when the job's
    plane spec made it, the surface only when its grid spec did too (else None: they are made again)."""
    from losstrail.values.plane import Plane
    from losstrail.values.surface import Surface
    from losstrail.values.trajectory import Trajectory

    settings = run.finished().settings  # run.json read and checked once, for the whole job
    run.load_weights(model, job.model_filename)
    trajectory = run.load(Trajectory)
    plane = surface = None
    with contextlib.suppress(FileNotFoundError):  # a run whose grid was never computed
        if job.plane.made(settings):
            plane = run.load(Plane)
            if grid.made(settings):  # on that plane only: a new plane needs a new surface
                surface = run.load(Surface)
    if plane is not None:
        run.check_together(trajectory, plane, surface)
    return settings, trajectory, plane, surface


def _finite_part(trajectory, plane: PlaneSpec):
    """The trajectory up to a divergence (warned), and the plane spec that can be made from it."""
    finite = trajectory.finite_prefix()
    if len(finite) == len(trajectory):
        return trajectory, plane
    warnings.warn(
        f"training diverged: the parameters are NaN or infinite from step {int(trajectory.step[len(finite)])} on; "
        f"the picture shows the {len(finite)} points before that. Lower the learning rate",
        RuntimeWarning,
        stacklevel=4,
    )
    if len(finite) < 3 and plane.method in ("pca", "interpolation"):
        warnings.warn(
            f"reduction_method={plane.method!r} needs at least 3 finite points and the run diverged after "
            f"{len(finite)}; the picture uses reduction_method='random' (seeded) instead",
            RuntimeWarning,
            stacklevel=4,
        )
        plane = plane.replace(method="random")
    return finite, plane


def _surface(model, datamodule, plane, projection, grid: GridSpec, device: str, quiet: bool, loss: dict):
    """The loss over the grid ``grid`` asks for, around the projected path."""
    from losstrail.evaluation.grids import loss_surface, plane_grid

    xs, ys = plane_grid(plane, projection.xy, grid.resolution, xrange=grid.xrange, yrange=grid.yrange)
    return loss_surface(
        model, datamodule, plane, xs, ys, subset=grid.subset, seed=grid.subset_seed, bn_batches=grid.bn_batches,
        device=device, grid=grid.grid, tol=grid.tol, quiet=quiet, **loss,
    )  # fmt: skip


def _described(job: _Job, model, datamodule) -> dict:
    """What run.json says of the training and of what was trained: the train spec's key and the recipes."""
    return {
        **job.train.key(),
        "model": type(model).__name__,
        "model_filename": job.model_filename,
        "n_params": sum(p.numel() for p in model.parameters()),
        # How `losstrail surface` builds the model and data again (built-in ones only).
        "model_recipe": getattr(model, "recipe", None),
        "data_recipe": getattr(datamodule, "recipe", None),
    }


def _commit(job: _Job, stage: Stage, old_settings: dict, settings: dict) -> None:
    """Switch the staged run in; a run drawn again (load_model) keeps its own training in run.json, and the files
    it did not make again."""
    if job.load_model:  # what the training was stays what it was
        settings.update({key: old_settings[key] for key in _TRAINING_KEYS if key in old_settings})
    stage.commit({**old_settings, **settings}, keep=job.load_model)


# What the training itself was; a run re-drawn with load_model=True keeps them from its run.json.
_TRAINING_KEYS = (*TrainSpec().key(), "model_recipe", "data_recipe")


def _fit_the_budget(model, data, job: _Job) -> GridSpec:
    """The job's grid spec with the grid, resolution, subset and tol that fit ``job.budget``, timed on one chunk
    before training."""
    from losstrail.evaluation.evaluator import Evaluator, note
    from losstrail.evaluation.grids import measure_cost
    from losstrail.evaluation.layout import choose_parameters, flat_params
    from losstrail.evaluation.plan import choose_for_budget

    grid = job.grid
    names = choose_parameters(model, job.train.params)
    evaluator = Evaluator(model, data, names=names, objective=job.objective, loss_fn=job.loss_fn)
    rate = measure_cost(evaluator, flat_params(model, names).numpy())
    nx, ny = (grid.resolution, grid.resolution) if isinstance(grid.resolution, int) else grid.resolution
    choice = choose_for_budget(job.budget, rate, nx, ny, evaluator.batches.n_examples, tol=grid.tol)
    note(choice.sentence, job.quiet)
    return grid.replace(
        grid=choice.grid,
        resolution=(choice.nx, choice.ny),
        subset=choice.subset if choice.subset is not None else grid.subset,
        tol=choice.tol or grid.tol,
    )


def _decision_maps(model, data, trajectory, n_frames, stage: Stage):
    """Decision regions at the frames' points, saved in the run directory for re-rendering."""
    from losstrail._frames import select_frames
    from losstrail.evaluation.grids import decision_regions

    index = select_frames(len(trajectory), n_frames)
    maps = decision_regions(model, data, trajectory.params[index], index, names=trajectory.names)
    stage.save(maps)
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


def _output(projection, surface, job: _Job, run_dir: Path, title: str, decision):
    """Write the animation (to the run directory when not to a file) and show it inline under IPython."""
    from losstrail.renderers import animate

    style = job.style if job.style.title is not None else job.style.replace(title=title)
    out = job.output if job.output is not None else Path(run_dir) / f"animation.{style.format or 'gif'}"
    animation = animate(projection, surface, out, style=style, decision=decision, quiet=job.quiet)
    if job.output is None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return animation
        if get_ipython() is not None:
            display(animation)
    return animation
