"""Recording the path the parameters take: the ``Trajectory`` value and its recorders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from losstrail._loss import correct_count, is_classification, resolve_loss
from losstrail.models import flat_params

__all__ = ["Recorder", "Trajectory", "TrajectoryRecorder"]


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
        return Trajectory(*(getattr(self, f)[:end] for f in ("params", "loss", "accuracy", "step", "epoch")))


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
        return Trajectory(
            params=params,
            loss=np.asarray(self.loss, dtype=np.float64),
            accuracy=np.asarray(self.accuracy, dtype=np.float64),
            step=np.asarray(self.step, dtype=np.int64),
            epoch=np.asarray(self.epoch, dtype=np.int64),
        )


def _as_float(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


class TrajectoryRecorder(pl.Callback):
    """A Lightning callback that records θ_k every ``every_n_steps`` optimizer steps.

    Works on any LightningModule. The loss is the one ``training_step`` returns; the
    accuracy is the ``"accuracy"`` (or ``"acc"``) entry of its output dict when there is
    one, else it is computed from the model's logits when the batch is ``(inputs, labels)``
    of a classification task, else NaN. The final parameters are always recorded.

    Args:
        every_n_steps: record one point every this many optimizer steps (default 1).
        storage: a folder; once the path takes more than ``memory_limit`` bytes its rows go
            to ``storage/params.bin`` instead of RAM (a memory-mapped ``Trajectory.params``).
        dtype: ``'float32'`` (default) or ``'float16'`` (half the memory and disk).
        memory_limit: bytes of parameters held in RAM before spilling to ``storage`` (1 GiB).

    After ``trainer.fit``, ``recorder.trajectory`` holds the ``Trajectory``.
    """

    def __init__(self, every_n_steps: int = 1, storage=None, dtype: str = "float32", memory_limit: int = 1 << 30):
        super().__init__()
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps!r} must be a positive integer, e.g. every_n_steps=1")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
        self.every_n_steps = every_n_steps
        self._storage = (storage, str(dtype), memory_limit)
        self._points = _Points(*self._storage)
        self._trajectory: Trajectory | None = None
        self._pending = False
        self._last_output: torch.Tensor | None = None
        self._last_batch = None
        self._hook = None

    @property
    def trajectory(self) -> Trajectory:
        if self._trajectory is None:
            raise RuntimeError("no trajectory yet: pass this recorder to a Trainer and call trainer.fit first")
        return self._trajectory

    def on_train_start(self, trainer, pl_module):
        self._points = _Points(*self._storage)
        self._trajectory = None
        self._hook = pl_module.register_forward_hook(self._keep_output)

    def _keep_output(self, module, inputs, output):
        if self._pending:
            self._last_output = output if isinstance(output, torch.Tensor) else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        recorded = self._points.step
        if step % self.every_n_steps == 0 and (not recorded or recorded[-1] != step):
            self._points.add(flat_params(pl_module), step, trainer.current_epoch)
            self._pending = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._last_batch = batch
        if not self._pending:
            return
        self._pending = False
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        accuracy = math.nan
        if isinstance(outputs, dict) and ("accuracy" in outputs or "acc" in outputs):
            accuracy = _as_float(outputs.get("accuracy", outputs.get("acc")))
        elif self._last_output is not None and _is_labelled(batch):
            out, y = self._last_output.detach(), batch[1]
            if is_classification(out, y):
                accuracy = float(correct_count(out, y)) / len(y)
        self._points.measure(_as_float(loss) if loss is not None else math.nan, accuracy)
        self._last_output = None

    def on_train_end(self, trainer, pl_module):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._points.add(flat_params(pl_module), trainer.global_step, trainer.current_epoch)
        self._points.measure(*_final_measure(pl_module, self._last_batch))
        self._last_batch = None
        self._trajectory = self._points.freeze()


def _is_labelled(batch) -> bool:
    return isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor)


def _final_measure(model: torch.nn.Module, batch) -> tuple[float, float]:
    """Loss and accuracy of the final parameters on the last training batch."""
    if batch is None or not _is_labelled(batch):
        return math.nan, math.nan
    x, y = batch
    with torch.no_grad():
        out = model(x)
        if not isinstance(out, torch.Tensor):
            return math.nan, math.nan
        if not callable(getattr(model, "loss_fn", None)) and not is_classification(out, y):
            return math.nan, math.nan  # the loss is defined inside training_step; nothing to call here
        loss = _as_float(resolve_loss(model)(out, y))
        accuracy = float(correct_count(out, y)) / len(y) if is_classification(out, y) else math.nan
    return loss, accuracy


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

    def __init__(self, model: torch.nn.Module, every: int = 1, *, storage=None, dtype: str = "float32",
                 memory_limit: int = 1 << 30):  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. every=1")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
        self.model, self.every = model, every
        self._points = _Points(storage, str(dtype), memory_limit)
        self._step, self._epoch = 0, 0
        self._start = flat_params(model)  # θ at the start of the next step
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
        self._start = flat_params(self.model)

    def finish(self, loss=math.nan, accuracy=math.nan) -> None:
        """Optionally give the loss (and accuracy) at the final parameters."""
        self._final = (_as_float(loss), _as_float(accuracy))

    @property
    def trajectory(self) -> Trajectory:
        """Every recorded point, then the parameters as they are now."""
        if self._trajectory is None:
            self._points.add(flat_params(self.model), self._step, self._epoch)
            self._points.measure(*self._final)
            self._trajectory = self._points.freeze()
        return self._trajectory
