"""The way points are evaluated (vmap or point by point): chosen from interleaved timings, re-checked as units
run, ties kept quiet; and the cost the grid states, in the caller's words (issue 23)."""

import copy

import numpy as np
import pytest
import torch

from losstrail._progress import spoken
from losstrail.evaluation.mode import SLICE, WayChooser


class Machine:
    """A fake clock and two ways whose seconds per point the test sets (and changes, as load would)."""

    def __init__(self, vmap: float, loop: float):
        self.now, self.cost, self.log = 0.0, {"vmap": vmap, "loop": loop}, []

    def clock(self) -> float:
        return self.now

    def work(self, way, start, stop):
        self.now += self.cost[way] * (stop - start)
        self.log.append((way, stop - start))
        return list(range(start, stop))


def assert_a_plain_loop_gives(surface, model, data, plane, xs, ys):
    """Each grid point's loss as a user computes it: the point's weights loaded into a copy, then a forward."""
    from losstrail.builtin.models import load_flat_params

    probe = copy.deepcopy(model)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            load_flat_params(probe, torch.from_numpy(plane.point(x, y)))
            with torch.no_grad():
                expected = torch.nn.functional.cross_entropy(probe(data[0]), data[1]).item()
            assert surface.loss[i, j] == pytest.approx(expected, rel=1e-5)


def _chooser(machine, **kwargs):
    said = []
    chooser = WayChooser(("vmap", "loop"), sliceable="loop", clock=machine.clock,
                         on_switch=lambda old, new, times: said.append((old, new, times)), **kwargs)  # fmt: skip
    return chooser, said


def test_both_ways_are_timed_interleaved_more_than_once_before_the_choice():
    machine = Machine(vmap=1.0, loop=3.0)
    chooser, said = _chooser(machine)
    for _ in range(2):
        assert chooser.run(machine.work, 32, 100) == list(range(32))  # every point computed once, in order
    assert not chooser.decided  # one timing each carries warm-up: two more are needed
    chooser.run(machine.work, 32, 100)
    # each unit: the point-by-point way on a slice, vmap on the rest, in alternating order
    assert machine.log[:6] == [("vmap", 32 - SLICE), ("loop", SLICE), ("loop", SLICE), ("vmap", 32 - SLICE),
                               ("vmap", 32 - SLICE), ("loop", SLICE)]  # fmt: skip
    assert chooser.decided and chooser.chosen == "vmap" and said == []  # vmap was first and is faster: nothing said
    assert chooser.rate() == pytest.approx(100 / 1.0)  # (points x examples) a second


def test_the_faster_way_is_chosen_and_said_and_a_tie_is_not():
    machine = Machine(vmap=3.0, loop=1.0)
    chooser, said = _chooser(machine)
    for _ in range(8):
        chooser.run(machine.work, 32, 1)
    assert chooser.chosen == "loop" and said == [("vmap", "loop", pytest.approx(3.0))]
    tied = Machine(vmap=1.1, loop=1.0)  # loop 10% faster: within the tie, vmap stays and nothing is said
    chooser, said = _chooser(tied)
    for _ in range(40):
        chooser.run(tied.work, 32, 1)
    assert chooser.chosen == "vmap" and said == []


