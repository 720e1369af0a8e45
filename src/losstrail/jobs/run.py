"""The one job runner of ``loss_landscape_anim`` and ``losstrail run``: train, plane, path, grid, pictures.

A face builds the specs where the call comes in (``TrainSpec``, ``PlaneSpec``, ``GridSpec``,
``Style``), each checked there once under the caller's names (keywords or flags), puts them in
a ``Job`` and calls ``run_job``. The runner checks what no spec holds (the output, the custom
vectors, the weights' file name, the budget), seeds once, draws the subset once and sets up one
``Evaluator`` for the job: the path's true and slice losses, the grid and the decision regions all
run on it, so its forward-pass check and its choice of the way to run points are made once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from losstrail._checks import check_training_memory, output_format
from losstrail._files import removed_if_failed
from losstrail._threads import free_core_threads
from losstrail.renderers.formats import picture_format
from losstrail.store.checks import check_outputs
from losstrail.store.rundir import RunDir, Stage
from losstrail.values.results import animation_data
from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec

__all__ = ["Job", "run_job"]

# Below this share of the path's variance, a picture warns that the plane misses most of the path.
CAPTURED_WARNING = 0.5


@dataclass(frozen=True)
class Job:
    """What one call asks for: the checked specs, the objects it was given and the flags.

    ``datamodule`` and ``model`` are the caller's own; when None, ``make_data()`` and
    ``make_model(datamodule)`` build them (default: the spirals and the reference's MLP), after the
    seed is set. ``names`` are the caller's names for the settings (``{'fps': 'giffps'}``,
    ``{'fps': '--fps'}``), for the errors of the checks made here. ``inputs`` are ``(name, path)``
    of files the caller read (an output may not be one of them).
    """

    train: TrainSpec
    plane: PlaneSpec
    grid: GridSpec
    style: Style
    run_dir: str | os.PathLike = "checkpoints/"
    output: Path | None = None  # the animation file; None: in the run directory, shown inline
    datamodule: object = None
    model: object = None
    make_data: Callable | None = None
    make_model: Callable | None = None
    custom_directions: object = None
    objective: object = None
    loss_fn: object = None
    budget: object = None
    model_filename: str = "model.pt"
    load_model: bool = False
    faithfulness: bool = True
    decision: bool = False
    return_data: bool = False
    quiet: bool = False
    gpus: int = 0
    names: Mapping[str, str] = field(default_factory=dict)
    inputs: tuple = ()

    def name(self, setting: str) -> str:
        """The caller's name for ``setting``."""
        return self.names.get(setting, setting)


def run_job(job: Job):
    """Run ``job``: check what no spec holds, then train (or load), choose the plane, project the path,
    evaluate the grid, save the run and draw it. Returns the ``Animation`` (``AnimationData`` with
    ``return_data``)."""
    _check_job(job)
    out_dir = job.output.resolve().parent if job.output is not None else None
    with removed_if_failed(out_dir, job.run_dir), free_core_threads():  # a failed run leaves no empty folder
        if job.output is not None:
            from losstrail._checks import check_output_file

            check_output_file(job.name("output_filename"), job.output)
        run = RunDir.writable(job.run_dir, job.name("model_dirpath"))
        if job.load_model and not run.has(job.model_filename):  # a link or FIFO there is named when it is read
            raise FileNotFoundError(
                f"load_model=True but there is no saved model at {str(run.path / job.model_filename)!r} "
                f"(model_dirpath={str(job.run_dir)!r}, model_filename={job.model_filename!r}); "
                "run once with load_model=False to train and save one"
            )
        accelerator = _accelerator(job.gpus)
        # One writer at a time; the new run is made in a staging folder and switched in whole.
        with run.writing() as stage:
            return _run(job, run, stage, accelerator)


