"""The cost plan: durations, tol, estimates and the settings a budget picks."""

import math

import numpy as np
import pytest

from losstrail.evaluation.adaptive import coarse_shape, minimum_points
from losstrail.evaluation.plan import (
    MIN_SUBSET,
    SUBSET,
    TYPICAL_EXACT,
    check_tol,
    choose_for_budget,
    estimate,
    expected_exact,
    format_duration,
    parse_budget,
)

RATE = 2.2e-5  # seconds per (point × example): the README's LeNet example, 10,000 × 3,000 in about 11 min


@pytest.mark.parametrize(
    "value, seconds",
    [
        (60, 60.0),
        (2.5, 2.5),
        (np.float32(30), 30.0),
        ("60", 60.0),
        ("60s", 60.0),
        ("90 s", 90.0),
        ("45sec", 45.0),
        ("2m", 120.0),
        ("2min", 120.0),
        ("1.5 minutes", 90.0),
        ("1h", 3600.0),
        ("1h 5min", 3900.0),
        ("1h30m", 5400.0),
        ("  10 S ", 10.0),
    ],
)
def test_parse_budget(value, seconds):
    assert parse_budget(value) == seconds


@pytest.mark.parametrize("value", ["", "fast", "60x", "1 h 5", "5 5", "m", "-5s", "1e3", None, True, [60]])
def test_parse_budget_rejects_what_is_not_a_duration(value):
    with pytest.raises(ValueError, match=r"budget=.* is not a duration; expected seconds or a number with a unit"):
        parse_budget(value)


@pytest.mark.parametrize("value", [0, -1, "0s", 0.0, float("nan"), float("inf")])
def test_parse_budget_rejects_what_is_not_positive(value):
    with pytest.raises(ValueError, match=r"budget=.* must be a positive duration"):
        parse_budget(value)


def test_parse_budget_names_the_argument_as_the_caller_wrote_it():
    with pytest.raises(ValueError, match=r"^--budget soon is not a duration; .* e\.g\. --budget 60s"):
        parse_budget("soon", argument="--budget")
    with pytest.raises(ValueError, match=r"^time_limit='soon' is not a duration"):
        parse_budget("soon", argument="time_limit")


@pytest.mark.parametrize("tol", [0.01, 1, 2.5, np.float64(0.002)])
def test_check_tol_accepts_positive_numbers(tol):
    assert check_tol(tol) == float(tol) and isinstance(check_tol(tol), float)


