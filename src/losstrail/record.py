"""Recording the path the parameters take: the ``Trajectory`` value and its recorders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from losstrail._functional import ParamLayout, choose_parameters
from losstrail._repr import short_repr

__all__ = ["Recorder", "Trajectory"]


@dataclass(frozen=True)
class Trajectory:
    """The recorded parameters θ_k of a run, with the loss and accuracy measured at each.

    Point k holds θ_k and the batch loss of the step that starts from θ_k; the last point
    is the final parameters after the last step.
    """

    params: np.ndarray  # (T, P) float32 (or float16), rows in model.parameters() order; maybe a memmap
    loss: np.ndarray  # (T,) float64
    accuracy: np.ndarray  # (T,) float64, NaN where the task is not classification
    step: np.ndarray  # (T,) int64, global optimizer step at which θ_k was taken
    epoch: np.ndarray  # (T,) int64
    names: tuple[str, ...] | None = None  # the recorded parameters, in order; None: all of the model's
    shapes: tuple[tuple[int, ...], ...] | None = None  # their shapes, with ``names``

    __repr__ = short_repr

    def __post_init__(self):
        n = self.params.shape[0]
        if self.params.ndim != 2:
            raise ValueError(f"Trajectory.params must be 2-D (T, P); got shape {self.params.shape}")
        for name in ("loss", "accuracy", "step", "epoch"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Trajectory.{name} must have shape ({n},); got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return self.params.shape[0]

    @property
    def n_params(self) -> int:
        return self.params.shape[1]

    def finite_prefix(self) -> Trajectory:
        """The points before the first one with a NaN or infinite parameter (training diverged there)."""
        end = len(self)
        step = row_block(self.n_params)
        for start in range(0, len(self), step):  # by row blocks: params may be a memory map on disk
            block = np.isfinite(self.params[start : start + step]).all(axis=1)
            release_pages(self.params)
            if not block.all():
                end = start + int(np.argmin(block))
                break
        if end == len(self):
            return self
        cut = (getattr(self, f)[:end] for f in ("params", "loss", "accuracy", "step", "epoch"))
        return Trajectory(*cut, names=self.names, shapes=self.shapes)


PARAMS_FILE = "params.bin"
DTYPES = ("float32", "float16")


# Bytes a float64 copy of one block of path rows may take when streaming over a path.
BLOCK_BYTES = 64 << 20


def row_block(n_params: int) -> int:
    """Rows of a (T, P) path to read at once: at most 256, and few enough for BLOCK_BYTES in float64.

    >>> row_block(27), row_block(1_000_000)
    (256, 8)
    """
    return int(max(1, min(256, BLOCK_BYTES // (8 * max(n_params, 1)))))


def _mapping(array: np.ndarray):
    """The ``mmap`` behind a memory-mapped array, if it has one that takes advice (else None)."""
    mapped = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    return mapped if mapped is not None and hasattr(mapped, "madvise") else None


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array (read again from disk when needed).

    Streaming code calls this after each block so a path on disk never becomes resident.
    """
    import mmap

    mapped = _mapping(array)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def prefetch_rows(array: np.ndarray, start: int, stop: int) -> None:
    """Ask the kernel to start reading rows ``start:stop`` of a memory-mapped array (no-op otherwise)."""
    import mmap

    mapped = _mapping(array)
    if mapped is None or not hasattr(mmap, "MADV_WILLNEED"):
        return
    row = array.strides[0]
    first = array.offset + start * row
    first -= first % mmap.ALLOCATIONGRANULARITY
    length = min(array.offset + min(stop, array.shape[0]) * row, len(mapped)) - first
    if length > 0:
        mapped.madvise(mmap.MADV_WILLNEED, first, length)


