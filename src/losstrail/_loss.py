"""Which loss a model is measured with, and classification accuracy when it applies."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def resolve_loss(model: torch.nn.Module, loss_fn: Callable | None = None) -> Callable:
    """``loss_fn`` if given, else ``model.loss_fn`` if the model has one, else cross-entropy.

    The callable takes ``(outputs, targets)`` and returns the mean loss of the batch.
    """
    if loss_fn is not None:
        return loss_fn
    own = getattr(model, "loss_fn", None)
    if callable(own):
        return own
    return F.cross_entropy


def is_classification(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """True when ``outputs`` are logits ``(N, C)`` and ``targets`` integer labels ``(N,)``."""
    return (
        outputs.dim() == 2
        and targets.dim() == 1
        and outputs.shape[0] == targets.shape[0]
        and not targets.is_floating_point()
        and not targets.is_complex()
    )


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many rows of ``outputs`` (N, C) have their largest logit at ``targets`` (N,)."""
    return (outputs.argmax(dim=-1) == targets).sum()
