"""The reference package's ``model`` module, for code written for ``loss-landscape-anim``.

``from loss_landscape_anim.model import GenericModel, MLP, LeNet`` becomes
``from losstrail.model import GenericModel, MLP, LeNet`` and the rest of the code stays as
it is. ``GenericModel`` is losstrail's own (``losstrail.GenericModel``); ``MLP`` and
``LeNet`` here are losstrail's models with the reference's argument order, so positional
calls such as ``MLP(2, 3, 5e-3)`` mean what they meant there. New code can use
``losstrail.MLP`` and ``losstrail.LeNet`` directly.

>>> from losstrail.model import MLP
>>> model = MLP(2, 3, 1e-2)  # input_dim, num_classes, learning_rate, as in the reference
>>> model.learning_rate, model(torch.zeros(4, 2), apply_softmax=True).sum(dim=1).tolist()
(0.01, [1.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from losstrail.builtin import models
from losstrail.builtin.models import GenericModel

__all__ = ["GenericModel", "LeNet", "MLP"]


class MLP(models.MLP):
    """``losstrail.MLP`` with the reference's arguments, in its order.

    Args:
        input_dim: features per example.
        num_classes: output logits.
        learning_rate: step size (default 5e-3, the reference's default model's).
        num_hidden_layers: hidden layers (default 1).
        hidden_dim: units per hidden layer (default 50).
        optimizer, custom_optimizer, gpus: as for ``GenericModel``.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        learning_rate: float = 5e-3,
        num_hidden_layers: int = 1,
        hidden_dim: int = 50,
        optimizer: str = "adam",
        custom_optimizer: Callable | None = None,
        gpus: int = 0,
    ):
        super().__init__(
            input_dim=input_dim,
            num_classes=num_classes,
            hidden_dim=hidden_dim,
            num_hidden_layers=num_hidden_layers,
            learning_rate=learning_rate,
            optimizer=optimizer,
            custom_optimizer=custom_optimizer,
            gpus=gpus,
        )

    def forward(self, x_in: torch.Tensor, apply_softmax: bool = False) -> torch.Tensor:
        """Logits (N, num_classes), or class probabilities with ``apply_softmax=True``."""
        y_pred = super().forward(x_in)
        return F.softmax(y_pred, dim=1) if apply_softmax else y_pred


class LeNet(models.LeNet):
    """``losstrail.LeNet`` with the reference's arguments, in its order.

    The network is losstrail's LeNet-5 for ``input_size`` × ``input_size`` images (28 by
    default, as ``losstrail.datamodule.MNISTDataModule`` serves them; the reference resized
    MNIST to 32).

    Args:
        learning_rate: step size.
        num_classes: output logits (default 10; the reference required it).
        optimizer, custom_optimizer, gpus: as for ``GenericModel``.
        in_channels, input_size: image channels (default 1) and side (default 28).

    >>> LeNet(1e-3, 10)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        num_classes: int = 10,
        optimizer: str = "adam",
        custom_optimizer: Callable | None = None,
        gpus: int = 0,
        *,
        in_channels: int = 1,
        input_size: int = 28,
    ):
        super().__init__(
            learning_rate=learning_rate,
            in_channels=in_channels,
            num_classes=num_classes,
            input_size=input_size,
            optimizer=optimizer,
            custom_optimizer=custom_optimizer,
            gpus=gpus,
        )
