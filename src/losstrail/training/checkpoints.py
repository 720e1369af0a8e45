"""A path from the checkpoints you already have: ``load_trajectory``.

A folder (or a list) of checkpoints becomes a ``Trajectory``: ``torch.save`` state dicts
(``.pt``, ``.pth``, ``.bin``, read with ``weights_only=True``), safetensors (memory-mapped),
Lightning ``.ckpt`` files (their ``state_dict``) and Hugging Face checkpoint folders
(``checkpoint-500/`` with ``model.safetensors`` or ``pytorch_model.bin``, sharded index files,
or a PEFT ``adapter_model.safetensors`` alone). One checkpoint is in memory at a time.

Every file is untrusted: names are taken from inside the folder only, links out of it are
refused, nothing is unpickled beyond ``weights_only``, and sizes are checked before reading.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from losstrail._checks import memory_bytes, size_text
from losstrail._files import is_plain_name
from losstrail.evaluation.evaluator import note
from losstrail.training.points import Points
from losstrail.values.trajectory import DTYPES, Trajectory

__all__ = ["load_trajectory"]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# A Hugging Face checkpoint folder's weights, in the order they are looked for.
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
# Files a trainer writes beside the weights that are not weights.
_NOT_WEIGHTS = re.compile(r"^(optimizer|scheduler|scaler|training_args|rng_state(_\d+)?)\.(pt|pth|bin)$")
_LIGHTNING_NAME = re.compile(r"epoch=(\d+)-step=(\d+)")
_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")
_STEP = re.compile(r"(?:checkpoint|step|iter|iteration)[=_-]?(\d+)", re.IGNORECASE)
_EPOCH = re.compile(r"epoch[=_-]?(\d+)", re.IGNORECASE)
_LOSS = re.compile(r"loss=([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)")
# Index files and trainer_state.json are small; anything bigger is not what it claims to be.
_JSON_LIMIT = 64 << 20


@dataclass(frozen=True)
class _Checkpoint:
    """One point of the path as found on disk, before its tensors are read."""

    label: str  # how messages name it: its path as the caller gave it
    files: tuple[Path, ...]  # the tensor files (several for a sharded checkpoint)
    adapter: bool  # a PEFT adapter alone
    step: int | None = None
    epoch: int | None = None
    loss: float = math.nan


def load_trajectory(
    source,
    model: torch.nn.Module | None = None,
    *,
    params="all",
    every: int | None = None,
    storage=None,
    dtype: str = "float32",
    memory_limit: int = 1 << 30,
    quiet: bool = False,
) -> Trajectory:
    """The path a training run took, read from its saved checkpoints.

    Args:
        source: a folder of checkpoints (files, or Hugging Face ``checkpoint-N/`` folders),
            one Hugging Face checkpoint folder, or a list of files/folders in training order.
        model: the network the checkpoints are of; its parameters are matched by name, and a
            missing, extra or reshaped tensor is an error naming it. Without a model, every
            floating-point tensor of the first checkpoint is taken, by name.
        params: which of ``model``'s parameters the path spans: ``'all'`` (default; for a PEFT
            adapter alone, every trainable parameter, i.e. the adapter's), ``'trainable'``,
            name patterns or a predicate, as in ``fit``.
        every: keep one checkpoint in ``every`` (the last always); default all of them.
        storage, dtype, memory_limit: as ``Recorder``: past ``memory_limit`` bytes the rows go to
            ``storage/params.bin`` and the path is a memory map of it.
        quiet: do not print the line that says which training order was used.

    The order is that of ``trainer_state.json`` (Hugging Face), of Lightning's
    ``epoch=E-step=S`` names, or of the numbers in the names (one line says which); each point
    carries the step and epoch the checkpoint names (-1: unknown) and the training loss its
    metadata records (NaN where none). The model is only read: to draw a surface, load the
    weights you want it evaluated with (e.g. the last checkpoint's) into it.

    >>> import tempfile
    >>> net = torch.nn.Linear(2, 1)
    >>> folder = tempfile.mkdtemp()
    >>> for step in (0, 10, 20):
    ...     torch.save(net.state_dict(), f"{folder}/step_{step}.pt")
    >>> t = load_trajectory(folder, net, quiet=True)
    >>> t.params.shape, t.step.tolist()
    ((3, 3), [0, 10, 20])
    """
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"every={every!r} must be a positive integer (keep one checkpoint in every), or None")
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"model={type(model).__name__} is not a torch.nn.Module; pass the network the checkpoints are of"
        )
    checkpoints, order = find_checkpoints(source)
    if every is not None:
        kept = list(range(0, len(checkpoints), every))
        if kept[-1] != len(checkpoints) - 1:
            kept.append(len(checkpoints) - 1)
        checkpoints = [checkpoints[k] for k in kept]
    note(f"{len(checkpoints)} checkpoints, in training order by {order}", quiet)
    points = Points(storage, str(dtype), memory_limit)
    layout = None
    for checkpoint in checkpoints:
        with _opened(checkpoint) as (tensors, meta):
            if layout is None:
                layout = _Layout.of(model, params, checkpoint, tensors)
            row = layout.row(checkpoint, tensors)
        loss = checkpoint.loss if not math.isnan(checkpoint.loss) else meta.get("loss", math.nan)
        step = checkpoint.step if checkpoint.step is not None else meta.get("step")
        epoch = checkpoint.epoch if checkpoint.epoch is not None else meta.get("epoch", -1)
        points.add(row, -1 if step is None else int(step), int(epoch))
        points.measure(float(loss), math.nan)
        del row
    trajectory = points.freeze()
    if (trajectory.step < 0).any():  # no step anywhere: count the checkpoints
        trajectory = replace(trajectory, step=np.arange(len(trajectory), dtype=np.int64))
    return replace(trajectory, names=layout.kept_names, shapes=layout.kept_shapes)


# ---------------------------------------------------------------- finding the checkpoints and their order


def find_checkpoints(source) -> tuple[list[_Checkpoint], str]:
    """The checkpoints ``source`` holds, in training order, and a few words on how the order was found."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.exists():
            raise FileNotFoundError(
                f"source={str(source)!r} does not exist; pass a folder of checkpoints or a list of checkpoint files"
            )
        if root.is_file() or _hf_weights(root, root, str(source)):
            checkpoints = [_checkpoint(root, str(source), root.parent)]
            return _ordered(checkpoints, given=True)
        return _ordered(_folder(root, str(source)), given=False)
    try:
        items = list(source)
    except TypeError:
        raise ValueError(
            f"source={source!r} must be a folder of checkpoints or a list of checkpoint files/folders"
        ) from None
    if not items:
        raise ValueError("source=[] holds no checkpoint; pass a folder of checkpoints or a list of files")
    checkpoints = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"source lists {str(item)!r}, which does not exist")
        checkpoints.append(_checkpoint(path, str(item), path.parent))
    return _ordered(checkpoints, given=True)


