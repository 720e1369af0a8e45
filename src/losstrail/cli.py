"""The ``losstrail`` command: parses options and calls the public API, nothing more.

Only Typer and the registry of names are imported at start-up, so ``losstrail --help``
answers at once; the heavy modules load inside the commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import inspect
import math
import sys
from pathlib import Path
from typing import Optional

import typer

from losstrail._registry import (
    DATASETS,
    EXPORT_FORMATS,
    FORMATS,
    HEIGHT_FORMATS,
    MODELS,
    OPTIMIZERS,
    PATH_DIRECTIONS,
    PATH_FORMATS,
    READ_FORMATS,
)
from losstrail.values.specs import Style

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Record how a neural network trains and animate its path across the loss landscape.",
)


def _names(names) -> str:
    return ", ".join(names)


DECISION = typer.Option(False, "--decision", help="Add a panel with the decision regions (2-D datasets).")
PARAMS = typer.Option("trainable", help="Parameters to span: trainable, all, or name patterns like 'layers.0.*'.")

# The look and format of the output: one option per field of ``Style`` (its defaults), for every
# command that draws. ``--linear`` is ``log_scale=False``, ``--frames`` is ``max_frames``.
_LOOK = Style()
STYLE_OPTIONS = {
    "format": (Optional[str], typer.Option(
        None, "--format", help=f"Output format: {_names(FORMATS)}.", show_default="from --out's extension")),
    "view": (str, typer.Option(_LOOK.view, help="2d (contour) or 3d (shaded surface with the path on it).")),
    "rotate": (bool, typer.Option(_LOOK.rotate, "--rotate", help="3d: turn the camera slowly.")),
    "cmap": (str, typer.Option(_LOOK.cmap, help="Matplotlib colormap of the landscape.")),
    "levels": (int, typer.Option(_LOOK.levels, help="Contour levels (2d).")),
    "linear": (bool, typer.Option(not _LOOK.log_scale, "--linear", help="Colour by loss instead of log loss.")),
    "size": (Optional[str], typer.Option(None, help="Figure size in pixels, WxH (e.g. 1280x600).")),
    "dpi": (int, typer.Option(_LOOK.dpi, help="Dots per inch (gif, mp4, png, pdf, svg).")),
    "title": (Optional[str], typer.Option(None, help="Figure title.", show_default="the run's")),
    "path_color": (str, typer.Option(_LOOK.path_color, help="Colour of the path (one run).")),
    "every": (Optional[int], typer.Option(None, help="Draw only every k-th recorded step.")),
    "step": (Optional[int], typer.Option(
        None, help="For a still (png/pdf/svg): the step it shows.", show_default="last")),
    "fps": (float, typer.Option(_LOOK.fps, help="Frames per second of the animation.")),
    "frames": (int, typer.Option(_LOOK.max_frames, help="Most frames in the animation.")),
    "layout": (str, typer.Option(_LOOK.layout, help="For a comparison: overlay or grid.")),
    "timeline": (str, typer.Option(_LOOK.timeline, help="For a comparison: auto, step or fraction.")),
}  # fmt: skip


def style_options(*, without: tuple[str, ...] = ()):
    """Give a command the options of ``STYLE_OPTIONS`` (less ``without``); it receives them as ``style=Style``."""

    def decorate(command):
        chosen = {name: spec for name, spec in STYLE_OPTIONS.items() if name not in without}
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "style"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for n, (kind, option) in chosen.items()]  # fmt: skip

        @functools.wraps(command)
        def with_style(**values):
            look = {name: values.pop(name) for name in chosen}
            with _user_errors():
                style = _style(look)
            return command(style=style, **values)

        with_style.__signature__ = signature.replace(parameters=own + added)
        hints = {k: v for k, v in command.__annotations__.items() if k != "style"}
        with_style.__annotations__ = {**hints, **{n: kind for n, (kind, _) in chosen.items()}}
        return with_style

    return decorate


def _style(values: dict) -> Style:
    """The ``Style`` of a command's look options: those set away from their defaults checked, once, by their flags."""
    values = dict(values)
    values["log_scale"] = not values.pop("linear", not _LOOK.log_scale)
    values["max_frames"] = values.pop("frames", _LOOK.max_frames)
    size = values.get("size")
    if size is not None:
        width, height = _resolution(size) if "x" in size.lower() else (None, None)
        if width is None:
            raise ValueError(f"--size={size!r} must be WxH in pixels, e.g. 1280x600")
        values["size"] = (width, height)
    given = {name: value for name, value in values.items() if value != getattr(_LOOK, name)}  # the rest: defaults
    return Style.of(given, _STYLE_FLAGS)


