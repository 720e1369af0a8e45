"""Optimizers by name, and seeding: what both training loops (losstrail's own and Lightning's) share."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import numpy as np
import torch

from losstrail._registry import stated_optimizer

__all__ = ["OPTIMIZER_BUILDERS", "OwnStep", "check_optimizer", "loop_optimizer", "make_optimizer", "seed_all"]

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


def loop_optimizer(optimizer: str | Callable, params: Iterable, lr: float):
    """The optimizer losstrail's own loop steps with: ``OwnStep`` for ``'sgd'``, ``'momentum'`` and ``'adam'``,
    else ``make_optimizer``'s. Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (seconds on a
    laptop, longer than the default job's training); ``OwnStep`` takes the same steps, bit for bit, without it.

    A name is taken as checked where it came in (a ``TrainSpec``, ``fit``'s ``optimizer=``): one of
    ``OPTIMIZER_BUILDERS`` is used as it is; any other (an alias, a model's own attribute that nothing checked)
    is checked here."""
    known = callable(optimizer) or (isinstance(optimizer, str) and optimizer in OPTIMIZER_BUILDERS)
    chosen = optimizer if known else check_optimizer(optimizer)
    if isinstance(chosen, str) and chosen in OwnStep.RULES:
        return OwnStep(chosen, params, lr)
    return chosen(params, lr=lr) if callable(chosen) else OPTIMIZER_BUILDERS[chosen](params, lr)


class OwnStep:
    """``torch.optim``'s SGD (plain or momentum 0.9) and Adam (betas 0.9, 0.999, eps 1e-8) with their defaults,
    written as torch's single-tensor kernels are, so each step equals theirs bit for bit (tested), without
    importing ``torch._dynamo``. Only ``zero_grad`` and ``step``: what a training loop calls.

    >>> w = torch.nn.Parameter(torch.ones(2)); opt = OwnStep("adam", [w], 0.1)
    >>> w.sum().backward(); opt.step(); w.detach().tolist()
    [0.9000000357627869, 0.9000000357627869]
    """

    RULES = ("sgd", "momentum", "adam")

    def __init__(self, rule: str, params: Iterable, lr: float):
        self.rule, self.lr = rule, float(lr)
        self.params = [p for p in params if p.requires_grad]
        self.state: list = [None] * len(self.params)  # momentum buffer, or Adam's [exp_avg, exp_avg_sq, steps]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for k, p in enumerate(self.params):
            if p.grad is not None:
                getattr(self, "_" + self.rule)(k, p, p.grad)

    def _sgd(self, k: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        p.add_(grad, alpha=-self.lr)

    def _momentum(self, k: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        buf = self.state[k]
        if buf is None:
            buf = self.state[k] = torch.clone(grad).detach()
        else:
            buf.mul_(0.9).add_(grad, alpha=1)
        p.add_(buf, alpha=-self.lr)

    def _adam(self, k: int, p: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        if self.state[k] is None:
            zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for _ in range(2)]
            self.state[k] = [*zeros, 0]
        exp_avg, exp_avg_sq, _ = state = self.state[k]
        state[2] += 1  # each parameter counts its own steps (those it had a gradient in), as torch's Adam
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(state[2])  # torch keeps it as a float32 tensor and reads it back: the same float
        step_size = self.lr / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)


def seed_all(seed: int | None) -> None:
    """Seed Python, NumPy and torch (every device), as Lightning's ``seed_everything`` does, without Lightning.

    >>> seed_all(3); a = torch.rand(1); seed_all(3); bool(torch.equal(a, torch.rand(1)))
    True
    """
    seed = 0 if seed is None else int(seed)  # as seed_everything(None)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too
