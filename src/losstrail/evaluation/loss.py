"""The one rule that turns a model and a batch into a loss, and accuracy where it applies.

Every stage that measures a loss (training a plain module, the path's true and slice
losses, the grid, a line, the Hessian, comparisons) uses ``LossRule``. In order:

- ``objective(model, batch)`` when given: a scalar mean loss, or ``(loss, {name: value})``;
- a mapping batch: ``model(**batch)`` and its ``.loss`` (a Hugging Face ``ModelOutput``), or the
  loss tensor it returns;
- ``(x, y)``: ``loss_fn(model(x), y)``; ``((x1, x2), y)`` and ``(x1, x2, y)``: ``model(x1, x2)``.
  ``loss_fn`` is the one passed, else ``model.loss_fn``, else cross-entropy when the outputs
  are class logits and the targets labels — never silently a loss the outputs do not fit.

Accuracy is measured only for classification outputs (logits ``(N, C)``, labels ``(N,)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

# Up to this many classes, the loss reduces over the transposed logits (see cross_entropy_terms).
_FEW_CLASSES = 16


def resolve_loss(model: torch.nn.Module, loss_fn: Callable | None = None) -> Callable | None:
    """``loss_fn`` if given, else ``model.loss_fn`` if the model has one, else None."""
    if loss_fn is not None:
        return loss_fn
    own = getattr(model, "loss_fn", None)
    return own if callable(own) else None


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
    outputs = outputs.to(torch.promote_types(outputs.dtype, torch.float32))  # half-precision logits: in float32
    if outputs.shape[-1] > _FEW_CLASSES:
        top, best = outputs.max(dim=-1)
        lse = top + (outputs - top.unsqueeze(-1)).exp().sum(-1).log()
    else:
        columns = outputs.transpose(-1, -2)  # (C, N)
        top, best = columns.max(dim=0)  # the first largest, as argmax
        lse = top + (columns - top).exp().sum(0).log()
    picked = outputs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return lse - picked, (best == targets).sum()


def is_classification(outputs, targets) -> bool:
    """True when ``outputs`` are logits ``(N, C)`` and ``targets`` integer labels ``(N,)``."""
    return (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and outputs.dim() == 2
        and outputs.is_floating_point()
        and targets.dim() == 1
        and outputs.shape[0] == targets.shape[0]
        and not targets.is_floating_point()
        and not targets.is_complex()
    )


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many rows of ``outputs`` (N, C) have their largest logit at ``targets`` (N,)."""
    return (outputs.argmax(dim=-1) == targets).sum()


def _is_pair_batch(batch) -> bool:
    return isinstance(batch, (tuple, list)) and len(batch) >= 2


def call_model(model, batch):
    """``(outputs, targets)`` of the default rule: targets None for a mapping batch."""
    if isinstance(batch, Mapping):
        return model(**batch), None
    if _is_pair_batch(batch):
        *inputs, targets = batch
        if len(inputs) == 1:
            x = inputs[0]
            return (model(*x) if isinstance(x, (tuple, list)) else model(x)), targets
        return model(*inputs), targets
    raise ValueError(
        f"a batch must be (inputs, targets), ((x1, x2), targets), (x1, x2, targets) or a mapping of the model's "
        f"keyword arguments; got a {type(batch).__name__}. Pass objective=lambda model, batch: <mean loss>"
    )


def _output_loss(out):
    """The loss a model returned itself: ``out.loss`` (``ModelOutput``), ``out['loss']``, or a scalar tensor."""
    if isinstance(out, torch.Tensor):
        return out if out.dim() == 0 else None
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    return loss


_RULE = "(x, y) -> model(x); ((x1, x2), y) and (x1, x2, y) -> model(x1, x2); a mapping -> model(**batch)"


def _describe_batch(batch) -> str:
    if isinstance(batch, Mapping):
        return f"a mapping with keys {list(batch)}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)}"
    return _describe(batch)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        kind = "float" if value.is_floating_point() else str(value.dtype).replace("torch.", "")
        return f"a {kind} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


