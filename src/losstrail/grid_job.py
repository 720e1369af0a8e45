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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from losstrail._files import atomic_path, check_writable_dir
from losstrail._rundir import check_together, require_finished, update, writer_lock

__all__ = ["compute_surface"]

PARTS = "surface.parts"


def _grid_key(plane, xs: np.ndarray, ys: np.ndarray, chunk_points: int, subset, seed) -> str:
    """A fingerprint of what the parts belong to: parts of another grid are never mixed in."""
    digest = hashlib.sha256()
    for array in (plane.origin, plane.u, plane.v, xs, ys):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([chunk_points, subset, seed]).encode())
    return digest.hexdigest()[:16]


def _model_and_data(run_dir: Path, settings: dict, model, data):
    """The run's model (with its saved weights) and data: given, or built again from the run's recipe."""
    from losstrail.artifacts import load_weights
    from losstrail.data import make_datamodule
    from losstrail.models import make_model

    if data is None:
        name, recipe = _recipe(run_dir, settings, "data")
        data = make_datamodule(name, **recipe)
    if model is None:
        name, recipe = _recipe(run_dir, settings, "model")
        model = make_model(name, data, **recipe)
        load_weights(run_dir / settings.get("model_filename", "model.pt"), model)
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
    if not (run_dir / "plane.npz").is_file():
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
    from losstrail._checks import check_device, check_resolution, check_settings

    if resolution is not None:
        resolution = check_resolution(resolution)
    check_device(device)
    from losstrail._evaluate import MODES
    from losstrail._registry import check_choice

    check_choice("mode", mode, MODES)
    settings = require_finished(run_dir, "run_dir")["settings"]
    check_settings(run_dir, settings)
    leader = int(os.environ.get("RANK", "0")) == 0
    if leader:
        check_writable_dir("run_dir", run_dir)
    with writer_lock(run_dir, "run_dir") if leader else contextlib.nullcontext():
        return _compute(run_dir, settings, model, data, resolution, chunk_points, force, device, autocast, quiet, mode)


def _compute(run_dir, settings, model, data, resolution, chunk_points, force, device, autocast, quiet, mode="auto"):
    from losstrail._evaluate import Evaluator
    from losstrail._functional import selected_names
    from losstrail.artifacts import load_run_value
    from losstrail.landscape import Surface

    started = _start_group_if_launched()
    rank, world = _distributed()
    try:
        unfinished = (run_dir / PARTS / "grid.json").is_file()  # a job that was stopped: go on with it
        if (run_dir / "surface.npz").is_file() and not (force or unfinished) and resolution is None:
            saved = load_run_value(run_dir, Surface)
            if not saved.adaptive:
                if rank == 0 and not quiet:
                    print(f"{run_dir / 'surface.npz'} is already computed; pass --force to compute it again")
                return saved if rank == 0 else None
        plane, xs, ys, resolution = _plane_and_axes(run_dir, settings, resolution)
        model, data = _model_and_data(run_dir, settings, model, data)
        if device is None:
            device = f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if mode == "inplace":
            model = model.to(device)
        key = _grid_key(plane, xs, ys, chunk_points, settings.get("subset"), settings.get("seed"))
        n_chunks = -(-len(xs) * len(ys) // chunk_points)
        if rank == 0:
            _start_parts(run_dir / PARTS, key, n_chunks, chunk_points, force)
        _barrier(world)
        data, subset = _grid_data(data, settings)
        evaluator = Evaluator(
            model, data, names=selected_names(model, plane.names, plane.n_params, "plane"), device=device,
            bn_batches=int(settings.get("bn_batches") or 0), spread=subset is not None, autocast=autocast, mode=mode,
        )  # fmt: skip
        _evaluate_missing(run_dir / PARTS, evaluator, plane, xs, ys, n_chunks, chunk_points, rank, world, quiet)
        if rank != 0:
            _barrier(world)
            return None
        surface = _join_parts(run_dir, settings, xs, ys, n_chunks, resolution)
        _barrier(world)
        return surface
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _plane_and_axes(run_dir: Path, settings: dict, resolution):
    """The run's plane and the grid axes ``(plane, xs, ys, resolution)`` at ``resolution`` (default the run's)."""
    from losstrail.artifacts import load_run_value
    from losstrail.plane import Plane
    from losstrail.projection import project
    from losstrail.surface import plane_grid
    from losstrail.trajectory import Trajectory

    plane = load_run_value(run_dir, Plane)
    trajectory = load_run_value(run_dir, Trajectory).finite_prefix()
    check_together(run_dir, trajectory, plane, None, settings)
    resolution = resolution if resolution is not None else settings.get("resolution", 100)
    resolution = tuple(resolution) if isinstance(resolution, list) else resolution
    xrange, yrange = settings.get("xrange"), settings.get("yrange")
    xs, ys = plane_grid(plane, project(plane, trajectory).xy, resolution, xrange=xrange, yrange=yrange)
    return plane, xs, ys, resolution


def _start_parts(parts: Path, key: str, n_chunks: int, chunk_points: int, force: bool) -> None:
    """The folder of finished chunks, emptied when it holds another grid's (or ``force``), with its manifest."""
    manifest = parts / "grid.json"
    stale = force or (manifest.is_file() and json.loads(manifest.read_text()).get("key") != key)
    if stale and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"key": key, "chunks": n_chunks, "chunk_points": chunk_points}))


def _grid_data(data, settings: dict):
    """``(data, subset)``: the examples the run's own grid was evaluated on."""
    from losstrail._batching import take_subset

    subset = settings.get("subset")
    if subset is not None:
        data = take_subset(data, subset, settings.get("subset_seed", settings.get("seed") or 0))
    return data, subset


def _evaluate_missing(parts: Path, evaluator, plane, xs, ys, n_chunks, chunk_points, rank, world, quiet) -> None:
    """Evaluate the chunks not yet in ``parts``, one per rank per round; rank 0 writes each as it arrives."""
    from losstrail._progress import bar
    from losstrail.surface import evaluate_grid

    n_points = len(xs) * len(ys)
    missing = [c for c in range(n_chunks) if not (parts / f"chunk-{c:05d}.npz").is_file()]
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
                    with atomic_path(parts / f"chunk-{c:05d}.npz") as tmp, open(tmp, "wb") as f:
                        np.savez(f, **part)
            progress.update(len(mine))


def _join_parts(run_dir: Path, settings: dict, xs, ys, n_chunks: int, resolution):
    """The full surface from its chunks, saved and recorded in ``run.json``; the chunks removed."""
    from losstrail.artifacts import save_run_value
    from losstrail.landscape import Surface

    parts = run_dir / PARTS
    chunks = [dict(np.load(parts / f"chunk-{c:05d}.npz", allow_pickle=False)) for c in range(n_chunks)]
    grid = (len(ys), len(xs))
    joined = {k: np.concatenate([chunk[k] for chunk in chunks]).reshape(grid) for k in chunks[0]}
    surface = Surface(xs=xs, ys=ys, **joined)
    recorded = {key: value for key, value in settings.items() if key != "tol"}
    recorded.update(resolution=list(resolution) if isinstance(resolution, tuple) else resolution, grid="full")
    update(run_dir, recorded, {"surface.npz": save_run_value(parts, surface)})
    shutil.rmtree(parts)
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