def test_a_way_that_slows_down_is_left_and_taken_again_when_it_recovers():
    """Load that comes and goes: the choice follows within a few units, and no result is lost."""
    machine = Machine(vmap=1.0, loop=3.0)
    chooser, said = _chooser(machine)
    for _ in range(6):
        chooser.run(machine.work, 32, 1)
    assert chooser.chosen == "vmap"
    machine.cost["vmap"] = 10.0  # vmap's kernels now share the cores with something else
    switched_at = None
    for unit in range(40):
        assert chooser.run(machine.work, 32, 1) == list(range(32))
        if chooser.chosen == "loop" and switched_at is None:
            switched_at = unit
    assert switched_at is not None and switched_at <= 4
    machine.cost["vmap"] = 1.0
    for _ in range(200):
        chooser.run(machine.work, 32, 1)
    assert chooser.chosen == "vmap" and [s[1] for s in said] == ["loop", "vmap"]
    units = len(machine.log)
    probes = sum(1 for way, n in machine.log[-units // 2 :] if way == "loop")
    assert probes <= units // 2 // 4  # the other way is timed again now and then, not on every unit


def test_a_way_fast_only_now_and_then_does_not_draw_the_choice_away():
    """Two threads beside a busy core: mostly twice one thread's time, but every third timing lucky (0.7x). One lucky
    probe once moved the choice (the spirals grid switched 14 times beside a CPU hog); now a switch needs every
    recent timing of the other way faster, and a lasting change still gets one."""
    now, calls = [0.0], {"one": 0, "two": 0}
    cost = {"one": 1.0, "two": 2.0}

    def work(way, start, stop):
        calls[way] += 1
        lucky = way == "two" and calls[way] % 3 == 0
        now[0] += (0.7 if lucky else cost[way]) * (stop - start)
        return list(range(start, stop))

    said = []
    chooser = WayChooser(("one", "two"), clock=lambda: now[0], on_switch=lambda *a: said.append(a[:2]))
    for _ in range(200):
        assert chooser.run(work, 16, 1) == list(range(16))
    assert chooser.chosen == "one" and said == [] and calls["two"] >= 8  # probed again and again, never taken
    cost["two"] = 0.5  # the other work ended: two threads are now always faster
    for _ in range(200):
        chooser.run(work, 16, 1)
    assert chooser.chosen == "two" and said == [("one", "two")]


def test_a_way_that_fails_is_dropped_and_its_part_done_by_the_other():
    machine = Machine(vmap=1.0, loop=1.0)
    failed = []

    def work(way, start, stop):
        if way == "vmap":
            raise RuntimeError("no batching rule")
        return machine.work(way, start, stop)

    chooser = WayChooser(("vmap", "loop"), sliceable="loop", clock=machine.clock,
                         on_fail=lambda way, err: failed.append(way))  # fmt: skip
    assert chooser.run(work, 20, 1) == list(range(20))
    assert failed == ["vmap"] and chooser.chosen == "loop" and chooser.ways == ["loop"]


def test_the_evaluator_gives_the_same_grid_whichever_way_runs(tiny_model, tiny_data):
    """auto (both ways timed on parts of units, joined) against each way alone, and a load_state_dict loop."""
    from losstrail.builtin.models import load_flat_params
    from losstrail.evaluation.evaluator import Evaluator

    rows = torch.randn(200, sum(p.numel() for p in tiny_model.parameters()), generator=torch.Generator().manual_seed(0))
    results = {}
    for mode in ("auto", "vmap", "loop"):
        evaluator = Evaluator(tiny_model, tiny_data, mode=mode)
        results[mode] = evaluator.run(lambda sl: rows[sl], len(rows), chunk_size=16).loss
    probe = type(tiny_model)(input_dim=2, num_classes=3, hidden_dim=4)
    expected = []
    for row in rows:
        load_flat_params(probe, row)
        with torch.no_grad():
            expected.append(torch.nn.functional.cross_entropy(probe(tiny_data[0]), tiny_data[1]).item())
    for mode, loss in results.items():
        np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=mode)


def test_the_cost_is_said_in_python_keywords_or_cli_flags_and_revised_when_the_pace_changes(capsys):
    from losstrail.cli import cli_note_words
    from losstrail.evaluation.grids import _say_the_cost

    say = _say_the_cost(100, 100, 3000, "full", 0.01, None)
    say(36 * 3000 * 1e-5, 36)  # 10,000 points x 3,000 examples at 1e-5 s each: 5 min
    first = capsys.readouterr().err
    assert "10,000 points × 3,000 examples: about 5 min; with grid='adaptive' about" in first
    assert "subset=500 about" in first and "--" not in first
    say(36 * 3000 * 1.5e-5, 36)  # within 2x of what was said: nothing more
    assert capsys.readouterr().err == ""
    say(36 * 3000 * 4e-5, 36)  # 4x slower: said again
    assert "revised: 10,000 points × 3,000 examples: about 20 min" in capsys.readouterr().err
    with spoken(cli_note_words):
        _say_the_cost(100, 100, 3000, "adaptive", 0.01, None)(36 * 3000 * 1e-5, 36)
    flags = capsys.readouterr().err
    assert "; --grid full about 5 min; --subset 500 about" in flags and "grid=" not in flags


def test_of_four_ways_the_fastest_is_chosen_and_one_slow_timing_does_not_move_it():
    """vmap and point by point on all threads or one (what mode='auto' times): each is timed, sliced ways on slices."""
    ways = ("vmap", "loop", "vmap, 1 thread", "loop, 1 thread")
    costs = {"vmap": 2.0, "loop": 6.0, "vmap, 1 thread": 1.0, "loop, 1 thread": 3.0}
    now, log = [0.0], []

    def work(way, start, stop):
        now[0] += costs[way] * (stop - start) * (5.0 if len(log) == 20 else 1.0)  # one unit hit by a burst of load
        log.append((way, stop - start))
        return list(range(start, stop))

    chooser = WayChooser(ways, sliceable=("loop", "loop, 1 thread"), clock=lambda: now[0])
    for _ in range(40):
        assert chooser.run(work, 32, 1) == list(range(32))
    assert chooser.decided and chooser.chosen == "vmap, 1 thread" and len(chooser.switches) == 1
    assert {n for way, n in log if way.startswith("loop")} == {SLICE}  # point by point only ever on a slice
    assert all(len(chooser.timings[w]) >= 2 for w in ways)


def test_auto_times_one_thread_too_and_puts_torchs_threads_back(tiny_model, tiny_data):
    from losstrail.evaluation.evaluator import Evaluator

    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("torch runs one thread here: there is no other count to time")
    rows = torch.randn(300, sum(p.numel() for p in tiny_model.parameters()), generator=torch.Generator().manual_seed(1))
    auto = Evaluator(tiny_model, tiny_data, mode="auto")
    assert "vmap, 1 thread" in auto.ways.ways and "loop, 1 thread" in auto.ways.ways
    loss = auto.run(lambda sl: rows[sl], len(rows), chunk_size=16).loss
    assert torch.get_num_threads() == threads and auto.ways.decided
    assert Evaluator(tiny_model, tiny_data, mode="vmap").ways.ways == ["vmap"]  # a fixed mode runs as set
    np.testing.assert_allclose(loss, Evaluator(tiny_model, tiny_data, mode="loop").run(lambda sl: rows[sl], 300).loss,
                               rtol=1e-5)  # fmt: skip


def test_auto_on_a_chain_of_linear_layers_times_its_threads_and_gives_the_plain_loops_grid(monkeypatch, capsys):
    """A chain (the spirals MLP's kind) runs no point-by-point way, but its thread count is timed: beside a busy core
    one thread ran the spirals grid in 1.0 s where two took 2.5-2.9 s."""
    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    threads = torch.get_num_threads()
    if threads < 2 or "OMP_NUM_THREADS" in __import__("os").environ:
        pytest.skip("torch runs one thread here: there is no other count to time")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    data = (torch.randn(64, 2), torch.randint(0, 3, (64,)))
    made = []
    original = _evaluate.Evaluator._first_layer

    def watched(self):
        first = original(self)
        made.append(list(self.ways.ways))
        return first

    monkeypatch.setattr(_evaluate.Evaluator, "_first_layer", watched)
    n = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2)), "custom")
    xs, ys = np.linspace(-1, 1, 30), np.linspace(-1, 1, 20)
    surface = lt.loss_surface(model, data, plane, xs, ys, quiet=True, grid="full", chunk_size=16)
    assert made and set(made[-1]) == {"vmap", "vmap, 1 thread"}, made
    assert torch.get_num_threads() == threads
    assert_a_plain_loop_gives(surface, model, data, plane, xs, ys)
    evaluator = _evaluate.Evaluator(model, data, mode="auto", quiet=False)
    evaluator._first_layer()
    capsys.readouterr()
    evaluator._switched("vmap", "vmap, 1 thread", 2.0)  # a switch between the two names the threads: both are vmap
    assert f"with vmap on 1 thread: 2.0x the rate of with vmap on {threads} threads" in capsys.readouterr().err