def _check_job(job: Job) -> None:
    """What no spec holds, before any work: the outputs (first: an output onto a file of the run is named as
    such, whatever its suffix), the picture's format for the style, the custom vectors' use, the weights' file
    name and the time budget."""
    from losstrail._checks import check_custom_directions_used
    from losstrail.store.rundir import is_plain_name

    if job.output is not None:
        how = "an input" if job.load_model else "written by this run"
        check_outputs([(job.name("output_filename"), job.output)], inputs=job.inputs, run_dir=job.run_dir,
                      model_filename=job.model_filename, how=how)  # fmt: skip
    look = job.style
    kind = _picture_kind(job)
    look.check_for("run", kind, job.names)  # once for the job: the picture is drawn with the style as it is
    picture = picture_format(kind)
    if job.decision and (look.view == "3d" or picture.medium == "page"):
        raise ValueError(
            f"decision=True draws decision regions beside the 2-D contour of a GIF, MP4 or still; leave it out "
            f"for view={look.view!r} and format {kind!r}"
        )
    picture.check_installed()
    check_custom_directions_used(job.plane.method, job.custom_directions)  # the vectors: once P is known
    if not is_plain_name(job.model_filename):
        raise ValueError(
            f"model_filename={job.model_filename!r} must be a plain file name inside model_dirpath, e.g. 'model.pt'"
        )
    if job.budget is not None:
        from losstrail.evaluation.plan import parse_budget

        parse_budget(job.budget)


def _picture_kind(job: Job) -> str:
    """The format of the job's picture: the output file's, or (none named) the style's, default GIF."""
    return output_format(job.output, job.style.format) if job.output is not None else (job.style.format or "gif")


def _accelerator(gpus) -> str:
    import torch

    if not gpus:
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"gpus={gpus!r} but no CUDA device is visible to PyTorch; pass gpus=0 to run on the CPU")
    return "gpu"


def _run(job: Job, run: RunDir, stage: Stage, accelerator: str):
    """Train (or load), choose the plane, project the path, evaluate the grid, save, draw: the pipeline in order."""
    from losstrail._frames import frames_to_show, measured_points
    from losstrail.evaluation.batches import take_subset
    from losstrail.planes.directions import make_plane

    model, datamodule, directions = _model_and_data(job)
    with _on_a_copy_of_the_random_state():  # timing the budget may draw (a shuffling loader): training keeps the seed
        grid = _fit_the_budget(model, datamodule, job) if job.budget is not None else job.grid
    grid_data = datamodule if grid.subset is None else take_subset(datamodule, grid.subset, grid.subset_seed)
    old_settings, plane, surface = {}, None, None
    if job.load_model:
        old_settings, recorded, plane, surface = _load_saved(job, run, model, grid)
    else:
        recorded = _train(job, model, datamodule, stage, accelerator)
    trajectory, plane_spec = _finite_part(recorded, job.plane)
    device = "cuda" if accelerator == "gpu" else "cpu"
    if plane is None:
        # the spec as the face checked it, and the directions as _model_and_data checked them: not checked again
        plane = make_plane(
            trajectory, plane_spec, directions=directions, model=model, data=grid_data, device=device,
            quiet=job.quiet, objective=job.objective, loss_fn=job.loss_fn,
        )  # fmt: skip
    evaluator = functools.cache(lambda: _evaluator(job, model, grid_data, grid, plane, trajectory, device))
    projection = run.projection(plane, trajectory) if surface is not None else None
    if projection is None or (job.faithfulness and not projection.measured):
        # at the frames the animation shows (at most MEASURED_POINTS of them): every step costs a lot
        at = measured_points(frames_to_show(trajectory.step, job.style.max_frames, job.style.every))
        projection = _project(plane, trajectory, evaluator() if job.faithfulness else None, at)
    if surface is None:
        surface = _surface(evaluator(), plane, projection, grid, job.quiet)
        stage.save(plane)
        stage.save(surface)
    stage.save(projection)
    _warn_if_unfaithful(plane)
    title = _title(model, job.train.optimizer, datamodule)
    maps = _decision_maps(evaluator(), datamodule, trajectory, job.style.max_frames, stage) if job.decision else None
    settings = {**plane_spec.key(), **grid.key(), "title": title, **_described(job, model, datamodule)}
    _commit(job, stage, old_settings, settings)
    animation = _output(projection, surface, job, run, title, maps)
    if job.return_data:
        data = animation_data(recorded, projection)
        data.animation = animation
        return data
    return animation


