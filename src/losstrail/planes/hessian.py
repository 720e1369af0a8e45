"""Extreme eigenpairs of the loss Hessian, from Hessian-vector products and Lanczos.

The Hessian of a network is never formed: ``hvp(v)`` differentiates the gradient in the
direction ``v``, batch by batch over the data, and Lanczos with full re-orthogonalization
finds the extreme eigenpairs from a few dozen such products. The product is
forward-over-reverse (``jvp`` of ``grad``) where every op of the model has a forward-mode
rule, else reverse-over-reverse (``grad`` of ``<grad, v>``: fused attention kernels, some
losses); ``HessianEigen.product`` says which.

Everything that grows with the model is held per tensor, one tensor per chosen parameter in its
shape, on the device the products run on: the point the Hessian is taken at (the model's own
tensors when they are already in the dtype below), each vector, each product, the Lanczos basis
and the eigenvectors. Their dtype is the parameter's own, widened to float32 (bfloat16 and float16
parameters are differentiated through a cast from float32 and accumulate in float32; float64 ones
stay float64). Only the small tridiagonal matrix and its eigenvectors are NumPy float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from losstrail._progress import bar
from losstrail.evaluation.evaluator import math_attention
from losstrail.evaluation.layout import ParamLayout
from losstrail.evaluation.loss import LossRule
from losstrail.values.derived import MadeOnRead

__all__ = ["HessianEigen", "hessian_eigenpairs"]

# Lanczos steps when ``iterations`` is not given, and the memory their basis may take before fewer are taken.
ITERATIONS = 40
BASIS_BUDGET = 1 << 30  # bytes; or twice the model's parameters' bytes when that is more


@dataclass(frozen=True)
class HessianEigen:
    """The largest eigenpairs of the Hessian, and the most negative one.

    The eigenvectors are held per tensor: ``tensors`` is ``k + 1`` lists with one tensor per
    parameter of ``names`` (None: all of the model's), in its shape (float32, or float64 for
    float64 parameters; on the device the products ran on): the ``k`` largest, then the most
    negative. ``vectors`` and ``lowest_vector`` are the same as flat float64 NumPy arrays, made
    from ``tensors`` when first read (8 bytes a parameter each: a big model's are best left unread).
    """

    values: np.ndarray  # (k,) largest eigenvalues, descending
    vectors: np.ndarray  # (k, P) unit eigenvectors, float64
    lowest_value: float  # most negative (smallest) eigenvalue
    lowest_vector: np.ndarray  # (P,) float64
    product: str = "forward-over-reverse"  # how the Hessian-vector products were taken
    names: tuple[str, ...] | None = None  # the parameters the eigenvectors span, in order; None: all of them
    tensors: tuple | None = field(default=None, repr=False, compare=False)  # k + 1 lists of tensors, as above

    def __repr__(self) -> str:
        shown = {"vectors": "k x P", "lowest_vector": "P"}
        fields = [f"values={np.round(self.values, 4).tolist()}", f"lowest_value={self.lowest_value:.4g}"]
        for name, shape in shown.items():
            value = self.__dict__.get(name)
            fields.append(f"{name}=<{shape}, {'float64 array' if value is not None else 'per tensor'}>")
        return f"HessianEigen({', '.join(fields)}, product={self.product!r})"


def _flat_eigenvectors(eig, name: str) -> np.ndarray:
    """``vectors`` (k, P) or ``lowest_vector`` (P,) of a ``HessianEigen`` held per tensor, as float64 arrays."""
    rows = eig.tensors[:-1] if name == "vectors" else eig.tensors[-1:]
    value = np.stack([torch.cat([t.reshape(-1).double().cpu() for t in row]).numpy() for row in rows])
    return value if name == "vectors" else value[0]


for _name in ("vectors", "lowest_vector"):
    setattr(HessianEigen, _name, MadeOnRead(_name, _flat_eigenvectors))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a parameter of ``dtype`` is differentiated and its vectors held in: its own dtype, at least float32."""
    return torch.promote_types(dtype, torch.float32)


class _HessianOperator:
    """``v -> H v`` for the mean loss over ``batches`` at ``centre``, one tensor per parameter of ``names``.

    ``v`` and ``H v`` are lists of tensors like ``centre``'s (see the module's docstring for their dtype).
    """

    def __init__(self, model, batches, centre: Sequence[torch.Tensor], rule: LossRule, names, product: str):
        from torch.func import functional_call, grad, jvp, vjp

        named = dict(model.named_parameters())
        names, centre = tuple(names), tuple(centre)
        device = centre[0].device
        fixed = {n: p.detach().to(device) for n, p in named.items() if n not in names}
        dtypes = [named[n].dtype for n in names]  # what the model computes in: a cast where the centre is wider
        n_examples = batches.n_examples

        def _call(tensors, batch, call):
            chosen = {n: t.to(d) for n, t, d in zip(names, tensors, dtypes)}
            return functional_call(call, {f"model.{n}": t for n, t in {**fixed, **chosen}.items()}, (batch,))

        loss = _RuleCall(model, rule)
        gradient = grad(lambda tensors, batch: _call(tensors, batch, loss))

        def forward_over_reverse(v, batch):
            return jvp(lambda tensors: gradient(tensors, batch), (centre,), (tuple(v),))[1]

        def reverse_over_reverse(v, batch):
            return vjp(lambda tensors: gradient(tensors, batch), centre)[1](tuple(v))[0]

        self.product = product
        products = {"forward-over-reverse": forward_over_reverse, "reverse-over-reverse": reverse_over_reverse}

        def hvp(v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            total = None
            with math_attention():  # fused attention kernels have no forward-mode or second derivative
                for batch, n_b in zip(batches, batches.lengths):
                    pieces = products[self.product](v, batch)
                    if n_b == n_examples:  # one batch: its product is the sum (a piece may be ``v`` itself)
                        return list(pieces)
                    if total is None:
                        total = [piece * (n_b / n_examples) for piece in pieces]
                    else:
                        for t, piece in zip(total, pieces):
                            t.add_(piece, alpha=n_b / n_examples)
            return total

        def check() -> None:  # the rule, once, on the first batch at the centre
            _call(centre, batches.first(), _RuleCall(model, rule, check=True))

        def probe() -> None:  # one product on one batch: does this kind of product work here?
            with math_attention():
                products[self.product]([torch.zeros_like(c) for c in centre], batches.first())

        self.hvp, self.probe, self.check = hvp, probe, check
        self.centre = centre
        self.n_params = sum(c.numel() for c in centre)


class _RuleCall(torch.nn.Module):
    """The loss rule as a module, for ``functional_call``."""

    def __init__(self, model, rule: LossRule, check: bool = False):
        super().__init__()
        self.model, self.rule, self.checking = model, rule, check

    def forward(self, batch):
        if self.checking:
            return self.rule.check(self.model, batch)
        return self.rule(self.model, batch)[0]


def _not_twice_differentiable(err: Exception) -> ValueError:
    return ValueError(
        "reduction_method='hessian' needs a loss that is twice differentiable, and this model's is not "
        f"({type(err).__name__}: {str(err).splitlines()[0]}). "
        "Use reduction_method='filter' or 'pca' instead"
    )


def _centre(model, params, names, device: torch.device) -> list[torch.Tensor]:
    """The point the Hessian is taken at, one tensor per chosen parameter in its work dtype on ``device``."""
    layout = ParamLayout(model, names)
    if params is None:
        named = dict(model.named_parameters())
        pieces = [named[n].detach() for n in layout.names]
    elif isinstance(params, (list, tuple)) and all(isinstance(p, (torch.Tensor, np.ndarray)) for p in params):
        pieces = [torch.as_tensor(p).detach() for p in params]
        if len(pieces) != len(layout.names) or any(
            p.shape != s for p, s in zip(pieces, layout.shapes)
        ):  # fmt: skip
            got = [tuple(p.shape) for p in pieces]
            raise ValueError(
                f"params must give one tensor for each of the {len(layout.names)} chosen parameters, in their shapes "
                f"{[tuple(s) for s in layout.shapes][:3]}...; got {len(pieces)} of shapes {got[:3]}. Pass params=None "
                "to take the model's own"
            )
    else:
        flat = params.detach().reshape(-1) if isinstance(params, torch.Tensor) else np.asarray(params).reshape(-1)
        pieces = layout.split(layout.tensor(flat))  # a flat vector, also given as (1, P) or a list of floats
    return [p.to(device=device, dtype=_work_dtype(d)) for p, d in zip(pieces, layout.dtypes)]


def hessian_eigenpairs(
    model: torch.nn.Module,
    data,
    params=None,
    k: int = 2,
    *,
    loss_fn: Callable | None = None,
    objective: Callable | None = None,
    names=None,
    iterations: int | None = None,
    tol: float = 1e-3,
    batch_size: int = 512,
    seed: int | None = 0,
    device: str | torch.device = "cpu",
    quiet: bool = True,
) -> HessianEigen:
    """The ``k`` largest eigenpairs of the Hessian of the mean loss over ``data`` at ``params``.

    Memory: besides the model and one product's work (a few copies of the chosen parameters), the
    Lanczos basis holds one vector of the chosen parameters per step, in float32 (float64 for
    float64 parameters): ``iterations x P x 4`` bytes, 20 GB for 40 steps of a 124M-parameter
    model. Without ``iterations``, at most 40 steps are taken and fewer (at least ``k + 2``) when
    their basis would pass the larger of 1 GiB and twice the model's parameters' bytes, with a note
    (unless ``quiet``); a given ``iterations`` is taken as given, with a note when it passes that.

    Args:
        model: the network (its weights are not changed; evaluated in eval mode).
        data: an ``(X, y)`` pair, a Dataset, a DataLoader or a DataModule (see ``loss_surface``).
        params: where the Hessian is taken, over the parameters ``names`` chooses: None (default:
            the model's own, as they are, not copied), a flat vector (P,) (NumPy or torch), or a
            list of tensors, one per chosen parameter in its shape.
        k: how many of the largest eigenpairs (default 2).
        loss_fn, objective: the loss, by the rule of ``loss_surface``.
        names: the parameters the Hessian is taken over: a ``params=`` choice
            (``'trainable'``, ``'all'``, name patterns, a predicate); default ``'trainable'``.
        iterations: most Lanczos steps (default 40, bounded as above; fewer when ``P`` is smaller or
            it converges).
        tol: stop once the residual of every wanted Ritz pair is below ``tol`` times the largest eigenvalue.
        batch_size: examples per Hessian-vector product batch (default 512: small batches stay
            in cache; measured 1.8x faster than 4096 for LeNet).
        device: as ``loss_surface``.
        seed: seed of the starting vector.
        quiet: no progress bar, and no note.

    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    >>> data = (torch.randn(40, 2), torch.randint(0, 2, (40,)))
    >>> eig = hessian_eigenpairs(model, data)
    >>> eig.values.shape, bool(eig.values[0] >= eig.values[1] >= eig.lowest_value), eig.vectors.shape
    ((2,), True, (2, 17))
    """
    from losstrail.evaluation.batches import Batches
    from losstrail.evaluation.evaluator import eval_mode, note
    from losstrail.evaluation.layout import choose_parameters, selected_names

    device = torch.device(device)
    chosen = choose_parameters(model, names, trainable_only=False)
    sizes = dict(model.named_parameters())
    flat = params is not None and not isinstance(params, (list, tuple))
    n_params = int(np.prod(params.shape)) if flat else sum(sizes[n].numel() for n in chosen)
    selected_names(model, names, n_params, "parameter vector")  # a flat vector of the wrong length: refused
    centre = _centre(model, params, chosen, device)
    batches = Batches(data, batch_size, device)
    rule = LossRule(model, objective, loss_fn)
    with eval_mode(model):
        operator = _HessianOperator(model, batches, centre, rule, chosen, "forward-over-reverse")
        with torch.no_grad():
            operator.check()
        try:
            operator.probe()
        except (RuntimeError, NotImplementedError) as err:
            first = str(err).strip().splitlines()[0][:120]
            note(f"forward-mode autodiff fails on this model ({first}); using reverse-over-reverse products", quiet)
            operator.product = "reverse-over-reverse"
        steps = _steps(model, centre, k, iterations, quiet)
        try:
            values, lowest, vectors = _lanczos(operator, k, steps, tol, seed, quiet)
        except RuntimeError as err:  # an op that cannot be differentiated twice
            raise _not_twice_differentiable(err) from err
    names = None if len(chosen) == len(sizes) else tuple(chosen)
    return HessianEigen(values, None, lowest, None, operator.product, names, vectors)


def _steps(model, centre: Sequence[torch.Tensor], k: int, iterations: int | None, quiet: bool) -> int:
    """How many Lanczos steps to take at most: ``iterations``, or the default bounded by the basis's memory."""
    from losstrail._checks import size_text
    from losstrail.evaluation.evaluator import note

    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer))
                                   or iterations < 1):  # fmt: skip
        raise ValueError(f"iterations={iterations!r} must be a positive whole number of Lanczos steps, e.g. 40")
    n = sum(c.numel() for c in centre)
    vector = sum(c.numel() * c.element_size() for c in centre)  # one basis vector's bytes
    budget = max(BASIS_BUDGET, 2 * sum(p.numel() * p.element_size() for p in model.parameters()))
    wanted = min(ITERATIONS if iterations is None else int(iterations), n)
    if wanted * vector <= budget:
        return wanted
    dtype = str(centre[0].dtype).replace("torch.", "")
    basis = f"the Hessian's Lanczos basis of {wanted} vectors of P={n:,} ({dtype}) takes {size_text(wanted * vector)}"
    limit = f"{size_text(budget)} (the larger of 1 GiB and twice the model's parameters)"
    if iterations is not None:
        note(f"{basis}, more than {limit}; a smaller iterations= bounds it", quiet)
        return wanted
    steps = min(wanted, max(budget // vector, k + 2))
    note(f"{basis}, more than {limit}: taking at most {steps} steps ({size_text(steps * vector)}). Pass "
         f"iterations={wanted} to hessian_eigenpairs to take them anyway, or choose fewer parameters (params= of "
         "make_plane, names= of hessian_eigenpairs)", quiet)  # fmt: skip
    return int(steps)


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """``<a, b>`` over tensors, each tensor's sum in its own dtype, summed in float64."""
    return sum(float(torch.dot(x.reshape(-1), y.reshape(-1))) for x, y in zip(a, b))


def _start(centre: Sequence[torch.Tensor], seed) -> list[torch.Tensor]:
    """A seeded unit vector like ``centre``: the same values as one NumPy draw of all P, drawn tensor by tensor."""
    rng = np.random.default_rng(seed)
    q = [torch.from_numpy(rng.standard_normal(c.numel())).reshape(c.shape).to(c.dtype).to(c.device) for c in centre]
    norm = _dot(q, q) ** 0.5
    return [t.div_(norm) for t in q]


def _lanczos(operator: _HessianOperator, k: int, m: int, tol: float, seed, quiet: bool):
    """Extreme eigenpairs of a symmetric operator, Lanczos with full re-orthogonalization, at most ``m`` steps.

    The basis is held per tensor, ``(m, numel)`` in each tensor's dtype on its device, and only the rows the
    steps reach are written (on a CPU, only they take memory). Returns ``(values, lowest_value, vectors)``:
    the ``k`` largest eigenvalues, descending, the smallest, and ``k + 1`` unit eigenvectors per tensor
    (those of ``values``, then the lowest's).
    """
    centre = operator.centre
    if k > m:
        raise ValueError(f"k={k} eigenpairs need at least {k} Lanczos steps; raise iterations (now {m})")
    basis = [torch.empty((m, c.numel()), dtype=c.dtype, device=c.device) for c in centre]  # (m, numel) each
    q = _start(centre, seed)
    alphas, betas = [], []
    with bar(m, "hessian", quiet, unit="hvp") as pbar:
        for j in range(m):
            for rows, t in zip(basis, q):
                rows[j] = t.reshape(-1)
            w = [t.reshape(-1) for t in operator.hvp(q)]  # written in place below: q is not read again
            if not all(bool(torch.isfinite(t).all()) for t in w):
                raise ValueError("the Hessian-vector product is not finite at these parameters; use another method")
            alpha = _dot([t.reshape(-1) for t in q], w)
            for _ in range(2):  # full re-orthogonalization, twice
                coef = sum(rows[: j + 1].mv(t).double() for rows, t in zip(basis, w))  # (j + 1,)
                for rows, t in zip(basis, w):
                    t.addmv_(rows[: j + 1].T, coef.to(t.dtype), alpha=-1)
            alphas.append(alpha)
            pbar.update(1)
            beta = _dot(w, w) ** 0.5
            size = j + 1
            values, vecs = np.linalg.eigh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
            scale = max(abs(values[-1]), abs(values[0]), 1e-12)
            residuals = beta * np.abs(vecs[-1, [*range(max(0, size - k), size), 0]])
            if beta < 1e-10 or (size > k and np.all(residuals < tol * scale)):
                break  # converged, or the Krylov space is invariant and its Ritz pairs exact
            betas.append(beta)
            q = [t.div_(beta).reshape(c.shape) for t, c in zip(w, centre)]
    del q, w
    if size <= k:
        raise ValueError(f"the Hessian acts on a space of only {size} dimensions here, too few for {k} eigenpairs")
    wanted = [*range(size - 1, size - 1 - k, -1), 0]  # the top k, descending, then the lowest
    mix = torch.from_numpy(vecs[:, wanted].T.copy())  # (k + 1, size)
    vectors = [[] for _ in wanted]
    for t, c in enumerate(centre):  # tensor by tensor, each tensor's basis freed once its parts are made
        rows, weights = basis[t][:size], mix.to(basis[t].dtype).to(c.device)
        for i, vector in enumerate(vectors):
            vector.append((weights[i] @ rows).reshape(c.shape))
        basis[t] = rows = None
    for vector in vectors:
        norm = _dot([t.reshape(-1) for t in vector], [t.reshape(-1) for t in vector]) ** 0.5
        for t in vector:
            t.div_(norm)
    return values[wanted[:k]].copy(), float(values[0]), tuple(vectors)