@pytest.mark.parametrize("flat_slow", [False, True])
def test_auto_on_a_plane_times_points_set_in_place_and_takes_them_when_faster(tiny_model, tiny_data, monkeypatch,
                                                                               capsys, flat_slow):  # fmt: skip
    """200 plane points in mode auto: a few set in place, flat copies block by block, the rest the faster way;
    every loss as a plain load_state_dict loop gives it, whichever way each point went."""
    import time

    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    threads = torch.get_num_threads()
    if flat_slow:  # flat copies made slow, as a model whose copies cost more than its forward pass would be
        torch.set_num_threads(1)  # one thread: small points in place are not slowed by threads waiting on load
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        looped, vmapped = _evaluate.Evaluator._looped, _evaluate.Evaluator._vmapped
        monkeypatch.setattr(_evaluate.Evaluator, "_looped", lambda self, flat, *a: time.sleep(0.02 * len(flat))
                            or looped(self, flat, *a))  # fmt: skip
        monkeypatch.setattr(_evaluate.Evaluator, "_vmapped", lambda self, flat, *a: time.sleep(0.02 * len(flat))
                            or vmapped(self, flat, *a))  # fmt: skip
    rng = np.random.default_rng(3)
    n = sum(p.numel() for p in tiny_model.parameters())
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2)), "custom")
    xs, ys = np.linspace(-1, 1, 20), np.linspace(-1, 1, 10)
    try:
        surface = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=False, chunk_size=8)
    finally:
        torch.set_num_threads(threads)
    said = capsys.readouterr().err
    assert "set in place" in said or not flat_slow  # else either way may win: only the losses are checked
    assert_a_plain_loop_gives(surface, tiny_model, tiny_data, plane, xs, ys)


