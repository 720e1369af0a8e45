"""Recording the path the parameters take from a training loop: ``Recorder``.

The ``Trajectory`` value it makes lives in ``losstrail.values.trajectory`` (NumPy only) and is
importable from here too.
"""

from __future__ import annotations

import math

import torch

from losstrail.evaluation.layout import ParamLayout, choose_parameters
from losstrail.training.points import SNAPSHOTS, Points, as_float
from losstrail.values.trajectory import Trajectory, check_dtype

__all__ = ["Recorder", "Trajectory"]


def recorded_layout(model: torch.nn.Module, params, argument: str = "params") -> ParamLayout:
    """The layout of the parameters a recorder keeps: ``params`` chosen on ``model``, each of a real float dtype.

    Any mix of float16, bfloat16, float32 and float64 is recorded (as float32 rows) and evaluated
    in each parameter's own dtype; a complex or integer parameter has no place on a real path.
    """
    from losstrail.evaluation.inplace import is_sharded, resharded

    if resharded(model) or any(is_sharded(p) for p in model.parameters()):
        raise ValueError(
            "a recorded path keeps whole rows of the parameters, and this model's are sharded across ranks "
            "(FSDP2/DTensor): record the path of a model on one device, or draw a plane around the sharded model "
            "with make_plane(model, 'filter') instead"
        )
    layout = ParamLayout(model, choose_parameters(model, params, argument=argument))
    for name, dtype in zip(layout.names, layout.dtypes):
        if not dtype.is_floating_point:
            raise ValueError(
                f"{argument} selects {name!r}, a {str(dtype).removeprefix('torch.')} parameter, but a path holds real "
                f"floating-point parameters only (float16, bfloat16, float32, float64); leave it out, e.g. "
                f"{argument}=lambda name, p: p.is_floating_point()"
            )
    return layout


def path_rows(steps: int, every: int) -> int:
    """Points a recording of ``steps`` optimizer steps keeps, one every ``every``, and the final one.

    >>> path_rows(2000, 1), path_rows(10, 3)
    (2001, 5)
    """
    return -(-steps // every) + 1


def check_memory(memory_limit, snapshots) -> int:
    """``memory_limit`` after checking it and ``snapshots`` (the most rows of a sketched path, at least 3)."""
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit < 0:
        raise ValueError(f"memory_limit={memory_limit!r} must be a number of bytes, e.g. memory_limit=1 << 30")
    if isinstance(snapshots, bool) or not isinstance(snapshots, int) or snapshots < 3:
        raise ValueError(f"snapshots={snapshots!r} must be an integer of at least 3, e.g. snapshots=200")
    return memory_limit


class Recorder:
    """Record a trajectory from a training loop you wrote yourself: no Lightning, no base class.

    Create it before the first step (it takes θ_0 then), and call ``record`` after each
    optimizer step with the loss of that step; ``every`` keeps one point in ``every``. The
    loss passed with step k is the loss *at* θ_k, the parameters the step started from,
    exactly as ``fit`` records it. ``trajectory`` adds the final parameters and ends the
    recording.

    A path that fits ``memory_limit`` keeps every point. Past it the rows go to ``storage`` (a
    temporary folder, removed when the trajectory is, if none is given); a path of more than
    ``snapshots`` points is then kept *sketched*: every step's loss, ``snapshots`` evenly spaced
    rows and a sketch of every step for PCA (see ``Trajectory``), so recording never holds more
    than the model and ``memory_limit``. Given ``steps``, a path that will not fit says its size
    before training.

    Args:
        model: the ``nn.Module`` being trained.
        every: keep one point every this many steps (default 1).
        params: which parameters to record: ``'trainable'`` (default, those with
            ``requires_grad``), ``'all'``, name patterns or a predicate ``(name, param) -> bool``.
        storage: a folder for the rows of a path past ``memory_limit`` (default: a temporary one).
        dtype: of the rows: ``'float32'`` or ``'float16'``; default float32 for every point of a
            path, float16 for the snapshots of a sketched one.
        memory_limit: bytes of path held in memory (1 GiB): rows, or the sketch of a longer path.
        snapshots: the most rows a sketched path keeps (200).
        steps: how many optimizer steps will be recorded, if known.
        quiet: say nothing about the path's size.

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> rec = Recorder(model)
    >>> for _ in range(3):
    ...     loss = model(torch.ones(4, 2)).pow(2).mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     rec.record(loss=loss)
    >>> t = rec.trajectory
    >>> t.params.shape, t.step.tolist()
    ((4, 3), [0, 1, 2, 3])
    """

    def __init__(self, model: torch.nn.Module, every: int = 1, *, params="trainable", storage=None,
                 dtype: str | None = None, memory_limit: int = 1 << 30, snapshots: int = SNAPSHOTS,
                 steps: int | None = None, quiet: bool = False):  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. every=1")
        self.model, self.every = model, every
        self._points = Points(storage, check_dtype(dtype), check_memory(memory_limit, snapshots), snapshots, quiet)
        self._points.layout = self._layout = recorded_layout(model, params)
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
                raise ValueError(f"steps={steps!r} must be the number of optimizer steps to record, e.g. steps=2000")
            self._points.plan(path_rows(steps, every))
        self._step, self._epoch = 0, 0
        self._start = self._flatten()  # θ at the start of the next step
        self._final: tuple[float, float] = (math.nan, math.nan)
        self._trajectory: Trajectory | None = None

    def record(self, loss=math.nan, accuracy=math.nan, *, epoch: int = 0) -> None:
        """Note one optimizer step: ``loss`` (and ``accuracy``) measured at the parameters it started from."""
        if self._trajectory is not None:
            raise RuntimeError("this recording has ended (its trajectory was taken); make a new Recorder")
        if self._step % self.every == 0:
            self._points.add(self._start, self._step, epoch)
            self._points.measure(as_float(loss), as_float(accuracy))
        self._step += 1
        self._epoch = epoch
        self._start = self._flatten()

    def _flatten(self) -> torch.Tensor:
        """θ now as one float32 vector (P,): a new one, or the one the path has room for (``Points.spare_row``)."""
        return self._layout.flatten(self.model, out=self._points.spare_row())

    def finish(self, loss=math.nan, accuracy=math.nan, *, epoch: int | None = None) -> None:
        """Optionally give the loss (and accuracy) at the final parameters, and the epoch they end (default: the
        last epoch recorded; a loop that counts finished epochs, as Lightning does, passes their number)."""
        self._final = (as_float(loss), as_float(accuracy))
        self._epoch = self._epoch if epoch is None else epoch

    @property
    def trajectory(self) -> Trajectory:
        """Every recorded point, then the parameters as they are now."""
        if self._trajectory is None:
            self._points.add(self._layout.flatten(self.model), self._step, self._epoch)
            self._points.measure(*self._final)
            self._trajectory = self._points.freeze()
        return self._trajectory