# The flags that set the style's fields: errors name them as typed.
_STYLE_FLAGS = {
    **{f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(Style)},
    "max_frames": "--frames",
    "log_scale": "--linear",
}

# The API's argument names, as the command line spells them; errors and warnings are shown in flags.
_FLAGS = {
    "reduction_method": "--directions",
    "custom_directions": "--custom-directions",
    "n_epochs": "--epochs",
    "giffps": "--fps",
    "n_frames": "--frames",
    "max_frames": "--frames",
    "learning_rate": "--lr",
    "learning_rates": "--lrs",
    "batch_sizes": "--batch-sizes",
    "model_dirpath": "--run-dir",
    "output_filename": "--out",
    "hessian_examples": "--hessian-examples",
    "bn_batches": "--bn-batches",
    "negative_curvature": "--negative-curvature",
    "keep_biases": "--keep-biases",
    "path_color": "--path-color",
    "log_scale": "--linear",
    "chunk_points": "--chunk-points",
    "num_hidden_layers": "--hidden-layers",
}
# Short names that are also plain words: translated only where they read ``name=value``.
_FLAGS_BEFORE_EQUALS = ("epochs", "fps", "out", "run_dir", "resolution", "centre", "xrange", "yrange", "subset",
                        "every", "step", "view", "size", "dpi", "levels", "cmap", "format", "layout", "optimizer",
                        "optimizers", "dataset", "model", "seed", "timeline", "device", "rotate", "title", "tol",
                        "grid", "budget", "params", "hidden_dim", "batch_size", "key", "to", "path", "directions",
                        "zmax", "log", "ascii", "force", "autocast")  # fmt: skip


def cli_words(message: str) -> str:
    """``message`` with the API's argument names replaced by the command line's flags.

    >>> cli_words("giffps=0 must be a positive number of frames per second, e.g. giffps=15")
    '--fps=0 must be a positive number of frames per second, e.g. --fps=15'
    >>> cli_words("reduction_method='pcaa' is not known")
    "--directions='pcaa' is not known"
    """
    import re

    message = re.sub(
        r"custom_directions=\(u, v\) with u and v NumPy arrays of shape \((\d+),\)",
        r"--custom-directions FILE.npz holding arrays u and v of shape (\1,) (or FILE.npy of shape (2, \1))",
        message,
    )
    names = "|".join(sorted(_FLAGS, key=len, reverse=True))
    # Not a key of a file's recipe ("run.json has model_recipe hidden_dim=..."): that names the file's key.
    free = r"(?<![\w-])(?<!recipe )"
    message = re.sub(rf"{free}({names})\b", lambda m: _FLAGS[m.group(1)], message)
    short = "|".join(sorted(_FLAGS_BEFORE_EQUALS, key=len, reverse=True))
    return re.sub(rf"{free}({short})=", lambda m: "--" + m.group(1).replace("_", "-") + "=", message)


def cli_note_words(message: str) -> str:
    """A note's options as flags: ``grid='adaptive'`` -> ``--grid adaptive``, ``subset=500`` -> ``--subset 500``.

    >>> cli_note_words("10,000 points: about 2 min; with grid='adaptive' about 9 s; subset=500 about 40 s")
    '10,000 points: about 2 min; with --grid adaptive about 9 s; --subset 500 about 40 s'
    """
    import re

    options = "grid|subset|tol|budget|resolution|bn_batches|mode"
    spelled = re.sub(rf"(?<![\w-])({options})=('?)([^',;\s)]+)\2", lambda m: f"--{m.group(1)} {m.group(3)}", message)
    return cli_words(spelled).replace("--bn_batches", "--bn-batches")


