"""``losstrail path DIR``: draw a Hugging Face checkpoint folder's path, the model built from its config.json.

The model is built with ``transformers`` from the folder's ``config.json`` (random weights,
nothing downloaded), the path is read with ``load_trajectory``, and the model is given the last
checkpoint's weights for the surface. The data is a ``.pt`` (``weights_only``) or ``.npz`` file of
one dict batch (``input_ids``, ``attention_mask``, ``labels``; ``labels`` default to
``input_ids`` for a causal language model). Without data the picture is the path and its
recorded losses, without a surface.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from losstrail._checks import memory_bytes, size_text
from losstrail.evaluation.evaluator import note

__all__ = ["draw_checkpoint_path"]


def draw_checkpoint_path(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    method: str = "pca",
    resolution: int | tuple[int, int] = 40,
    style=None,
    quiet: bool = False,
):
    """Draw the path of the Hugging Face checkpoints in ``source`` to ``out``; returns the ``Animation``."""
    from losstrail._registry import PATH_DIRECTIONS, check_choice
    from losstrail.renderers import output_format
    from losstrail.values.specs import Style

    check_choice("directions", method, PATH_DIRECTIONS)
    style = style or Style()
    style.check_for("run", output_format(out, style.format))
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"DIR={str(source)!r} is not a folder; pass a Hugging Face Trainer's output folder")
    _check_out(out, source, data)
    batch = read_batch(data) if data is not None else None
    model, causal = model_from_config(source)
    from losstrail.training.checkpoints import load_trajectory

    trajectory = load_trajectory(source, model, quiet=quiet)
    _load_last(model, trajectory)
    if batch is not None and "labels" not in batch and "input_ids" in batch and causal:
        batch["labels"] = batch["input_ids"]
    return _draw(model, trajectory, batch, out, method, resolution, style, quiet, source.name)


def _check_out(out, source: Path, data) -> None:
    """Refuse, before any work, a picture written onto the data file or anywhere inside the checkpoint folder."""
    from losstrail.store.checks import check_outputs

    check_outputs([("out", out)], inputs=[("data", data)])
    folder, target = os.path.realpath(source), os.path.realpath(out)
    if os.path.commonpath([folder, target]) == folder:
        raise ValueError(
            f"out={str(out)!r} lies inside the checkpoint folder source={str(source)!r}, which is read, never written:"
            " write the picture outside it, e.g. out='path.gif'"
        )


def _draw(model, trajectory, batch, out, method, resolution, style, quiet, name):
    from losstrail.evaluation.grids import loss_surface, path_grid
    from losstrail.planes.directions import make_plane
    from losstrail.planes.projection import project
    from losstrail.renderers import animate
    from losstrail.values.surface import Surface

    if len(trajectory) < 3 and method in ("pca", "interpolation"):
        raise ValueError(
            f"DIR holds {len(trajectory)} checkpoints; --directions {method} needs at least 3. Use --directions random"
        )
    plane = make_plane(trajectory, method, seed=0, model=model, data=batch)
    measure = {"model": model, "data": batch} if batch is not None else {}
    projection = project(plane, trajectory, **measure)
    xs, ys = path_grid(projection.xy, resolution)
    if batch is not None:
        surface = loss_surface(model, batch, plane, xs, ys, quiet=quiet)
    else:
        note("no --data: drawing the path and its recorded losses, without a surface", quiet)
        empty = np.full((len(ys), len(xs)), np.nan)
        surface = Surface(xs, ys, empty, empty.copy())
    title = f"{type(model).__name__}: the path of {name}/ ({len(trajectory)} checkpoints)"
    if batch is None:
        title += "; no data given, so no surface (the loss is the one the checkpoints logged)"
    style = style if style.title is not None else style.replace(title=title)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the .* plane captures only")
        return animate(projection, surface, out, style=style, quiet=quiet)


def model_from_config(source: Path):
    """``(model, causal)``: a ``transformers`` model with random weights, built from the ``config.json`` in
    ``source`` or in its newest checkpoint folder; nothing is downloaded."""
    try:
        import transformers
    except ImportError:
        raise ImportError("losstrail path builds the model with transformers: pip install 'losstrail[hf]'") from None
    folders = [source, *sorted((p for p in source.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)]
    config_dir = next((f for f in folders if (f / "config.json").is_file()), None)
    if config_dir is None:
        raise FileNotFoundError(
            f"DIR={str(source)!r} has no config.json (nor its checkpoint folders); losstrail path builds the model "
            "from a Hugging Face config"
        )
    config = transformers.AutoConfig.from_pretrained(config_dir, local_files_only=True)
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
        try:
            return auto.from_config(config), auto is transformers.AutoModelForCausalLM
        except ValueError:
            continue
    raise ValueError(f"{str(config_dir / 'config.json')!r} names a model transformers cannot build from its config")


def _load_last(model, trajectory) -> None:
    """Give ``model`` the last checkpoint's weights (the path spans all its parameters)."""
    import torch

    from losstrail.evaluation.layout import ParamLayout

    layout = ParamLayout(model, trajectory.names)
    last = torch.from_numpy(np.asarray(trajectory.params[-1], dtype=np.float32))
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in layout.unflatten(last).items():
            named[name].copy_(value)


def read_batch(path: str | os.PathLike) -> dict:
    """One dict batch of tensors from a ``.pt`` (``weights_only``) or ``.npz`` file (no pickle)."""
    import torch

    path = Path(path)
    if path.suffix not in (".pt", ".npz"):
        raise ValueError(f"--data={str(path)!r} must be a .pt or .npz file of named arrays (input_ids, labels, ...)")
    if not path.is_file():
        raise FileNotFoundError(f"--data={str(path)!r} does not exist")
    size, memory = path.stat().st_size, memory_bytes()
    if memory is not None and size > memory // 4:
        raise ValueError(f"--data={str(path)!r} is {size_text(size)}, more than a quarter of this machine's memory")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            batch = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    else:
        try:
            batch = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to read is the same answer
            raise ValueError(f"--data={str(path)!r} cannot be read with torch.load(weights_only=True): {err}") from None
    if not isinstance(batch, dict) or not batch or not all(isinstance(v, torch.Tensor) for v in batch.values()):
        raise ValueError(f"--data={str(path)!r} must hold a dict of tensors, e.g. {{'input_ids': ..., 'labels': ...}}")
    return {str(k): v for k, v in batch.items()}
