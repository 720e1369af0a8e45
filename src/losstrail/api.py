"""The one-call API of the reference package: its arguments made into checked specs, handed to the job runner."""

from __future__ import annotations

import os
from pathlib import Path

from losstrail._registry import quoted
from losstrail.jobs.run import Job, run_job
from losstrail.renderers.redraw import render
from losstrail.values.results import AnimationData
from losstrail.values.specs import GridSpec, PlaneSpec, Style, TrainSpec

__all__ = ["AnimationData", "loss_landscape_anim", "render"]


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
        _NAMES,
    )  # fmt: skip
    grid_spec = GridSpec.of(
        {"resolution": resolution, "xrange": xrange, "yrange": yrange, "subset": subset, "bn_batches": bn_batches,
         "grid": grid, "tol": tol, "seed": seed},
    )  # fmt: skip
    look = _style(style, giffps, n_frames)
    job = Job(
        train, plane, grid_spec, look, run_dir=model_dirpath, output=Path(output_filename) if output_to_file else None,
        datamodule=datamodule, model=model, custom_directions=custom_directions, objective=objective,
        loss_fn=loss_fn, budget=budget, model_filename=model_filename, load_model=load_model,
        faithfulness=faithfulness, decision=decision, return_data=return_data, quiet=quiet, gpus=gpus, names=_NAMES,
    )  # fmt: skip
    return run_job(job)


# The names loss_landscape_anim gives the spec fields it takes as arguments of its own.
_NAMES = {"fps": "giffps", "max_frames": "n_frames", "method": "reduction_method"}


def _style(style: dict, giffps, n_frames) -> Style:
    """The ``Style`` of ``loss_landscape_anim``'s look arguments, checked once (its fit to the picture: ``run_job``)."""
    taken = sorted(set(style) & {"fps", "max_frames"})
    if taken:
        raise TypeError(
            f"loss_landscape_anim() got unexpected keyword argument(s) {quoted(taken)}; "
            "frames per second are giffps= and the most frames n_frames="
        )
    return Style.of({**style, "fps": giffps, "max_frames": n_frames}, _NAMES, where="loss_landscape_anim")
