"""Planes held per tensor, in the model's dtype and on its device, and grid points set in place.

A plane of a big model is never a flat vector of all P parameters: its origin is the model's own
tensors (or views of a recorded row), and each direction is a list of tensors shaped like the
parameters, in their dtype (bfloat16 weights get bfloat16 directions), or only the seeds and
scales that draw it again, tensor by tensor. A grid point is evaluated by pointing the
parameters at tensors that hold ``origin + x*u + y*v``, module by module as the forward pass
reaches them (``InPlace``); the model's own tensors are never written, so they are exactly what
they were afterwards, also after an exception.

Memory, in units of the chosen parameters' bytes: a plane with stored directions is the model
plus two (3x), and its grid adds one module's parameters at a time; with ``store='seed'`` the
directions are drawn again, tensor by tensor, inside each module's hook, so the grid costs the
model plus one module's parameters and one tensor's temporaries (2x and a little). A model that
reads a parameter outside the forward of the module owning it gets one whole working copy (+1x).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from losstrail._memory import give_back_freed_memory
from losstrail._progress import say

__all__ = [
    "Draw", "InPlace", "PlaneTensors", "draw_direction", "is_sharded", "points_in_place", "resharded",
    "sharded_like", "sizes_wanted", "tensor_seeds", "whole",
]  # fmt: skip

# How a random direction is scaled, tensor by tensor (Li et al., 2018 for 'filter' and 'layer').
RULES = ("filter", "layer", "random")


def tensor_seeds(seed: int | None, n: int) -> list[int]:
    """``n`` independent 63-bit seeds from ``seed`` (fresh entropy for None), one per tensor and direction."""
    state = np.random.SeedSequence(seed).generate_state(2 * n, np.uint32).astype(np.uint64)
    return [int((state[2 * k] << np.uint64(31)) ^ state[2 * k + 1]) & ((1 << 63) - 1) for k in range(n)]


def is_sharded(t) -> bool:
    """True for a ``DTensor``: a parameter sharded across ranks (FSDP2's ``fully_shard``, tensor parallelism)."""
    if "torch.distributed.tensor" not in sys.modules:  # nothing can be one: keep its import off other paths
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without the public DTensor
        return False
    return isinstance(t, DTensor)


def resharded(model: torch.nn.Module) -> list:
    """The FSDP2 modules of ``model``, each put back in its shards (a root module keeps its parameters whole
    after a forward pass, and would not gather them again from shards written since); [] for other models."""
    if "torch.distributed.fsdp" not in sys.modules:
        return []
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch with FSDP1 only
        return []

    found = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in found:
        m.reshard()
    return found


def whole(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or the whole of a sharded tensor (gathered from every rank: a collective call)."""
    return t.full_tensor() if is_sharded(t) else t


def sharded_like(full: torch.Tensor, like) -> torch.Tensor:
    """``full`` (the same on every rank) laid out as the sharded tensor ``like``: each rank keeps only its own
    part, in its own memory (no communication)."""
    import inspect

    from torch.distributed.tensor import DTensor, distribute_tensor

    if "src_data_rank" not in inspect.signature(distribute_tensor).parameters:
        raise RuntimeError(
            f"planes of a sharded model need torch 2.7 or later (distribute_tensor(src_data_rank=None)); this is "
            f"torch {torch.__version__}: upgrade torch"
        )
    part = distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local().clone()
    return DTensor.from_local(part, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())


def _gaussian(shape, seed: int, device) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)


class Draw:
    """One random direction kept as a seed and a scale per tensor, drawn again on demand.

    ``scales[k]`` multiplies tensor ``k``'s standard Gaussian draw: a per-filter column
    (shape ``(n_filters, 1, ...)``), a scalar, or None for a zero tensor (biases of
    ``'filter'``/``'layer'`` directions unless ``keep_biases``).
    """

    def __init__(self, seeds: Sequence[int], scales: Sequence):
        self.seeds, self.scales = list(seeds), list(scales)

    def tensor(self, k: int, shape, dtype: torch.dtype, device) -> torch.Tensor:
        scale = self.scales[k]
        if scale is None:
            return torch.zeros(tuple(shape), dtype=dtype, device=device)
        g = _gaussian(shape, self.seeds[k], device)
        return g.mul_(scale.to(device) if isinstance(scale, torch.Tensor) else scale).to(dtype)


def sizes_wanted(centre: Sequence[torch.Tensor], rule: str, keep_biases: bool = False) -> list:
    """What each tensor of a direction scaled by ``rule`` must measure, from ``centre``: per-filter norms (a
    column shaped ``(n_filters, 1, ...)``, ``'filter'``), one norm (a float, ``'layer'``, and biases when
    ``keep_biases``), None for a zero tensor (biases otherwise), or ``'random'`` (normalized afterwards).
    Computed once for both directions of a plane."""
    norm = torch.linalg.vector_norm
    wanted = []
    for c in centre:
        c = whole(c.detach())  # a sharded tensor's norms are its whole tensor's, as in one process
        if rule == "random":
            wanted.append("random")
        elif c.dim() >= 2 and rule == "filter":
            wanted.append(norm(c, dim=tuple(range(1, c.dim())), keepdim=True, dtype=torch.float32))
        elif c.dim() >= 2 or keep_biases:
            wanted.append(float(norm(c, dtype=torch.float32)))
        else:
            wanted.append(None)
    return wanted


def _scale(g: torch.Tensor, wanted) -> tuple[object, float]:
    """``(scale, squared length)``: what multiplies the Gaussian ``g`` so it measures ``wanted`` (see
    ``sizes_wanted``; ``'random'``: 1) and the squared length of the scaled tensor (known, no pass over it)."""
    norm = torch.linalg.vector_norm
    if isinstance(wanted, str):
        return 1.0, float(norm(g)) ** 2
    if isinstance(wanted, torch.Tensor):
        axes = tuple(range(1, g.dim()))
        return wanted / norm(g, dim=axes, keepdim=True), float((wanted.double() ** 2).sum())
    if wanted is not None:
        return wanted / float(norm(g)), wanted**2
    return None, 0.0


def draw_direction(
    centre: Sequence[torch.Tensor],
    rule: str,
    seed: int | None,
    *,
    stream: int = 0,
    keep_biases: bool = False,
    store: bool = True,
    wanted: list | None = None,
) -> tuple[list[torch.Tensor] | None, Draw]:
    """A random direction tensor by tensor, scaled to ``centre`` by ``rule`` (see ``RULES``).

    ``stream`` picks one of several independent directions of one ``seed`` (0 for u, 1 for v).
    ``wanted``: ``sizes_wanted(centre, rule, keep_biases)`` when already computed (for the other
    direction). Returns ``(tensors, draw)``: the direction in each centre tensor's dtype and device
    (None unless ``store``) and the ``Draw`` that makes it again. Raises ValueError when the direction
    has zero length (every scaled tensor of the centre is zero).
    """
    n = len(centre)
    seeds = tensor_seeds(seed, n * (stream + 1))[n * stream :]
    wanted = sizes_wanted(centre, rule, keep_biases) if wanted is None else wanted

    def one(k: int):
        c = centre[k]
        if wanted[k] is None:  # a zero tensor: nothing to draw
            return None, 0.0, (torch.zeros_like(c) if store else None)
        g = _gaussian(c.shape, seeds[k], c.device)
        scale, squared = _scale(g, wanted[k])
        if not store:
            return scale, squared, None
        piece = g.mul_(scale).to(c.dtype)
        return scale, squared, (sharded_like(piece, c) if is_sharded(c) else piece)

    # Tensor by tensor, each from its own seed: the draws (one core each on a CPU) run side by side (two at a time
    # when only their scales are kept: each draw is a temporary as big as its tensor).
    most = 4 if store else 2
    workers = max(1, min(torch.get_num_threads(), most)) if all(c.device.type == "cpu" for c in centre) else 1
    with ThreadPoolExecutor(workers) as pool:
        drawn = list(pool.map(one, range(n)))
    if not store:
        give_back_freed_memory()  # the draws' freed blocks, kept by the workers' heaps
    scales, pieces = [d[0] for d in drawn], [d[2] for d in drawn]
    total = sum(d[1] for d in drawn)
    if not total > 0:
        raise ValueError(
            f"reduction_method={rule!r} made a zero-length direction: the centre's weights are all zero. "
            "Centre the plane elsewhere (centre='final') or use 'random'"
        )
    if rule == "random":  # unit length over the whole vector
        unit = 1.0 / float(np.sqrt(total))
        scales = [unit] * len(scales)
        pieces = [p.mul_(unit) if p is not None else None for p in pieces]
    return (pieces if store else None), Draw(seeds, scales)


class PlaneTensors:
    """A plane held per tensor: ``origin``, ``u`` and ``v`` as lists of tensors shaped like the parameters.

    ``u``/``v`` may be None with ``draws=(Draw, Draw)`` that make them again, tensor by tensor.
    ``own`` is True when ``origin`` is the model's own tensors (a plane around a model): evaluating
    it checks that the model was not changed since (their version counters).
    """

    def __init__(self, names: Sequence[str], origin: Sequence[torch.Tensor], u=None, v=None, *, draws=None,
                 own: bool = False):  # fmt: skip
        self.names = tuple(names)
        self.origin = list(origin)
        self.u, self.v = (None if u is None else list(u)), (None if v is None else list(v))
        self.draws = draws
        if (self.u is None or self.v is None) and draws is None:
            raise ValueError("a plane held per tensor needs its directions or the draws that make them")
        self.shapes = [tuple(t.shape) for t in self.origin]
        self.n_params = sum(t.numel() for t in self.origin)
        self.own = own
        self._versions = [t._version for t in self.origin] if own else None

    @classmethod
    def from_flat(cls, layout, origin: np.ndarray, u: np.ndarray, v: np.ndarray) -> PlaneTensors:
        """Views of flat ``(P,)`` arrays, piece by piece in ``layout``'s order (no copy)."""
        pieces = [layout.split(torch.from_numpy(np.ascontiguousarray(a))) for a in (origin, u, v)]
        return cls(layout.names, *pieces)

    @property
    def nbytes(self) -> int:
        """Bytes of one copy of the parameters the plane spans, in their dtype."""
        return sum(t.numel() * t.element_size() for t in self.origin)

    def direction(self, which: str, k: int) -> torch.Tensor:
        """Tensor ``k`` of direction ``'u'`` or ``'v'``, stored or drawn again."""
        stored = self.u if which == "u" else self.v
        if stored is not None:
            return stored[k]
        t = self.origin[k]
        drawn = self.draws[0 if which == "u" else 1].tensor(k, t.shape, t.dtype, t.device)
        return sharded_like(drawn, t) if is_sharded(t) else drawn

    def piece(self, which: str, k: int) -> np.ndarray:
        """Tensor ``k`` of ``'origin'``, ``'u'`` or ``'v'`` as a flat float32 NumPy vector (the whole tensor of a
        sharded one: a collective call, so every rank reads it)."""
        t = self.origin[k] if which == "origin" else self.direction(which, k)
        return whole(t).detach().reshape(-1).float().cpu().numpy()

    def flat(self, which: str) -> np.ndarray:
        """``'origin'``, ``'u'`` or ``'v'`` as one float32 NumPy vector (P,), in the tensors' order."""
        out = np.empty(self.n_params, np.float32)
        offset = 0
        for k, t in enumerate(self.origin):
            out[offset : offset + t.numel()] = self.piece(which, k)
            offset += t.numel()
        return out

    def check_unchanged(self) -> None:
        """A ValueError when the model a plane was made around has been changed since (trained, loaded)."""
        if self._versions is not None and [t._version for t in self.origin] != self._versions:
            raise ValueError(
                "the model was changed (trained or loaded) after make_plane(model, ...) centred a plane on it; "
                "make the plane again from the model as it is now"
            )


@contextlib.contextmanager
def points_in_place(model: torch.nn.Module, plane: PlaneTensors, *, scheme: str = "modules"):
    """An ``InPlace`` ``at``: ``at(x, y)`` makes the model's chosen parameters ``origin + x*u + y*v`` until the
    block ends (see ``InPlace`` for the two schemes); the model's own tensors are put back, untouched, when the
    block ends, whatever raised inside it."""
    plane.check_unchanged()
    fsdp = resharded(model)
    named = dict(model.named_parameters())
    missing = [n for n in plane.names if n not in named]
    if missing:
        raise ValueError(f"the plane spans {missing[0]!r}, which {type(model).__name__} has no parameter named")
    params = [named[n] for n in plane.names]
    for p, shape in zip(params, plane.shapes):
        if tuple(p.shape) != shape:
            raise ValueError(f"the plane's tensor of shape {shape} does not fit the model's {tuple(p.shape)}")
    at = InPlace(model, plane, params)
    try:
        if any(is_sharded(p) for p in params):
            scheme = ""
            at.in_shards(fsdp)
        if scheme == "modules":
            try:
                at.hook()
            except RuntimeError:  # modules that take no hooks (TorchScript): one whole working copy
                scheme = "copy"
        if scheme == "copy":
            at.whole_copy()
        yield at
    finally:
        at.close()


class InPlace:
    """Grid points set in the model's parameters, by one of two schemes.

    ``'modules'`` (the default): a forward pre-hook on each module that owns plane parameters
    points them at fresh tensors holding ``origin + x*u + y*v`` (directions drawn there when
    kept as seeds), and its forward hook points them back and frees those tensors: the memory a
    point takes is one module's parameters at a time, beyond the model and its directions. A
    parameter owned by several modules (tied weights) is set by the first of them to run and kept
    for the others until the point changes. The first forward
    pass run through ``checked`` watches every torch call: a plane parameter read outside the
    forward of a module that owns it (a parent doing ``F.linear(x, self.emb.weight)``) would
    read the centre's value, so on the first such read the points switch to ``'copy'``, with a
    note, and that pass runs again.

    ``'copy'``: the parameters point at one working copy of all of them for the duration.

    ``'shards'``, for parameters sharded across ranks (``DTensor``s, as FSDP2's ``fully_shard`` makes
    them): each rank writes its own part of every point into its shards, in place (the sharding
    framework gathers them for each forward pass, as it does after an optimizer step), from a copy of
    its shards kept to put them back exactly when the points end, also after an exception.
    """

    def __init__(self, model: torch.nn.Module, plane: PlaneTensors, params: list):
        self.model, self.plane, self.params = model, plane, params
        self.saved = [p.data for p in params]
        self.index = {id(p): k for k, p in enumerate(params)}
        self.point = (0.0, 0.0)
        self.scheme = None
        self.live = [0] * len(params)
        self.work: list = [None] * len(params)
        self.handles: list = []
        self.busy = False  # inside a hook: its own torch calls are not the model's reads
        self.watched = False
        self.pool = None
        self.shared: set[int] = set()  # parameters owned by several modules (tied weights): set once per point
        self.kept: dict[int, torch.Tensor] = {}
        self.fsdp: list = []  # the 'shards' scheme: the model's FSDP2 modules
        self.shards: list[torch.Tensor] = []  # the 'shards' scheme: views of this rank's shards, and their copies
        self.base: list[torch.Tensor] = []

    def fill(self, k: int, out: torch.Tensor) -> torch.Tensor:
        """``out`` = tensor ``k`` of the point ``origin + x*u + y*v`` (directions stored or drawn again)."""
        x, y = self.point
        origin = _on(self.plane.origin[k], out)
        with torch.no_grad():
            torch.add(origin, _on(self.plane.direction("u", k), out), alpha=x, out=out)
            out.add_(_on(self.plane.direction("v", k), out), alpha=y)
        return out

    def __call__(self, x: float, y: float) -> None:
        self.point = (float(x), float(y))
        if self.scheme == "shards":
            self._set_shards()
            return
        if self.scheme != "copy":
            self.kept = {}
            return  # set module by module as the forward pass reaches them
        if self.pool is None:
            for k in range(len(self.params)):
                self.fill(k, self.work[k])
        else:
            list(self.pool.map(lambda k: self.fill(k, self.work[k]), range(len(self.params))))

    def hook(self) -> None:
        """The ``'modules'`` scheme: hooks on every module owning plane parameters (each Parameter object once)."""
        self.scheme = "modules"
        owners = [0] * len(self.params)
        for module in self.model.modules():
            ks = [self.index[id(p)] for p in module._parameters.values() if p is not None and id(p) in self.index]
            for k in ks:
                owners[k] += 1
            if ks:
                self.handles.append(module.register_forward_pre_hook(lambda m, a, ks=ks: self.enter(ks)))
                self.handles.append(
                    module.register_forward_hook(lambda m, a, o, ks=ks: self.leave(ks), always_call=True)
                )
        self.shared = {k for k, n in enumerate(owners) if n > 1}

    def enter(self, ks: list[int]) -> None:
        self.busy = True
        try:
            for k in ks:
                self.live[k] += 1
                if self.live[k] == 1:
                    work = self.kept.get(k)
                    if work is None:
                        with torch.no_grad():
                            work = self.fill(k, torch.empty_like(self.saved[k]))
                        if k in self.shared:
                            self.kept[k] = work  # for its other owners at this point
                    self.work[k] = work
                    self.params[k].data = work
        finally:
            self.busy = False

    def leave(self, ks: list[int]) -> None:
        self.busy = True
        try:
            for k in ks:
                self.live[k] -= 1
                if self.live[k] == 0:
                    self.params[k].data = self.saved[k]
                    self.work[k] = None
        finally:
            self.busy = False

    def whole_copy(self) -> None:
        """The ``'copy'`` scheme: the parameters point at one working copy of them all, set at each point."""
        self.unhook()
        self.scheme = "copy"
        with torch.no_grad():
            self.work = [torch.empty_like(s) for s in self.saved]
        drawn = self.plane.u is None or self.plane.v is None  # drawn again: tensors side by side on a CPU
        on_cpu = all(w.device.type == "cpu" for w in self.work)
        workers = max(1, min(torch.get_num_threads(), 4)) if drawn and on_cpu else 1
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        for p, w in zip(self.params, self.work):
            p.data = w
        self(*self.point)

    def in_shards(self, fsdp: list) -> None:
        """The ``'shards'`` scheme: this rank's shards, written in place at each point (see the class);
        ``fsdp``: the model's FSDP2 modules, put back in their shards before each point."""
        self.scheme, self.fsdp = "shards", fsdp
        plane = self.plane
        with torch.no_grad():
            self.shards = [p.detach().to_local() for p in self.params]  # views of this rank's own memory
            self.base = [t.clone() for t in self.shards]
            self.parts = []  # (origin, u, v) of this rank's part, once; a direction drawn again at each point: None
            for k, param in enumerate(self.params):
                origin = _part(plane.origin[k], param)
                if origin.data_ptr() == self.shards[k].data_ptr():  # a plane around this model: its centre is the copy
                    origin = self.base[k]
                u, v = ((None if d is None else _part(d[k], param)) for d in (plane.u, plane.v))
                self.parts.append((origin, u, v))

    def _set_shards(self) -> None:
        x, y = self.point
        for module in self.fsdp:
            module.reshard()
        with torch.no_grad():
            for k, (shard, (origin, u, v)) in enumerate(zip(self.shards, self.parts)):
                u = _part(self.plane.direction("u", k), self.params[k]) if u is None else u
                v = _part(self.plane.direction("v", k), self.params[k]) if v is None else v
                torch.add(origin, u, alpha=x, out=shard)
                shard.add_(v, alpha=y)

    def checked(self, fn: Callable, *args):
        """``fn(*args)`` (one forward pass at the current point); the first time, watched for plane parameters
        read outside their modules' forward (then the points switch to ``'copy'`` and ``fn`` runs again)."""
        if self.watched or self.scheme != "modules":
            return fn(*args)
        self.watched = True
        with _Watch(self) as watch:
            out = fn(*args)
        if watch.outside is None:
            return out
        say(f"{watch.outside!r} is read outside the forward of the module that owns it, so grid points set a whole "
            "working copy of the plane's parameters (one more copy of them in memory)", False)  # fmt: skip
        self.whole_copy()
        return fn(*args)

    def unhook(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        for k, p in enumerate(self.params):
            p.data = self.saved[k]
        self.live, self.work, self.kept = [0] * len(self.params), [None] * len(self.params), {}

    def close(self) -> None:
        """Hooks removed and the model's own tensors put back (exactly: never written, or copied back)."""
        if self.scheme == "shards":
            with torch.no_grad():
                for shard, base in zip(self.shards, self.base):
                    shard.copy_(base)
            for module in self.fsdp:  # a root keeps the last point's whole parameters after its forward: drop them
                module.reshard()
            self.shards = self.base = []
            return
        self.unhook()
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


# Torch calls that read a tensor's metadata, never its values: harmless on a parameter outside its module.
_METADATA = frozenset(("shape", "dtype", "device", "requires_grad", "ndim", "is_cuda", "is_meta", "layout", "size",
                       "dim", "numel", "nelement", "is_floating_point", "is_complex", "element_size", "stride",
                       "is_contiguous", "is_sparse", "grad_fn", "is_leaf", "__hash__", "__len__", "names"))  # fmt: skip


class _Watch(TorchFunctionMode):
    """Notes (``outside``: its name) the first plane parameter a torch call reads outside its owners' forward."""

    def __init__(self, at: InPlace):
        super().__init__()
        self.at, self.outside = at, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        at = self.at
        if self.outside is None and not at.busy and at.scheme == "modules":
            name = getattr(func, "__name__", "")
            if name in ("__get__", "__set__"):
                name = getattr(getattr(func, "__self__", None), "__name__", name)
            if name not in _METADATA:
                for leaf in tree_leaves((args, kwargs)):
                    k = at.index.get(id(leaf))
                    if k is not None and at.live[k] == 0 and leaf is at.params[k]:
                        self.outside = at.plane.names[k]
                        break
        return func(*args, **kwargs)


def _part(t: torch.Tensor, param) -> torch.Tensor:
    """This rank's part of ``t``, a tensor shaped like the sharded parameter ``param``: a view of a sharded
    tensor's own part, or cut from a whole one."""
    return (t if is_sharded(t) else sharded_like(t.float() if t.is_floating_point() else t, param)).to_local()


def _on(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t if t.device == like.device else t.to(like.device)
