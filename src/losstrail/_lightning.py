"""Glue to Lightning: the callback that records a trajectory during ``trainer.fit``.

Only code that trains with Lightning imports this module, so a plain training loop with
``Recorder`` (and everything that draws a saved run) never imports Lightning.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from losstrail._loss import correct_count, final_measure, is_classification
from losstrail._points import SNAPSHOTS, Points, as_float
from losstrail.record import check_memory, path_rows, recorded_layout
from losstrail.trajectory import Trajectory, check_dtype

__all__ = ["TrajectoryRecorder"]


class TrajectoryRecorder(pl.Callback):
    """A Lightning callback that records θ_k every ``every_n_steps`` optimizer steps.

    Works on any LightningModule. The loss is the one ``training_step`` returns; the
    accuracy is the ``"accuracy"`` (or ``"acc"``) entry of its output dict when there is
    one, else it is computed from the model's logits when the batch is ``(inputs, labels)``
    of a classification task, else NaN. The final parameters are always recorded, with the
    loss measured on the first batch of the last epoch (not the batch just trained on,
    which would show a false plunge at the end), and labelled with the last epoch trained (as
    ``Recorder`` and ``LosstrailCallback`` label it).

    Args:
        every_n_steps: record one point every this many optimizer steps (default 1).
        params: which parameters to record: ``'trainable'`` (default), ``'all'``, name
            patterns or a predicate ``(name, param) -> bool``.
        storage: a folder; once the path takes more than ``memory_limit`` bytes its rows go
            to ``storage/params.bin`` instead of RAM (a memory-mapped ``Trajectory.params``);
            default a temporary folder, removed with the trajectory.
        dtype: ``'float32'`` or ``'float16'`` (half the memory and disk); default float32 for
            every point, float16 for the snapshots of a sketched path.
        memory_limit: bytes of path held in RAM (1 GiB): rows, or the sketch of a longer path.
        snapshots: a path past ``memory_limit`` with more points than this (200) is kept
            sketched, as ``losstrail.Recorder`` says; its size is said before training.
        quiet: say nothing about the path's size.

    After ``trainer.fit``, ``recorder.trajectory`` holds the ``Trajectory``.
    """

    def __init__(self, every_n_steps: int = 1, storage=None, dtype: str | None = None, memory_limit: int = 1 << 30,
                 *, params="trainable", snapshots: int = SNAPSHOTS, quiet: bool = False):  # fmt: skip
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps!r} must be a positive integer, e.g. every_n_steps=1")
        self.every_n_steps = every_n_steps
        self.params = params
        self._storage = (storage, check_dtype(dtype), check_memory(memory_limit, snapshots), snapshots, quiet)
        self._points = Points(*self._storage)
        self._trajectory: Trajectory | None = None
        self._pending = False
        self._last_output: torch.Tensor | None = None
        self._epoch_first_batch = None
        self._last_epoch: int | None = None
        self._hook = None
        self.module: torch.nn.Module | None = None  # whose parameters to record; default the LightningModule

    @property
    def trajectory(self) -> Trajectory:
        if self._trajectory is None:
            raise RuntimeError("no trajectory yet: pass this recorder to a Trainer and call trainer.fit first")
        return self._trajectory

    def on_train_start(self, trainer, pl_module):
        self._points = Points(*self._storage)
        self._points.layout = recorded_layout(self._watched(pl_module), self.params)
        steps = trainer.estimated_stepping_batches
        if isinstance(steps, int) or (isinstance(steps, float) and math.isfinite(steps)):
            self._points.plan(path_rows(int(steps), self.every_n_steps))
        self._trajectory = None
        self._last_epoch = None
        self._hook = pl_module.register_forward_hook(self._keep_output)

    def _watched(self, pl_module) -> torch.nn.Module:
        return self.module if self.module is not None else pl_module

    def _keep_output(self, module, inputs, output):
        if self._pending:
            self._last_output = output if isinstance(output, torch.Tensor) else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self._epoch_first_batch = batch
        self._last_epoch = trainer.current_epoch  # the final point's label: the last epoch trained
        step = trainer.global_step
        recorded = self._points.step
        if step % self.every_n_steps == 0 and (not recorded or recorded[-1] != step):
            self._points.add(self._points.layout.flatten(self._watched(pl_module)), step, trainer.current_epoch)
            self._pending = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._pending:
            return
        self._pending = False
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        accuracy = math.nan
        if isinstance(outputs, dict) and ("accuracy" in outputs or "acc" in outputs):
            accuracy = as_float(outputs.get("accuracy", outputs.get("acc")))
        elif self._last_output is not None and _is_labelled(batch):
            out, y = self._last_output.detach(), batch[1]
            if is_classification(out, y):
                accuracy = float(correct_count(out, y)) / len(y)
        self._points.measure(as_float(loss) if loss is not None else math.nan, accuracy)
        self._last_output = None

    def on_train_end(self, trainer, pl_module):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        epoch = trainer.current_epoch if self._last_epoch is None else self._last_epoch
        self._points.add(self._points.layout.flatten(self._watched(pl_module)), trainer.global_step, epoch)
        rule = getattr(pl_module, "rule", None) if self.module is not None else None
        self._points.measure(*final_measure(self._watched(pl_module), self._epoch_first_batch, rule))
        self._epoch_first_batch = None
        self._trajectory = self._points.freeze()


def _is_labelled(batch) -> bool:
    return isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor)
