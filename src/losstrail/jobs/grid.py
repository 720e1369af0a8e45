"""The surface of a saved run as a job: in chunks saved as they finish, across processes if launched so.

``compute_surface(run_dir)`` (and ``losstrail surface RUN_DIR``) evaluates the run's grid in
chunks of grid points. Each finished chunk is written to ``run_dir/surface.parts/`` at once,
so a computation that is killed and started again with the same command computes only the
chunks that are missing. Under ``torchrun`` (or any initialized ``torch.distributed`` group:
gloo on CPU, NCCL on GPU) the missing chunks are dealt out to the ranks round by round, rank
0 gathers each round's results, writes them and, at the end, the surface.

The job holds the run directory's writer lock (rank 0), checks every file it reads against
``run.json`` and, at the end, moves the new ``surface.npz`` in and records it (its digest and
the grid's resolution) in ``run.json``, written last.

Resuming heals: ``surface.parts/grid.json`` says which grid the chunks belong to; when it is
missing or damaged, or names another grid, the chunks are discarded; a chunk that cannot be read
or holds arrays of the wrong names or lengths is named in a warning and computed again, alone.
The chunks' folder, like every file of the run directory, is read and written through ``RunDir``
(``store.rundir``): never through a link, each file checked against ``run.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from losstrail.store.rundir import RunDir
from losstrail.values.plane import Plane
from losstrail.values.surface import Surface
from losstrail.values.trajectory import Trajectory

__all__ = ["compute_surface"]


def _grid_key(plane, xs: np.ndarray, ys: np.ndarray, chunk_points: int, subset, seed) -> str:
    """A fingerprint of what the parts belong to: parts of another grid are never mixed in."""
    digest = hashlib.sha256()
    for array in (plane.origin, plane.u, plane.v, xs, ys):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([chunk_points, subset, seed]).encode())
    return digest.hexdigest()[:16]


def _model_and_data(run: RunDir, model, data):
    """The run's model (with its saved weights) and data: given, or built again from the run's recipe."""
    from losstrail.builtin.data import make_datamodule
    from losstrail.builtin.nets import make_model

    run_dir, settings = run.path, run.settings
    if data is None:
        name, recipe = _recipe(run_dir, settings, "data")
        if recipe.get("data_dir") is not None:  # a folder a run.json names is read, never downloaded into
            recipe["download"] = False
        data = make_datamodule(name, **recipe)
    if model is None:
        name, recipe = _recipe(run_dir, settings, "model")
        model = make_model(name, data, **recipe)
        run.load_weights(model)
    return model, data


def _recipe(run_dir: Path, settings: dict, kind: str) -> tuple[str, dict]:
    """``(name, keyword arguments)`` that build the run's ``kind`` ('model' or 'data') again."""
    recipe = dict(settings.get(f"{kind}_recipe") or {})
    if "name" not in recipe:
        raise ValueError(
            f"the run in {str(run_dir)!r} has {kind} losstrail cannot build again (not a built-in one); pass it: "
            "compute_surface(run_dir, model=model, data=data)"
        )
    return recipe.pop("name"), recipe