def _job(chooser, machine, units: int, points: int = 8, examples: int = 1, *, bounded: bool = True):
    """``units`` units of ``points`` points, each told the work left (``bounded``); every result in order."""
    for unit in range(units):
        left = (units - unit) * points * examples if bounded else None
        assert chooser.run(machine.work, points, examples, left=left) == list(range(points))


def test_a_job_too_short_to_repay_a_trial_runs_by_the_first_way_and_a_long_one_tries_them_all():
    """The trials' excess is bounded by ``regret`` of the rest at the best rate; a way never run counts as two
    units, so 13 units of 8 points (a 100-point grid of a big model) try nothing beyond the first way."""
    short = Machine(vmap=2.0, loop=1.0)
    chooser = WayChooser(("loop", "vmap"), sliceable="loop", clock=short.clock)
    _job(chooser, short, 13)
    assert {way for way, _ in short.log} == {"loop"} and chooser.decided and chooser.chosen == "loop"
    assert chooser.skipped == {"vmap"} and short.now == 13 * 8  # as a plain loop: not a second more
    long = Machine(vmap=0.5, loop=1.0)  # vmap twice as fast: a long job finds it
    chooser = WayChooser(("loop", "vmap"), sliceable="loop", clock=long.clock)
    _job(chooser, long, 200)
    assert chooser.chosen == "vmap" and not chooser.skipped and len(chooser.timings["vmap"]) >= 2
    unbounded = Machine(vmap=2.0, loop=1.0)  # the work left not told: every way is tried, as before
    chooser = WayChooser(("loop", "vmap"), sliceable="loop", clock=unbounded.clock)
    _job(chooser, unbounded, 13, bounded=False)
    assert chooser.chosen == "loop" and len(chooser.timings["vmap"]) == 2


@pytest.mark.parametrize("units", [20, 40, 80, 400])
def test_what_the_trials_cost_stays_within_the_regret_of_the_job(units):
    """Four ways, three of them 3x slower than the first: the whole job takes at most ``regret`` more than the
    best way alone would (every trial does real work: only the slower ways' extra time is lost)."""
    costs = {"loop": 1.0, "loop, 1 thread": 3.0, "vmap": 3.0, "vmap, 1 thread": 3.0}
    now, log = [0.0], []

    def work(way, start, stop):
        now[0] += costs[way] * (stop - start)
        log.append(way)
        return list(range(start, stop))

    machine = type("M", (), {"work": staticmethod(work)})
    chooser = WayChooser(tuple(costs), sliceable=("loop", "loop, 1 thread"), clock=lambda: now[0])
    _job(chooser, machine, units)
    best = units * 8 * 1.0
    assert now[0] <= best * (1 + chooser.regret) and chooser.chosen == "loop"
    assert chooser.excess == pytest.approx(now[0] - best)  # what it counted is what the trials cost
    assert (len(set(log)) == 4) == (units >= 80)  # short jobs skip the trials they cannot repay


def test_the_first_way_left_untimed_gives_way_to_the_fastest_that_ran():
    """A job that ends its trials before the first way has a timing after its warm-up takes the fastest of the
    ways that ran, by their first units."""
    machine = Machine(vmap=1.0, loop=4.0)
    chooser = WayChooser(("loop", "vmap"), sliceable="loop", clock=machine.clock)
    chooser._left = 10**6  # a long job: the first units of both ways are affordable
    for way in ("loop", "vmap"):
        chooser._timed(machine.work, way, 0, 8, 1)
    chooser._decide()
    assert chooser.chosen == "vmap" and chooser.decided


