"""Training with the path recorded: optimizers by name and ``fit``."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

from losstrail._batching import is_datamodule as is_datamodule
from losstrail._lightning import TrajectoryRecorder
from losstrail._loss import LossRule
from losstrail._progress import bar
from losstrail._registry import stated_optimizer
from losstrail.trajectory import Trajectory

__all__ = ["Run", "fit", "make_optimizer"]

OPTIMIZER_BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
}


def check_optimizer(optimizer: str | Callable) -> str | Callable:
    """The canonical name of ``optimizer`` (aliases resolved), or the callable unchanged."""
    return optimizer if callable(optimizer) else stated_optimizer(optimizer)


def make_optimizer(optimizer: str | Callable, params: Iterable, lr: float) -> torch.optim.Optimizer:
    """An optimizer by name, or built by ``optimizer(params, lr=lr)`` when it is a callable.

    >>> make_optimizer("momentum", torch.nn.Linear(2, 1).parameters(), 0.1).defaults["momentum"]
    0.9
    """
    chosen = check_optimizer(optimizer)
    if callable(chosen):
        return chosen(params, lr=lr)
    return OPTIMIZER_BUILDERS[chosen](params, lr)


@dataclass(frozen=True)
class Run:
    """A trained model and the trajectory its parameters took."""

    model: torch.nn.Module
    trajectory: Trajectory


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


def is_lightning_module(model) -> bool:
    """True for a LightningModule of either namespace (without importing the old one when unused)."""
    return isinstance(model, pl.LightningModule) or lightning_namespace(model) is not pl


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
    from losstrail._batching import TreeDataset, is_tree_of_tensors

    if is_tree_of_tensors(data):
        from losstrail.data import batch_loader

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


def check_positive_int(argument: str, value, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument}={value!r} must be a positive integer, e.g. {argument}={example}")
    return value


def fit(
    model: pl.LightningModule,
    datamodule,
    *,
    optimizer: str | Callable | None = None,
    learning_rate: float | None = None,
    epochs: int = 10,
    seed: int | None = None,
    record_every: int = 1,
    accelerator: str = "cpu",
    loss_fn: Callable | None = None,
    objective: Callable | None = None,
    params="trainable",
    storage=None,
    dtype: str | None = None,
    memory_limit: int = 1 << 30,
    quiet: bool = False,
) -> Run:
    """Train ``model`` on ``datamodule`` with Lightning and record its trajectory.

    Args:
        model: any LightningModule (``lightning.pytorch`` or the older ``pytorch_lightning``),
            or a plain ``nn.Module`` with ``loss_fn``.
        datamodule: a LightningDataModule (or a training DataLoader).
        optimizer: a name (``'sgd'``, ``'momentum'``, ``'adam'``, ``'adamw'``, ``'adagrad'``,
            ``'rmsprop'``) or a callable ``(params, lr=...)``; default: the model's own
            ``configure_optimizers``, or Adam when it has none.
        learning_rate: default: the model's ``learning_rate`` attribute, else 1e-3.
        epochs: passes over the data (default 10).
        seed: seeds Python, NumPy and torch before training, for the data order.
            Seed before building the model too for identical initial weights.
        record_every: record one point every this many optimizer steps (default 1).
        accelerator: ``'cpu'`` (default), ``'gpu'``/``'cuda'`` or ``'auto'``.
        loss_fn, objective: for a plain ``nn.Module`` (no Lightning), the loss by the one rule of
            ``LossRule``: ``loss_fn(outputs, targets)`` on ``(x, y)`` batches (default
            cross-entropy for class logits), ``model(**batch).loss`` on mapping batches, or
            ``objective(model, batch)``. ``model`` is then trained on ``datamodule`` (a
            DataModule, a DataLoader or a tree of tensors such as ``(X, y)``).
        params: which parameters the trajectory records: ``'trainable'`` (default), ``'all'``,
            name patterns (``'layer1.*'``) or a predicate ``(name, param) -> bool``.
        storage, dtype, memory_limit: where a path larger than ``memory_limit`` bytes (1 GiB)
            is kept on disk (default a temporary folder), and its dtype (``'float32'`` or
            ``'float16'``); a long one is kept sketched, its size said before training; see ``Recorder``.
        quiet: no progress bar.

    Returns:
        ``Run(model, trajectory)``; the trajectory has one point per recorded step plus the
        final parameters.
    """
    if optimizer is not None:
        check_optimizer(optimizer)
    check_positive_int("epochs", epochs, 10)
    every = check_positive_int("record_every", record_every, 1)
    from losstrail.record import recorded_layout

    recorded_layout(model, params)  # a selection that does not fit fails here, before training
    recorder = TrajectoryRecorder(every, storage=storage, dtype=dtype, memory_limit=memory_limit, params=params,
                                  quiet=quiet)  # fmt: skip
    user_model = model
    model, datamodule = _as_trainable(model, datamodule, objective, loss_fn)
    recorder.module = user_model  # a wrapped plain module's path is recorded under its own names
    if seed is not None:
        pl.seed_everything(seed, workers=True, verbose=False)
    with _quiet_lightning(), _optimizer_override(model, optimizer, learning_rate):
        namespace = lightning_namespace(model)
        trainer = namespace.Trainer(
            max_epochs=epochs,
            accelerator="gpu" if accelerator == "cuda" else accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=_callbacks_for(namespace, [recorder, _StepProgress(quiet)]),
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
    return Run(model=user_model, trajectory=recorder.trajectory)