def _distributed():
    """``(rank, world_size)`` of the initialized process group, or ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _start_group_if_launched() -> bool:
    """Join the process group that ``torchrun`` describes in the environment; True if this call started it."""
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def compute_surface(
    run_dir: str | os.PathLike,
    model=None,
    data=None,
    *,
    resolution: int | tuple[int, int] | None = None,
    chunk_points: int = 1000,
    force: bool = False,
    device: str | None = None,
    autocast: bool = False,
    grid: str = "full",
    mode: str = "auto",
    quiet: bool = False,
):
    """Compute (or finish) the loss surface of a saved run and write ``run_dir/surface.npz``.

    Args:
        run_dir: a run directory with ``plane.npz`` and ``trajectory.npz`` (``losstrail run``
            or ``loss_landscape_anim`` make one).
        model, data: default: built again from the run's recipe (built-in models and data).
        resolution: grid points per axis; default the run's own.
        chunk_points: grid points per saved chunk (default 1000).
        force: recompute a finished surface (and discard saved chunks).
        device: where to evaluate; default CUDA (this rank's GPU) when present, else CPU.
        autocast: mixed precision (see ``loss_surface``).
        mode: how grid points run (see ``loss_surface``); ``'inplace'`` sets each point in the
            model's own tensors on each rank's device (the model is moved there first).
        grid: ``'full'``, the only kind this job computes: every point exact. A run whose
            surface is adaptive (``losstrail run --grid adaptive``) is upgraded to a full grid.
        quiet: no progress bar.

    Returns:
        The ``Surface`` on rank 0 (and on a single process); ``None`` on other ranks.
    """
    run_dir = Path(run_dir)
    if not RunDir(run_dir).has(Plane):  # a link or FIFO in its place is named when it is read
        raise FileNotFoundError(
            f"{str(run_dir)!r} has no plane.npz, so there is no grid to compute; make the run and its plane first "
            "with `losstrail run` (or loss_landscape_anim)"
        )
    if grid != "full":
        raise ValueError(
            f"grid={grid!r}: the resumable grid job computes full grids only; adaptive grids are made by "
            "`losstrail run --grid adaptive` (or loss_surface(..., grid='adaptive'))"
        )
    if isinstance(chunk_points, bool) or not isinstance(chunk_points, int) or chunk_points < 1:
        raise ValueError(f"chunk_points={chunk_points!r} must be a positive number of grid points, e.g. 1000")
    from losstrail._checks import check_device, check_resolution

    if resolution is not None:
        resolution = check_resolution(resolution)
    check_device(device)
    from losstrail._registry import check_choice
    from losstrail.evaluation.evaluator import MODES

    check_choice("mode", mode, MODES)
    run = RunDir.open(run_dir, "run_dir")  # run.json read and checked once, for the whole job
    run.grid_parts()  # never a link that would take the chunks (and their removal) elsewhere
    leader = int(os.environ.get("RANK", "0")) == 0
    if leader:
        RunDir.writable(run_dir, "run_dir")
    with run.lock() if leader else contextlib.nullcontext():
        return _compute(run, model, data, resolution, chunk_points, force, device, autocast, quiet, mode)


def _compute(run: RunDir, model, data, resolution, chunk_points, force, device, autocast, quiet, mode="auto"):
    from losstrail.evaluation.evaluator import Evaluator
    from losstrail.evaluation.layout import selected_names

    started = _start_group_if_launched()
    rank, world = _distributed()
    settings, parts = run.settings, run.grid_parts()
    try:
        unfinished = parts.unfinished()  # a job that was stopped: go on with it
        if run.has(Surface) and not (force or unfinished) and resolution is None:
            saved = run.load(Surface)
            if not saved.adaptive:
                if rank == 0 and not quiet:
                    print(f"{run.path / 'surface.npz'} is already computed; pass --force to compute it again")
                return saved if rank == 0 else None
        plane, xs, ys, resolution = _plane_and_axes(run, resolution)
        model, data = _model_and_data(run, model, data)
        if device is None:
            device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if mode == "inplace":
            model = model.to(device)
        key = _grid_key(plane, xs, ys, chunk_points, settings.get("subset"), settings.get("seed"))
        n_chunks = -(-len(xs) * len(ys) // chunk_points)
        if rank == 0:
            parts.start(key, n_chunks, chunk_points, force)
            parts.drop_damaged(_chunk_rows(len(xs) * len(ys), n_chunks, chunk_points), _keys(settings))
        _barrier(world)
        data, subset = _grid_data(data, settings)
        evaluator = Evaluator(
            model, data, names=selected_names(model, plane.names, plane.n_params, "plane"), device=device,
            bn_batches=int(settings.get("bn_batches") or 0), spread=subset is not None, autocast=autocast, mode=mode,
        )  # fmt: skip
        _evaluate_missing(parts, evaluator, plane, xs, ys, n_chunks, chunk_points, rank, world, quiet)
        if rank != 0:
            _barrier(world)
            return None
        surface = _join_parts(run, xs, ys, n_chunks, chunk_points, resolution)
        _barrier(world)
        return surface
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _plane_and_axes(run: RunDir, resolution):
    """The run's plane and the grid axes ``(plane, xs, ys, resolution)`` at ``resolution`` (default the run's)."""
    from losstrail.evaluation.grids import plane_grid
    from losstrail.planes.projection import project

    settings = run.settings
    plane = run.load(Plane)
    trajectory = run.load(Trajectory).finite_prefix()
    run.check_together(trajectory, plane, None)
    resolution = resolution if resolution is not None else settings.get("resolution", 100)
    resolution = tuple(resolution) if isinstance(resolution, list) else resolution
    xrange, yrange = settings.get("xrange"), settings.get("yrange")
    xs, ys = plane_grid(plane, project(plane, trajectory).xy, resolution, xrange=xrange, yrange=yrange)
    return plane, xs, ys, resolution


def _chunk_rows(n_points: int, n_chunks: int, chunk_points: int) -> list[int]:
    """The number of grid points in each chunk (the last may hold fewer)."""
    return [min(chunk_points, n_points - c * chunk_points) for c in range(n_chunks)]


def _keys(settings: dict) -> set[str]:
    """The arrays a chunk of this run's grid holds: the standard error too when the grid is on a subset."""
    return {"loss", "accuracy"} | ({"loss_se"} if settings.get("subset") is not None else set())


