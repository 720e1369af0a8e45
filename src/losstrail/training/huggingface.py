"""Recording a trajectory where users already train: a Hugging Face ``Trainer`` callback.

``transformers`` is an optional extra (``pip install 'losstrail[hf]'``). Only this module
imports it, and ``import losstrail`` loads this module only when ``LosstrailCallback`` is
first used.
"""

from __future__ import annotations

import math

import torch

from losstrail.training.points import SNAPSHOTS
from losstrail.training.record import Recorder, check_memory
from losstrail.values.trajectory import Trajectory, check_dtype

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "losstrail.LosstrailCallback needs transformers; install it with pip install 'losstrail[hf]' "
        "(or pip install 'transformers>=4.40')"
    ) from err

__all__ = ["LosstrailCallback"]


def _counted_labels(module, kwargs) -> int | None:
    """How many labels ``module``'s own loss averages over, for a batch with ``labels``; None if unknown.

    Causal language models predict token t+1 from token t, so their loss counts
    ``labels[..., 1:]``; other Hugging Face losses count every label that is not -100.
    """
    labels = kwargs.get("shift_labels")
    if labels is None:
        labels = kwargs.get("labels")
        if not isinstance(labels, torch.Tensor):
            return None
        try:
            from transformers.loss.loss_utils import ForCausalLMLoss

            shifts = getattr(module, "loss_function", None) is ForCausalLMLoss
        except (ImportError, AttributeError):
            return None
        if shifts:
            labels = labels[..., 1:]
    return int(labels.ne(-100).sum()) if isinstance(labels, torch.Tensor) else None


class _StepLosses:
    """The mean loss at the start of one optimizer step, from the ``.loss`` the model returns in training mode.

    A forward hook, so it sees the losses the Trainer backpropagates for models that compute
    their own (``labels`` in the batch), unrounded, once per micro-batch. The Trainer passes
    ``num_items_in_batch`` to models that take it, which then divide each micro-batch's
    summed loss by that count (the Trainer's estimate, which can differ from the labels the
    model really counts): the hook undoes that, so the step's loss is the model's own mean
    over all the step's labels, the number ``model(**batch).loss`` gives on the step's data.
    Without ``num_items_in_batch`` it is the mean of the micro-batch losses.
    """

    def __init__(self, model: torch.nn.Module):
        self.losses: list[float] = []
        self.sums: list[tuple[float, int]] | None = []
        self.keep_next = False  # keep the next training batch (the first of an epoch)
        self.kept: dict | None = None
        self.handle = model.register_forward_hook(self._seen, with_kwargs=True)

    def _seen(self, module, args, kwargs, output):
        if not module.training:  # evaluation during training is not a step's loss
            return
        if self.keep_next and not args:
            self.kept = {k: v for k, v in kwargs.items() if k != "num_items_in_batch"}
            self.keep_next = False
        loss = getattr(output, "loss", None)
        if loss is None and isinstance(output, dict):
            loss = output.get("loss")
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            return
        value = float(loss.detach().float())
        self.losses.append(value)
        items = kwargs.get("num_items_in_batch")
        counted = _counted_labels(module, kwargs) if items is not None else None
        if counted is None or self.sums is None:
            self.sums = None  # mean of the micro-batch losses
        else:
            self.sums.append((value * float(items), counted))

    def take(self) -> float:
        """The loss of the step that just ended (NaN if the model returned none), and start again."""
        if self.sums and sum(n for _, n in self.sums):
            loss = sum(s for s, _ in self.sums) / sum(n for _, n in self.sums)
        elif self.losses:
            loss = sum(self.losses) / len(self.losses)
        else:
            loss = math.nan
        self.losses, self.sums = [], []
        return loss

    def remove(self) -> None:
        self.handle.remove()


class LosstrailCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that records the trajectory of ``Trainer.train()``.

    Pass it in ``Trainer(..., callbacks=[LosstrailCallback()])``; after training,
    ``callback.trajectory`` is a ``losstrail.Trajectory`` ready for ``make_plane``,
    ``project`` and ``loss_surface`` (with ``trainer.model`` and dict batches such as
    ``{'input_ids', 'attention_mask', 'labels'}``). A ``losstrail.Recorder`` does the
    recording: θ_0 when training begins, then one point every ``every`` optimizer steps,
    then the final parameters.

    The final point is labelled with the last epoch trained (as ``Recorder`` and Lightning's
    ``TrajectoryRecorder`` label it), and its loss is measured on the first batch of the last
    epoch, as ``model(**batch).loss``. The loss of point k is *measured*, not read from the logs:
    from the ``.loss`` the model
    returned in training mode during optimizer step k, the model's own mean over all the
    labels of the step's batches (its gradient accumulation micro-batches together), i.e.
    the loss at θ_k on the data the step descended, as ``model(**batch).loss`` computes it
    (with dropout, if the model has any). The Trainer's logs cannot give it per step: they
    average over ``logging_steps``, round, and may divide by a different label count.
    A model that returns no loss of its own (labels outside the batch, a custom
    ``compute_loss``) leaves the recorded loss NaN; ``project(..., model=, data=)`` still
    measures the true loss along the path. Accuracy is NaN. With several processes (DDP),
    each records its own copy; use the one of rank 0.

    Args:
        every: keep one point every this many optimizer steps (default 1).
        params: which parameters to record: ``'trainable'`` (default: with a PEFT model,
            just the adapter), ``'all'``, name patterns (``'transformer.h.0.*'``) or a
            predicate ``(name, param) -> bool``. Names are those of the Trainer's model
            (``trainer.model``), e.g. ``'base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight'``.
        storage, dtype, memory_limit, snapshots, quiet: as ``Recorder`` (paths past
            ``memory_limit`` go to disk, long ones sketched; the size is said before training).
    """

    def __init__(self, every: int = 1, *, params="trainable", storage=None, dtype: str | None = None,
                 memory_limit: int = 1 << 30, snapshots: int = SNAPSHOTS, quiet: bool = False):  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. LosstrailCallback(every=1)")
        self.every, self.params = every, params
        memory_limit = check_memory(memory_limit, snapshots)
        self._options = {"storage": storage, "dtype": check_dtype(dtype), "memory_limit": memory_limit,
                         "snapshots": snapshots, "quiet": quiet}  # fmt: skip
        self._recorder: Recorder | None = None
        self._losses: _StepLosses | None = None
        self._epoch = 0
        self._trajectory: Trajectory | None = None

    # -- Trainer events ----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise RuntimeError("LosstrailCallback needs the model; the Trainer passed none to on_train_begin")
        if self._recorder is not None:
            raise RuntimeError("this LosstrailCallback has recorded a training run already; make a new one per run")
        steps = state.max_steps if getattr(state, "max_steps", 0) and state.max_steps > 0 else None
        self._recorder = Recorder(model, self.every, params=self.params, steps=steps, **self._options)
        self._losses = _StepLosses(model)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._losses is not None:
            self._losses.keep_next = True

    def on_step_begin(self, args, state, control, **kwargs):
        self._epoch = int(state.epoch or 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._recorder is not None:
            self._recorder.record(loss=self._losses.take(), epoch=self._epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self._recorder is not None:
            self._losses.remove()
            if self._losses.kept is not None:  # the loss at the final parameters, as the other points' losses
                from losstrail.evaluation.loss import final_measure

                self._recorder.finish(*final_measure(self._recorder.model, self._losses.kept))
            self._trajectory = self._recorder.trajectory

    # -- the result ----------------------------------------------------------------------------
    @property
    def trajectory(self) -> Trajectory:
        """The recorded path: θ_0, one point every ``every`` steps, and the final parameters."""
        if self._trajectory is None:
            if self._recorder is None:
                raise RuntimeError("nothing was recorded yet: pass the callback to a Trainer and call trainer.train()")
            self._losses.remove()
            self._trajectory = self._recorder.trajectory  # training stopped without on_train_end
        return self._trajectory
