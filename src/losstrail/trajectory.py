"""The ``Trajectory`` value: the parameters a run recorded, with the loss and accuracy at each point.

NumPy only, so a saved run loads and draws without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from losstrail._repr import short_repr
from losstrail._rows import release_pages, row_block

__all__ = ["Trajectory"]

PARAMS_FILE = "params.bin"  # a path kept on disk: its rows, float32 or float16, in the run directory
DTYPES = ("float32", "float16")


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