@pytest.mark.parametrize("tol", [0, -0.01, float("nan"), float("inf"), "0.01", None, True])
def test_check_tol_rejects(tol):
    with pytest.raises(ValueError, match=r"^tol=.* must be a positive finite number.*e\.g\. tol='0\.01'"):
        check_tol(tol)
    with pytest.raises(ValueError, match=r"^--tol .* must be a positive finite number.*e\.g\. --tol 0\.01"):
        check_tol(tol, argument="--tol")


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.2, "under 1 s"),
        (1, "1 s"),
        (44.6, "45 s"),
        (89, "89 s"),
        (90, "2 min"),
        (660, "11 min"),
        (3569, "59 min"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
        (7 * 3600 + 59, "7 h 1 min"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_expected_exact_follows_the_table_and_clamps():
    for tol, count in TYPICAL_EXACT.items():
        assert expected_exact(100, 100, tol) == count
    tols = np.geomspace(1e-4, 0.5, 30)
    counts = [expected_exact(200, 200, t) for t in tols]
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # looser tol, fewer points
    assert counts[0] == 200 * 200 or counts[0] > TYPICAL_EXACT[0.002]
    assert min(counts) == minimum_points(200, 200)  # never fewer than the lattice and its checks
    assert expected_exact(10, 10, 0.001) == 100  # never more than the grid


def test_estimate_is_linear_in_the_work():
    e = estimate(RATE, 100, 100, 3000, tol=0.01)
    assert e.points == 10_000
    assert e.full == pytest.approx(RATE * 10_000 * 3000)
    assert e.adaptive == pytest.approx(RATE * expected_exact(100, 100, 0.01) * 3000)
    assert e.subset == SUBSET
    assert e.subset_full == pytest.approx(RATE * 10_000 * SUBSET)
    assert e.subset_adaptive == pytest.approx(RATE * e.adaptive_exact * SUBSET)
    assert estimate(RATE, 100, 100, 3000, exact=1234).adaptive == pytest.approx(RATE * 1234 * 3000)
    small = estimate(RATE, 100, 100, 2 * SUBSET)
    assert small.subset is None and small.subset_full is None


def test_estimate_line():
    e = estimate(RATE, 100, 100, 3000, tol=0.01, exact=760)
    assert e.line() == (
        "10,000 points × 3,000 examples: about 11 min; with --grid adaptive about 50 s; --subset 500 about 2 min"
    )
    assert e.line("adaptive") == (
        "10,000 points × 3,000 examples: about 50 s adaptive (about 760 points exact at tol 0.01); "
        "--grid full about 11 min; --subset 500 about 8 s"
    )
    assert "with grid='adaptive' about 50 s; subset=500 about 2 min" in e.line(style="python")
    few = estimate(RATE, 50, 40, 800)  # the table's count for tol 0.01, clamped to the grid's size
    assert few.line() == (
        f"2,000 points × 800 examples: about 35 s; with --grid adaptive about "
        f"{round(35 * min(TYPICAL_EXACT[0.01], 2000) / 2000)} s"
    )


def test_estimate_rejects_a_bad_rate_or_tol():
    with pytest.raises(ValueError, match="seconds_per_unit=0"):
        estimate(0, 10, 10, 10)
    with pytest.raises(ValueError, match="tol=-1"):
        estimate(RATE, 10, 10, 10, tol=-1)


def test_budget_that_fits_the_full_grid_keeps_it():
    choice = choose_for_budget("20 min", RATE, 100, 100, 3000)
    assert (choice.grid, choice.nx, choice.ny, choice.subset, choice.tol) == ("full", 100, 100, None, None)
    assert choice.seconds == pytest.approx(RATE * 10_000 * 3000)
    assert choice.sentence == "budget 20 min: the full 100×100 grid on all 3,000 examples fits, about 11 min"


def test_budget_picks_the_adaptive_grid_on_all_examples():
    choice = choose_for_budget(90, RATE, 100, 100, 3000, tol=0.005)
    assert (choice.grid, choice.nx, choice.ny, choice.subset, choice.tol) == ("adaptive", 100, 100, None, 0.005)
    assert choice.seconds == pytest.approx(RATE * expected_exact(100, 100, 0.005) * 3000)
    assert choice.seconds <= 90
    assert ": the full 100×100 grid would take about 11 min; picked the adaptive grid (tol 0.005)" in choice.sentence


def test_budget_picks_a_subset_next():
    choice = choose_for_budget("20s", RATE, 100, 100, 3000)
    exact = expected_exact(100, 100, 0.01)
    assert choice.grid == "adaptive" and choice.tol == 0.01 and (choice.nx, choice.ny) == (100, 100)
    largest = int(20 / (RATE * exact))
    assert MIN_SUBSET <= choice.subset <= largest and choice.subset >= 0.9 * largest  # two significant digits
    assert choice.seconds == pytest.approx(RATE * exact * choice.subset)
    assert choice.seconds <= 20
    assert f"on a subset of {choice.subset:,} of 3,000 examples" in choice.sentence


def test_budget_lowers_the_resolution_last():
    exact = expected_exact(100, 100, 0.01)
    budget = 0.5 * RATE * exact * MIN_SUBSET  # not even the adaptive grid on the fewest examples
    choice = choose_for_budget(budget, RATE, 100, 100, 3000)
    assert choice.grid == "full" and choice.tol is None
    assert choice.nx * choice.ny < exact and choice.nx >= coarse_shape(100, 100)[0]
    assert choice.seconds <= budget
    assert "even on 100 examples; picked the full" in choice.sentence


@pytest.mark.parametrize("shape", [(100, 100), (120, 40), (30, 30), (9, 5)])
def test_budget_choices_always_fit(shape):
    nx, ny = shape
    least = minimum_points(nx, ny) * MIN_SUBSET * RATE
    for budget in np.geomspace(least * (1 + 1e-9), 100 * RATE * nx * ny * 3000, 40):
        choice = choose_for_budget(float(budget), RATE, nx, ny, 3000)
        assert choice.seconds <= budget * (1 + 1e-9), (budget, choice)
        assert 2 <= choice.nx <= nx and 2 <= choice.ny <= ny
        assert choice.subset is None or MIN_SUBSET <= choice.subset < 3000


def test_budget_below_the_coarse_lattice_says_the_minimum():
    least = minimum_points(100, 100) * MIN_SUBSET * RATE
    message = r"^--budget 0\.5s is too small: .*\(289 points × 100 examples\) takes under 1 s; give at least 0\.7 s"
    with pytest.raises(ValueError, match=message):
        choose_for_budget("0.5s", RATE, 100, 100, 3000, argument="--budget")
    with pytest.raises(ValueError, match=r"give at least") as error:
        choose_for_budget(least * 0.99, RATE, 100, 100, 3000)
    suggested = float(str(error.value).rsplit("budget='", 1)[1].rstrip("s'"))
    assert choose_for_budget(suggested, RATE, 100, 100, 3000).seconds <= suggested  # the fix it gives works
    choose_for_budget(least * 1.001, RATE, 100, 100, 3000)  # just enough


def test_budget_with_few_examples_never_picks_a_subset():
    choice = choose_for_budget(minimum_points(100, 100) * 50 * RATE * 1.5, RATE, 100, 100, 50)
    assert choice.subset is None


@pytest.mark.parametrize(
    "budget, match", [("soon", "budget='soon' is not a duration"), (0, "budget=0 must be a positive duration")]
)
def test_budget_errors_name_the_argument(budget, match):
    with pytest.raises(ValueError, match=match):
        choose_for_budget(budget, RATE, 100, 100, 3000)


def test_round_numbers_in_the_plan():
    assert math.isclose(estimate(RATE, 100, 100, 3000).full, 660.0)
