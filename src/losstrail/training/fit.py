"""Training with the path recorded: optimizers by name and ``fit``.

``fit`` trains a plain ``nn.Module`` (the built-in networks of the default job among them)
with its own loop and never imports Lightning; it hands a LightningModule, or any model
with a LightningDataModule, to a Lightning ``Trainer`` (``losstrail.training.lightning``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from losstrail._progress import bar
from losstrail.evaluation.batches import (
    TreeDataset,
    is_datamodule,
    is_lightning_datamodule,
    is_lightning_module,
    is_tree_of_tensors,
    map_tree,
)
from losstrail.evaluation.loss import LossRule, final_measure
from losstrail.training.optim import OPTIMIZER_BUILDERS as OPTIMIZER_BUILDERS
from losstrail.training.optim import check_optimizer as check_optimizer
from losstrail.training.optim import loop_optimizer, make_optimizer, seed_all
from losstrail.training.record import Recorder
from losstrail.values.trajectory import Trajectory

__all__ = ["Run", "fit", "make_optimizer"]


@dataclass(frozen=True)
class Run:
    """A trained model and the trajectory its parameters took."""

    model: torch.nn.Module
    trajectory: Trajectory


def check_positive_int(argument: str, value, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument}={value!r} must be a positive integer, e.g. {argument}={example}")
    return value


def needs_lightning(model, data) -> bool:
    """True when ``model`` is a LightningModule or ``data`` a LightningDataModule (seen without importing either)."""
    return is_lightning_module(model) or is_lightning_datamodule(data)


def fit(
    model: torch.nn.Module,
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
    """Train ``model`` on ``datamodule`` and record its trajectory.

    A LightningModule, or any model with a LightningDataModule, trains with a Lightning
    ``Trainer``; a plain ``nn.Module`` on other data (a DataLoader, a tree of tensors, the
    built-in data modules of ``losstrail.builtin.data``) trains with losstrail's own loop, the same
    steps without importing Lightning.

    Args:
        model: any LightningModule (``lightning.pytorch`` or the older ``pytorch_lightning``),
            or a plain ``nn.Module`` with a loss (see ``loss_fn``).
        datamodule: a DataModule, a training DataLoader or a tree of tensors such as ``(X, y)``.
        optimizer: a name (``'sgd'``, ``'momentum'``, ``'adam'``, ``'adamw'``, ``'adagrad'``,
            ``'rmsprop'``) or a callable ``(params, lr=...)``; default: the model's own
            ``configure_optimizers``, else its ``optimizer`` attribute, else Adam.
        learning_rate: default: the model's ``learning_rate`` attribute, else 1e-3.
        epochs: passes over the data (default 10).
        seed: seeds Python, NumPy and torch before training, for the data order.
            Seed before building the model too for identical initial weights.
        record_every: record one point every this many optimizer steps (default 1).
        accelerator: ``'cpu'`` (default), ``'gpu'``/``'cuda'`` or ``'auto'``.
        loss_fn, objective: for a plain ``nn.Module``, the loss by the one rule of
            ``LossRule``: ``loss_fn(outputs, targets)`` on ``(x, y)`` batches (default
            cross-entropy for class logits), ``model(**batch).loss`` on mapping batches, or
            ``objective(model, batch)``.
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
        optimizer = check_optimizer(optimizer)  # once, here: the loop takes the name as checked
    check_positive_int("epochs", epochs, 10)
    check_positive_int("record_every", record_every, 1)
    return train_model(model, datamodule, optimizer=optimizer, learning_rate=learning_rate, epochs=epochs, seed=seed,
                       record_every=record_every, accelerator=accelerator, loss_fn=loss_fn, objective=objective,
                       params=params, storage=storage, dtype=dtype, memory_limit=memory_limit, quiet=quiet)  # fmt: skip


