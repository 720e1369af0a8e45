"""The ``losstrail`` command: parses options and calls the public API, nothing more.

Only Typer and the registry of names are imported at start-up, so ``losstrail --help``
answers at once; the heavy modules load inside the commands.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from losstrail._registry import DATASETS, DIRECTIONS, MODELS, OPTIMIZERS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Record how a neural network trains and animate its path across the loss landscape.",
)


def _names(names) -> str:
    return ", ".join(names)


@contextlib.contextmanager
def _user_errors():
    """Show a bad argument as one line and exit with status 2, instead of a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, TypeError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def run(
    dataset: str = typer.Option("spirals", help=f"Dataset: {_names(DATASETS)}."),
    model: str = typer.Option("mlp", help=f"Model: {_names(MODELS)}."),
    optimizer: str = typer.Option("adam", help=f"Optimizer: {_names(OPTIMIZERS)}."),
    lr: Optional[float] = typer.Option(None, help="Learning rate [default: 5e-3 for the MLP]."),
    epochs: int = typer.Option(300, help="Epochs of training."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per step [default: the whole dataset]."),
    directions: str = typer.Option("pca", help=f"Plane directions: {_names(DIRECTIONS)}."),
    resolution: int = typer.Option(100, help="Grid points per axis."),
    fps: float = typer.Option(15, help="Frames per second of the animation."),
    frames: int = typer.Option(300, help="Most frames in the animation."),
    seed: Optional[int] = typer.Option(None, help="Seed for weights, data order and random directions."),
    out: Path = typer.Option(Path("sample.gif"), help="Output file; the extension picks the format."),
    run_dir: Path = typer.Option(Path("checkpoints"), help="Run directory for weights, path, plane and grid."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Train a model, slice the loss landscape and animate the optimizer's path."""
    with _user_errors():
        from losstrail._registry import check_choice

        check_choice("dataset", dataset, DATASETS)
        check_choice("model", model, MODELS)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"--batch-size={batch_size} must be a positive integer, or left out for the whole dataset")
        from losstrail.api import loss_landscape_anim
        from losstrail.data import make_datamodule
        from losstrail.models import make_model
        from losstrail.train import check_optimizer

        optimizer = check_optimizer(optimizer)
        if seed is not None:  # the model is built here, so its initial weights are seeded here
            import torch

            torch.manual_seed(seed)
        datamodule = make_datamodule(dataset, batch_size=batch_size)
        net = make_model(model, datamodule, optimizer=optimizer, learning_rate=5e-3 if lr is None else lr)
        loss_landscape_anim(
            n_epochs=epochs,
            datamodule=datamodule,
            model=net,
            optimizer=optimizer,
            reduction_method=directions,
            model_dirpath=run_dir,
            output_filename=out,
            giffps=fps,
            n_frames=frames,
            seed=seed,
            resolution=resolution,
            quiet=quiet,
        )
    typer.echo(f"wrote {out} (run saved in {run_dir})")


@app.command()
def render(
    run_dir: Path = typer.Argument(..., help="A run directory written by `losstrail run`."),
    out: Path = typer.Option(Path("sample.gif"), help="Output file; the extension picks the format."),
    fps: float = typer.Option(15, help="Frames per second of the animation."),
    frames: int = typer.Option(300, help="Most frames in the animation."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Draw a saved run again, without training or evaluating anything."""
    with _user_errors():
        from losstrail.api import render as render_run

        render_run(run_dir, out, fps=fps, max_frames=frames, quiet=quiet)
    typer.echo(f"wrote {out}")


def main() -> None:
    app()
