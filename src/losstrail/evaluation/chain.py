"""A model that is a chain of ``nn.Linear`` layers and elementwise activations, run over many plane points at once.

Under ``vmap`` a linear layer with a weight per point becomes a batched matrix product of
(examples × in) by (in × out) per point; with few outputs (3 classes on spirals) that product
runs at a few GFLOP/s. Kept hidden-major instead, (points, width, examples), every layer is a
product of the point's (out × in) weight by (in × examples) activations: long rows, the rate a
matrix product should have. The first layer's output comes from its three factored outputs
(``evaluation.evaluator.FirstLayer``), ``f(W0) + x·f(U) + y·f(V)`` point by point (so a point's numbers are
the same bits whatever other points share its chunk), and the points are taken a cache's worth at
a time (``_CACHE``), so each activation is written and read in cache.

``LinearChain.find`` accepts a model only where this is exactly its forward pass: the leaf
modules it calls are the factored first layer followed by plain ``nn.Linear`` layers and the
activations of ``_ELEMENTWISE``, each called once, each taking the previous one's output
object as its only input, all 2-D, and the model returning the last one's output object; the
loss is plain cross-entropy on class labels. Anything else runs as before.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearChain"]

# Activations applied elementwise, so any layout of the activations gives the same values.
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout)
# Bytes of one layer's activations for the points taken together (a share of the L2 and L3 caches):
# on spirals (1,110 examples, 50 units) 16 points at a time took half the time of 35 or more.
_CACHE = 4 << 20


def _plain(module: nn.Module) -> bool:
    """A module running its own class's ``forward``: no hooks, no parametrization, no replaced ``forward``."""
    if module._forward_hooks or module._forward_pre_hooks or "forward" in vars(module):
        return False
    return not nn.utils.parametrize.is_parametrized(module)


class LinearChain:
    """The layers after the first, as ``(module, weight, bias)`` with each parameter given by its offset in
    the flat points (``(start, shape)``) or as a fixed tensor; see the module's docstring."""

    def __init__(self, steps: list, width: int, dtype: torch.dtype):
        self.steps, self.width, self.dtype = steps, width, dtype

    @classmethod
    def find(cls, model: nn.Module, first: nn.Module, prefixes: dict, layout, own: dict, forward) -> LinearChain | None:
        """The chain of ``model`` after its first layer ``first``, or None; ``forward()`` runs the model once
        on a batch, ``own`` holds its tensors (``'model.<name>'``), ``prefixes`` maps ``id(module)`` to its name."""
        calls: list = []
        leaves = [m for m in model.modules() if not list(m.children())]
        watched = leaves + ([] if model in leaves else [model])
        hooks = [m.register_forward_hook(lambda m, a, out: calls.append((m, a, out))) for m in watched]
        try:
            forward()
        finally:
            for h in hooks:
                h.remove()
        returned = [out for m, _, out in calls if m is model][-1:]
        calls = [c for c in calls if c[0] is not model or model in leaves]
        if not calls or calls[0][0] is not first or not returned or returned[0] is not calls[-1][2]:
            return None
        if type(first) is not nn.Linear or not isinstance(calls[0][2], torch.Tensor) or calls[0][2].dim() != 2:
            return None
        steps, width = [], first.out_features
        for (_, _, before), (module, args, out) in zip(calls, calls[1:]):
            linear = type(module) is nn.Linear
            if not (linear or type(module) in _ELEMENTWISE) or not _plain(module):
                return None
            if len(args) != 1 or args[0] is not before or not isinstance(out, torch.Tensor) or out.dim() != 2:
                return None
            if linear:
                name = prefixes[id(module)]
                tensors = [cls._where(f"{name}.{p}", layout, own) for p in ("weight", "bias")]
                steps.append((module, *tensors))
                width = max(width, module.out_features)
            else:
                steps.append((module, None, None))
        return cls(steps, width, layout.dtype)

    @staticmethod
    def _where(name: str, layout, own: dict):
        """``(start, shape)`` of the parameter ``name`` in the flat points, its fixed tensor, or None (no bias)."""
        if name in layout.names:
            i = layout.names.index(name)
            return sum(layout.numels[:i]), tuple(layout.shapes[i])
        return own.get(f"model.{name}")

    def _tensor(self, where, flat: torch.Tensor):
        """The parameter at each point (C, ...), from the flat points (C, P) or a fixed tensor."""
        if where is None or isinstance(where, torch.Tensor):
            return None if where is None else where.to(flat.dtype).expand(flat.shape[0], *where.shape)
        start, shape = where
        size = 1
        for s in shape:
            size *= s
        return flat[:, start : start + size].reshape(flat.shape[0], *shape)

    def stats(self, outputs: torch.Tensor, coords: torch.Tensor, flat: torch.Tensor, targets: torch.Tensor,
              spread: bool) -> torch.Tensor:  # fmt: skip
        """``[mean loss, correct count, sum of squared losses]`` (C, 3) at the points ``coords`` (C, 2) with
        flat parameters ``flat`` (C, P), from the first layer's factored outputs (3, N, H) on a batch."""
        n, width = outputs.shape[1], outputs.shape[2]
        hidden_major = outputs.transpose(1, 2).contiguous()  # (3, H, N)
        weights = [(m, self._tensor(w, flat), self._tensor(b, flat)) for m, w, b in self.steps]
        step = max(1, _CACHE // (4 * n * max(self.width, 1)))
        xy = coords.tolist()
        rows = []
        for start in range(0, len(coords), step):
            sl = slice(start, start + step)
            h = torch.empty((len(xy[sl]), width, n), dtype=outputs.dtype, device=outputs.device)
            for k, (x, y) in enumerate(xy[sl]):  # one point at a time, so its numbers never depend on the others
                torch.add(hidden_major[0], hidden_major[1], alpha=x, out=h[k]).add_(hidden_major[2], alpha=y)
            for module, weight, bias in weights:
                if weight is None:
                    h = h.relu_() if type(module) is nn.ReLU else module(h)
                elif bias is None:
                    h = torch.bmm(weight[sl].to(h.dtype), h)
                else:
                    h = torch.baddbmm(bias[sl].to(h.dtype).unsqueeze(2), weight[sl].to(h.dtype), h)
            rows.append(self._cross_entropy(h, targets, spread))
        return torch.cat(rows)

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, spread: bool) -> torch.Tensor:
        """``[mean loss, correct, sum of squares]`` (c, 3) of class-major logits (c, K, N), as
        ``evaluation.loss.cross_entropy_terms`` computes them per point."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        top, best = logits.max(dim=1)  # (c, N): the first largest, as argmax
        lse = (logits - top.unsqueeze(1)).exp_().sum(1).log_().add_(top)
        picked = logits.gather(1, targets.view(1, 1, -1).expand(len(logits), 1, -1)).squeeze(1)
        losses = lse - picked
        squares = losses.square().sum(1) if spread else torch.zeros_like(lse[:, 0])
        correct = (best == targets).sum(1).to(losses.dtype)
        return torch.stack([losses.mean(1), correct, squares], dim=1)
