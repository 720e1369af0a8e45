"""The cost plan: what a grid will cost, said before it starts, and the settings that fit a budget.

Pure Python and NumPy, no torch. Every estimate is linear in the work: the caller times one
chunk of grid points and passes ``seconds_per_unit``, the seconds per (grid point × example).

How many points an adaptive grid evaluates exactly is only known afterwards. Before the run
it is estimated from ``TYPICAL_EXACT``: the exact points measured on real loss surfaces at
each ``tol`` (spirals MLP and digits LeNet on their PCA planes, the default view). The count
hardly depends on the resolution (the same surface needs the same samples whether the grid
is 34×34 or 100×100), so it is taken as fixed, clamped between the coarse lattice's checks
and the whole grid. Rougher surfaces (filter-normalized planes far from the minimum) took
about twice as many; the estimate says "about".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from losstrail._checks import check_tol, shown

# Exact points an adaptive grid evaluated on real loss surfaces (the larger of spirals MLP and
# digits LeNet, PCA plane, 100×100, default coarse lattice, ln(loss) interpolated; measured by
# benchmarks/bench_grids.py's full grids, 2026-11-23), by tol; log-log interpolated between.
# The reference README's LeNet example on MNIST-shaped data took 1,469 at tol 0.01.
TYPICAL_EXACT = {0.002: 1940, 0.005: 1210, 0.01: 820, 0.02: 610}
# The subset the plan suggests when there are more than twice as many examples.
SUBSET = 500
# The smallest subset a budget may pick: fewer examples make the mean loss too noisy to draw.
MIN_SUBSET = 100
# The tol the plan assumes when none is given: measured true errors stay under 0.4% with it.
DEFAULT_TOL = 0.01

_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
}
_TERM = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


def parse_budget(value, argument: str = "budget") -> float:
    """Seconds from a duration: a number of seconds, or text such as ``'90s'``, ``'2min'``, ``'1h'``, ``'1h 30m'``.

    Args:
        value: a positive number (seconds) or a string of numbers with units ``s``/``sec``,
            ``m``/``min``, ``h``/``hr`` (a bare number is seconds).
        argument: the name the caller used, for the error message (``'--budget'`` on the command line).

    Raises:
        ValueError: naming ``argument``, when ``value`` is not a duration or is not positive.

    >>> parse_budget(60), parse_budget("90 s"), parse_budget("2min"), parse_budget("1h 5m")
    (60.0, 90.0, 120.0, 3900.0)
    """
    expected = f"expected seconds or a number with a unit, e.g. {shown(argument, '60s')}, '2min' or '1h'"
    if isinstance(value, bool):
        raise ValueError(f"{shown(argument, value)} is not a duration; {expected}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        terms = []
        position = 0
        while position < len(text):
            match = _TERM.match(text, position)
            if match is None or match.end() == position:
                break
            terms.append(match.groups())
            position = match.end()
        bare = [unit for _, unit in terms if not unit]
        if (
            not terms
            or position != len(text)
            or any(unit and unit not in _UNITS for _, unit in terms)
            or (bare and len(terms) > 1)
        ):
            raise ValueError(f"{shown(argument, value)} is not a duration; {expected}")
        seconds = sum(float(number) * _UNITS.get(unit, 1.0) for number, unit in terms)
    else:
        raise ValueError(f"{shown(argument, value)} is not a duration; {expected}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{shown(argument, value)} must be a positive duration; {expected}")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration the way a person says it: ``'45 s'``, ``'2 min'``, ``'1 h 5 min'``.

    >>> format_duration(0.3), format_duration(44.6), format_duration(130), format_duration(3900)
    ('under 1 s', '45 s', '2 min', '1 h 5 min')
    """
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"


def _about(seconds: float) -> str:
    return format_duration(seconds) if seconds < 1 else f"about {format_duration(seconds)}"


def expected_exact(nx: int, ny: int, tol: float = DEFAULT_TOL, coarse: int | None = None) -> int:
    """Exact points an adaptive ``ny`` × ``nx`` grid is expected to evaluate at ``tol`` (see ``TYPICAL_EXACT``).

    >>> expected_exact(100, 100, 0.01), expected_exact(20, 20, 0.01), expected_exact(100, 100, 1.0)
    (820, 400, 289)
    """
    from losstrail.evaluation.adaptive import minimum_points

    tols = np.log(list(TYPICAL_EXACT))
    counts = np.log(list(TYPICAL_EXACT.values()))
    slope = (counts[-1] - counts[0]) / (tols[-1] - tols[0])  # beyond the table, the overall trend
    t = math.log(tol)
    if t < tols[0]:
        log_count = counts[0] + slope * (t - tols[0])
    elif t > tols[-1]:
        log_count = counts[-1] + slope * (t - tols[-1])
    else:
        log_count = float(np.interp(t, tols, counts))
    count = round(math.exp(log_count))
    return int(min(nx * ny, max(minimum_points(nx, ny, coarse), count)))


