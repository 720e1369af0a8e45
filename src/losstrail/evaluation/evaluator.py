"""The evaluation core: loss, accuracy and standard error of a model at many parameter points.

``Evaluator`` maps K points (each a vector of the chosen parameters) to the mean loss over
the data, by the one ``LossRule``. Two ways run the model at those points, both functional
(``torch.func.functional_call``: no ``load_state_dict``, no gradients, eval mode):

- ``vmap``: one call per data batch for a whole chunk of points;
- point by point: one call per point and batch.

``mode='auto'`` (the default) times the ways, interleaved on the first units of work and
re-checked as the rest runs (``losstrail.evaluation.mode.WayChooser``), as far as the rest of the job repays
the trials; the way tried first (point by point where a point's activations fill a chunk, else
``vmap``) runs a job too short for them. A switch after the first way is said in one line.
Every stage that measures a loss at given parameters calls this: the grid, the path's true
and slice losses, lines, decision regions and the grid job.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from losstrail._memory import reuse_freed_memory
from losstrail._progress import bar, say
from losstrail._threads import busy_elsewhere
from losstrail.evaluation.batches import Batches, map_tree
from losstrail.evaluation.chain import LinearChain
from losstrail.evaluation.inplace import PlaneTensors, is_sharded, points_in_place, resharded
from losstrail.evaluation.layout import ParamLayout
from losstrail.evaluation.loss import LossRule, call_model, correct_count, cross_entropy_terms
from losstrail.evaluation.mode import Pace, WayChooser
from losstrail.values.reprs import short_repr

__all__ = ["Evaluated", "Evaluator", "FirstLayer", "batch_norms", "eval_mode", "note"]

# Grid points evaluated together at most; more gains nothing on a CPU.
_MAX_CHUNK = 2048
# Examples per call at least, however large the model's activations; examples per call at least when a batch
# is cut to fit the cache; and the memory a call's activations may take at most (see Evaluator.piece_size).
_MIN_PIECE, _CACHE_PIECE, _PIECE_MEMORY = 64, 256, 4 << 30
MODES = ("auto", "vmap", "loop", "inplace")
# Models with large activations still get this many points per chunk while they fit in this much memory.
_MIN_CHUNK, _MIN_CHUNK_MEMORY = 8, 1 << 30
FIRST_LAYER_CHOICES = ("auto", "factor", "plain")
# Set False to make first_layer='auto' evaluate the first layer at every point (benchmarks compare the two).
FACTOR_FIRST_LAYER = True
# 'auto' factors a first layer with at least this many multiply-adds per output element: combining its
# three outputs costs 2 (spirals' Linear(2, 50) has 2 and is left alone; LeNet's 5x5 convolution has 25).
_MIN_FAN_IN = 8
_SLOW_VMAP = "There is a performance drop because we have not yet implemented the batching rule"
# mode='auto' also times each way on one thread: beside other work on the cores, torch's threads wait on each
# other (spirals 33x33 beside a CPU hog at load 5 on 2 cores: vmap 3.3-4.8 s on two threads, 0.6-0.8 s on one).
_ONE = ", 1 thread"
_ONE_THREAD_LOOP = "loop" + _ONE
# mode='auto' on this many plane points or more also times setting points in place, on this many points.
_IN_PLACE_FROM, _IN_PLACE_TRIAL = 100, 4


def job_pace() -> Pace:
    """The pace a grid's cost is said from: once it covers 3 units and 0.5 s, or 2 s, or the job's last unit (a few
    short units on a busy machine mislead: three 9 ms units of the spirals grid beside a CPU hog once said 5.8x
    the time it took)."""
    return Pace(units=3, seconds=2.0, least=0.5)


def _ways(mode: str, loop_first: bool = False) -> tuple[str, ...]:
    """The ways ``mode`` may run points: ``'vmap'``, ``'loop'`` (on torch's threads) and, for ``'auto'`` when
    torch has more than one thread and ``OMP_NUM_THREADS`` does not fix it, both again on one thread.

    The way most likely best comes first (a grid too short to repay trials runs by it): point by point with
    ``loop_first``, and on one thread while other processes keep a core busy (``busy_elsewhere`` is 1 or more:
    there torch's threads wait on each other; a small MLP's forward pass beside two other engineers' test runs
    took 0.6-12.7 ms on two threads, 0.2-0.7 ms on one)."""
    if mode in ("vmap", "loop"):
        return (mode,)
    ways = ("vmap", "loop")
    threads = torch.get_num_threads()
    if threads > 1 and "OMP_NUM_THREADS" not in os.environ:
        busy = busy_elsewhere(samples=1) >= 1  # one look (under 1 ms): the trials check the order it gives
        ways = ("vmap", "loop", "vmap" + _ONE, _ONE_THREAD_LOOP)
        ways = tuple(sorted(ways, key=lambda w: not w.endswith(_ONE))) if busy else ways
    return tuple(sorted(ways, key=lambda w: not w.startswith("loop"))) if loop_first else ways


def math_attention():
    """``scaled_dot_product_attention`` as plain differentiable ops for the duration.

    The fused CPU attention kernels have no ``vmap`` batching rule (vmap falls back on a slow
    per-example loop) and no forward-mode derivative (no Hessian-vector products); the math
    backend computes the same attention from matmuls and a softmax, which batch and
    differentiate to any order.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no choice of backend
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def note(message: str, quiet: bool = False) -> None:
    """One plain line on stderr (not a warning with a source line), unless ``quiet`` (see ``_progress.say``)."""
    say(message, quiet)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """The model in eval mode for the duration, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def batch_norms(model: torch.nn.Module) -> list:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def check_bn_batches(model: torch.nn.Module, bn_batches: int) -> None:
    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 0:
        raise ValueError(f"bn_batches={bn_batches!r} must be 0 (keep the running statistics) or a number of batches")
    if bn_batches and not batch_norms(model):
        raise ValueError(
            f"bn_batches={bn_batches} recomputes BatchNorm statistics, but {type(model).__name__} has no BatchNorm "
            "layers with running statistics; leave bn_batches=0"
        )


@dataclass(frozen=True)
class Evaluated:
    """What the evaluator measured at each of ``n`` points."""

    loss: np.ndarray  # (n,) mean loss over the data
    accuracy: np.ndarray  # (n,) fraction correct; NaN when not classification
    loss_se: np.ndarray | None = None  # (n,) standard error of each mean loss
    metrics: dict = field(default_factory=dict)  # name -> (n,) mean of each extra metric of the objective

    __repr__ = short_repr


@contextlib.contextmanager
def _counting_activations(model: torch.nn.Module):
    """Count the elements of every leaf module's output during the block; the total lands in the list yielded."""
    counted = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            counted[0] += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())] or [model]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        yield counted
    finally:
        for h in hooks:
            h.remove()