def _inside(path: Path, root: Path, label: str) -> Path:
    """``path`` if it stays inside ``root`` once links are followed; a ValueError otherwise."""
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise ValueError(
            f"{label!r} is a link to {str(resolved)!r}, outside the checkpoint folder; losstrail does not follow "
            "links out of it. Copy the checkpoint in, or pass its real path"
        )
    return path


def _folder(root: Path, label: str) -> list[_Checkpoint]:
    """The checkpoints directly inside ``root``: weight files, and Hugging Face checkpoint folders."""
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    folders = [p for p in entries if p.is_dir() and _hf_weights(p, root, f"{label}/{p.name}")]
    files = [p for p in entries if p.is_file() and p.suffix in WEIGHT_SUFFIXES and not _NOT_WEIGHTS.match(p.name)]
    if folders:  # a Trainer's output folder: its top-level model files are the final model, saved again
        files = [p for p in files if p.name not in HF_WEIGHTS and not _is_shard(p.name)]
    numbered = [p for p in files if re.search(r"\d", p.name)]
    if len(folders) + len(numbered) > 0:  # Lightning's last.ckpt is a copy of a numbered one
        files = [p for p in files if not _LAST.match(p.name)]
    found = [_checkpoint(p, f"{label}/{p.name}", root) for p in folders + files]
    if not found:
        raise ValueError(
            f"source={label!r} holds no checkpoint: expected weight files ({', '.join(WEIGHT_SUFFIXES)}) or Hugging "
            "Face checkpoint folders (checkpoint-N/ with model.safetensors or pytorch_model.bin)"
        )
    return found