def train_model(model: torch.nn.Module, datamodule, *, optimizer, learning_rate, epochs: int, seed, record_every: int,
                accelerator: str = "cpu", loss_fn=None, objective=None, params="trainable", storage=None,
                dtype: str | None = None, memory_limit: int = 1 << 30, quiet: bool = False) -> Run:  # fmt: skip
    """``fit`` with its settings as checked already (``fit``'s own checks, a job's ``TrainSpec``, ``compare``'s
    runs): train ``model`` and record its trajectory. The one place training starts: tests that must see a job
    train (or not) watch this."""
    every = record_every
    from losstrail.training.record import recorded_layout

    recorded_layout(model, params)  # a selection that does not fit fails here, before training
    record = {"storage": storage, "dtype": dtype, "memory_limit": memory_limit, "params": params, "quiet": quiet}
    if needs_lightning(model, datamodule):
        from losstrail.training.lightning import fit_with_lightning

        settings = {"optimizer": optimizer, "learning_rate": learning_rate, "epochs": epochs, "seed": seed,
                    "accelerator": accelerator, "quiet": quiet}  # fmt: skip
        trajectory = fit_with_lightning(model, datamodule, (objective, loss_fn), every, record, settings)
        return Run(model=model, trajectory=trajectory)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a LightningModule; got {type(model).__name__}")
    loader = train_loader(datamodule)
    rule = LossRule(model, objective, loss_fn)
    check_rule(rule, model, loader)
    if seed is not None:
        seed_all(seed)
    chosen = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    chosen = chosen if isinstance(chosen, str) or callable(chosen) else "adam"
    lr = learning_rate if learning_rate is not None else getattr(model, "learning_rate", 1e-3)
    steps = epochs * len(loader) if hasattr(loader, "__len__") else None  # the path's size is said before training
    recorder = Recorder(model, every, steps=steps, **record)
    _loop(model, loader, rule, loop_optimizer(chosen, model.parameters(), lr), recorder, epochs,
          _device(accelerator), quiet)  # fmt: skip
    return Run(model=model, trajectory=recorder.trajectory)


def train_loader(data):
    """The training batches of ``data``: a data module's ``train_dataloader()``, a tree of tensors in one
    shuffled batch, or ``data`` itself (a DataLoader or any iterable of batches)."""
    if is_tree_of_tensors(data):
        from losstrail.evaluation.batches import batch_loader

        return batch_loader(TreeDataset(data), None, shuffle=True)
    if is_datamodule(data):
        data.prepare_data()
        data.setup("fit")
        return data.train_dataloader()
    return data


def check_rule(rule: LossRule, model: torch.nn.Module, loader) -> None:
    """Run ``rule`` once on the first batch, so a batch or loss that does not fit fails before training.

    Neither the random state (the data order, dropout) nor a BatchNorm statistic moves: training
    starts as if this had not run.
    """
    saved = {name: b.clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        try:
            rule.check(model, next(iter(loader)))
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(saved[name])


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator not in ("cpu", "auto"):
        raise ValueError(f"accelerator={accelerator!r} is not supported; expected 'cpu', 'gpu', 'cuda' or 'auto'")
    return torch.device("cpu")


def _loop(model, loader, rule: LossRule, optimizer, recorder: Recorder, epochs: int, device, quiet: bool) -> None:
    """``epochs`` passes of forward, backward and step over ``loader``, each step recorded (the steps
    Lightning's automatic optimization takes, in its order, without Lightning)."""
    model.to(device)
    model.train()
    steps = epochs * len(loader) if hasattr(loader, "__len__") else 0
    first = None
    with bar(steps, "training", quiet, unit="step") as progress, torch.enable_grad():
        for epoch in range(epochs):
            for index, batch in enumerate(loader):
                batch = map_tree(lambda t: t.to(device, non_blocking=True), batch)
                first = batch if index == 0 else first
                loss, metrics = rule(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                recorder.record(loss.detach(), metrics.get("accuracy", math.nan), epoch=epoch)
                progress.update(1)
                if index % 20 == 0 and not quiet:
                    progress.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
    recorder.finish(*final_measure(model, first, rule))  # labelled with the last epoch trained, as every recorder
    model.cpu()