def _evaluator(job: Job, model, data, grid: GridSpec, plane, trajectory, device: str):
    """The job's one ``Evaluator``: the grid's data (the subset, drawn once), over the parameters the plane spans."""
    from losstrail.planes.projection import path_evaluator

    return path_evaluator(plane, trajectory, model, data, job.objective, job.loss_fn, grid.bn_batches, device,
                          job.quiet, spread=grid.subset is not None)  # fmt: skip


def _project(plane, trajectory, evaluator, at):
    from losstrail.planes.projection import project

    if evaluator is None:
        return project(plane, trajectory)
    return project(plane, trajectory, evaluator=evaluator, at=at)


@contextlib.contextmanager
def _on_a_copy_of_the_random_state():
    """Random numbers drawn in the block (a model's initial weights) leave the seeded state as it was, so
    training starts from the seed itself (its data order), as if it had been set again."""
    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # models are built on the CPU
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def _model_and_data(job: Job):
    """``(model, data, directions)``: the model and data the job trains and evaluates (the given ones, or built after
    the seed is set) and the custom directions, checked once the model's parameter count is known (or None)."""
    from losstrail.evaluation.batches import check_first_batch
    from losstrail.planes.directions import check_custom_directions
    from losstrail.training.optim import seed_all

    if job.train.seed is not None:
        seed_all(job.train.seed)  # the one time the seed is set
    with _on_a_copy_of_the_random_state():
        datamodule = job.datamodule if job.datamodule is not None else _make_data(job)
        check_first_batch(datamodule, "datamodule")  # batches that are not tensors fail here, before training
        model = job.model if job.model is not None else _make_model(job, datamodule)
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
    directions = check_custom_directions(job.custom_directions, n_params) if job.plane.method == "custom" else None
    return model, datamodule, directions


def _make_data(job: Job):
    if job.make_data is not None:
        return job.make_data()
    from losstrail.builtin.data import SpiralsDataModule

    return SpiralsDataModule()


def _make_model(job: Job, datamodule):
    """The caller's builder's model, or the reference's default: an MLP of one hidden layer of 50 (lr 5e-3)."""
    if job.make_model is not None:
        return job.make_model(datamodule)
    from losstrail.builtin.nets import MLP

    rate = 5e-3 if job.train.learning_rate is None else job.train.learning_rate
    model = MLP(input_dim=datamodule.input_dim, num_classes=datamodule.num_classes, num_hidden_layers=1,
                hidden_dim=50, learning_rate=rate, optimizer=job.train.optimizer)  # fmt: skip
    model.recipe = {"name": "mlp", "hidden_dim": 50, "num_hidden_layers": 1}
    return model


def _train(job: Job, model, datamodule, stage: Stage, accelerator: str):
    """Train ``model`` as ``job.train`` says; the weights and the trajectory go to the stage."""
    from losstrail.training.fit import needs_lightning, train_model

    spec = job.train
    run = train_model(  # the spec checked the settings: not checked again
        model,
        datamodule,
        optimizer=None,  # the model's own (a built-in model was built with the spec's)
        learning_rate=spec.learning_rate if job.model is not None else None,  # a model built here has it already
        epochs=spec.n_epochs,
        # set once already (_model_and_data); Lightning seeds again, for its data loaders' workers too
        seed=spec.seed if needs_lightning(model, datamodule) else None,
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


def _load_saved(job: Job, run: RunDir, model, grid: GridSpec):
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
        stacklevel=5,
    )
    if len(finite) < 3 and plane.method in ("pca", "interpolation"):
        warnings.warn(
            f"reduction_method={plane.method!r} needs at least 3 finite points and the run diverged after "
            f"{len(finite)}; the picture uses reduction_method='random' (seeded) instead",
            RuntimeWarning,
            stacklevel=5,
        )
        plane = plane.replace(method="random")
    return finite, plane