def _is_shard(name: str) -> bool:
    return re.match(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$", name) is not None


def _hf_weights(folder: Path, root: Path, label: str) -> tuple[tuple[Path, ...], bool] | None:
    """``(files, adapter)`` of a Hugging Face checkpoint folder, or None when ``folder`` is not one."""
    if not folder.is_dir():
        return None
    for name in HF_INDEXES:
        index = folder / name
        if index.is_file():
            _inside(index, root, f"{label}/{name}")
            return _shards(index, folder, root, f"{label}/{name}"), False
    for name in HF_WEIGHTS:
        weights = folder / name
        if weights.is_file():
            return (_inside(weights, root, f"{label}/{name}"),), name.startswith("adapter_")
    return None


def _read_json(path: Path, label: str) -> dict:
    size = path.stat().st_size
    if size > _JSON_LIMIT:
        raise ValueError(f"{label!r} is {size_text(size)}, too large for the small JSON file it should be")
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{label!r} is not valid JSON ({err}); the checkpoint is damaged") from None
    if not isinstance(value, dict):
        raise ValueError(f"{label!r} holds {type(value).__name__}, not the JSON object it should")
    return value


def _shards(index: Path, folder: Path, root: Path, label: str) -> tuple[Path, ...]:
    """The shard files a sharded checkpoint's index names, each checked to be a plain name in its folder."""
    weight_map = _read_json(index, label).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{label!r} has no 'weight_map' of tensor names to shard files; the checkpoint is damaged")
    names = sorted({str(v) for v in weight_map.values()})
    for name in names:
        if not is_plain_name(name):
            raise ValueError(f"{label!r} names the shard {name!r}, which is not a plain file name in its folder")
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{label!r} names the shard {name!r}, which is not in {str(folder)!r}")
    return tuple(_inside(folder / n, root, f"{label} -> {n}") for n in names)


def _checkpoint(path: Path, label: str, root: Path) -> _Checkpoint:
    """One checkpoint: a weight file, or a Hugging Face folder with its trainer_state.json read."""
    _inside(path, root, label)
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(f"{label!r} is not a checkpoint file; expected one of {', '.join(WEIGHT_SUFFIXES)}")
        return _Checkpoint(label, (path,), False, *_named(path.name))
    found = _hf_weights(path, root, label)
    if found is None:
        raise ValueError(
            f"{label!r} is a folder without model.safetensors, pytorch_model.bin, an index file or "
            "adapter_model.safetensors; pass a Hugging Face checkpoint folder or the files themselves"
        )
    files, adapter = found
    state = path / "trainer_state.json"
    if state.is_file():
        _inside(state, root, f"{label}/trainer_state.json")
        step, epoch, loss = _trainer_state(_read_json(state, f"{label}/trainer_state.json"))
        return _Checkpoint(label, files, adapter, step, epoch, loss)
    return _Checkpoint(label, files, adapter, *_named(path.name))


def _trainer_state(state: dict) -> tuple[int | None, int | None, float]:
    """``(step, epoch, loss)`` of a Hugging Face ``trainer_state.json``: the global step, the epoch of the last
    step taken, and the training loss logged at that step (NaN when none was)."""
    step = state.get("global_step")
    step = int(step) if isinstance(step, (int, float)) else None
    epoch = state.get("epoch")
    epoch = max(math.ceil(float(epoch)) - 1, 0) if isinstance(epoch, (int, float)) else None
    loss = math.nan
    for entry in state.get("log_history") or []:
        if isinstance(entry, dict) and entry.get("step") == step and isinstance(entry.get("loss"), (int, float)):
            loss = float(entry["loss"])
    return step, epoch, loss


def _named(name: str) -> tuple[int | None, int | None, float]:
    """``(step, epoch, loss)`` that a file name gives: Lightning's ``epoch=E-step=S``, ``step_S``, ``loss=L``."""
    loss = _LOSS.search(name)
    loss = float(loss.group(1).rstrip(".")) if loss else math.nan
    lightning = _LIGHTNING_NAME.search(name)
    if lightning:
        return int(lightning.group(2)), int(lightning.group(1)), loss
    step, epoch = _STEP.search(name), _EPOCH.search(name)
    return (int(step.group(1)) if step else None), (int(epoch.group(1)) if epoch else None), loss


def _ordered(checkpoints: list[_Checkpoint], given: bool) -> tuple[list[_Checkpoint], str]:
    """The checkpoints in training order, and which order that is."""
    if given:
        return checkpoints, "the order given"
    labels = [c.label for c in checkpoints]
    if all(c.step is not None for c in checkpoints):
        states = all(c.files[0].parent.joinpath("trainer_state.json").is_file() for c in checkpoints)
        how = "trainer_state.json's global_step" if states else "the steps in the names"
        if all(_LIGHTNING_NAME.search(label) for label in labels):
            how = "Lightning's epoch=E-step=S names"
        ordered = sorted(checkpoints, key=lambda c: c.step)
        _check_distinct([c.step for c in ordered], ordered, "step")
        return ordered, how
    if all(c.epoch is not None for c in checkpoints):
        ordered = sorted(checkpoints, key=lambda c: c.epoch)
        _check_distinct([c.epoch for c in ordered], ordered, "epoch")
        return ordered, "the epochs in the names"
    numbers = [tuple(int(n) for n in re.findall(r"\d+", Path(label).name)) for label in labels]
    if len(checkpoints) > 1 and not all(numbers):
        blind = [label for label, n in zip(labels, numbers) if not n]
        raise ValueError(
            f"cannot tell the training order of {blind[0]!r}: its name has no step, epoch or number, and it has no "
            "trainer_state.json; pass source as a list of files in training order"
        )
    order = sorted(range(len(checkpoints)), key=lambda k: numbers[k])
    ordered = [checkpoints[k] for k in order]
    _check_distinct([numbers[k] for k in order], ordered, "number")
    return ordered, "the numbers in the names"


def _check_distinct(keys: list, ordered: list[_Checkpoint], what: str) -> None:
    for k in range(1, len(keys)):
        if keys[k] == keys[k - 1]:
            raise ValueError(
                f"{ordered[k - 1].label!r} and {ordered[k].label!r} have the same {what}, so their order is unknown; "
                "pass source as a list of files in training order"
            )


# ---------------------------------------------------------------- reading one checkpoint


class _opened:
    """``with _opened(checkpoint) as (tensors, meta)``: its tensors by name (read lazily from safetensors),
    and what its metadata says (``loss``, ``step``, ``epoch``); released on leaving."""

    def __init__(self, checkpoint: _Checkpoint):
        self.checkpoint = checkpoint
        self._handles = []

    def __enter__(self):
        tensors, meta = _Tensors(), {}
        for path in self.checkpoint.files:
            if path.suffix == ".safetensors":
                tensors.add_safetensors(self._safe_open(path), path)
            else:
                state, found = _torch_state(path, self.checkpoint.label)
                tensors.add_dict(state, path)
                meta.update(found)
        return tensors, meta

    def _safe_open(self, path: Path):
        from safetensors import SafetensorError, safe_open

        try:
            handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{self.checkpoint.label!r}: {path.name} cannot be read as safetensors ({err}); it is damaged"
            ) from None
        self._handles.append(handle)
        return handle

    def __exit__(self, *exc):
        self._handles.clear()
        return False