@contextlib.contextmanager
def _user_errors(positional: dict[str, str] | None = None):
    """Show a bad argument as one line in the command line's words and exit with status 2, not a traceback.

    Warnings print as one plain line too (``Warning: ...``), without a file name or source line.
    ``positional`` names the command's positional arguments as its usage line does
    (``{"run_dir": "RUN_DIR"}``), where the API's name would read like a flag.
    """
    import re
    import warnings

    def words(text: str) -> str:
        for name, shown in (positional or {}).items():
            text = re.sub(rf"(?<![\w-]){name}=", f"{shown}=", text)
        return cli_words(text)

    def one_line(message, category, filename, lineno, file=None, line=None):
        text = words(" ".join(str(message).split()))
        typer.echo(f"Warning: {text}", err=True)

    from losstrail._progress import spoken

    shown = warnings.showwarning
    warnings.showwarning = one_line
    try:
        with spoken(cli_note_words):
            yield
    except (ValueError, FileNotFoundError, TypeError) as err:
        typer.echo(f"Error: {words(str(err))}", err=True)
        raise typer.Exit(code=2) from None
    except OSError as err:  # the environment: a full disk, a read-only folder, a busy run directory
        from losstrail._files import describe_os_error

        typer.echo(f"Error: {words(describe_os_error(err))}", err=True)
        raise typer.Exit(code=2) from None
    finally:
        warnings.showwarning = shown


