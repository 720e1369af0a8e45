"""Which parameters a path, plane and grid span, as one flat vector for ``torch.func`` calls.

``params=`` everywhere in losstrail chooses them: ``'trainable'`` (the default: parameters
with ``requires_grad``, so frozen backbones and adapters need no extra code), ``'all'``, name
patterns (``'transformer.h.0.*'``, a list of them) or a predicate ``(name, param) -> bool``.
Every other tensor of the model stays exactly as it is.

Paths and planes are float32 rows (float64 in NumPy arithmetic); a model's parameters may be
float32, float64, bfloat16 or a mix. ``ParamLayout.tensor`` builds flat vectors in the widest
float dtype the parameters need and ``ParamLayout.unflatten`` is the one place where a flat
vector becomes parameter tensors, each cast to its parameter's own dtype.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["ParamLayout", "choose_parameters", "flat_params", "selected_names"]


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def choose_parameters(
    model: torch.nn.Module,
    params: str | Sequence[str] | Callable | None = "trainable",
    *,
    argument: str = "params",
    trainable_only: bool = True,
) -> tuple[str, ...]:
    """Names of the parameters ``params`` selects, in ``model.named_parameters()`` order.

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> model[0].requires_grad_(False) and None
    >>> choose_parameters(model), choose_parameters(model, "all")
    (('1.weight', '1.bias'), ('0.weight', '0.bias', '1.weight', '1.bias'))
    >>> choose_parameters(model, ["*.bias"], trainable_only=False)
    ('0.bias', '1.bias')
    """
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    if not named:
        raise ValueError(f"{type(model).__name__} has no parameters, so there is no path or plane to draw")
    if params is None or params == "trainable":
        chosen = [n for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError(
                f"{argument}='trainable' selects nothing: no parameter of {type(model).__name__} requires grad. "
                f"Unfreeze some, or pass {argument}='all' or name patterns such as {argument}=[{names[0]!r}]"
            )
        return tuple(chosen)
    if params == "all":
        return tuple(names)
    if callable(params):
        chosen = [n for n, p in named if params(n, p)]
        what = f"{argument}=<predicate>"
    else:
        patterns = [params] if isinstance(params, str) else list(params)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise ValueError(
                f"{argument}={params!r} must be 'trainable', 'all', a name pattern or a list of them "
                f"(e.g. {argument}=['{names[0].rsplit('.', 1)[0]}.*']), or a predicate (name, param) -> bool"
            )
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(
                    f"{argument} pattern {pattern!r} matches no parameter of {type(model).__name__}; "
                    f"its parameters are named like {_few(names)}"
                )
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        what = f"{argument}={params!r}"
    if not chosen:
        raise ValueError(f"{what} selects no parameter of {type(model).__name__}; its parameters are {_few(names)}")
    if trainable_only:
        by_name = dict(named)
        if not any(by_name[n].requires_grad for n in chosen):
            raise ValueError(
                f"{what} selects only frozen parameters (requires_grad=False), which training never moves; "
                "choose trainable ones, e.g. params='trainable'"
            )
    return tuple(chosen)


class ParamLayout:
    """Names, shapes, sizes and dtypes of the chosen parameters, in ``model.parameters()`` order.

    ``names=None`` takes every parameter. ``dtype`` is what flat vectors of them are computed
    in: float32, or float64 when a parameter is float64 (bfloat16 and float16 parameters are
    computed in float32 and rounded once, when ``unflatten`` casts them).

    >>> layout = ParamLayout(torch.nn.Linear(3, 2))
    >>> layout.n_params, [tuple(t.shape) for t in layout.unflatten(torch.zeros(8)).values()]
    (8, [(2, 3), (2,)])
    >>> mixed = torch.nn.Sequential(torch.nn.Linear(1, 1).bfloat16(), torch.nn.Linear(1, 1).double())
    >>> layout = ParamLayout(mixed)
    >>> layout.dtype, [t.dtype for t in layout.unflatten(layout.tensor(np.zeros(4))).values()]
    (torch.float64, [torch.bfloat16, torch.bfloat16, torch.float64, torch.float64])
    """

    def __init__(self, model: torch.nn.Module, names: Sequence[str] | None = None):
        named = dict(model.named_parameters())
        if names is None:
            names = list(named)
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(
                f"{type(model).__name__} has no parameter {missing[0]!r} (the path was recorded on another model?); "
                f"its parameters are named like {_few(list(named))}"
            )
        self.names = list(names)
        self.shapes = [named[n].shape for n in self.names]
        self.numels = [named[n].numel() for n in self.names]
        self.dtypes = [named[n].dtype for n in self.names]
        floats = [d for d in self.dtypes if d.is_floating_point]
        self.dtype = functools.reduce(torch.promote_types, floats, torch.float32)
        self._one_dtype = self.dtypes[0] if len(set(self.dtypes)) == 1 else None
        self.n_params = sum(self.numels)
        self.everything = len(self.names) == len(named)

    def tensor(self, values, device: str | torch.device | None = None) -> torch.Tensor:
        """Flat vectors ``values`` (NumPy or torch, (..., P), any float dtype) in ``dtype`` on ``device``."""
        if isinstance(values, torch.Tensor):
            return values.to(device=device, dtype=self.dtype)
        numpy_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        return torch.from_numpy(np.ascontiguousarray(values, dtype=numpy_dtype)).to(device)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` of the flat vector ``flat`` (P,), each in its parameter's shape and dtype.

        Every flat vector that losstrail puts into a model goes through here: views where the
        dtype already matches, a cast where it does not (float32 rows into bfloat16 or float64
        layers).
        """
        if self._one_dtype == flat.dtype:  # nothing to cast (a call per point and batch: kept lean)
            return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.numels), self.shapes)}
        pieces = zip(self.names, torch.split(flat, self.numels), self.shapes, self.dtypes)
        return {n: t.view(s).to(d) for n, t, s, d in pieces}

    def split(self, flat) -> list:
        """The pieces of a flat NumPy or torch vector, one per parameter, in their shapes."""
        pieces, offset = [], 0
        for shape, numel in zip(self.shapes, self.numels):
            pieces.append(flat[offset : offset + numel].reshape(tuple(shape)))
            offset += numel
        return pieces

    def flatten(self, model: torch.nn.Module, out: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen parameters of ``model`` now, as one float32 vector (P,): a new one, or written into ``out``
        (each tensor cast to float32 and brought to the CPU in one copy)."""
        named = dict(model.named_parameters())
        if out is None:
            return torch.cat([named[n].detach().reshape(-1).float() for n in self.names])
        for name, piece in zip(self.names, self.split(out)):
            piece.copy_(named[name].detach())
        return out


def flat_params(model: torch.nn.Module, names: Sequence[str] | None = None) -> torch.Tensor:
    """The parameters of ``model`` (those named, or all) as one float32 vector, in ``model.parameters()`` order.

    >>> flat_params(torch.nn.Linear(3, 2)).shape
    torch.Size([8])
    """
    if names is None:
        return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    return ParamLayout(model, names).flatten(model)


def selected_names(model: torch.nn.Module, params, n_params: int, what: str) -> tuple[str, ...] | None:
    """The parameter names a plane or a path of ``n_params`` values spans, checked against ``model``.

    ``params`` is a ``params=`` choice or the names saved with the plane; None (all parameters)
    when that is what the choice comes to, so the fast all-parameters path applies.
    """
    names = choose_parameters(model, params, trainable_only=False)
    size = sum(dict(model.named_parameters())[n].numel() for n in names)
    if size != n_params:
        every = sum(p.numel() for p in model.parameters())
        which = "" if len(names) == len(list(model.parameters())) else f" in the {len(names)} tensors params selects"
        hint = " (the plane spans all of them: pass params='all')" if every == n_params else ""
        raise ValueError(
            f"the {what} has P={n_params} parameters but the model has P={size}{which}{hint}; "
            f"make the {what} from this model's trajectory, with the same params"
        )
    return None if len(names) == len(list(model.parameters())) else names
