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


def cross_entropy_logsumexp(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(outputs, targets)`` for targets that are all valid class indices.

    Written as ``logsumexp - gather`` because under ``vmap`` the built-in one decomposes
    into a dozen masked ops for ``ignore_index`` and costs several times as much.

    >>> out, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), torch.tensor([0, 1])
    >>> bool(torch.isclose(cross_entropy_logsumexp(out, y), F.cross_entropy(out, y)))
    True
    """
    picked = outputs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (torch.logsumexp(outputs, dim=-1) - picked).mean()


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
