"""Built-in models: an MLP, LeNet-5, and the reference package's ``GenericModel`` base.

Nothing in losstrail needs a model to subclass ``GenericModel``: any LightningModule (or,
through ``fit``, any ``nn.Module`` with a loss) works. The base exists so that a model
written for ``loss-landscape-anim`` keeps working unchanged.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from losstrail.builtin.nets import MODEL_BUILDERS as MODEL_BUILDERS
from losstrail.builtin.nets import MaxPool2x2 as MaxPool2x2
from losstrail.builtin.nets import lenet_parts, mlp_layers
from losstrail.builtin.nets import make_model as make_model
from losstrail.evaluation.layout import flat_params

__all__ = ["Accuracy", "LeNet", "MLP", "GenericModel", "flat_params", "make_model"]


def load_flat_params(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy the vector ``flat`` (P,) into the parameters of ``model``, in place."""
    flat = torch.as_tensor(flat)
    n_params = sum(p.numel() for p in model.parameters())
    if flat.numel() != n_params:
        raise ValueError(f"a flat vector of {flat.numel()} values does not fit a model of {n_params} parameters")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


class Accuracy(nn.Module):
    """The share of correct predictions, called as the reference's ``torchmetrics.Accuracy`` is.

    ``accuracy(preds, target)`` takes class indices ``(N, ...)`` or scores ``(N, C, ...)``
    (the class is their argmax over dim 1) and labels ``(N, ...)``; it returns the batch's
    accuracy as a scalar tensor and adds the batch to a running total that ``compute()``
    returns and ``reset()`` clears. It has no parameters or buffers, so it changes neither
    a model's parameter vector nor its ``state_dict``.

    Args:
        num_classes: the number of classes (scores must have this many columns).

    >>> accuracy = Accuracy(num_classes=3)
    >>> accuracy(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 2, 2, 1]))
    tensor(0.7500)
    >>> accuracy(torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]]), torch.tensor([1, 1]))
    tensor(0.5000)
    >>> accuracy.compute()
    tensor(0.6667)
    """

    def __init__(self, num_classes: int):
        super().__init__()
        try:
            self.num_classes = operator.index(num_classes)
        except TypeError:
            self.num_classes = 0
        if isinstance(num_classes, bool) or self.num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer, e.g. num_classes=10")
        self.reset()

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        correct, total = self._count(preds, target)
        self._add(correct, total)
        return correct.float() / total

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the running total."""
        self._add(*self._count(preds, target))

    def compute(self) -> torch.Tensor:
        """Accuracy over every batch since the last ``reset()`` (NaN before the first)."""
        return self._correct.float() / self._total

    def reset(self) -> None:
        """Forget the running total."""
        self._correct = torch.tensor(0)
        self._total = 0

    def _add(self, correct: torch.Tensor, total: int) -> None:
        self._correct = self._correct.to(correct.device) + correct  # stays on the device: no sync per step
        self._total += total

    def _count(self, preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        preds, target = torch.as_tensor(preds).detach(), torch.as_tensor(target).detach()
        if preds.is_floating_point() and preds.dim() == target.dim() + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"accuracy got scores of shape {tuple(preds.shape)} for num_classes={self.num_classes}; "
                    f"pass scores (N, {self.num_classes}) or class indices (N,), or set num_classes to their width"
                )
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"accuracy got predictions of shape {tuple(preds.shape)} and targets of shape {tuple(target.shape)}; "
                "pass class indices of the targets' shape (e.g. y_pred.argmax(dim=1)) or scores (N, C)"
            )
        return (preds == target).sum(), target.numel()


class GenericModel(pl.LightningModule):
    """The reference package's base class: classification with an optimizer chosen by name.

    Subclasses define ``forward``; the training step, the loss (cross-entropy), the
    optimizer and the flat-parameter helpers come from here.

    A subclass written for the reference, with its own ``training_step`` that calls
    ``self.accuracy(preds, y)``, appends to ``self.training_step_outputs`` and fills
    ``self.optim_path`` in ``on_train_epoch_end``, runs unchanged; losstrail records the
    trajectory itself and does not read those lists.

    Args:
        optimizer: one of ``'sgd'``, ``'momentum'`` (also ``'sgd+momentum'``), ``'adam'``,
            ``'adamw'``, ``'adagrad'``, ``'rmsprop'`` (default ``'adam'``).
        learning_rate: step size (default 1e-3).
        custom_optimizer: a callable ``(params, lr=...) -> torch.optim.Optimizer`` that
            replaces ``optimizer``.
        gpus: kept for compatibility with the reference; the device is chosen by ``fit``.
        num_classes: classes that ``self.accuracy`` scores (default 10, as the reference).
    """

    def __init__(
        self,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        custom_optimizer: Callable | None = None,
        gpus: int = 0,
        num_classes: int = 10,
    ):
        super().__init__()
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.custom_optimizer = custom_optimizer
        self.gpus = gpus
        self.accuracy = Accuracy(num_classes)
        # The reference's models fill these in their training steps; losstrail records a Trajectory instead.
        self.optim_path: list = []
        self.training_step_outputs: list = []

    # ``loss_fn(y_pred, y)``: cross-entropy, as in the reference. Being ``F.cross_entropy``
    # itself (not a wrapper) lets the grid recognise it and use its faster equivalent.
    loss_fn = staticmethod(F.cross_entropy)

    def training_step(self, batch, batch_idx):
        x, y = batch
        y_pred = self(x)
        accuracy = (y_pred.argmax(dim=-1) == y).float().mean()
        return {"loss": self.loss_fn(y_pred, y), "accuracy": accuracy}

    def configure_optimizers(self):
        from losstrail.training.optim import make_optimizer

        chosen = self.custom_optimizer if self.custom_optimizer is not None else self.optimizer
        return make_optimizer(chosen, self.parameters(), self.learning_rate)

    def get_flat_params(self) -> torch.Tensor:
        """All parameters as one vector (P,), in ``parameters()`` order."""
        return flat_params(self)

    def init_from_flat_params(self, flat_params: torch.Tensor) -> None:
        """Set all parameters from a vector (P,) made by ``get_flat_params``."""
        load_flat_params(self, flat_params)


class MLP(GenericModel):
    """A multilayer perceptron with ReLU activations.

    Args:
        input_dim: features per example.
        num_classes: output logits.
        hidden_dim: units per hidden layer (default 50).
        num_hidden_layers: hidden layers (default 1).
        learning_rate, optimizer, custom_optimizer, gpus: as for ``GenericModel``;
            the learning rate defaults to 5e-3 as in the reference.

    >>> MLP(input_dim=2, num_classes=3)(torch.zeros(4, 2)).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_dim: int = 50,
        num_hidden_layers: int = 1,
        learning_rate: float = 5e-3,
        optimizer: str = "adam",
        custom_optimizer: Callable | None = None,
        gpus: int = 0,
    ):
        layers = mlp_layers(input_dim, num_classes, hidden_dim, num_hidden_layers)  # checks the shape first
        super().__init__(optimizer, learning_rate, custom_optimizer, gpus, num_classes)
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class LeNet(GenericModel):
    """LeNet-5 (LeCun et al., 1998) for square single- or multi-channel images.

    Args:
        learning_rate: step size (default 1e-3).
        in_channels: image channels (default 1).
        num_classes: output logits (default 10).
        input_size: image height and width (default 28, as MNIST); smaller images such
            as the 8×8 digits get padding so that both pooling stages still fit.
        optimizer, custom_optimizer, gpus: as for ``GenericModel``.

    >>> LeNet()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        optimizer: str = "adam",
        custom_optimizer: Callable | None = None,
        gpus: int = 0,
    ):
        super().__init__(optimizer, learning_rate, custom_optimizer, gpus, num_classes)
        self.features, self.classifier = lenet_parts(in_channels, num_classes, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
