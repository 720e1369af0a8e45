"""Which recorded points an animation shows, and at which of them the path's true loss is measured.

NumPy only (no torch, no matplotlib): the renderers and the API layer both import it, so the
points a job measures are the points its animation draws.

- ``select_frames`` / ``frames_to_show``: the frames of one run's animation.
- ``frame_schedule``: the frames of several runs moving together (a comparison).
- ``measured_points``: at most ``MEASURED_POINTS`` of the frames, where the true loss at θ_k
  and the slice loss at its projection are evaluated (``project(..., at=)``). Each costs two
  evaluations of the model over the grid's data, as much as two grid points. Measured on the
  reference README's LeNet example (3,000 images, 1,881 steps): 100 points took 30 s on two
  cores shared with other work (load 3–5), the true loss alone at 300 points 22 s on a quiet
  machine; at every step it was six times the adaptive grid's work. 100 points spread evenly
  over the run draw the same curve as every step, at a third of 300 frames' cost.
- ``held``: for drawing, the latest measured point at or before each point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "MEASURED_POINTS",
    "fraction",
    "frame_schedule",
    "frames_to_show",
    "held",
    "measured_points",
    "select_frames",
]

# The most points of a path whose true and slice losses are measured (see the module's docstring).
MEASURED_POINTS = 100


def select_frames(n_points: int, max_frames: int) -> np.ndarray:
    """Indices of at most ``max_frames`` points spread evenly, first and last always in.

    >>> select_frames(10, 4).tolist()
    [0, 3, 6, 9]
    >>> select_frames(3, 300).tolist()
    [0, 1, 2]
    """
    n = min(n_points, max_frames)
    return np.unique(np.round(np.linspace(0, n_points - 1, n)).astype(np.int64))


def frames_to_show(steps, max_frames: int, every: int | None = None) -> np.ndarray:
    """Indices of the recorded points to draw: every ``every``-th step (if given), at most ``max_frames``.

    >>> frames_to_show(np.arange(10), 300, every=4).tolist()
    [0, 4, 8, 9]
    """
    if every is None:
        return select_frames(len(steps), max_frames)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be a positive number of steps, e.g. every=5")
    steps = np.asarray(steps)
    chosen = np.flatnonzero((steps - steps[0]) % every == 0)
    chosen = np.union1d(chosen, [len(steps) - 1])
    return chosen[select_frames(len(chosen), max_frames)]


def fraction(step) -> np.ndarray:
    """Each step as the fraction of the run's training done, 0 at the first and 1 at the last.

    >>> fraction([10, 15, 20]).tolist()
    [0.0, 0.5, 1.0]
    """
    step = np.asarray(step, dtype=np.float64)
    span = step[-1] - step[0]
    return (step - step[0]) / span if span > 0 else np.zeros_like(step)


def frame_schedule(projections: Sequence, max_frames: int, timeline: str = "auto"):
    """For each frame, the point each run shows, ``(F, R)`` int, and the frame's time ``(F,)``.

    ``projections`` are anything with a ``step`` array (F,) each. ``'step'`` moves every run by
    global step; ``'fraction'`` by the fraction of its own training, for runs of different
    lengths; ``'auto'`` picks ``'step'`` when the runs end at the same step. A run that has
    finished rests at its last point.

    >>> from types import SimpleNamespace as P
    >>> runs = [P(step=np.arange(5)), P(step=np.arange(3))]
    >>> index, times = frame_schedule(runs, 5, "step")
    >>> index.T.tolist()
    [[0, 1, 2, 3, 4], [0, 1, 2, 2, 2]]
    """
    if timeline == "auto":
        same_end = len({int(p.step[-1]) for p in projections}) == 1
        timeline = "step" if same_end else "fraction"
    n_frames = min(max_frames, max(len(p.step) for p in projections))
    if timeline == "step":
        start = min(int(p.step[0]) for p in projections)
        end = max(int(p.step[-1]) for p in projections)
        times = np.linspace(start, end, n_frames)
        keys = [np.asarray(p.step, dtype=np.float64) for p in projections]
    else:
        times = np.linspace(0.0, 1.0, n_frames)
        keys = [fraction(p.step) for p in projections]
    index = np.stack([np.clip(np.searchsorted(k, times + 1e-9, side="right") - 1, 0, len(k) - 1) for k in keys], 1)
    return index, times


def measured_points(frames, limit: int = MEASURED_POINTS) -> np.ndarray:
    """At most ``limit`` of the frame indices ``frames``, spread evenly, first and last always in.

    >>> measured_points(np.arange(0, 30, 3), limit=4).tolist()
    [0, 9, 18, 27]
    >>> measured_points([4, 2, 2, 7]).tolist()
    [2, 4, 7]
    """
    frames = np.unique(np.asarray(frames, dtype=np.int64))
    return frames[select_frames(len(frames), limit)] if len(frames) else frames


def held(values) -> np.ndarray:
    """For each point, the index of the latest finite value of ``values`` at or before it; -1 before the first.

    What a picture shows between measured points: the last truth it has, drawn where it was measured.

    >>> held([np.nan, 1.0, np.nan, np.nan, 2.0, np.nan]).tolist()
    [-1, 1, 1, 1, 4, 4]
    """
    finite = np.isfinite(np.asarray(values, dtype=np.float64))
    index = np.where(finite, np.arange(len(finite)), -1)
    return np.maximum.accumulate(index) if len(index) else index