class _Call(torch.nn.Module):
    """``fn(model, batch)`` as a module, so ``functional_call`` can run it with other parameters."""

    def __init__(self, model: torch.nn.Module, fn: Callable):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch):
        return self.fn(self.model, batch)


class Evaluator:
    """Mean loss, accuracy and standard error over ``data`` at many values of the chosen parameters.

    Args:
        model: the network; its own parameters and buffers are never changed.
        data: a tree of tensors, a Dataset, a DataLoader or a DataModule.
        names: the parameters a point sets (``ParamLayout`` order); None for all of them.
            Every other tensor keeps its value.
        objective, loss_fn: the loss (see ``LossRule``).
        batch_size: examples per batch for tensors and Datasets.
        device: where to evaluate.
        bn_batches: recompute BatchNorm statistics at each point from this many batches.
        spread: also the standard error of each mean loss, from the per-example losses.
        autocast: mixed precision.
        mode: ``'auto'``, ``'vmap'`` or ``'loop'`` (point by point).
        first_layer: for points on a plane (``run(..., plane=)``): ``'factor'`` computes the
            model's first affine layer once per batch (see ``FirstLayer``) wherever that is exact,
            ``'plain'`` runs it at every point; ``'auto'`` (default) factors it when its fan-in is
            large enough to gain (``_MIN_FAN_IN``).
        quiet: no progress bar and no notes.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data,
        *,
        names: Sequence[str] | None = None,
        objective: Callable | None = None,
        loss_fn: Callable | None = None,
        batch_size: int = 4096,
        device: str | torch.device = "cpu",
        bn_batches: int = 0,
        spread: bool = False,
        autocast: bool = False,
        mode: str = "auto",
        first_layer: str = "auto",
        quiet: bool = True,
        argument: str = "data",
    ):
        from losstrail._registry import check_choice

        check_choice("mode", mode, MODES)
        check_choice("first_layer", first_layer, FIRST_LAYER_CHOICES)
        check_bn_batches(model, bn_batches)
        self.sharded = bool(resharded(model)) or any(is_sharded(p) for p in model.parameters())
        if self.sharded and mode in ("vmap", "loop"):
            raise ValueError(
                f"mode={mode!r} makes flat copies of every parameter, and this model's are sharded across ranks "
                "(DTensors, e.g. FSDP2's fully_shard): pass mode='auto' or 'inplace' (points set in each rank's shards)"
            )
        if self.sharded and bn_batches:
            raise ValueError(
                f"bn_batches={bn_batches} recomputes BatchNorm statistics functionally, which a model sharded across "
                "ranks (FSDP2) cannot run: pass bn_batches=0"
            )
        self.model, self.mode, self.quiet = model, mode, quiet
        self.device = torch.device(device)
        self.layout = ParamLayout(model, names)
        self.batches = Batches(data, batch_size, self.device, argument)
        self.bn_batches, self.spread, self.autocast = bn_batches, spread, autocast
        self.own = {f"model.{n}": p.detach().to(self.device) for n, p in model.named_parameters()}
        chosen = {f"model.{n}" for n in self.layout.names}
        self.fixed = {n: t for n, t in self.own.items() if n not in chosen}
        self.buffers = {f"model.{n}": b.to(self.device) for n, b in model.named_buffers()}
        self.rule = LossRule(model, objective, loss_fn)
        with eval_mode(model), _counting_activations(model) as counted:  # one forward pass checks and counts
            check = _Call(model, self.rule.check)
            if self.sharded:  # its own tensors: a sharding framework keeps the ones it was given in a first call
                with torch.no_grad():
                    check(self.batches.first())
                resharded(model)  # not the root's gathered parameters kept in memory beside the grid
            else:
                torch.func.functional_call(check, (self.own, self.buffers), (self.batches.first(),))
        self.fast_ce = self.rule.fused and self._labels_in_range()
        self.per_example = spread and self.rule.kind == "pair"
        self.measure = _Call(model, self._measure)
        self._threads = torch.get_num_threads()  # what 'vmap' and 'loop' run on; set again by each run()
        self.first_layer = first_layer
        self._activations: int = counted[0]
        self._first_length = self.batches.lengths[0]
        self._first: FirstLayer | None | bool = False  # False: not looked for yet
        # --- the way points are run (issue 23): chosen from interleaved timings, re-checked as units run
        # (flat copies only; mode='inplace' and in-place 'auto' points go through run_in_place). Where a
        # point's activations alone fill a chunk's budget, batching points gains least: point by point first,
        # so a grid too short to repay the trials runs as a plain loop would (GPT-2 2x32 on 64x32 tokens:
        # loop 150 points/s, vmap 111)
        loop_first = self.chunk_size(48 << 20) <= _MIN_CHUNK
        self.ways = WayChooser(_ways(mode, loop_first), sliceable=("loop", _ONE_THREAD_LOOP), join=torch.cat,
                               on_switch=self._switched, on_fail=self._failed)  # fmt: skip

    # -- one batch at one point ------------------------------------------------------------
    def _labels_in_range(self) -> bool:
        """True when every target is a class index, so no ``ignore_index`` handling is needed."""
        if self.batches.cached is None:
            return False
        n_classes = self.rule.n_classes
        return all(bool(((b[-1] >= 0) & (b[-1] < n_classes)).all()) for b in self.batches.cached)

    def _measure(self, model, batch) -> torch.Tensor:
        """``[mean loss, correct count, sum of squared per-example losses, *metric means]`` of one batch."""
        rule = self.rule
        zero = torch.zeros((), device=self.device)
        losses = None
        if rule.kind == "pair":
            out, y = call_model(model, batch)
            if self.fast_ce:
                losses, correct = cross_entropy_terms(out, y)
                loss = losses.mean()
            else:
                loss = rule.loss_fn(out, y)
                correct = correct_count(out, y) if rule.classify else zero
                if self.per_example:
                    losses = torch.func.vmap(lambda o, t: rule.loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)
            metrics = []
        else:
            loss, extra = rule(model, batch)
            correct = zero
            metrics = [torch.as_tensor(extra[n], device=self.device).float().reshape(()) for n in rule.metric_names]
        dtype = torch.promote_types(loss.dtype, torch.float32)  # a float64 model's loss stays float64
        squares = losses.to(dtype).square().sum() if (self.spread and losses is not None) else zero
        return torch.stack([t.to(dtype) for t in (loss, correct, squares, *metrics)])

    def _tensors(self, flat: torch.Tensor) -> dict:
        return {**self.fixed, **{f"model.{n}": t for n, t in self.layout.unflatten(flat).items()}}

    def _at(self, row, bufs, batch, first_out):
        """One point: the measure of ``batch`` with the parameters ``row`` (and the first layer's output, if given)."""
        if first_out is None:
            return torch.func.functional_call(self.measure, (self._tensors(row), bufs), (batch,))
        with self._first.replaced(first_out):
            return torch.func.functional_call(self.measure, (self._tensors(row), bufs), (batch,))

    def _vmapped(self, flat, bufs, batch, per_point_buffers: bool, first_out=None) -> torch.Tensor:
        def at(row, b, out):
            return self._at(row, b, batch, out)

        chain = getattr(self._first, "chain", None)
        if isinstance(first_out, _Combined) and chain is not None and not per_point_buffers:  # see _chain
            return chain.stats(first_out.outputs, first_out.coords, flat, batch[-1], self.spread)
        first_out = first_out.tensor() if isinstance(first_out, _Combined) else first_out
        dims = (0, 0 if per_point_buffers else None, None if first_out is None else 0)
        with math_attention():
            return torch.func.vmap(at, in_dims=dims, randomness="same")(flat, bufs, first_out)

    def _looped(self, flat, bufs, batch, per_point_buffers: bool, first_out=None) -> torch.Tensor:
        rows = []
        for c in range(flat.shape[0]):
            b = {k: v[c] for k, v in bufs.items()} if per_point_buffers else bufs
            rows.append(self._at(flat[c], b, batch, None if first_out is None else first_out[c]))
        return torch.stack(rows)

    def _run(self, mode, flat, bufs, batch, per_point_buffers, first_out=None):
        if mode == "vmap":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SLOW_VMAP)
                return self._vmapped(flat, bufs, batch, per_point_buffers, first_out)
        return self._looped(flat, bufs, batch, per_point_buffers, first_out)

    @property
    def _chosen_mode(self) -> str:
        """``'vmap'`` or ``'loop'``: how the chosen way runs the points (on whatever threads)."""
        return self.ways.chosen.split(",")[0]

    def _way_threads(self, way: str) -> int:
        return 1 if way.endswith(_ONE) else self._threads

    def _said_way(self, way: str) -> str:
        kind = "point by point" if way.startswith("loop") else "with vmap"
        threads = self._way_threads(way)
        both = any(w.endswith(_ONE) for w in self.ways.ways)  # ways that differ only in threads: name them
        return f"{kind} on {threads} thread{'s' if threads > 1 else ''}" if both else kind

    def _switched(self, old: str, new: str, times: float) -> None:
        name = type(self.model).__name__
        note(f"evaluating {name} {self._said_way(new)}: {times:.1f}x the rate of {self._said_way(old)} here "
             "(both timed, interleaved)", self.quiet)  # fmt: skip

    def _failed(self, way: str, err: Exception) -> None:
        if not way.startswith("vmap"):
            raise err  # point by point is how the model runs at all
        for other in [w for w in self.ways.ways if w.startswith("vmap")]:  # on one thread it fails alike
            self.ways.drop(other)
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        name = type(self.model).__name__
        note(f"vmap cannot run {name} ({type(err).__name__}: {first}); evaluating it point by point", self.quiet)

    def _unit(self, flat, bufs, batch, n_b: int, per_point_buffers: bool, first_out, timing: bool,
              left: float | None = None) -> torch.Tensor:  # fmt: skip
        """One unit of work (a chunk of points on one batch), by the way ``self.ways`` picks; ``left``: the work
        (points × examples) left in the job, this unit's included (it bounds the trials of the ways)."""

        def work(way: str, start: int, stop: int) -> torch.Tensor:
            b = {k: v[start:stop] for k, v in bufs.items()} if per_point_buffers else bufs
            out = None if first_out is None else first_out[start:stop]
            threads = self._way_threads(way)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            return self._run(way.split(",")[0], flat[start:stop], b, batch, per_point_buffers, out)

        return self.ways.run(work, flat.shape[0], n_b, timing=timing, left=left)

    # --- end of the way's choice

    # -- many points ---------------------------------------------------------------------------
    def chunk_size(self, memory_budget: int) -> int:
        """Grid points evaluated together so that one call's working set (pieces of batches) fits ``memory_budget``,
        but at least a few where they fit in RAM (``_MIN_CHUNK_MEMORY``): one point at a time leaves vmap nothing
        to batch."""
        examples = min(self.piece_size(memory_budget), max(self.batches.lengths))
        per_point = 4 * (self.layout.n_params + 3 * examples * self._activation_elements() / self._first_length)
        least = min(_MIN_CHUNK, max(1, int(_MIN_CHUNK_MEMORY // per_point)))
        return int(max(least, min(_MAX_CHUNK, memory_budget // per_point)))

    def piece_size(self, memory_budget: int) -> int:
        """Examples per call: a batch is cut into pieces whose activations at one point fit ``memory_budget``
        (the cache), but of at least ``_CACHE_PIECE`` examples, and at most what fits ``_PIECE_MEMORY``.

        Measured on LeNet, 3,000 28×28 images, two threads, the first layer factored: one call for
        all 3,000 images 114 ms per point, pieces of 500 (what a 48 MiB budget gives) 58 ms; one
        thread 197 ms against 99 ms. The floor of 256 examples keeps batches of models with
        large activations whole: a ResNet-18's 256 CIFAR images in pieces of 64 ran at half speed.
        Only ``(x, y)`` batches with a mean loss are cut, where the weighted mean over pieces is
        the batch's mean.
        """
        if self.rule.kind != "pair":
            return max(self.batches.lengths)
        per_example = max(4 * 3 * self._activation_elements() / self._first_length, 1)
        in_cache = max(_CACHE_PIECE, memory_budget // per_example)
        return int(max(_MIN_PIECE, min(in_cache, _PIECE_MEMORY // per_example)))

    def _pieces(self, piece: int):
        """``(batch, examples)`` for every batch, those over ``piece`` examples cut into pieces of that size."""
        for batch, n_b in zip(self.batches, self.batches.lengths):
            if n_b <= piece:
                yield batch, n_b
                continue
            for start in range(0, n_b, piece):
                yield map_tree(lambda t, start=start: t[start : start + piece], batch), min(piece, n_b - start)

    def _activation_elements(self) -> int:
        """Elements in the outputs of all leaf modules for one forward pass over the first batch."""
        return self._activations

    def run(
        self,
        chunk_params: Callable[[slice], torch.Tensor],
        n_points: int,
        *,
        plane: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        chunk_size: int | None = None,
        memory_budget: int = 48 << 20,
        desc: str = "grid",
        quiet: bool | None = None,
        on_first_chunk: Callable[[float, int], None] | None = None,
        more: int = 0,
        pace: Pace | None = None,
    ) -> Evaluated:
        """Loss, accuracy (and standard error) at the ``n_points`` vectors ``chunk_params(slice) -> (C, K)``.

        ``plane=(origin, basis, coords)``, when the points are ``origin + coords @ basis`` with
        ``origin`` (K,), ``basis`` (2, K) and ``coords`` (n_points, 2), lets the model's first
        layer be computed once per batch (see ``FirstLayer``); the results are the same to
        float32 rounding. ``on_first_chunk(seconds, points)`` is called after every unit of work once
        the timings leave warm-up out: ``seconds / points`` is this run's time per point, the time
        spent so far (warm-up, the ways' trials) plus the rest at the rate measured now (to say what the
        grid will cost, and to revise it). ``more``: points that follow in the same job (the trials of the ways
        are bounded by what the whole job can repay, and ``on_first_chunk``'s time per point spreads this call's
        time so far over them too: the warm-up and trials are paid once, not once per call). ``pace``: a ``Pace``
        the calls of one job share (each call's own otherwise), so its window is not cut short by each call's end.
        """
        quiet = self.quiet if quiet is None else quiet
        if chunk_size is None:
            chunk_size = self.chunk_size(memory_budget)
        first = self._first_layer() if plane is not None else None
        piece = self.piece_size(memory_budget)
        n_pieces = sum(math.ceil(n / piece) for n in self.batches.lengths)
        n_stats = 3 + len(self.rule.metric_names)
        totals = np.zeros((n_points, n_stats))
        n_chunks = math.ceil(n_points / chunk_size)
        chunks = [slice(start, min(start + chunk_size, n_points)) for start in range(0, n_points, chunk_size)]
        progress = bar(n_chunks * n_pieces, desc, quiet, unit="batch")
        device = self.device
        precision = (
            torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
            if self.autocast
            else contextlib.nullcontext()
        )
        per_point_buffers = bool(self.bn_batches)
        shared, pace = pace is not None, pace or job_pace()
        started, n_examples = time.perf_counter(), self.batches.n_examples
        self._threads = torch.get_num_threads()  # the ways' threads are set per unit and put back at the end
        switches, done = [len(self.ways.switches)], [0]  # the ways' switches seen; this call's work done
        job = (n_points + more) * n_examples  # this call's work and that of the points that follow it
        end = job if shared else n_points * n_examples  # where the pace must answer: a pace of its own, the call's

        def add(sl, batch, n_b, flat, bufs, first_out=None) -> None:
            worth = n_chunks * n_pieces > 1 or more > 0  # more calls follow: the choice matters
            left = job - done[0]  # this unit's included
            stats = self._unit(flat, bufs, batch, n_b, per_point_buffers, first_out, worth, left)
            if len(self.ways.switches) > switches[0]:  # another way runs now: the pace so far was the old one's
                switches[0] = len(self.ways.switches)
                pace.restart()
            work = flat.shape[0] * n_b  # (points x examples); the pace leaves warm-up and the trials out
            done[0] += work
            seconds = pace.done(work, self.ways.decided, last=done[0] >= end)
            if on_first_chunk is not None and seconds is not None:  # the time spent so far (warm-up, trials)
                total = time.perf_counter() - started + seconds * (job - done[0])  # the rest, this call's and after
                on_first_chunk(chunk_size * total / (n_points + more), chunk_size)
            stats = stats.double().cpu().numpy()  # (C, n_stats)
            totals[sl, 0] += stats[:, 0] * n_b
            totals[sl, 1:3] += stats[:, 1:3]
            totals[sl, 3:] += stats[:, 3:] * n_b

        with eval_mode(self.model), reuse_freed_memory(), torch.inference_mode(), precision, progress as pbar, \
                _threads_kept():  # fmt: skip
            if first is None:
                for sl in chunks:
                    flat = chunk_params(sl).to(device)
                    bufs = self._recomputed_statistics(flat) if per_point_buffers else self.buffers
                    for batch, n_b in self._pieces(piece):
                        add(sl, batch, n_b, flat, bufs)
                        pbar.update(1)
            else:  # batch by batch, so the first layer's three outputs are computed once per batch
                origin, basis, coords = (t.to(device) for t in plane)
                for batch, n_b in self._pieces(piece):
                    outputs = first.outputs(batch, origin, basis)  # (3, N, ...)
                    for sl in chunks:
                        first_out = _Combined(outputs, coords[sl])  # made point by point when looped: in cache
                        add(sl, batch, n_b, chunk_params(sl).to(device), self.buffers, first_out)
                        pbar.update(1)
                    del outputs
        return self._summary(totals)

    def plane_points(self, origin: torch.Tensor, basis: torch.Tensor, coords: torch.Tensor, tensors: Callable,
                     **options) -> Evaluated:  # fmt: skip
        """The plane points ``origin + coords @ basis`` by flat copies (``run``) or set in place (``run_in_place``
        on ``tensors()``, the same plane per tensor).

        In mode ``'auto'``: in place at once when a point's parameters are at least as many as its activations
        over the data (copying them costs as much as the forward pass: ResNet-18 on 32 images); else, on
        ``_IN_PLACE_FROM`` points or more, flat copies run block by block until their pace after their own
        choice is known, then a few points are set in place (the first carries warm-up) and the rest goes the
        faster way (ties to flat copies). That trial is made only where the rest of the grid repays it: it
        costs at most twice its points' time (its points again by flat copies if those stay, its set-up and
        warm-up), which must stay within ``WayChooser.regret`` of the rest's time; else flat copies run the
        whole grid in one go. Points set in place after the trial run block by block, and flat copies take the
        rest back when a block runs slower than their pace."""
        n = len(coords)

        def flat(start: int, stop: int, **extra) -> Evaluated:
            part = coords[start:stop]
            return self.run(lambda sl: origin + part[sl] @ basis, stop - start, plane=(origin, basis, part),
                            **{**options, **extra})  # fmt: skip

        if self.mode != "auto" or self.bn_batches or self.autocast:
            return flat(0, n)
        if not all(p.device == self.device for p in self.model.parameters()):
            return flat(0, n)
        kept = {k: v for k, v in options.items() if k in ("memory_budget", "desc", "quiet", "on_first_chunk")}
        activations = self._activations * self.batches.n_examples / self._first_length  # a point's, all data
        if self.layout.n_params >= activations:  # on the threads of the way most likely best (see _ways)
            with _threads_kept():
                torch.set_num_threads(self._way_threads(self.ways.chosen))
                return self.run_in_place(tensors(), coords.detach().cpu().double().numpy(), **kept)
        kept.pop("on_first_chunk", None)

        def repaid(start: int) -> bool:  # an in-place trial from point ``start`` on: repaid by the rest?
            return self.ways.regret * (n - start - _IN_PLACE_TRIAL) >= 2 * _IN_PLACE_TRIAL

        block = max(4 * (options.get("chunk_size") or self.chunk_size(options.get("memory_budget", 48 << 20))), n // 8)
        if n < _IN_PLACE_FROM or not repaid(block):
            return flat(0, n)
        plane, xy = tensors(), coords.detach().cpu().double().numpy()
        paces: list[float] = []
        started = time.perf_counter()
        said = options.get("on_first_chunk")

        def pace(seconds: float, points: int) -> None:  # per point over this block and the rest of the grid
            paces.append(seconds / points)
            if said is not None:  # the time before this block, then this block's time so far and the rest
                said((block_began - started + paces[-1] * (n - start)) / n, 1)

        done, start, shared = [], 0, job_pace()  # one pace over the blocks: a block may be shorter than its window
        while not paces:  # flat copies until their pace after their choice is known
            if not repaid(start + block):  # no trial the rest repays: the rest by flat copies, in one run
                done.append(flat(start, n, more=0, pace=shared))
                return _joined(done)
            block_began = time.perf_counter()
            done.append(flat(start, start + block, on_first_chunk=pace, more=n - start - block, pace=shared))
            start += block
        ends = []  # when each point ends: set-up and the first point (warm-up) left out of the rate
        with _threads_kept():
            torch.set_num_threads(self._way_threads(self.ways.chosen))  # on the threads flat copies chose
            trial = self.run_in_place(plane, xy[start : start + _IN_PLACE_TRIAL], **{**kept, "quiet": True},
                                      on_point=lambda: ends.append(time.perf_counter()))  # fmt: skip
            in_place = (ends[-1] - ends[0]) / (len(ends) - 1)  # seconds a point
            if in_place * self.ways.tie < paces[-1]:
                done.append(trial)
                start += _IN_PLACE_TRIAL
                quiet = self.quiet if options.get("quiet") is None else options["quiet"]
                note(f"evaluating {type(self.model).__name__} with each point set in place: "
                     f"{paces[-1] / in_place:.1f}x the rate of flat copies here (both timed)", quiet)  # fmt: skip
                while start < n:  # block by block, re-checked: three points timed on a busy machine may mislead
                    stop, began_block = min(n, start + block), time.perf_counter()
                    done.append(self.run_in_place(plane, xy[start:stop], **kept))
                    per_point = (time.perf_counter() - began_block) / (stop - start)
                    start = stop
                    if said is not None:  # the time so far and the rest at this block's pace, as seconds a point
                        said((time.perf_counter() - started + per_point * (n - start)) / n, 1)
                    if start < n and per_point > paces[-1] * self.ways.tie:  # flat copies are faster after all
                        note(f"evaluating {type(self.model).__name__} by flat copies again: points set in place "
                             f"ran at {paces[-1] / per_point:.2f}x their rate", quiet)  # fmt: skip
                        break
                if start == n:
                    return _joined(done)
        done.append(flat(start, n))  # the trial's points again: a grid by flat copies is the same bit for bit
        return _joined(done)

    def in_place(self, per_tensor: bool) -> bool:
        """Whether points on a plane are evaluated in place (``run_in_place``) rather than as flat copies.

        ``mode='inplace'`` always; ``'vmap'``/``'loop'`` never; ``'auto'`` for a plane held per
        tensor, or when ``_MIN_CHUNK`` copies of the chosen parameters would not fit
        ``_MIN_CHUNK_MEMORY`` (the smallest chunk vmap is worth running). Never with ``bn_batches``
        (per-point statistics run functionally) or when the model is not on the evaluation device.
        """
        if self.sharded:
            return True
        if self.mode in ("vmap", "loop"):
            return False
        on_device = all(p.device == self.device for p in self.model.parameters())
        if self.mode == "inplace":
            if self.bn_batches or not on_device:
                raise ValueError(
                    "mode='inplace' sets the model's own parameters, so the model must be on "
                    f"device={str(self.device)!r} and bn_batches=0; move the model there (model.to(device))"
                    " or use mode='auto'"
                )
            return True
        if self.bn_batches or not on_device:
            return False
        copies = _MIN_CHUNK * sum(p.numel() * p.element_size() for p in self.model.parameters())
        return per_tensor or copies > _MIN_CHUNK_MEMORY

    def run_in_place(
        self, plane: PlaneTensors, coords: np.ndarray, *, memory_budget: int = 48 << 20, desc: str = "grid",
        quiet: bool | None = None, on_first_chunk: Callable[[float, int], None] | None = None, chunk_size=None,
        on_point: Callable[[], None] | None = None,
    ) -> Evaluated:  # fmt: skip
        """Loss, accuracy (and standard error) at the plane points ``origin + x*u + y*v`` of ``coords`` (N, 2),
        each set in place in the model's own parameters (see ``evaluation.inplace.points_in_place``): one forward pass
        over the data per point plus O(P) work, in the model's dtype; the model's tensors are put back
        exactly afterwards, also when something raises. ``chunk_size`` is accepted for the flat path's
        callers and has no effect: points are one at a time. ``on_first_chunk(seconds, 1)``, as ``run``'s: after
        each point once three points past the first and 0.5 s (or 2 s) have been timed, the time per point this
        call will have taken (the time so far and the rest at that pace), and after the last. ``on_point()``: after
        each point."""
        quiet = self.quiet if quiet is None else quiet
        piece = self.piece_size(memory_budget)
        n_pieces = sum(math.ceil(n / piece) for n in self.batches.lengths)
        totals = np.zeros((len(coords), 3 + len(self.rule.metric_names)))
        precision = (
            torch.autocast(self.device.type, dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16)
            if self.autocast
            else contextlib.nullcontext()
        )
        started, pace, n = time.perf_counter(), job_pace(), len(coords)
        progress = bar(n * n_pieces, desc, quiet, unit="batch")
        with points_in_place(self.model, plane) as at, eval_mode(self.model), torch.inference_mode(), \
                reuse_freed_memory(), precision, progress as pbar:  # fmt: skip
            for i, (x, y) in enumerate(np.asarray(coords, dtype=np.float64).tolist()):
                at(x, y)
                for batch, n_b in self._pieces(piece):
                    stats = at.checked(self.measure, batch).double().cpu().numpy()
                    totals[i, 0] += stats[0] * n_b
                    totals[i, 1:3] += stats[1:3]
                    totals[i, 3:] += stats[3:] * n_b
                    pbar.update(1)
                if on_point is not None:
                    on_point()
                seconds = pace.done(1, settled=True, last=i == n - 1)  # past the first point (warm-up, the check)
                if on_first_chunk is not None and seconds is not None:  # the time so far + the rest at that pace
                    on_first_chunk((time.perf_counter() - started + seconds * (n - i - 1)) / n, 1)
        return self._summary(totals)

    def _first_layer(self) -> FirstLayer | None:
        """The first layer to factor over a plane, or None (see ``first_layer``)."""
        if self.first_layer == "plain" or self.bn_batches or self.autocast:
            return None
        if self.first_layer == "auto" and not FACTOR_FIRST_LAYER:
            return None
        if self._first is False:
            self._first = FirstLayer.find(self)
            if self._first is not None and self._first.chain is not None and self.mode == "auto":
                # the chain does point by point's arithmetic for many points at once: never slower than it, so
                # only its threads are timed: beside a busy core one thread ran the spirals grid in 1.0 s, two
                # in 2.5-2.9 s (each waiting on the other); every point gets the same bits however the grid is cut
                vmaps = tuple(w for w in _ways("auto") if w.startswith("vmap"))
                self.ways = WayChooser(vmaps, join=torch.cat, on_switch=self._switched, on_fail=self._failed)
        small = self._first is not None and self._first.fan_in < _MIN_FAN_IN and self._first.chain is None
        if small and self.first_layer == "auto":  # a chain (see _chain) takes its first layer factored
            return None
        return self._first

    def _summary(self, totals: np.ndarray) -> Evaluated:
        n = self.batches.n_examples
        loss = totals[:, 0] / n
        metrics = {name: totals[:, 3 + i] / n for i, name in enumerate(self.rule.metric_names)}
        accuracy = totals[:, 1] / n if self.rule.classify else metrics.get("accuracy", np.full(len(loss), np.nan))
        loss_se = None
        if self.spread:
            if self.per_example:
                variance = np.maximum(totals[:, 2] - n * loss**2, 0) / max(n - 1, 1)
                loss_se = np.sqrt(variance / n)
            else:  # no per-example losses from an objective or a model's own loss
                loss_se = np.full(len(loss), np.nan)
        return Evaluated(loss, accuracy, loss_se, metrics)

    def at_vectors(self, rows: np.ndarray, *, desc: str = "path", quiet: bool | None = None) -> Evaluated:
        """The same at the parameter vectors ``rows`` (N, K): set in place one row at a time (no (N, K) copy
        of the rows) when the model is too big for a chunk of flat copies (see ``in_place``)."""
        if len(rows) and self.in_place(False):
            return self._rows_in_place(rows, desc)
        flat = self.layout.tensor(rows)
        return self.run(lambda sl: flat[sl], flat.shape[0], desc=desc, quiet=quiet)

    def _rows_in_place(self, rows: np.ndarray, desc: str) -> Evaluated:
        """Each row of ``rows`` (N, K) set in place in turn, as the point ``row + 0*u + 0*v`` of a plane of it."""
        done = []
        for row in rows:
            origin = self.layout.split(torch.from_numpy(np.ascontiguousarray(row, dtype=np.float32)))
            zero = [torch.zeros((), dtype=t.dtype).expand(t.shape) for t in origin]  # stride 0: no memory
            tensors = PlaneTensors(self.layout.names, origin, zero, zero)
            done.append(self.run_in_place(tensors, np.zeros((1, 2)), desc=desc, quiet=True))
        joined = {f: np.concatenate([getattr(d, f) for d in done]) for f in ("loss", "accuracy")}
        se = None if done[0].loss_se is None else np.concatenate([d.loss_se for d in done])
        metrics = {k: np.concatenate([d.metrics[k] for d in done]) for k in done[0].metrics}
        return Evaluated(joined["loss"], joined["accuracy"], se, metrics)

    def outputs(self, rows: np.ndarray, fn: Callable, chunk: int = 32, batch=None) -> np.ndarray:
        """``fn(model, batch)`` at each parameter vector of ``rows`` (N, K), stacked (N, ...): on the first batch,
        or on ``batch`` (a tree of tensors: other inputs than the data's, such as a grid of 2-D points)."""
        flat = self.layout.tensor(rows, self.device)
        call = _Call(self.model, fn)
        batch = self.batches.first() if batch is None else map_tree(lambda t: t.to(self.device), batch)

        def at(row):
            return torch.func.functional_call(call, (self._tensors(row), self.buffers), (batch,))

        pieces = []
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(flat), chunk):
                pieces.append(torch.func.vmap(at)(flat[start : start + chunk]).cpu().numpy())
        return np.concatenate(pieces)

    def _recomputed_statistics(self, flat: torch.Tensor) -> dict:
        """Per-point BatchNorm buffers (C, ...): the mean of the batch statistics over the first ``bn_batches``.

        Runs the BatchNorm layers in training mode with momentum 1, so after each batch their
        running buffers hold that batch's statistics; averaging over batches gives what
        ``momentum=None`` (a cumulative average) would, without the ``.item()`` it needs.
        """
        norms = batch_norms(self.model)
        saved = [(m, m.training, m.momentum) for m in norms]
        n_points = flat.shape[0]
        state = {n: b.unsqueeze(0).repeat(n_points, *([1] * b.dim())).clone() for n, b in self.buffers.items()}
        totals = {n: torch.zeros_like(b) for n, b in state.items() if b.is_floating_point()}
        forward = _Call(self.model, lambda m, b: call_model(m, b)[0] if self.rule.kind != "objective" else
                        self.rule(m, b)[0])  # fmt: skip

        def one(row, bufs, batch):
            torch.func.functional_call(forward, (self._tensors(row), bufs), (batch,))
            return bufs

        used = 0
        try:
            for m in norms:
                m.train()
                m.momentum = 1.0
            for batch in itertools.islice(iter(self.batches), self.bn_batches):
                if self._chosen_mode == "loop":
                    for c in range(n_points):
                        one(flat[c], {k: v[c] for k, v in state.items()}, batch)
                else:
                    torch.func.vmap(lambda p, b, batch=batch: one(p, b, batch), in_dims=(0, 0))(flat, state)
                for n in totals:
                    totals[n] += state[n]
                used += 1
        finally:
            for m, training, momentum in saved:
                m.train(training)
                m.momentum = momentum
        return {n: (totals[n] / used if n in totals else b) for n, b in state.items()}


def _joined(parts: Sequence[Evaluated]) -> Evaluated:
    """The ``Evaluated`` of consecutive runs, in order."""
    joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("loss", "accuracy")}
    se = None if parts[0].loss_se is None else np.concatenate([p.loss_se for p in parts])
    metrics = {k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics}
    return Evaluated(joined["loss"], joined["accuracy"], se, metrics)


@contextlib.contextmanager
def _threads_kept():
    """Torch's thread count as it was before the block, after it."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class _Combined:
    """The first layer's output at the points ``coords`` (C, 2), made when asked for: one point's as it is
    used (``[c]``, still in cache for the next layer: 8 points of LeNet's first layer on 400 images took
    13 ms made one by one and read, 22 ms made together and then read), or all at once for ``vmap``."""

    def __init__(self, outputs: torch.Tensor, coords: torch.Tensor):
        self.outputs, self.coords = outputs, coords  # (3, N, ...), (C, 2)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return _Combined(self.outputs, self.coords[index])
        return FirstLayer.combine(self.outputs, self.coords[index : index + 1])[0]

    def tensor(self) -> torch.Tensor:
        return FirstLayer.combine(self.outputs, self.coords)


class _Reached(Exception):
    """Stops a forward pass once the first layer's input is known."""


_AFFINE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


class FirstLayer:
    """The model's first affine layer, evaluated once per data batch for a whole plane of points.

    At the point ``origin + x·u + y·v`` the layer's weight is ``W0 + x·U + y·V`` (its bias
    likewise), so on an input that no parameter touches its output is
    ``f(W0) + x·f(U) + y·f(V)``, ``f`` being the layer with that weight and bias. The three are
    computed once per batch; each point then costs two multiply-adds per output element instead
    of the layer's fan-in. ``find`` accepts the layer only when that identity holds: it is the
    first module with parameters that the forward pass calls, a plain ``nn.Linear`` or
    ``nn.ConvNd`` (its own ``forward``, no hooks, no parametrization), called once per forward,
    and its input is the same at two different parameter points (nothing before it reads a
    parameter). Anything else evaluates the model point by point as before.
    """

    def __init__(self, evaluator: Evaluator, module: torch.nn.Module, prefix: str):
        self.evaluator, self.module, self.prefix = evaluator, module, prefix
        if isinstance(module, torch.nn.Linear):
            self.fan_in = module.in_features
        else:
            self.fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        self.owners = [m for m in evaluator.model.modules() if next(m.parameters(recurse=False), None) is not None]
        self.chain: LinearChain | None = None  # the whole model as a chain of linear layers, where it is one

    @classmethod
    def find(cls, evaluator: Evaluator) -> FirstLayer | None:
        """The first layer of the evaluator's model if it can be factored (see the class), else None."""
        model = evaluator.model
        prefixes = {id(m): n for n, m in model.named_modules()}
        owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
        calls: list = []

        def record(module, args, kwargs):
            calls.append((module, args, kwargs))

        batch = evaluator.batches.first()
        hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in owners]
        try:
            with torch.no_grad(), eval_mode(model):
                torch.func.functional_call(evaluator.measure, (evaluator.own, evaluator.buffers), (batch,))
        finally:
            for h in hooks:
                h.remove()
        if not calls:
            return None
        module, args, kwargs = calls[0]
        plain = type(module) in _AFFINE and not (module._forward_hooks or module._forward_pre_hooks)
        plain = plain and not torch.nn.utils.parametrize.is_parametrized(module) and "forward" not in vars(module)
        if not plain or kwargs or len(args) != 1 or sum(m is module for m, _, _ in calls) != 1:
            return None
        if not (isinstance(args[0], torch.Tensor) and args[0].is_floating_point()):
            return None
        layer = cls(evaluator, module, prefixes[id(module)])
        chosen = {f"model.{n}" for n in evaluator.layout.names}
        generator = torch.Generator().manual_seed(0)
        moved = {
            n: t + (torch.randn(t.shape, generator=generator) * (1 + t.abs().mean().item())).to(t)
            if n in chosen and t.is_floating_point() else t
            for n, t in evaluator.own.items()
        }  # fmt: skip
        if not torch.equal(layer.input(batch, moved), args[0]):
            return None  # something before the layer reads a parameter
        if evaluator.fast_ce and not (evaluator.autocast or evaluator.bn_batches):
            layer.chain = layer._chain(batch, prefixes)
        return layer

    def _chain(self, batch, prefixes: dict) -> LinearChain | None:
        """The model as a chain of linear layers (see ``evaluation.chain``), checked: vmap runs the model as it
        is (so no Python branch reads a tensor's value, and every point runs the same calls), and the chain's
        numbers equal vmap's at two points of a random plane on ``batch``; else None."""
        evaluator, model = self.evaluator, self.evaluator.model

        def forward():
            torch.func.functional_call(evaluator.measure, (evaluator.own, evaluator.buffers), (batch,))

        with torch.no_grad(), eval_mode(model):
            chain = LinearChain.find(model, self.module, prefixes, evaluator.layout, evaluator.own, forward)
            if chain is None:
                return None
            origin = evaluator.layout.tensor(evaluator.layout.flatten(model), evaluator.device)
            generator = torch.Generator().manual_seed(1)
            basis = (torch.randn(2, len(origin), generator=generator) * (0.1 + origin.abs().mean())).to(origin)
            coords = torch.tensor([[0.0, 0.0], [0.7, -0.4]], dtype=origin.dtype, device=origin.device)
            flat = origin + coords @ basis
            try:
                expected = evaluator._run("vmap", flat, evaluator.buffers, batch, False)
            except Exception:  # vmap cannot run the model (a branch on a value, ...): no chain
                return None
            got = chain.stats(self.outputs(batch, origin, basis), coords, flat, batch[-1], evaluator.spread)
        return chain if torch.allclose(got, expected.to(got.dtype), rtol=1e-4, atol=1e-5) else None

    def input(self, batch, tensors: dict | None = None) -> torch.Tensor:
        """The layer's input on ``batch``: the forward pass run up to the layer, then stopped."""
        evaluator = self.evaluator
        seen = []

        def stop(module, args):
            if module is self.module:
                seen.append(args[0])
            raise _Reached

        hooks = [m.register_forward_pre_hook(stop) for m in self.owners]
        try:
            with eval_mode(evaluator.model):
                torch.func.functional_call(evaluator.measure, (tensors or evaluator.own, evaluator.buffers), (batch,))
        except _Reached:
            pass
        finally:
            for h in hooks:
                h.remove()
        if not seen:
            raise RuntimeError(
                f"the forward pass no longer starts with {self.prefix!r}; evaluate with first_layer='plain'"
            )
        return seen[0]

    def outputs(self, batch, origin: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """``[f(W0), f(U), f(V)]`` on ``batch`` (3, N, ...) for the plane ``origin`` (K,), ``basis`` (2, K)."""
        evaluator = self.evaluator
        x = self.input(batch)
        pieces = [evaluator.layout.unflatten(t) for t in (origin, basis[0], basis[1])]
        out = []
        for k, piece in enumerate(pieces):
            tensors = {}
            for name, own in self.module.named_parameters(recurse=False):
                full = f"{self.prefix}.{name}"
                if full in piece:
                    tensors[name] = piece[full].to(own.dtype)
                else:  # a fixed tensor: the same at every point, so all of it goes with the origin
                    tensors[name] = own.detach().to(evaluator.device) if k == 0 else torch.zeros_like(own)
            out.append(torch.func.functional_call(self.module, tensors, (x,)))
        return torch.stack(out)

    @staticmethod
    def combine(outputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The layer's output at each point ``coords`` (C, 2): ``f(W0) + x·f(U) + y·f(V)`` (C, N, ...)."""
        out = torch.empty((len(coords), *outputs.shape[1:]), dtype=outputs.dtype, device=outputs.device)
        for c, (x, y) in enumerate(coords.tolist()):  # scalar multipliers: one pass each, in place
            torch.add(outputs[0], outputs[1], alpha=x, out=out[c]).add_(outputs[2], alpha=y)
        return out

    @contextlib.contextmanager
    def replaced(self, output: torch.Tensor):
        """The layer returns ``output`` for the duration, whatever its weights."""
        self.module.forward = lambda *args, **kwargs: output
        try:
            yield
        finally:
            del self.module.forward
