"""Which loss a model is measured with, and classification accuracy when it applies."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Up to this many classes, the loss reduces over the transposed logits (see cross_entropy_terms).
_FEW_CLASSES = 16


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


def cross_entropy_terms(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy (N,) and the count of correct rows, for labels all in range.

    The same numbers as ``F.cross_entropy(outputs, targets, reduction="none")`` and
    ``correct_count``, from one max over the classes. Under ``vmap`` the built-in loss
    decomposes into a dozen masked ops for ``ignore_index``, and with few classes a
    reduction along the short last axis is slow; reducing the transposed (C, N) logits
    along their first axis runs along the examples instead.

    >>> out, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), torch.tensor([0, 1])
    >>> losses, correct = cross_entropy_terms(out, y)
    >>> bool(torch.allclose(losses, F.cross_entropy(out, y, reduction="none"))), int(correct)
    (True, 1)
    """
    outputs = outputs.float()  # half-precision logits (autocast) are summed in float32
    if outputs.shape[-1] > _FEW_CLASSES:
        top, best = outputs.max(dim=-1)
        lse = top + (outputs - top.unsqueeze(-1)).exp().sum(-1).log()
    else:
        columns = outputs.transpose(-1, -2)  # (C, N)
        top, best = columns.max(dim=0)  # the first largest, as argmax
        lse = top + (columns - top).exp().sum(0).log()
    picked = outputs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return lse - picked, (best == targets).sum()


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