class LossRule:
    """The loss of ``model`` on a batch, by the one rule (see the module docstring).

    ``check(model, batch)`` runs it once on a real batch, outside any ``vmap``, resolves the
    default loss and raises a clear error for a batch or objective that does not fit; call it
    before any expensive work. Then ``rule(model, batch)`` gives ``(loss, metrics)``.

    >>> model = torch.nn.Linear(2, 3)
    >>> rule = LossRule(model).check(model, (torch.randn(4, 2), torch.tensor([0, 1, 2, 0])))
    >>> rule.classify, rule.loss_fn is F.cross_entropy
    (True, True)
    """

    def __init__(self, model: torch.nn.Module, objective: Callable | None = None, loss_fn: Callable | None = None):
        if objective is not None and not callable(objective):
            raise ValueError(f"objective={objective!r} must be a callable (model, batch) -> mean loss")
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn={loss_fn!r} must be a callable (outputs, targets) -> mean loss")
        self.objective = objective
        self.loss_fn = resolve_loss(model, loss_fn) if objective is None else None
        self.kind: str | None = None  # 'objective', 'mapping' or 'pair', once checked
        self.classify = False
        self.n_classes: int | None = None  # classes of the logits, for classification
        self.metric_names: tuple[str, ...] = ()

    def check(self, model, batch) -> LossRule:
        """Run the rule once on ``batch`` (no grad), fix the default loss, and fail clearly if it cannot work."""
        with torch.no_grad():
            if self.objective is not None:
                self.kind = "objective"
                loss, metrics = self._split(self.objective(model, batch))
                self.metric_names = tuple(metrics)
                return self
            try:
                out, targets = call_model(model, batch)
            except TypeError as err:  # the batch's shape does not match the model's forward
                raise ValueError(
                    f"the model cannot be called on a batch of {_describe_batch(batch)} by the default rule "
                    f"({_RULE}): {err}. Pass objective=lambda model, batch: <mean loss>"
                ) from None
            if targets is None:
                self.kind = "mapping"
                if _output_loss(out) is None:
                    raise ValueError(
                        f"model(**batch) returned {_describe(out)} without a loss (no .loss); put the labels in the "
                        "batch (e.g. 'labels') or pass objective=lambda model, batch: <mean loss>"
                    )
                self._split(_output_loss(out), "the model's own loss")
                return self
            self.kind = "pair"
            self.classify = is_classification(out, targets)
            self.n_classes = out.shape[-1] if self.classify else None
            if self.loss_fn is None:
                if not self.classify:
                    raise ValueError(
                        f"no loss given, and the model's outputs ({_describe(out)}) and targets ({_describe(targets)}) "
                        "are not class logits and labels, so cross-entropy does not fit; pass "
                        "loss_fn=torch.nn.functional.mse_loss (or any (outputs, targets) -> mean loss), "
                        "or objective=(model, batch) -> loss"
                    )
                self.loss_fn = F.cross_entropy
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"the model returned {_describe(out)}, which loss_fn cannot take as it is; "
                    "pass objective=lambda model, batch: <mean loss>"
                )
            self._split(self.loss_fn(out, targets), "loss_fn")
        return self

    def _split(self, result, source: str = "objective"):
        loss, metrics = result if isinstance(result, tuple) and len(result) == 2 else (result, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
            raise ValueError(
                f"{source} must return the batch's mean loss as a scalar float tensor (or (loss, {{name: value}})); "
                f"it returned {_describe(loss)}"
            )
        if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
            raise ValueError(f"{source} returned extra metrics as {_describe(metrics)}; return a dict {{name: value}}")
        return loss.reshape(()), dict(metrics)

    @property
    def fused(self) -> bool:
        """True when the loss is plain cross-entropy on logits, so one pass gives loss and accuracy."""
        return self.kind == "pair" and self.classify and self.loss_fn is F.cross_entropy

    def __call__(self, model, batch) -> tuple[torch.Tensor, dict]:
        """``(mean loss, metrics)`` of ``model`` on ``batch``; metrics hold ``accuracy`` for classification."""
        if self.kind is None:
            raise RuntimeError("LossRule.check(model, batch) must run first")
        if self.kind == "objective":
            return self._split(self.objective(model, batch))
        out, targets = call_model(model, batch)
        if self.kind == "mapping":
            return _output_loss(out).reshape(()), {}
        loss = self.loss_fn(out, targets)
        if self.classify:
            return loss, {"accuracy": correct_count(out, targets).float() / len(targets)}
        return loss, {}


def final_measure(model: torch.nn.Module, batch, rule: LossRule | None = None) -> tuple[float, float]:
    """Loss and accuracy of the final parameters on ``batch``, as training measured them (no update).

    The model stays in the mode it is in (train mode, as every other point's loss was taken),
    but no BatchNorm running statistic moves.
    """
    if batch is None:
        return math.nan, math.nan
    if rule is None:
        rule = LossRule(model)
        try:
            rule.check(model, batch)
        except ValueError:  # the loss is defined inside training_step; nothing here can call it
            return math.nan, math.nan
    saved = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with torch.no_grad():
            loss, metrics = rule(model, batch)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
    return _as_float(loss), _as_float(metrics.get("accuracy", math.nan))


def _as_float(value) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