class _Tensors:
    """Tensor names -> where to read them, from safetensors files (lazily) and loaded state dicts."""

    def __init__(self):
        self.where: dict[str, tuple] = {}  # name -> ("safe", handle) or ("dict", tensor)
        self.files: dict[str, Path] = {}

    def add_safetensors(self, handle, path: Path) -> None:
        for name in handle.keys():  # noqa: SIM118 - a safe_open handle, not a dict
            self.where[name], self.files[name] = ("safe", handle), path

    def add_dict(self, state: dict, path: Path) -> None:
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                self.where[str(name)], self.files[str(name)] = ("dict", value), path

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        kind, value = self.where[name]
        return tuple(value.get_slice(name).get_shape()) if kind == "safe" else tuple(value.shape)

    def floating(self, name: str) -> bool:
        kind, value = self.where[name]
        if kind == "safe":
            return value.get_slice(name).get_dtype() in ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
        return value.is_floating_point()

    def get(self, name: str) -> torch.Tensor:
        kind, value = self.where[name]
        return value.get_tensor(name) if kind == "safe" else value


def _torch_state(path: Path, label: str) -> tuple[dict, dict]:
    """The state dict in a ``torch.save`` file or a Lightning ``.ckpt`` (``weights_only``), and its metadata."""
    import pickle
    import zipfile

    size = path.stat().st_size
    memory = memory_bytes()
    if memory is not None and size > memory // 2:
        raise ValueError(
            f"{label!r}: {path.name} is {size_text(size)}, more than half this machine's memory "
            f"({size_text(memory)}); save the checkpoint as safetensors, which is read tensor by tensor"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{label!r}: {path.name} holds Python objects that torch.load(weights_only=True) refuses ({first}); "
            "losstrail never unpickles them. Save the weights alone: torch.save(model.state_dict(), path) "
            "or safetensors"
        ) from None
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{label!r}: {path.name} cannot be read as saved weights ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}); it is damaged or not a state dict"
        ) from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{label!r}: {path.name} holds a {type(loaded).__name__}, not a state dict of tensors")
    meta = _lightning_meta(loaded)
    for key in ("state_dict", "model_state_dict", "model"):  # Lightning's .ckpt and common training scripts
        if isinstance(loaded.get(key), dict):
            return loaded[key], meta
    return loaded, meta


