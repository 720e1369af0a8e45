"""Recording the path the parameters take: the ``Trajectory`` value and its recorders."""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    params: np.ndarray  # (T, P) float32, rows in model.parameters() flattening order
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
        bad = ~np.isfinite(self.params).all(axis=1)
        if not bad.any():
            return self
        end = int(np.argmax(bad))
        return Trajectory(*(getattr(self, f)[:end] for f in ("params", "loss", "accuracy", "step", "epoch")))


class _Points:
    """The growing lists behind a recorder; ``freeze`` turns them into a ``Trajectory``."""

    def __init__(self):
        self.params: list[np.ndarray] = []
        self.loss: list[float] = []
        self.accuracy: list[float] = []
        self.step: list[int] = []
        self.epoch: list[int] = []

    def add(self, params: torch.Tensor, step: int, epoch: int) -> None:
        self.params.append(params.detach().to("cpu", torch.float32).numpy())
        self.loss.append(math.nan)
        self.accuracy.append(math.nan)
        self.step.append(step)
        self.epoch.append(epoch)

    def measure(self, loss: float, accuracy: float) -> None:
        self.loss[-1] = loss
        self.accuracy[-1] = accuracy

    def freeze(self) -> Trajectory:
        if not self.params:
            raise RuntimeError("nothing was recorded: the training loop ran no step")
        return Trajectory(
            params=np.stack(self.params),
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

    After ``trainer.fit``, ``recorder.trajectory`` holds the ``Trajectory``.
    """

    def __init__(self, every_n_steps: int = 1):
        super().__init__()
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps!r} must be a positive integer, e.g. every_n_steps=1")
        self.every_n_steps = every_n_steps
        self._points = _Points()
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
        self._points = _Points()
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
    exactly as ``fit`` records it. ``trajectory`` adds the final parameters.

    Args:
        model: the ``nn.Module`` being trained.
        every: keep one point every this many steps (default 1).

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

    def __init__(self, model: torch.nn.Module, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. every=1")
        self.model, self.every = model, every
        self._points = _Points()
        self._step = 0
        self._start = flat_params(model)  # θ at the start of the next step
        self._final: tuple[float, float] = (math.nan, math.nan)

    def record(self, loss=math.nan, accuracy=math.nan, *, epoch: int = 0) -> None:
        """Note one optimizer step: ``loss`` (and ``accuracy``) measured at the parameters it started from."""
        if self._step % self.every == 0:
            self._points.params.append(self._start.numpy())
            self._points.loss.append(_as_float(loss))
            self._points.accuracy.append(_as_float(accuracy))
            self._points.step.append(self._step)
            self._points.epoch.append(epoch)
        self._step += 1
        self._epoch = epoch
        self._start = flat_params(self.model)

    def finish(self, loss=math.nan, accuracy=math.nan) -> None:
        """Optionally give the loss (and accuracy) at the final parameters."""
        self._final = (_as_float(loss), _as_float(accuracy))

    @property
    def trajectory(self) -> Trajectory:
        """Every recorded point, then the parameters as they are now."""
        points = _Points()
        for name in ("params", "loss", "accuracy", "step", "epoch"):
            setattr(points, name, list(getattr(self._points, name)))
        points.params.append(flat_params(self.model).numpy())
        points.loss.append(self._final[0])
        points.accuracy.append(self._final[1])
        points.step.append(self._step)
        points.epoch.append(getattr(self, "_epoch", 0))
        return points.freeze()