def _custom_directions(path: Optional[Path]):
    """``(u, v)`` from a ``.npy`` file of shape (2, P) or a ``.npz`` file holding ``u`` and ``v``."""
    if path is None:
        return None
    import numpy as np

    fix = "pass a .npy file of shape (2, P) or a .npz file with arrays u and v, each of shape (P,)"
    if not path.is_file():
        raise FileNotFoundError(f"--custom-directions={str(path)!r} is not a file; {fix}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"--custom-directions={str(path)!r} cannot be read as NumPy data ({err}); {fix}") from None
    if isinstance(loaded, np.ndarray):
        if loaded.ndim != 2 or loaded.shape[0] != 2:
            raise ValueError(f"--custom-directions={str(path)!r} holds an array of shape {loaded.shape}; {fix}")
        return loaded[0], loaded[1]
    with loaded:
        if not {"u", "v"} <= set(loaded.files):
            raise ValueError(f"--custom-directions={str(path)!r} holds arrays {sorted(loaded.files)}; {fix}")
        return loaded["u"], loaded["v"]


@app.command()
@style_options(without=("layout", "timeline"))
def run(
    dataset: str = typer.Option("spirals", help=f"Dataset: {_names(DATASETS)}."),
    model: str = typer.Option("mlp", help=f"Model: {_names(MODELS)}."),
    hidden_dim: int = typer.Option(50, help="mlp: units in each hidden layer."),
    hidden_layers: int = typer.Option(1, help="mlp: hidden layers."),
    optimizer: str = typer.Option("adam", help=f"Optimizer: {_names(OPTIMIZERS)}."),
    lr: Optional[float] = typer.Option(None, help="Learning rate.", show_default="5e-3 for the MLP"),
    epochs: int = typer.Option(300, help="Epochs of training."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per step.", show_default="the whole dataset"),
    directions: str = typer.Option("pca", help=f"Plane directions: {_names(PATH_DIRECTIONS)}."),
    custom_directions: Optional[Path] = typer.Option(
        None, help="custom directions: a .npy file of shape (2, P) or a .npz file with arrays u and v."
    ),
    resolution: str = typer.Option("100", help="Grid points per axis, or NXxNY (e.g. 120x80)."),
    centre: str = typer.Option("final", help="Plane centre: final, initial, or a recorded step."),
    xrange: Optional[str] = typer.Option(
        None, help="Grid x range LOW,HIGH in plane coordinates.", show_default="fit the path"
    ),
    yrange: Optional[str] = typer.Option(
        None, help="Grid y range LOW,HIGH in plane coordinates.", show_default="fit the path"
    ),
    subset: Optional[int] = typer.Option(None, help="Evaluate on a seeded subset of this many examples."),
    bn_batches: int = typer.Option(0, help="Recompute BatchNorm statistics at each grid point from this many batches."),
    keep_biases: bool = typer.Option(
        False, "--keep-biases", help="filter/layer directions: give biases a direction too."
    ),
    negative_curvature: bool = typer.Option(
        False, "--negative-curvature", help="hessian directions: v along the most negative curvature."
    ),
    hessian_examples: Optional[int] = typer.Option(
        None, help="hessian directions: use a subset of this many examples."
    ),
    faithfulness: bool = typer.Option(True, help="Measure the true and slice loss along the path and plot them."),
    params: str = PARAMS,
    grid: str = typer.Option(
        "adaptive", help="adaptive (exact where the picture needs it, error within --tol) or full (every point exact)."
    ),
    tol: float = typer.Option(0.01, help="adaptive grid: largest relative interpolation error."),
    budget: Optional[str] = typer.Option(
        None, help="Time the grid may take (e.g. 60s, 2min): picks grid, subset, resolution."
    ),
    decision: bool = DECISION,
    seed: int = typer.Option(0, help="Seed for weights, data order and random directions (the same run each time)."),
    out: Path = typer.Option(Path("sample.gif"), help="Output file; the extension picks the format."),
    run_dir: Path = typer.Option(Path("checkpoints"), help="Run directory for weights, path, plane and grid."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    style: Style = Style(),
):
    """Train a model, slice the loss landscape and animate the optimizer's path."""
    with _user_errors():
        from losstrail._checks import check_builtin_run
        from losstrail._registry import check_choice
        from losstrail.values.specs import GridSpec, PlaneSpec, TrainSpec

        check_choice("dataset", dataset, DATASETS)  # once, before torch loads: the job builds them as checked
        check_choice("model", model, MODELS)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"--batch-size={batch_size} must be a positive integer, or left out for the whole dataset")
        if lr is not None and not (math.isfinite(lr) and lr > 0):  # the model's, as --hidden-dim: no spec's setting
            raise ValueError(f"--lr={lr:g} must be a positive learning rate, e.g. --lr 0.005")
        train = TrainSpec.of({"n_epochs": epochs, "optimizer": optimizer, "seed": seed, "params": _params(params)},
                             _RUN_FLAGS)  # fmt: skip
        plane = PlaneSpec.of(
            {"method": directions, "centre": _centre(centre), "keep_biases": keep_biases, "seed": seed,
             "negative_curvature": negative_curvature, "hessian_examples": hessian_examples}, _RUN_FLAGS,
        )  # fmt: skip
        grid_spec = GridSpec.of(
            {"resolution": _resolution(resolution), "xrange": _pair("--xrange", xrange),
             "yrange": _pair("--yrange", yrange), "subset": subset, "bn_batches": bn_batches, "grid": grid, "tol": tol,
             "seed": seed}, _RUN_FLAGS,
        )  # fmt: skip
        check_builtin_run(dataset, model, hidden_dim=hidden_dim, num_hidden_layers=hidden_layers, batch_size=batch_size,
                          n_epochs=epochs, max_frames=style.max_frames, decision=decision, storage=run_dir)  # fmt: skip
        from losstrail.builtin.data import built_datamodule
        from losstrail.builtin.nets import built_model
        from losstrail.jobs.run import Job, run_job

        def net(datamodule):  # built by the job, once the seed is set: its initial weights are seeded
            return built_model(model, datamodule, optimizer=train.optimizer, learning_rate=5e-3 if lr is None else lr,
                               hidden_dim=hidden_dim, num_hidden_layers=hidden_layers)  # fmt: skip

        given = _custom_directions(custom_directions)  # read and checked; with another plane the job names the file
        given = given if given is None or plane.method == "custom" else custom_directions
        job = Job(
            train, plane, grid_spec, style, run_dir=run_dir, output=out,
            make_data=functools.partial(built_datamodule, dataset, batch_size=batch_size), make_model=net,
            custom_directions=given, budget=budget, faithfulness=faithfulness, decision=decision, quiet=quiet,
            names=_RUN_FLAGS, inputs=(("--custom-directions", custom_directions),),
        )  # fmt: skip
        run_job(job)
    typer.echo(f"wrote {out} (run saved in {run_dir})")


# The flags of `run` by the settings they give: errors name them as typed.
_RUN_FLAGS = {
    **_STYLE_FLAGS,
    **{name: "--" + name.replace("_", "-") for name in ("optimizer", "seed", "params", "centre", "keep_biases",
                                                        "negative_curvature", "hessian_examples", "resolution",
                                                        "xrange", "yrange", "subset", "bn_batches", "grid", "tol")},
    "n_epochs": "--epochs", "method": "--directions", "output_filename": "--out", "model_dirpath": "--run-dir",
}  # fmt: skip


def _resolution(text: str):
    """``'100'`` -> 100, ``'120x80'`` -> (120, 80)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise ValueError(f"--resolution={text!r} must be a count such as 100, or NXxNY such as 120x80")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _params(text: str):
    """``--params``: trainable, all, or comma-separated name patterns."""
    text = text.strip()
    if text in ("trainable", "all"):
        return text
    return [p.strip() for p in text.split(",") if p.strip()]


def _centre(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def _pair(option: str, text: Optional[str]):
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{option}={text!r} must be LOW,HIGH, e.g. {option} -1,2") from None
    return low, high


@app.command()
@style_options(without=("rotate", "path_color", "every", "step"))
def compare(
    optimizers: str = typer.Option("adam,sgd,adagrad,rmsprop", help="Comma-separated optimizers, one run each."),
    lrs: Optional[str] = typer.Option(None, help="Comma-separated learning rates (one, or one per run)."),
    batch_sizes: Optional[str] = typer.Option(None, help="Comma-separated batch sizes (one, or one per run)."),
    epochs: int = typer.Option(300, help="Epochs of training per run."),
    directions: str = typer.Option("pca", help="Shared plane: pca (joint), random, filter, layer, hessian."),
    centre: Optional[str] = typer.Option(None, help="Centre: a run name, or mean.", show_default="the first run"),
    resolution: str = typer.Option("100", help="Grid points per axis, or NXxNY."),
    seed: int = typer.Option(0, help="Seed for the shared initial weights and data order."),
    out: Path = typer.Option(Path("compare.gif"), help="Output file."),
    run_dir: Path = typer.Option(Path("comparison"), help="Comparison directory (each run, shared plane and grid)."),
    params: str = PARAMS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    style: Style = Style(),
):
    """Train several optimizers from the same weights and animate them on one shared plane."""
    with _user_errors():
        from losstrail.comparison import compare as compare_runs

        def listed(text, kind):
            if text is None:
                return None
            try:
                values = [kind(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"{text!r} must be comma-separated numbers, e.g. 0.01,0.001") from None
            return values if len(values) > 1 else values[0]

        rates = listed(lrs, float)
        if rates is not None and not all(
            math.isfinite(r) and r > 0 for r in (rates if isinstance(rates, list) else [rates])
        ):
            raise ValueError(f"--lrs={lrs} must be positive learning rates, e.g. --lrs 0.01,0.001")

        compare_runs(
            optimizers=[o.strip() for o in optimizers.split(",") if o.strip()],
            learning_rates=rates,
            batch_sizes=listed(batch_sizes, int),
            epochs=epochs,
            reduction_method=directions,
            centre=centre,
            resolution=_resolution(resolution),
            seed=seed,
            out=out,
            run_dir=run_dir,
            params=_params(params),
            quiet=quiet,
            style=style,  # built once from the flags, by their names: taken as it is
        )
    typer.echo(f"wrote {out} (comparison saved in {run_dir})")


@app.command()
@style_options()
def render(
    run_dir: Path = typer.Argument(..., help="A run directory written by `losstrail run` (or `compare`)."),
    out: Path = typer.Option(Path("sample.gif"), help="Output file; the extension picks the format."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    style: Style = Style(),
):
    """Draw a saved run again, in any format, without training or evaluating anything."""
    with _user_errors():
        from losstrail.renderers.redraw import render as render_run

        render_run(run_dir, out, style=style, quiet=quiet)
    typer.echo(f"wrote {out}")


@app.command()
def surface(
    run_dir: Path = typer.Argument(..., help="A run directory with a plane (made by `losstrail run`)."),
    force: bool = typer.Option(False, "--force", help="Recompute a finished surface."),
    resolution: Optional[str] = typer.Option(None, help="Grid points per axis, or NXxNY.", show_default="the run's"),
    chunk_points: int = typer.Option(1000, help="Grid points per saved chunk."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda.", show_default="this rank's GPU when there is one"),
    autocast: bool = typer.Option(False, "--autocast", help="Mixed precision (float16 on CUDA, bfloat16 on CPU)."),
    grid: str = typer.Option("full", help="full: every point exact (upgrades a run made with --grid adaptive)."),
    mode: str = typer.Option("auto", help="auto, vmap, loop or inplace (each point set in the model's own tensors)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Compute a run's loss surface in resumable chunks; under torchrun, split across the ranks."""
    with _user_errors():
        from losstrail._checks import check_resolution

        if resolution is not None:
            check_resolution(_resolution(resolution))  # before torch is imported
        from losstrail.jobs.grid import compute_surface
        from losstrail.store.rundir import RunDir
        from losstrail.values.surface import Surface

        before = RunDir(run_dir).stamp(Surface)
        done = compute_surface(
            run_dir,
            resolution=None if resolution is None else _resolution(resolution),
            chunk_points=chunk_points,
            force=force,
            device=device,
            autocast=autocast,
            grid=grid,
            mode=mode,
            quiet=quiet,
        )
    if done is not None and RunDir(run_dir).stamp(Surface) != before:  # not when it was computed already
        typer.echo(f"wrote {run_dir / 'surface.npz'}")


@contextlib.contextmanager
def _needs_extra():
    """A missing optional dependency, like a bad argument: one line naming the extra to install, status 2."""
    try:
        yield
    except ModuleNotFoundError as err:
        if "pip install" not in str(err):
            raise
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `losstrail run`."),
    to: Path = typer.Option(
        ..., "--to", help=f"Surface file; its extension picks the format: {_names(EXPORT_FORMATS)}."
    ),
    path: Optional[Path] = typer.Option(
        None,
        "--path",
        "--path-vtp",
        help=f"Also write the path: {_names(PATH_FORMATS)} (h5: Li et al.'s projection file; vtp: a polyline).",
    ),
    directions: Optional[Path] = typer.Option(
        None, "--directions", help="Also write the plane as Li et al.'s direction file (.h5)."
    ),
    log: bool = typer.Option(
        False, "--log", help=f"{'/'.join(HEIGHT_FORMATS)}: height log(loss + 0.1), as h52vtp.py --log."
    ),
    zmax: Optional[float] = typer.Option(
        None, help=f"{'/'.join(HEIGHT_FORMATS)}: clip the loss at this value (before --log)."
    ),
    ascii: bool = typer.Option(False, "--ascii", help="vtp/ply: text instead of binary."),
):
    """Write a run's surface (and path, directions) for Li et al.'s scripts, ParaView, Blender or a spreadsheet."""
    with _user_errors({"run_dir": "RUN_DIR"}), _needs_extra():
        from losstrail.store.formats import export as export_run

        export_run(run_dir, to, path=path, directions=directions, log=log, zmax=zmax, ascii=ascii)
    typer.echo(f"wrote {', '.join(str(p) for p in (to, path, directions) if p is not None)}")


@app.command("import")
@style_options(without=("layout", "timeline"))
def import_(
    surface: Path = typer.Argument(
        ..., help=f"A surface file: {_names(READ_FORMATS)} (Li et al.'s .h5, or a fork's; a table losstrail wrote)."
    ),
    path: Optional[Path] = typer.Option(None, "--path", help="Li et al.'s projection file (.h5) of the path to draw."),
    directions: Optional[Path] = typer.Option(None, "--directions", help="Li et al.'s direction file (.h5)."),
    key: Optional[str] = typer.Option(None, help="The loss array in the .h5 [default: train_loss, or a fork's]."),
    out: Path = typer.Option(Path("surface.gif"), help="Output file; the extension picks the format."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    style: Style = Style(),
):
    """Draw or animate a surface made elsewhere (Li et al.'s plot_surface.py), with its path when given."""
    with _user_errors(), _needs_extra():
        from losstrail.renderers.redraw import render_surface

        render_surface(surface, out, path=path, directions=directions, key=key, style=style, quiet=quiet)
    typer.echo(f"wrote {out}")


@app.command("path")
@style_options(without=("layout", "timeline", "decision"))
def path_(
    folder: Path = typer.Argument(..., metavar="DIR", help="A Hugging Face Trainer's output folder (checkpoint-N/)."),
    data: Optional[Path] = typer.Option(None, help="A .pt/.npz file of one dict batch (input_ids, labels, ...)."),
    directions: str = typer.Option("pca", help="Plane directions: pca, random, interpolation, ..."),
    resolution: str = typer.Option("40", help="Grid points per axis, N or NxM."),
    out: Path = typer.Option(Path("path.gif"), help="Output file; the extension picks the format."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    style: Style = Style(),
):
    """Draw the path of a folder of Hugging Face checkpoints; the model is built from its config.json."""
    with _user_errors({"source": "DIR", "data": "--data"}), _needs_extra():
        from losstrail.jobs.checkpoints import draw_checkpoint_path

        size = _resolution(resolution)
        draw_checkpoint_path(folder, out, data=data, method=directions, resolution=size, style=style, quiet=quiet)
    typer.echo(f"wrote {out}")


def main() -> None:
    import signal

    # `kill` (SIGTERM) unwinds like Ctrl-C: temporary files and staged runs are removed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        app()
    finally:
        # The process ends here. Interpreter shutdown runs the garbage collector over every
        # object torch and Lightning made at import (about 1.5 s measured here, even after a
        # bare `import lightning.pytorch`); frozen objects are skipped, and none was collectable.
        gc.freeze()