def _surface(evaluator, plane, projection, grid: GridSpec, quiet: bool):
    """The loss over the grid ``grid`` asks for, around the projected path, on the job's evaluator."""
    from losstrail.evaluation.grids import grid_surface, plane_grid

    xs, ys = plane_grid(plane, projection.xy, grid.resolution, xrange=grid.xrange, yrange=grid.yrange)
    return grid_surface(evaluator, plane, xs, ys, grid=grid.grid, tol=grid.tol, subset=grid.subset, quiet=quiet)


def _title(model, optimizer, datamodule) -> str:
    lr = getattr(model, "learning_rate", None)
    data = type(datamodule).__name__.removesuffix("DataModule")
    opt = getattr(model, "optimizer", optimizer)
    opt = opt if isinstance(opt, str) else getattr(opt, "__name__", "custom optimizer")
    lr_text = f" (lr {lr:g})" if isinstance(lr, (int, float)) else ""
    return f"{type(model).__name__} trained with {opt}{lr_text} on {data}"


def _described(job: Job, model, datamodule) -> dict:
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


def _commit(job: Job, stage: Stage, old_settings: dict, settings: dict) -> None:
    """Switch the staged run in; a run drawn again (load_model) keeps its own training in run.json, and the files
    it did not make again."""
    if job.load_model:  # what the training was stays what it was
        settings.update({key: old_settings[key] for key in _TRAINING_KEYS if key in old_settings})
    stage.commit({**old_settings, **settings}, keep=job.load_model)


# What the training itself was; a run re-drawn with load_model=True keeps them from its run.json.
_TRAINING_KEYS = (*TrainSpec().key(), "model_recipe", "data_recipe")


def _fit_the_budget(model, data, job: Job) -> GridSpec:
    """The job's grid spec with the grid, resolution, subset and tol that fit ``job.budget``, timed on one chunk
    before training (on all the data, at the initial weights: an evaluator of its own)."""
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


def _decision_maps(evaluator, data, trajectory, n_frames, stage: Stage):
    """Decision regions at the frames' points, saved in the run directory for re-rendering."""
    from losstrail._frames import select_frames
    from losstrail.evaluation.grids import decision_regions

    index = select_frames(len(trajectory), n_frames)
    maps = decision_regions(evaluator.model, data, trajectory.params[index], index, evaluator=evaluator)
    stage.save(maps)
    return maps


def _warn_if_unfaithful(plane) -> None:
    captured = plane.captured
    if captured is not None and captured < CAPTURED_WARNING:
        warnings.warn(
            f"the {plane.method!r} plane captures only {captured:.1%} of the path's variance, so the picture shows "
            "little of where the optimizer went; reduction_method='pca' captures the most",
            UserWarning,
            stacklevel=5,
        )


def _output(projection, surface, job: Job, run: RunDir, title: str, decision):
    """Write the animation (to the run directory when not to a file, where ``RunDir`` says) and show it inline
    under IPython. The style was checked for this picture before any work (``_check_job``): drawn as it is."""
    from losstrail.renderers import draw_path

    style = job.style if job.style.title is not None else job.style.replace(title=title)
    kind = _picture_kind(job)
    out = job.output if job.output is not None else run.picture_path(kind)
    animation = draw_path(projection, surface, out, style, kind, decision=decision, quiet=job.quiet)
    if job.output is None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return animation
        if get_ipython() is not None:
            display(animation)
    return animation