def _count(n: int) -> str:
    return f"{n:,}"


@dataclass(frozen=True)
class Estimate:
    """What a grid will cost: the full grid, the adaptive grid, and a suggested subset."""

    nx: int
    ny: int
    examples: int
    seconds_per_unit: float  # measured seconds per (grid point × example)
    tol: float
    adaptive_exact: int  # exact points the adaptive grid is expected to evaluate
    full: float  # seconds for the full grid on every example
    adaptive: float  # seconds for the adaptive grid on every example
    subset: int | None  # the suggested subset; None when the data are small
    subset_full: float | None  # seconds for the full grid on the subset
    subset_adaptive: float | None  # seconds for the adaptive grid on the subset

    @property
    def points(self) -> int:
        return self.nx * self.ny

    def line(self, grid: str = "full", style: str = "cli") -> str:
        """The plan in one line, leading with ``grid`` (``'full'`` or ``'adaptive'``), options written for ``style``.

        ``style`` is ``'cli'`` (``--grid adaptive``) or ``'python'`` (``grid='adaptive'``).
        """
        option = (lambda name, v: f"--{name} {v}") if style == "cli" else (lambda name, v: f"{name}={v!r}")
        head = f"{_count(self.points)} points × {_count(self.examples)} examples"
        if grid == "adaptive":
            parts = [
                f"{head}: {_about(self.adaptive)} adaptive "
                f"(about {_count(self.adaptive_exact)} points exact at tol {self.tol:g})",
                f"{option('grid', 'full')} {_about(self.full)}",
            ]
            subset_seconds = self.subset_adaptive
        else:
            parts = [
                f"{head}: {_about(self.full)}",
                f"with {option('grid', 'adaptive')} {_about(self.adaptive)}",
            ]
            subset_seconds = self.subset_full
        if self.subset is not None:
            parts.append(f"{option('subset', self.subset)} {_about(subset_seconds)}")
        return "; ".join(parts)


def _check_rate(seconds_per_unit) -> float:
    if not (isinstance(seconds_per_unit, (int, float, np.floating)) and seconds_per_unit > 0):
        raise ValueError(f"seconds_per_unit={seconds_per_unit!r} must be a positive number (a timed chunk)")
    return float(seconds_per_unit)


def estimate(
    seconds_per_unit: float,
    nx: int,
    ny: int,
    examples: int,
    *,
    tol: float = DEFAULT_TOL,
    coarse: int | None = None,
    exact: int | None = None,
    subset: int | None = None,
) -> Estimate:
    """The cost of an ``ny`` × ``nx`` grid over ``examples`` examples, full and adaptive.

    Args:
        seconds_per_unit: seconds per (grid point × example), timed on one chunk.
        nx, ny: the grid's resolution.  examples: examples each point is evaluated on.
        tol, coarse: the adaptive grid's settings.
        exact: exact points the adaptive grid will take; default ``expected_exact(nx, ny, tol, coarse)``.
        subset: the subset to quote; default ``SUBSET`` when there are more than twice as many examples.

    >>> e = estimate(2.2e-5, 100, 100, 3000)  # 22 µs per (point × example)
    >>> e.line()
    '10,000 points × 3,000 examples: about 11 min; with --grid adaptive about 54 s; --subset 500 about 2 min'
    """
    rate = _check_rate(seconds_per_unit)
    tol = check_tol(tol)
    exact = expected_exact(nx, ny, tol, coarse) if exact is None else int(exact)
    if subset is None and examples > 2 * SUBSET:
        subset = SUBSET
    if subset is not None and subset >= examples:
        subset = None
    points = nx * ny
    return Estimate(
        nx=nx,
        ny=ny,
        examples=examples,
        seconds_per_unit=rate,
        tol=tol,
        adaptive_exact=exact,
        full=rate * points * examples,
        adaptive=rate * exact * examples,
        subset=subset,
        subset_full=None if subset is None else rate * points * subset,
        subset_adaptive=None if subset is None else rate * exact * subset,
    )


@dataclass(frozen=True)
class Choice:
    """Settings that fit a budget, and a sentence saying what was picked."""

    grid: str  # 'full' or 'adaptive'
    nx: int
    ny: int
    subset: int | None  # examples to evaluate on; None: all of them
    tol: float | None  # the adaptive grid's tol; None for a full grid
    seconds: float  # the estimate for these settings
    sentence: str


