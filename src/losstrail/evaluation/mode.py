"""Choosing between ways of doing the same work (``vmap`` or point by point, on all threads or one) from
timings taken as it runs.

One timing of one chunk is a poor witness on a busy machine: a browser or a training job
beside the grid can slow either way by 2-5x for a second. ``WayChooser`` therefore

- times the ways interleaved, on real units of the work (no result is thrown away), and
  decides only once each has ``samples`` timings after its first (which carries warm-up);
- rates a way by the best of its last ``samples`` timings: load beside the work only ever
  slows a timing, so one slow unit does not move the choice, a lasting slowdown does;
- keeps timing the way it chose on every unit, and times each other way again now and then
  (more rarely the further behind it was) and at once when the chosen way's recent rate
  falls below that way's last one; when every recent timing of another is then faster by more than ``tie``,
  it switches (a way that is fast only now and then, as two threads beside a busy core, does not draw it);
- treats rates within ``tie`` of each other as a tie: it keeps the first way and says nothing;
- bounds what the trials and re-checks may cost when told the work left (``run(..., left=)``): one is run
  only while the excess of all of them (their time beyond the best rate's) could stay within ``regret`` of
  the time the rest takes at the best rate, so the whole job takes at most ``1 + regret`` times the best
  way's time, plus the first units' warm-up; a way never run counts as twice the best way's time (its warm-up). Trials
  left out are never run, so a job too short to repay them runs by the first way (``ways[0]``: put the
  way most likely best first).

Rates are in (points × examples) per second, so units of different sizes compare. The ways
named ``sliceable`` run at the same rate on few points as on many (point by point), so they
are timed on a slice of a unit and the rest of the unit goes to another way. No torch here:
the work is any callable.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence

__all__ = ["Pace", "WayChooser"]

# Rates within this factor are a tie: no switch, nothing said.
TIE = 1.15
# Timings per way, after its first, before the choice.
SAMPLES = 2
# Points of a unit the sliceable way is timed on while the other way does the rest.
SLICE = 8
# While one way runs, the other is timed again every this many units, times how far behind it was.
PROBE_EVERY = 8
# The trials' excess time may be at most this fraction of what the rest of the job takes at the best rate.
REGRET = 0.1


class WayChooser:
    """Run units of work by the fastest of ``ways``, chosen from interleaved timings and re-checked as it runs.

    ``run(work, n, examples)`` does one unit of ``n`` points over ``examples`` examples:
    ``work(way, start, stop)`` computes points ``start:stop`` of the unit by ``way`` and returns
    a list of per-point results (or anything ``join`` concatenates). A way that raises is
    dropped for good (``on_fail(way, error)``); its part is done by another way.

    >>> import time
    >>> chooser = WayChooser(("batched", "single"), sliceable="single")
    >>> def work(way, start, stop):  # 'single' is three times as slow per point
    ...     time.sleep((stop - start) * (0.0003 if way == "batched" else 0.001))
    ...     return list(range(start, stop))
    >>> all(chooser.run(work, 16, 1) == list(range(16)) for _ in range(12))
    True
    >>> chooser.chosen, chooser.decided
    ('batched', True)
    """

    def __init__(self, ways: Sequence[str], *, sliceable: str | Sequence[str] | None = None, samples: int = SAMPLES,
                 tie: float = TIE, regret: float = REGRET, join: Callable[[list], object] | None = None,
                 on_switch: Callable[[str, str, float], None] | None = None,
                 on_fail: Callable[[str, Exception], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):  # fmt: skip
        self.ways = list(ways)
        self.sliceable = {sliceable} if isinstance(sliceable, str) else set(sliceable or ())
        self.samples, self.tie, self.regret = samples, tie, regret
        self.join = join if join is not None else (lambda parts: [x for part in parts for x in part])
        self.on_switch, self.on_fail, self.clock = on_switch, on_fail, clock
        self.timings: dict[str, list[float]] = {w: [] for w in self.ways}  # rates after each way's first
        self.warmed: set[str] = set()
        self.chosen = self.ways[0]
        self.decided = len(self.ways) == 1
        self.switches: list[tuple[str, str, float]] = []  # (from, to, how many times faster)
        self._since: dict[str, int] = dict.fromkeys(self.ways, 0)  # units of the chosen way since each was timed
        self._splits = 0
        self._probe: str | None = None  # another way, to be timed on the next unit
        self.skipped: set[str] = set()  # ways whose trial the work left could not repay: never run
        self.excess = 0.0  # seconds the trials took beyond the best rate's time for their work
        self._warm: dict[str, float] = {}  # each way's first rate (warm-up in it: slower than its rate)
        self._left: float | None = None  # work (points x examples) left in the job, this unit's included
        self._examples = 1  # examples in the unit running

    # -- what the timings say ------------------------------------------------------------------
    def rate(self, way: str | None = None) -> float | None:
        """The recent rate of ``way`` (default the chosen one): the best of its last ``samples`` timings.

        Load beside the work only ever slows a timing down, so the best of a few is the way's rate
        now; a lasting slowdown shows once all of them are slow."""
        recent = self.timings[way or self.chosen][-self.samples :]
        return max(recent) if recent else None

    def _others(self) -> list[str]:
        return [w for w in self.ways if w != self.chosen]

    def _count(self, way: str) -> int:
        return len(self.timings[way]) + (way in self.warmed)

    def _fastest(self, ways) -> str:
        return max(ways, key=lambda w: (self.rate(w) or 0.0, -self.ways.index(w)))

    # -- one unit --------------------------------------------------------------------------------
    def plan(self, n: int, examples: int = 1) -> list[tuple[str, int]]:
        """How the next unit of ``n`` points is split: ``[(way, points), ...]`` in the order they run."""
        if len(self.ways) == 1:
            return [(self.chosen, n)]
        if not self.decided:  # the ways timed least so far: a sliceable one on a slice, another on the rest
            wanting = [w for w in self._wanting() if self._affordable(w, n, examples)]
            if not wanting:  # no trial left that the rest of the job repays: choose from what was timed
                self._decide()
                return [(self.chosen, n)]
            order = lambda w: (self._count(w), self.ways.index(w))  # noqa: E731 - ties: the first way first
            whole = [w for w in wanting if w not in self.sliceable]
            sliced = [w for w in wanting if w in self.sliceable]
            side = min(sliced, key=order) if sliced and n > SLICE else None
            if side is None:
                return [(min(wanting, key=order), n)]
            if whole:
                main = min(whole, key=order)
            else:
                rest = [w for w in self._live() if w not in self.sliceable] or [w for w in self._live() if w != side]
                if not rest:  # no other way left to run the rest of the unit: the side way runs all of it
                    return [(side, n)]
                main = self._fastest(rest)
            return self._split(side, main, n)
        if self._probe is None:
            return [(self.chosen, n)]
        if self._probe in self.sliceable and n > SLICE:
            return self._split(self._probe, self.chosen, n)
        return [(self._probe, n)]

    # -- what the trials may cost ------------------------------------------------------------------
    def _live(self) -> list[str]:
        return [w for w in self.ways if w not in self.skipped]

    def _wanting(self) -> list[str]:
        return [w for w in self._live() if len(self.timings[w]) < self.samples]

    def _best_rate(self) -> float | None:
        """The best rate known: of the recent timings, else of the first units (warm-up in them)."""
        rates = [r for r in (self.rate(w) for w in self.ways) if r] or list(self._warm.values())
        return max(rates) if rates else None

    def _affordable(self, way: str, n: int, examples: int) -> bool:
        """Whether a trial of ``way`` on its part of the next unit keeps the trials' excess within ``regret`` of
        the rest of the job at the best rate (always, when the work left is not known)."""
        if way in self.skipped:
            return False
        if self._within(way, (SLICE if way in self.sliceable and n > SLICE else n) * examples):
            return True
        self.skipped.add(way)  # the work left only shrinks: it will not be repaid later either
        return False

    def _within(self, way: str, work: float) -> bool:
        """Whether running ``way`` on ``work`` keeps the excess within ``regret`` of the rest at the best rate: it
        costs its time beyond the best rate's, by its rate (of its first unit, if no other), or twice the best
        rate's time if it never ran (its warm-up and a rate up to 2x slower)."""
        best = self._best_rate()
        if self._left is None or best is None:
            return True
        mine = self.rate(way) or self._warm.get(way)
        cost = 2 * work / best if mine is None else work * max(0.0, 1 / mine - 1 / best)
        return self.excess + cost <= self.regret * self._left / best

    def _decide(self) -> None:
        self.decided = True
        if self.rate() is None:  # the first way was left untimed: the fastest of those that ran, warm-up and all
            ran = [w for w in self._live() if self.rate(w) or w in self._warm]
            if ran:
                self.chosen = max(ran, key=lambda w: (self.rate(w) or self._warm[w], -self.ways.index(w)))
        self._compare()

    def _split(self, side: str, main: str, n: int) -> list[tuple[str, int]]:
        parts = [(side, SLICE), (main, n - SLICE)]
        self._splits += 1
        return parts if self._splits % 2 == 0 else parts[::-1]  # interleaved: the order alternates

    def record(self, way: str, seconds: float, work: float) -> None:
        """Note that ``way`` did ``work`` (points × examples) in ``seconds``, then decide or re-check."""
        if way != (self.chosen if self.decided else self._fastest(self._live() or self.ways)):  # a trial or probe:
            best = max(self._best_rate() or 0.0, work / max(seconds, 1e-9))  # what it took beyond the best rate's
            self.excess += max(0.0, seconds - work / best)
        if way not in self.warmed:  # the first timing carries warm-up
            self.warmed.add(way)
            self._warm[way] = work / max(seconds, 1e-9)
            return
        self.timings[way].append(work / max(seconds, 1e-9))
        self._since[way] = 0
        if way == self._probe:
            self._probe = None
        if not self.decided:
            if not self._wanting():
                self._decide()
            return
        if way != self.chosen:
            self._compare()
            return
        mine = self.rate()
        for other in self._others():
            self._since[other] += 1
            theirs = self.rate(other)
            behind = max(1.0, mine / theirs) if theirs else 1.0
            due = theirs is not None and (theirs > mine or self._since[other] >= PROBE_EVERY * behind)
            if due and self._within(other, min(work, SLICE * self._examples) if other in self.sliceable else work):
                self._probe = other  # time it again on the next unit, under the same conditions
                return

    def _sure(self, way: str) -> float | None:
        """The rate ``way`` keeps: the worst of its last ``samples`` timings (what a switch to it must beat)."""
        recent = self.timings[way][-self.samples :]
        return min(recent) if recent else None

    def _compare(self) -> None:
        """Switch to the fastest other way when even the worst of its recent timings beats the chosen way's rate by
        more than ``tie``: one lucky timing of a way that runs fast only now and then (two threads beside a busy
        core) does not move the choice, a lasting change does, once it has shown in ``samples`` timings."""
        best = self._fastest(self.ways)
        mine, theirs = self.rate(), self._sure(best)
        if best != self.chosen and mine is not None and theirs is not None and theirs > mine * self.tie:
            self.switches.append((self.chosen, best, theirs / mine))
            if self.on_switch is not None:
                self.on_switch(self.chosen, best, theirs / mine)
            self.chosen = best

    def run(self, work: Callable[[str, int, int], object], n: int, examples: int, *, timing: bool = True,
            left: float | None = None):  # fmt: skip
        """One unit of ``n`` points over ``examples`` examples, by the plan; the joined results in point order.

        ``timing=False`` (a single unit: nothing follows that a choice would speed up) runs the chosen way.
        ``left``: the work (points × examples) left in the job, this unit's included; it bounds the trials
        (see the class). None: no bound.
        """
        self._left, self._examples = left, examples
        parts = self.plan(n, examples) if timing else [(self.chosen, n)]
        results, start = {}, 0
        for way, count in parts:
            results[start] = self._timed(work, way, start, start + count, examples)
            start += count
        return results[0] if len(results) == 1 else self.join([results[s] for s in sorted(results)])

    def drop(self, way: str) -> None:
        """Run no more work by ``way`` (it cannot do it); the first way left is chosen until timings say otherwise."""
        if way not in self.ways or len(self.ways) == 1:
            return
        self.ways.remove(way)
        self.timings.pop(way)
        self._since.pop(way)
        self._warm.pop(way, None)
        self.skipped.discard(way)
        if self.chosen not in self.ways or self._probe == way:
            self.chosen, self._probe = self.ways[0], None
        self.decided = len(self.ways) == 1 or not self._wanting()

    def _timed(self, work, way: str, start: int, stop: int, examples: int):
        began = self.clock()
        try:
            result = work(way, start, stop)
        except Exception as err:  # this way cannot do the work: drop it, and the other does the part
            if len(self.ways) == 1:
                raise
            self.drop(way)
            if self.on_fail is not None:
                self.on_fail(way, err)
            return self._timed(work, self.chosen, start, stop, examples)
        self.record(way, self.clock() - began, (stop - start) * examples)
        return result