def _lightning_meta(loaded: dict) -> dict:
    """``step``, ``epoch`` and a monitored ``loss`` from a Lightning checkpoint (empty for a plain state dict)."""
    meta = {}
    if isinstance(loaded.get("global_step"), int):
        meta["step"] = loaded["global_step"]
    if isinstance(loaded.get("epoch"), int):
        meta["epoch"] = loaded["epoch"]
    for key, state in (loaded.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and "loss" in str(state.get("monitor")):
            score = state.get("current_score")
            if isinstance(score, torch.Tensor) and score.numel() == 1:
                meta["loss"] = float(score)
    return meta


# ---------------------------------------------------------------- matching the tensors to the model


@dataclass
class _Layout:
    """Which tensors of each checkpoint make a row, in order, and the names and shapes they must have."""

    keys: list[str]  # checkpoint names, in row order
    shapes: list[tuple[int, ...]]
    allowed: set[str] | None  # every checkpoint name the model knows (None: exactly ``keys``)
    ignore: list  # patterns of names a model ignores on loading (Hugging Face's _keys_to_ignore_on_load_unexpected)
    prefix: str  # stripped from checkpoint names before matching ("model." of a LightningModule wrapper)
    model_name: str
    kept_names: tuple[str, ...] | None
    kept_shapes: tuple[tuple[int, ...], ...] | None

    @classmethod
    def of(cls, model, params, first: _Checkpoint, tensors: _Tensors) -> _Layout:
        if model is None:
            keys = [n for n in tensors.names() if tensors.floating(n)]
            if not keys:
                raise ValueError(f"{first.label!r} holds no floating-point tensor; it is not a model's weights")
            shapes = [tensors.shape(n) for n in keys]
            return cls(keys, shapes, None, [], "", "the first checkpoint", tuple(keys), tuple(shapes))
        from losstrail.evaluation.layout import choose_parameters

        wanted = "trainable" if first.adapter and params == "all" else params
        names = choose_parameters(model, wanted, trainable_only=False)
        adapters = [str(a) for a in getattr(model, "peft_config", {}) or {}]
        rename = (lambda n: _without_adapter(n, adapters)) if first.adapter else (lambda n: n)
        named = dict(model.named_parameters())
        prefix = _prefix(set(tensors.names()), {rename(n) for n in names})
        allowed = {rename(n) for n in model.state_dict()} | {rename(n) for n in named}
        ignore = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
        every = len(names) == len(named)
        return cls(
            [rename(n) for n in names], [tuple(named[n].shape) for n in names], allowed, ignore, prefix,
            f"model={type(model).__name__}", None if every else tuple(names),
            None if every else tuple(tuple(named[n].shape) for n in names),
        )  # fmt: skip

    def row(self, checkpoint: _Checkpoint, tensors: _Tensors) -> torch.Tensor:
        """The checkpoint's tensors in row order, flat, float32: each checked for its name and shape first."""
        present = {n[len(self.prefix) :] if n.startswith(self.prefix) else n: n for n in tensors.names()}
        for key, shape in zip(self.keys, self.shapes):
            if key not in present:
                raise ValueError(
                    f"{checkpoint.label!r} has no tensor {key!r}, which {self.model_name} has; " + self._fix(checkpoint)
                )
            found = tensors.shape(present[key])
            if found != shape:
                raise ValueError(
                    f"{checkpoint.label!r}: tensor {key!r} has shape {found} but {self.model_name}'s has shape "
                    f"{shape}; " + self._fix(checkpoint)
                )
        known = self.allowed if self.allowed is not None else set(self.keys)
        for name in present:
            if name not in known and not any(p.search(name) for p in self.ignore):
                if self.allowed is None and not tensors.floating(present[name]):
                    continue
                raise ValueError(
                    f"{checkpoint.label!r} holds a tensor {name!r} that {self.model_name} does not have; "
                    + self._fix(checkpoint)
                )
        return torch.cat([tensors.get(present[key]).detach().reshape(-1).to(torch.float32) for key in self.keys])

    def _fix(self, checkpoint: _Checkpoint) -> str:
        if self.allowed is None:
            return "the checkpoints are not all of one model: pass the folder of one run only"
        return "pass the model these checkpoints were saved from, or a folder of its checkpoints only"


def _without_adapter(name: str, adapters: list[str]) -> str:
    """A PEFT parameter's name as its adapter file stores it: without the adapter's name (``.default``)."""
    for adapter in adapters:
        name = name.replace(f".{adapter}.", ".")
    return name


def _prefix(keys: set[str], names: set[str]) -> str:
    """A first name segment every checkpoint key has and the model's names lack (``model.``), or ''."""
    if not keys or names <= keys:
        return ""
    first = {k.split(".", 1)[0] for k in keys}
    if len(first) == 1:
        prefix = f"{first.pop()}."
        if names <= {k[len(prefix) :] for k in keys}:
            return prefix
    return ""
