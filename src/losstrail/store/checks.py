"""Checks of a run directory: a command's outputs are neither its inputs nor files of one, before any work; the
settings its ``run.json`` gives are in bounds before a reader acts on them."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from losstrail._checks import check_resolution
from losstrail._files import is_plain_name
from losstrail.store._lock import LOCK_FILE, STAGING_PREFIX
from losstrail.store._parts import PARTS
from losstrail.store._record import RUN_FILES, SETTINGS_FILE, read_record

# What each file a run directory keeps is, for messages (the rest of RUN_FILES: "a file of the run").
_RUN_ROLES = {
    "trajectory.npz": "the run's recorded path",
    "params.bin": "the run's recorded parameters",
    "plane.npz": "the run's plane",
    "surface.npz": "the run's surface",
    "path.npz": "the run's projected path",
    "decision.npz": "the run's decision regions",
    PARTS: f"the resumable grid's chunks ({PARTS})",
}


def same_file(a, b) -> bool:
    """Whether ``a`` and ``b`` name one file: the same real path (links and ``..`` resolved), or one inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _run_roles(run_dir, model_filename: str | None, kept: dict | None = None) -> dict[str, str]:
    """``{name: role}`` of every name the run directory keeps: the usual ones, its weights, those run.json lists,
    and ``kept`` (the caller's own, e.g. a comparison's record)."""
    roles = {name: _RUN_ROLES.get(name, "a file of the run") for name in RUN_FILES}
    roles.update(_RUN_ROLES)
    roles[SETTINGS_FILE] = f"the run's record ({SETTINGS_FILE})"
    roles[LOCK_FILE] = "the run directory's lock"
    roles.update(kept or {})
    record = None
    with contextlib.suppress(ValueError, OSError):  # a record that cannot be read lists nothing; readers name it
        record = read_record(run_dir, missing_ok=True, damaged_ok=True) if Path(run_dir).is_dir() else None
    record = record or {}
    listed = record.get("files")
    for name in listed if isinstance(listed, dict) else ():
        roles.setdefault(name, f"a file of the run (listed in its {SETTINGS_FILE})")
    saved = record.get("settings", {}).get("model_filename") if isinstance(record.get("settings"), dict) else None
    for name in (saved, model_filename, "model.pt"):
        if is_plain_name(name):
            roles[name] = "the run's weights file"
    return roles


def _role_in_run(path: Path, run_dir, model_filename: str | None, kept: dict | None) -> str | None:
    """What ``path`` is in the run directory (its weights, its record, its staging folder ...), or None."""
    real, home = Path(os.path.realpath(path)), Path(os.path.realpath(run_dir))
    if real == home:
        return "the run directory itself"
    roles = _run_roles(run_dir, model_filename, kept)
    if home in real.parents:
        for part in real.relative_to(home).parts:
            if part in roles:
                return roles[part]
            if part.startswith(STAGING_PREFIX):
                return "the run directory's staging folder"
    if path.is_file():  # a hard link to one of the run's files, under another name
        for name, role in roles.items():
            if (Path(run_dir) / name).is_file() and same_file(path, Path(run_dir) / name):
                return role
    return None


def check_outputs(outputs, *, inputs=(), run_dir=None, model_filename: str | None = None, how: str = "an input",
                  kept: dict[str, str] | None = None):  # fmt: skip
    """Refuse, before any work, an output that is an input, a file of the run directory, or another output.

    Paths are compared resolved (``..``, symbolic links) and by inode, so no spelling slips through.

    Args:
        outputs: ``(argument, path)`` pairs, named as the caller spelled them; a None path is skipped.
        inputs: ``(argument, path)`` pairs of the files the command reads.
        run_dir: the run (or comparison) directory; its own files and folders are no outputs.
        model_filename: the run's weights file name, when the caller chose it.
        kept: more names the directory keeps, ``{name: role}`` (a comparison's record).
        how: what the run directory's files are to this command, for the message.

    Raises:
        ValueError: naming both roles, e.g. ``out='ck/plane.npz' is the run's plane in the run
        directory 'ck' (an input): choose another path``.
    """
    given = [(argument, Path(path)) for argument, path in outputs if path is not None]
    for i, (argument, path) in enumerate(given):
        shown = f"{argument}={str(path)!r}"
        for source_argument, source in inputs:
            if source is not None and same_file(path, source):
                raise ValueError(f"{shown} is also {source_argument}={str(source)!r}, an input: choose another path")
        role = None if run_dir is None else _role_in_run(path, run_dir, model_filename, kept)
        if role == "the run directory itself":
            raise ValueError(f"{shown} is the run directory itself: name a file outside it, e.g. 'sample.gif'")
        if role is not None:
            raise ValueError(f"{shown} is {role} in the run directory {str(run_dir)!r} ({how}): choose another path")
        for other, earlier in given[:i]:
            if same_file(path, earlier):
                raise ValueError(
                    f"{shown} is the same file as {other}={str(earlier)!r}: choose another path for one of them"
                )


# Bounds a run.json value must keep before a reader acts on it.
_RECIPE_INT_BOUNDS = {
    "hidden_dim": 65536,
    "num_hidden_layers": 1000,
    "batch_size": 10_000_000,
    "n_per_class": 10_000_000,
    "n_examples": 10_000_000,
}


def check_settings(run_dir: Path, settings: dict) -> None:
    """Raise ValueError for ``run.json`` settings outside sane bounds (names leading out: ``read_record``)."""
    where = f"{str(Path(run_dir) / 'run.json')!r}"
    fix = "the file was edited or damaged; run the job again to rewrite it"
    resolution = settings.get("resolution", 100)
    try:
        check_resolution(tuple(resolution) if isinstance(resolution, list) else resolution)
    except ValueError as err:
        raise ValueError(f"{where} has {err}; {fix}") from None
    for key in ("subset", "bn_batches", "seed", "n_params", "plane_seed", "subset_seed"):
        value = settings.get(key)
        if value is not None and (not _is_count(value) or value < 0 or value > 2**62):
            raise ValueError(f"{where} has {key}={value!r}, not a count; {fix}")
    for key in ("xrange", "yrange"):
        value = settings.get(key)
        ok = value is None or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and all(math.isfinite(v) for v in value) and value[0] < value[1]
        )  # fmt: skip
        if not ok:
            raise ValueError(f"{where} has {key}={value!r}, not a range [low, high]; {fix}")
    for kind in ("model_recipe", "data_recipe"):
        recipe = settings.get(kind)
        if recipe is None:
            continue
        if not isinstance(recipe, dict):
            raise ValueError(f"{where} has {kind}={recipe!r}, not an object; {fix}")
        for key, value in recipe.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} has {kind} {key}={value!r}; {fix}")
            bound = _RECIPE_INT_BOUNDS.get(key)
            if bound is not None and value is not None and (not _is_count(value) or not 1 <= value <= bound):
                raise ValueError(f"{where} has {kind} {key}={value!r}, outside 1..{bound}; {fix}")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