class _Points:
    """The growing lists behind a recorder; ``freeze`` turns them into a ``Trajectory``.

    Parameter rows stay in memory until they take more than ``memory_limit`` bytes; from
    then on every row is appended to ``storage/params.bin`` and the trajectory's ``params``
    is a read-only memory map of that file, so recording a large model for many steps
    never holds the path in RAM.
    """

    def __init__(self, storage=None, dtype: str = "float32", memory_limit: int = 1 << 30):
        self.layout: ParamLayout | None = None  # what is recorded, set by the recorder
        self.params: list[np.ndarray] = []
        self.loss: list[float] = []
        self.accuracy: list[float] = []
        self.step: list[int] = []
        self.epoch: list[int] = []
        self.dtype = np.dtype(dtype)
        self.storage = None if storage is None else Path(storage)
        self.memory_limit = memory_limit
        self._file = None
        self._rows_on_disk = 0
        self._width = None

    def _append(self, row: np.ndarray) -> None:
        row = row.astype(self.dtype, copy=False)
        self._width = row.shape[0]
        spill = self.storage is not None and (len(self.params) + 1) * row.nbytes > self.memory_limit
        if self._file is None and spill:
            self.storage.mkdir(parents=True, exist_ok=True)
            self._file = open(self.storage / PARAMS_FILE, "wb")  # noqa: SIM115 - open until freeze
            for kept in self.params:
                self._file.write(kept.tobytes())
            self._rows_on_disk = len(self.params)
            self.params = []
        if self._file is not None:
            self._file.write(row.tobytes())
            self._rows_on_disk += 1
        else:
            self.params.append(row)

    def add(self, params: torch.Tensor, step: int, epoch: int) -> None:
        self._append(params.detach().to("cpu", torch.float32).numpy())
        self.loss.append(math.nan)
        self.accuracy.append(math.nan)
        self.step.append(step)
        self.epoch.append(epoch)

    def measure(self, loss: float, accuracy: float) -> None:
        self.loss[-1] = loss
        self.accuracy[-1] = accuracy

    def freeze(self) -> Trajectory:
        if not self.step:
            raise RuntimeError("nothing was recorded: the training loop ran no step")
        if self._file is not None:
            self._file.close()
            self._file = None
            shape = (self._rows_on_disk, self._width)
            params = np.memmap(self.storage / PARAMS_FILE, dtype=self.dtype, mode="r", shape=shape)
        else:
            params = np.stack(self.params)
        layout = self.layout
        subset = layout is not None and not layout.everything
        return Trajectory(
            params=params,
            loss=np.asarray(self.loss, dtype=np.float64),
            accuracy=np.asarray(self.accuracy, dtype=np.float64),
            step=np.asarray(self.step, dtype=np.int64),
            epoch=np.asarray(self.epoch, dtype=np.int64),
            names=tuple(layout.names) if subset else None,
            shapes=tuple(tuple(s) for s in layout.shapes) if subset else None,
        )


def recorded_layout(model: torch.nn.Module, params, argument: str = "params") -> ParamLayout:
    """The layout of the parameters a recorder keeps: ``params`` chosen on ``model``."""
    return ParamLayout(model, choose_parameters(model, params, argument=argument))


def _as_float(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


class Recorder:
    """Record a trajectory from a training loop you wrote yourself: no Lightning, no base class.

    Create it before the first step (it takes θ_0 then), and call ``record`` after each
    optimizer step with the loss of that step; ``every`` keeps one point in ``every``. The
    loss passed with step k is the loss *at* θ_k, the parameters the step started from,
    exactly as ``fit`` records it. ``trajectory`` adds the final parameters and ends the
    recording.

    Args:
        model: the ``nn.Module`` being trained.
        every: keep one point every this many steps (default 1).
        params: which parameters to record: ``'trainable'`` (default, those with
            ``requires_grad``), ``'all'``, name patterns or a predicate ``(name, param) -> bool``.
        storage, dtype, memory_limit: as ``TrajectoryRecorder`` (disk-backed paths, float16).

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> rec = Recorder(model)
    >>> for _ in range(3):
    ...     loss = model(torch.ones(4, 2)).pow(2).mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     rec.record(loss=loss)
    >>> t = rec.trajectory
    >>> t.params.shape, t.step.tolist()
    ((4, 3), [0, 1, 2, 3])
    """

    def __init__(self, model: torch.nn.Module, every: int = 1, *, params="trainable", storage=None,
                 dtype: str = "float32", memory_limit: int = 1 << 30):  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. every=1")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
        self.model, self.every = model, every
        self._points = _Points(storage, str(dtype), memory_limit)
        self._points.layout = self._layout = recorded_layout(model, params)
        self._step, self._epoch = 0, 0
        self._start = self._layout.flatten(model)  # θ at the start of the next step
        self._final: tuple[float, float] = (math.nan, math.nan)
        self._trajectory: Trajectory | None = None

    def record(self, loss=math.nan, accuracy=math.nan, *, epoch: int = 0) -> None:
        """Note one optimizer step: ``loss`` (and ``accuracy``) measured at the parameters it started from."""
        if self._trajectory is not None:
            raise RuntimeError("this recording has ended (its trajectory was taken); make a new Recorder")
        if self._step % self.every == 0:
            self._points.add(self._start, self._step, epoch)
            self._points.measure(_as_float(loss), _as_float(accuracy))
        self._step += 1
        self._epoch = epoch
        self._start = self._layout.flatten(self.model)

    def finish(self, loss=math.nan, accuracy=math.nan) -> None:
        """Optionally give the loss (and accuracy) at the final parameters."""
        self._final = (_as_float(loss), _as_float(accuracy))

    @property
    def trajectory(self) -> Trajectory:
        """Every recorded point, then the parameters as they are now."""
        if self._trajectory is None:
            self._points.add(self._layout.flatten(self.model), self._step, self._epoch)
            self._points.measure(*self._final)
            self._trajectory = self._points.freeze()
        return self._trajectory
