"""A model's parameters as one flat vector, for ``torch.func`` calls at chosen points."""

from __future__ import annotations

import torch


class ParamLayout:
    """Names, shapes and sizes of a model's parameters, in ``model.parameters()`` order.

    >>> layout = ParamLayout(torch.nn.Linear(3, 2))
    >>> layout.n_params, [tuple(t.shape) for t in layout.unflatten(torch.zeros(8)).values()]
    (8, [(2, 3), (2,)])
    """

    def __init__(self, model: torch.nn.Module):
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = sum(self.numels)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of the flat vector ``flat`` (P,)."""
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.numels), self.shapes)}

    def split(self, flat) -> list:
        """The pieces of a flat NumPy or torch vector, one per parameter, in their shapes."""
        pieces, offset = [], 0
        for shape, numel in zip(self.shapes, self.numels):
            pieces.append(flat[offset : offset + numel].reshape(tuple(shape)))
            offset += numel
        return pieces