def _grid_data(data, settings: dict):
    """``(data, subset)``: the examples the run's own grid was evaluated on."""
    from losstrail.evaluation.batches import take_subset

    subset = settings.get("subset")
    if subset is not None:
        data = take_subset(data, subset, settings.get("subset_seed", settings.get("seed") or 0))
    return data, subset


def _evaluate_missing(parts, evaluator, plane, xs, ys, n_chunks, chunk_points, rank, world, quiet) -> None:
    """Evaluate the chunks not yet in ``parts`` (a ``GridParts``), one per rank per round; rank 0 writes each as it
    arrives."""
    from losstrail._progress import bar
    from losstrail.evaluation.grids import evaluate_grid

    n_points = len(xs) * len(ys)
    missing = [c for c in range(n_chunks) if not parts.has(c)]
    with bar(len(missing), "grid chunks", quiet or rank != 0, unit="chunk") as progress:
        for round_start in range(0, len(missing), world):
            mine = missing[round_start : round_start + world]
            result = None
            if rank < len(mine):
                c = mine[rank]
                rows = np.arange(c * chunk_points, min((c + 1) * chunk_points, n_points))
                result = (c, evaluate_grid(evaluator, plane, xs, ys, only=rows))
            for c, part in _gather(result, world):
                if rank == 0:
                    parts.write(c, part)
            progress.update(len(mine))


def _join_parts(run: RunDir, xs, ys, n_chunks: int, chunk_points: int, resolution):
    """The full surface from its chunks, saved and recorded in ``run.json``; the chunks removed."""
    settings, parts = run.settings, run.grid_parts()
    chunks = parts.read_all(_chunk_rows(len(xs) * len(ys), n_chunks, chunk_points), _keys(settings))
    grid = (len(ys), len(xs))
    joined = {k: np.concatenate([chunk[k] for chunk in chunks]).reshape(grid) for k in chunks[0]}
    surface = Surface(xs=xs, ys=ys, **joined)
    recorded = {key: value for key, value in settings.items() if key != "tol"}
    recorded.update(resolution=list(resolution) if isinstance(resolution, tuple) else resolution, grid="full")
    with run.stage() as stage:
        stage.save(surface)
        stage.update(recorded)
    parts.remove()
    return surface


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather(result, world: int) -> list:
    """Every rank's ``(chunk, arrays)`` of this round, on every rank (None entries dropped)."""
    if world == 1:
        return [result] if result is not None else []
    import torch.distributed as dist

    everyone: list = [None] * world
    dist.all_gather_object(everyone, result)
    return [r for r in everyone if r is not None]