def test_auto_tries_point_by_point_first_where_a_points_activations_fill_a_chunk_and_one_thread_when_busy(
        monkeypatch):  # fmt: skip
    from losstrail.evaluation import evaluator as _evaluate
    from losstrail.evaluation.evaluator import _ways

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(_evaluate, "busy_elsewhere", lambda **sampling: 0.0)  # no other process wants a core
    assert _ways("auto", loop_first=True)[0] == "loop" and _ways("auto")[0] == "vmap"
    assert set(_ways("auto", loop_first=True)) == set(_ways("auto")) and _ways("loop", loop_first=True) == ("loop",)
    monkeypatch.setattr(_evaluate, "busy_elsewhere", lambda **sampling: 1.0)  # another process on the cores
    assert _ways("auto", loop_first=True)[0] == "loop, 1 thread" and _ways("auto")[0] == "vmap, 1 thread"
    assert len(_ways("auto")) == 4 and _ways("vmap") == ("vmap",)


def test_auto_sets_points_in_place_at_once_when_a_points_parameters_outnumber_its_activations(monkeypatch):
    """A wide layer on four examples: copying a point's parameters costs more than its forward pass, so no flat
    copy is made (``run`` is never called); the grid equals a load_state_dict loop."""

    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.ReLU(), torch.nn.Linear(40, 3))
    data = (torch.randn(4, 40), torch.tensor([0, 1, 2, 1]))
    monkeypatch.setattr(_evaluate.Evaluator, "run", lambda *a, **k: pytest.fail("flat copies were made"))
    n = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.1, 0.1)), "custom")
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    surface = lt.loss_surface(model, data, plane, xs, ys, quiet=True)
    assert_a_plain_loop_gives(surface, model, data, plane, xs, ys)


@pytest.mark.parametrize("side", [10, 30])
def test_the_in_place_trial_is_made_only_where_the_rest_of_the_grid_repays_it(tiny_model, tiny_data, monkeypatch,
                                                                               side):  # fmt: skip
    """100 points in chunks of 8: after the flat copies' first block too few are left to repay a trial of 4
    points (it may cost 8 points' time), so flat copies run the whole grid in one go; 900 points make it (each
    unit of flat copies made to take 10 ms: their pace is known once it covers 0.5 s, here about 500 points)."""
    import time

    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    trials, runs = [], []
    in_place, run, unit = _evaluate.Evaluator.run_in_place, _evaluate.Evaluator.run, _evaluate.Evaluator._run
    monkeypatch.setattr(_evaluate.Evaluator, "_run", lambda *a: time.sleep(0.01) or unit(*a))
    monkeypatch.setattr(_evaluate.Evaluator, "run_in_place", lambda self, plane, coords, **k: trials.append(
        len(coords)) or in_place(self, plane, coords, **k))  # fmt: skip
    monkeypatch.setattr(_evaluate.Evaluator, "run", lambda self, f, n, **k: runs.append(n) or run(self, f, n, **k))
    rng = np.random.default_rng(3)
    n = sum(p.numel() for p in tiny_model.parameters())
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2)), "custom")
    xs = ys = np.linspace(-1, 1, side)
    surface = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True, chunk_size=8)
    reference = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True, chunk_size=8, mode="loop")
    np.testing.assert_allclose(surface.loss, reference.loss, rtol=1e-5)
    if side == 10:
        assert trials == [] and runs[0] == 100
    else:
        assert trials[0] == 4 and sum(runs[:-1]) + sum(trials[1:]) + runs[-1] >= 900 - 4


def test_points_set_in_place_go_back_to_flat_copies_when_a_block_runs_slower(tiny_model, tiny_data, monkeypatch,
                                                                              capsys):  # fmt: skip
    """The in-place trial wins, then load slows points set in place (made slow here after the trial): after one
    block the rest goes back to flat copies, and every loss is what a plain loop gives."""
    import time

    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    calls = []
    in_place, vmapped = _evaluate.Evaluator.run_in_place, _evaluate.Evaluator._vmapped

    def slowed_in_place(self, plane, coords, **k):
        calls.append(len(coords))
        if len(calls) > 1:  # after the trial
            time.sleep(0.05 * len(coords))
        return in_place(self, plane, coords, **k)

    monkeypatch.setattr(_evaluate.Evaluator, "run_in_place", slowed_in_place)
    monkeypatch.setattr(_evaluate.Evaluator, "_vmapped", lambda self, flat, *a: time.sleep(0.02 * len(flat))
                        or vmapped(self, flat, *a))  # fmt: skip
    rng = np.random.default_rng(3)
    n = sum(p.numel() for p in tiny_model.parameters())
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2)), "custom")
    xs, ys = np.linspace(-1, 1, 20), np.linspace(-1, 1, 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: small points in place are not slowed by threads waiting on load
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    try:
        surface = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=False, chunk_size=8)
    finally:
        torch.set_num_threads(threads)
    said = capsys.readouterr().err
    assert "set in place" in said and "by flat copies again" in said and calls == [4, 32]
    monkeypatch.undo()
    reference = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True, mode="loop")
    np.testing.assert_allclose(surface.loss, reference.loss, rtol=1e-5)


