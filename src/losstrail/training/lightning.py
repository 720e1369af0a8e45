"""Glue to Lightning: the callback that records a trajectory during ``trainer.fit``, and ``fit``'s Lightning path.

Only code that trains with Lightning imports this module (``fit`` does for a LightningModule
or a LightningDataModule), so a plain training loop with ``Recorder``, ``fit`` of a plain
``nn.Module`` (the default job), and everything that draws a saved run never import Lightning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings

import lightning.pytorch as pl
import torch

from losstrail._progress import bar
from losstrail.evaluation.batches import TreeDataset, is_datamodule, is_lightning_module, is_tree_of_tensors
from losstrail.evaluation.loss import LossRule, correct_count, final_measure, is_classification
from losstrail.training.optim import make_optimizer
from losstrail.training.points import SNAPSHOTS, Points, as_float
from losstrail.training.record import check_memory, path_rows, recorded_layout
from losstrail.values.trajectory import Trajectory, check_dtype

__all__ = ["TrajectoryRecorder", "fit_with_lightning"]


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


class _StepProgress(pl.Callback):
    """One progress bar over all optimizer steps, with the latest loss."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._bar = None

    def on_train_start(self, trainer, pl_module):
        total = trainer.estimated_stepping_batches
        self._bar = bar(int(total) if total != float("inf") else 0, "training", self.quiet, unit="step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._bar.update(1)
        if batch_idx % 20 == 0 and not self.quiet:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor):
                self._bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

    def on_train_end(self, trainer, pl_module):
        self._bar.close()


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning's start-up banner and the warnings that do not apply to small in-memory data."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
        warnings.filterwarnings("ignore", message=r".*but have no logger configured.*")  # self.log(logger=True)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def _optimizer_override(model: pl.LightningModule, optimizer, learning_rate):
    """Make ``model`` use ``optimizer``/``learning_rate`` for this fit, then restore it.

    A model that defines no ``configure_optimizers`` gets Adam at its ``learning_rate``
    (or 1e-3).
    """
    base = lightning_namespace(model).LightningModule
    defines_own = type(model).configure_optimizers is not base.configure_optimizers
    if optimizer is None and learning_rate is None and defines_own:
        yield
        return
    chosen = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    chosen = chosen if isinstance(chosen, str) or callable(chosen) else "adam"
    lr = learning_rate if learning_rate is not None else getattr(model, "learning_rate", 1e-3)
    model.configure_optimizers = lambda: make_optimizer(chosen, model.parameters(), lr)
    try:
        yield
    finally:
        del model.configure_optimizers


def lightning_namespace(model):
    """The Lightning package ``model`` is built on: ``lightning.pytorch``, or the older ``pytorch_lightning``."""
    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "pytorch_lightning":
            import pytorch_lightning

            return pytorch_lightning
    return pl


def _callbacks_for(namespace, callbacks: list) -> list:
    """``callbacks`` as the Callback type of ``namespace`` (the same hooks, the other base class)."""
    if namespace is pl:
        return callbacks
    out = []
    for callback in callbacks:
        bridged = type(type(callback).__name__, (type(callback), namespace.Callback), {})
        callback.__class__ = bridged
        out.append(callback)
    return out


class _PlainModule(pl.LightningModule):
    """A plain ``nn.Module`` and its loss rule, as the LightningModule that ``fit`` trains.

    Its parameters are the module's own, in the same order, so the trajectory is the module's.
    """

    def __init__(self, model: torch.nn.Module, rule: LossRule):
        super().__init__()
        self.model = model
        self.rule = rule
        self.learning_rate = getattr(model, "learning_rate", 1e-3)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def training_step(self, batch, batch_idx):
        loss, metrics = self.rule(self.model, batch)
        return {"loss": loss, **metrics}


def _as_trainable(model: torch.nn.Module, data, objective, loss_fn):
    """``(LightningModule, data)`` ready for the Trainer: a plain module is wrapped with its loss rule."""
    if is_tree_of_tensors(data):
        from losstrail.evaluation.batches import batch_loader

        data = batch_loader(TreeDataset(data), None, shuffle=True)
    if is_lightning_module(model):
        return model, data
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a LightningModule; got {type(model).__name__}")
    rule = LossRule(model, objective, loss_fn)
    loader = data.train_dataloader() if is_datamodule(data) and _prepared(data) else data
    if isinstance(loader, torch.utils.data.DataLoader):
        with torch.no_grad():
            rule.check(model, next(iter(loader)))  # a batch or loss that does not fit fails here, before training
    return _PlainModule(model, rule), data


def _prepared(datamodule) -> bool:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return True


def fit_with_lightning(model, datamodule, loss: tuple, every: int, record: dict, settings: dict) -> Trajectory:
    """``fit``'s path for a LightningModule or a LightningDataModule: a Lightning ``Trainer`` with a
    ``TrajectoryRecorder``; ``loss`` is ``(objective, loss_fn)``, ``record`` the recorder's settings and
    ``settings`` the rest of ``fit``'s (optimizer, learning_rate, epochs, seed, accelerator, quiet)."""
    recorder = TrajectoryRecorder(every, **record)
    user_model = model
    model, datamodule = _as_trainable(model, datamodule, *loss)
    recorder.module = user_model  # a wrapped plain module's path is recorded under its own names
    if settings["seed"] is not None:
        pl.seed_everything(settings["seed"], workers=True, verbose=False)
    with _quiet_lightning(), _optimizer_override(model, settings["optimizer"], settings["learning_rate"]):
        namespace = lightning_namespace(model)
        accelerator = settings["accelerator"]
        trainer = namespace.Trainer(
            max_epochs=settings["epochs"],
            accelerator="gpu" if accelerator == "cuda" else accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=_callbacks_for(namespace, [recorder, _StepProgress(settings["quiet"])]),
        )
        # The reference's own DataModules skip super().__init__() (no `trainer` attribute); the Trainer needs it.
        if isinstance(datamodule, namespace.LightningDataModule) and hasattr(datamodule, "trainer"):
            trainer.fit(model, datamodule=datamodule)
        elif is_datamodule(datamodule):  # of the other namespace, or not initialised: hand over its loader
            datamodule.prepare_data()
            datamodule.setup("fit")
            trainer.fit(model, train_dataloaders=datamodule.train_dataloader())
        else:
            trainer.fit(model, train_dataloaders=datamodule)
    model.cpu()
    return recorder.trajectory
