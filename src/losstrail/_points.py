"""The growing lists behind both recorders (``Recorder`` and Lightning's ``TrajectoryRecorder``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from losstrail._functional import ParamLayout
from losstrail.trajectory import PARAMS_FILE, Trajectory


class Points:
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


def as_float(value) -> float:
    """A loss or accuracy as a Python float: a tensor's mean, or the number itself."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)