def test_the_in_place_trial_times_its_points_past_the_first(tiny_model, tiny_data, monkeypatch, capsys):
    """Points set in place take 10 ms more each, flat copies 1.25 ms a point: the trial's three points past the first
    show it, so no point after the trial is set in place and nothing claims it faster (the trial's rate was once
    read from a callback made after its last point: every trial then said in place ran ~1000x faster)."""
    import contextlib
    import time

    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    calls, real = [], _evaluate.points_in_place

    @contextlib.contextmanager
    def slowed(model, plane, **k):
        with real(model, plane, **k) as at:

            def slow_at(x, y):
                time.sleep(0.01)
                return at(x, y)

            slow_at.checked = at.checked
            yield slow_at

    in_place, unit = _evaluate.Evaluator.run_in_place, _evaluate.Evaluator._run
    monkeypatch.setattr(_evaluate, "points_in_place", slowed)
    monkeypatch.setattr(_evaluate.Evaluator, "_run", lambda *a: time.sleep(0.01) or unit(*a))  # 1.25 ms a point
    monkeypatch.setattr(_evaluate.Evaluator, "run_in_place", lambda self, plane, coords, **k: calls.append(
        len(coords)) or in_place(self, plane, coords, **k))  # fmt: skip
    rng = np.random.default_rng(3)
    n = sum(p.numel() for p in tiny_model.parameters())
    plane = lt.Plane(*(rng.normal(size=n).astype(np.float32) * s for s in (0.3, 0.2, 0.2)), "custom")
    xs = ys = np.linspace(-1, 1, 30)
    surface = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=False, chunk_size=8)
    assert calls == [4] and "set in place" not in capsys.readouterr().err
    monkeypatch.undo()
    reference = lt.loss_surface(tiny_model, tiny_data, plane, xs, ys, quiet=True, mode="loop")
    np.testing.assert_allclose(surface.loss, reference.loss, rtol=1e-5)


def test_when_only_sliceable_ways_are_left_the_side_way_runs_the_whole_unit():
    """Trials of the whole-unit ways not repaid (skipped): the point-by-point ways still get their units."""
    machine = Machine(vmap=1.0, loop=1.0)
    chooser = WayChooser(("loop", "vmap"), sliceable="loop", clock=machine.clock)
    chooser.skipped.add("vmap")
    assert chooser.run(machine.work, 32, 1) == list(range(32)) and machine.log == [("loop", 32)]


def test_points_set_in_place_at_once_run_on_one_thread_while_the_cores_are_busy(monkeypatch):
    """The in-place rule needs no trial; it runs on the threads of the way most likely best: one while other
    processes keep the cores busy, torch's own (put back afterwards) otherwise."""
    import losstrail as lt
    from losstrail.evaluation import evaluator as _evaluate

    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("torch runs one thread here: there is no other count")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []
    in_place = _evaluate.Evaluator.run_in_place
    monkeypatch.setattr(_evaluate.Evaluator, "run_in_place", lambda self, *a, **k: seen.append(
        torch.get_num_threads()) or in_place(self, *a, **k))  # fmt: skip
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.ReLU(), torch.nn.Linear(40, 3))
    data = (torch.randn(4, 40), torch.tensor([0, 1, 2, 1]))
    n = sum(p.numel() for p in model.parameters())
    plane = lt.Plane(*(np.random.default_rng(0).normal(size=(3, n)).astype(np.float32) * 0.1), "custom")
    for load in (0.0, 1.0):
        monkeypatch.setattr(_evaluate, "busy_elsewhere", lambda load=load, **sampling: load)
        lt.loss_surface(model, data, plane, [0.0, 1.0], [0.0], quiet=True)
    assert seen == [threads, 1] and torch.get_num_threads() == threads