class Pace:
    """Wall-clock seconds per unit of work (points × examples) once warm-up is over: what the rest will cost.

    It starts counting at the end of the first unit after ``settled`` turns true (the way chosen, so
    neither warm-up nor the trial of both ways is in it), and counts everything from there, the work
    between the timed calls too. It answers once it covers ``units`` units and ``least`` seconds, or
    ``seconds`` seconds, or at the ``last`` unit of the work: a few short units are a poor witness on a busy
    machine (a spirals grid's first unit beside other work ran 4x slower than the grid's mean, and the
    cost said from it was 3.8x the actual time; three of its 9 ms units beside a CPU hog once said 5.8x).
    The answer is the median of the last ``keep`` units' paces, weighted by their work: a unit stalled by a
    burst of other work (or a process's first touch of its memory) does not set the pace of all the rest.

    >>> pace = Pace(clock=iter([1.0, 2.0, 4.0]).__next__)
    >>> pace.done(10, settled=True), pace.done(10, settled=True), pace.done(20, settled=True)
    (None, 0.1, 0.1)
    >>> pace = Pace(clock=iter([0.0, 0.5, 1.0, 1.5, 2.0, 6.0, 6.5, 7.0, 7.5, 11.5]).__next__, units=4, seconds=3.0)
    >>> [pace.done(1, settled=True) for _ in range(4)]  # three short units after the first: not yet
    [None, None, None, None]
    >>> pace.done(1, settled=True), pace.done(1, settled=True)  # four units; then a stalled one, left out
    (0.5, 0.5)
    >>> [pace.done(1, settled=True) for _ in range(4)][-1]  # two stalled of eight: the median still
    0.5
    >>> pace = Pace(clock=iter([0.0, 0.01, 0.02, 0.03, 0.25]).__next__, units=2, seconds=1.0, least=0.2)
    >>> [pace.done(1, settled=True) for _ in range(5)]  # two units, but under 0.2 s: not yet
    [None, None, None, None, 0.01]
    >>> pace = Pace(clock=iter([0.0, 0.01, 0.02]).__next__, units=3, seconds=1.0, least=0.2)
    >>> pace.done(1, settled=True), pace.done(1, settled=True), pace.done(1, settled=True, last=True)
    (None, None, 0.01)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, units: int = 1, seconds: float = 0.0,
                 least: float = 0.0, keep: int = 64):  # fmt: skip
        self.clock = clock
        self.units, self.seconds, self.least = units, seconds, least
        self._start: float | None = None  # when counting began
        self._last = 0.0  # when the last unit ended
        self._steps: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)  # (pace, work)

    def restart(self) -> None:
        """Count again from the end of the next unit: what ran so far (another way, say) no longer tells the pace."""
        self._start = None
        self._steps.clear()

    def done(self, work: float, settled: bool, last: bool = False) -> float | None:
        """Note a finished unit of ``work`` (``last``: the work's last); the seconds per unit of work now (see the
        class), or None yet."""
        now = self.clock()
        if self._start is None:
            if settled:
                self._start = self._last = now
            return None
        self._steps.append(((now - self._last) / max(work, 1e-12), work))
        self._last = now
        covered = now - self._start
        if (len(self._steps) < self.units or covered < self.least) and covered < self.seconds and not last:
            return None
        half, behind = sum(w for _, w in self._steps) / 2, 0.0
        for pace, w in sorted(self._steps):
            behind += w
            if behind >= half:
                return pace
        return None  # not reached: the work's sum is at least its half
