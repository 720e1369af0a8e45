"""Optimizers by name, and seeding: what both training loops (losstrail's own and Lightning's) share."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import numpy as np
import torch

from losstrail._registry import stated_optimizer

__all__ = ["OPTIMIZER_BUILDERS", "check_optimizer", "make_optimizer", "seed_all"]

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


def seed_all(seed: int | None) -> None:
    """Seed Python, NumPy and torch (every device), as Lightning's ``seed_everything`` does, without Lightning.

    >>> seed_all(3); a = torch.rand(1); seed_all(3); bool(torch.equal(a, torch.rand(1)))
    True
    """
    seed = 0 if seed is None else int(seed)  # as seed_everything(None)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too