def _round_down(n: int) -> int:
    """``n`` rounded down to two significant digits: 1,234 -> 1,200."""
    if n < 100:
        return n
    step = 10 ** (len(str(n)) - 2)
    return n // step * step


def choose_for_budget(
    budget,
    seconds_per_unit: float,
    nx: int,
    ny: int,
    examples: int,
    *,
    tol: float = DEFAULT_TOL,
    coarse: int | None = None,
    argument: str = "budget",
) -> Choice:
    """Grid settings whose estimated cost fits ``budget``, preferring the most exact picture.

    In order, the first that fits: the full grid on every example; the adaptive grid (``tol``)
    on every example; the adaptive grid on the largest subset (at least ``MIN_SUBSET``
    examples); a full grid of lower resolution (as low as the adaptive grid's coarse lattice
    with its checks) on ``MIN_SUBSET`` examples or as many more as fit. The budget is for the
    grid's evaluation alone.

    Args:
        budget: seconds, or text for ``parse_budget`` (``'60s'``, ``'2min'``).
        seconds_per_unit: seconds per (grid point × example), timed on one chunk.
        nx, ny: the resolution asked for.  examples: examples in the data.
        tol, coarse: the adaptive grid's settings.
        argument: the budget's name as the caller wrote it, for messages.

    Raises:
        ValueError: when even the coarse lattice on ``MIN_SUBSET`` examples does not fit; it
            says the minimum budget.

    >>> choice = choose_for_budget("60s", 2.2e-5, 100, 100, 3000)
    >>> choice.grid, choice.subset, choice.tol, choice.sentence.split("; ")[1]
    ('adaptive', None, 0.01, 'picked the adaptive grid (tol 0.01) on all 3,000 examples, about 54 s')
    """
    from losstrail.evaluation.adaptive import COARSE, coarse_shape

    seconds = parse_budget(budget, argument)
    rate = _check_rate(seconds_per_unit)
    tol = check_tol(tol)
    coarse = COARSE if coarse is None else coarse
    head = f"budget {format_duration(seconds)}"
    grid = f"{nx}×{ny}"
    full = rate * nx * ny * examples
    all_examples = f"all {_count(examples)} examples"

    def picked(kind, gx, gy, subset, t, cost, why):
        on = all_examples if subset is None else f"a subset of {_count(subset)} of {_count(examples)} examples"
        what = f"the adaptive grid (tol {t:g})" if kind == "adaptive" else f"the full {gx}×{gy} grid"
        sentence = f"{head}: {why}picked {what} on {on}, {_about(cost)}"
        return Choice(kind, gx, gy, subset, t, cost, sentence)

    if full <= seconds:
        return Choice(
            "full",
            nx,
            ny,
            None,
            None,
            full,
            f"{head}: the full {grid} grid on {all_examples} fits, {_about(full)}",
        )
    why = f"the full {grid} grid would take {_about(full)}; "
    exact = expected_exact(nx, ny, tol, coarse)
    adaptive = rate * exact * examples
    if adaptive <= seconds:
        return picked("adaptive", nx, ny, None, tol, adaptive, why)
    fewest = min(examples, MIN_SUBSET)
    subset = _round_down(int(seconds / (rate * exact)))
    if subset >= fewest and examples > MIN_SUBSET:
        return picked("adaptive", nx, ny, subset, tol, rate * exact * subset, why)
    why = f"the adaptive {grid} grid would take {_about(rate * exact * fewest)} even on {_count(fewest)} examples; "
    # a full grid of lower resolution, down to the adaptive grid's coarse lattice with its checks
    low_x, low_y = coarse_shape(nx, ny, coarse)
    scale = min(1.0, math.sqrt(seconds / (rate * fewest * nx * ny)))
    while True:
        gx, gy = max(low_x, int(nx * scale)), max(low_y, int(ny * scale))
        if rate * gx * gy * fewest <= seconds:
            more = min(examples, _round_down(int(seconds / (rate * gx * gy))))
            subset = None if more >= examples else more
            return picked("full", gx, gy, subset, None, rate * gx * gy * more, why)
        if (gx, gy) == (low_x, low_y):
            break
        scale *= 0.95
    least = low_x * low_y
    minimum = rate * least * fewest
    at_least = format_duration(math.ceil(minimum)) if minimum >= 10 else f"{math.ceil(minimum * 10) / 10:g} s"
    raise ValueError(
        f"{shown(argument, budget)} is too small: even the adaptive grid's coarse lattice with its checks "
        f"({_count(least)} points × {_count(fewest)} examples) takes {_about(minimum)}; "
        f"give at least {at_least}, "
        f"e.g. {shown(argument, f'{math.ceil(minimum * 1.2)}s')}"
    )
