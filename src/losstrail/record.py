"""Recording the path the parameters take from a training loop: ``Recorder``.

The ``Trajectory`` value it makes lives in ``losstrail.trajectory`` (NumPy only) and is
importable from here too.
"""

from __future__ import annotations

import math

import torch

from losstrail._functional import ParamLayout, choose_parameters
from losstrail._points import Points, as_float
from losstrail.trajectory import DTYPES, Trajectory

__all__ = ["Recorder", "Trajectory"]


def recorded_layout(model: torch.nn.Module, params, argument: str = "params") -> ParamLayout:
    """The layout of the parameters a recorder keeps: ``params`` chosen on ``model``, each of a real float dtype.

    Any mix of float16, bfloat16, float32 and float64 is recorded (as float32 rows) and evaluated
    in each parameter's own dtype; a complex or integer parameter has no place on a real path.
    """
    layout = ParamLayout(model, choose_parameters(model, params, argument=argument))
    for name, dtype in zip(layout.names, layout.dtypes):
        if not dtype.is_floating_point:
            raise ValueError(
                f"{argument} selects {name!r}, a {str(dtype).removeprefix('torch.')} parameter, but a path holds real "
                f"floating-point parameters only (float16, bfloat16, float32, float64); leave it out, e.g. "
                f"{argument}=lambda name, p: p.is_floating_point()"
            )
    return layout


class Recorder:
    """Record a trajectory from a training loop you wrote yourself: no Lightning, no base class.

    Create it before the first step (it takes θ_0 then), and call ``record`` after each
    optimizer step with the loss of that step; ``every`` keeps one point in ``every``. The
    loss passed with step k is the loss *at* θ_k, the parameters the step started from,
    exactly as ``fit`` records it. ``trajectory`` adds the final parameters and ends the
    recording.

    Args:
        model: the ``nn.Module`` being trained.
        every: keep one point every this many steps (default 1).
        params: which parameters to record: ``'trainable'`` (default, those with
            ``requires_grad``), ``'all'``, name patterns or a predicate ``(name, param) -> bool``.
        storage, dtype, memory_limit: as ``TrajectoryRecorder`` (disk-backed paths, float16).

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
                 dtype: str = "float32", memory_limit: int = 1 << 30):  # fmt: skip
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive integer, e.g. every=1")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; expected one of {', '.join(map(repr, DTYPES))}")
        self.model, self.every = model, every
        self._points = Points(storage, str(dtype), memory_limit)
        self._points.layout = self._layout = recorded_layout(model, params)
        self._step, self._epoch = 0, 0
        self._start = self._layout.flatten(model)  # θ at the start of the next step
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
        self._start = self._layout.flatten(self.model)

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
