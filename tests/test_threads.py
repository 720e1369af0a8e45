"""How busy the cores are with other work (``busy_elsewhere``) and the threads a job takes from it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from losstrail import _threads


def fake_proc(root: Path, runnable: int, own_states: str) -> Path:
    """A ``/proc`` with ``runnable`` threads wanting a core and this process's threads in ``own_states``."""
    (root / "self" / "task").mkdir(parents=True)
    (root / "loadavg").write_text(f"0.10 0.20 0.30 {runnable}/300 4242\n")
    for i, state in enumerate(own_states):
        (root / "self" / "task" / str(i)).mkdir()
        (root / "self" / "task" / str(i) / "stat").write_text(f"{i} (a (name) with) parens) {state} 1 1 1 0 -1\n")
    return root


def test_busy_elsewhere_counts_runnable_threads_less_this_processs_own(tmp_path):
    assert _threads.busy_elsewhere(fake_proc(tmp_path / "a", 5, "RRSS")) == 3.0
    assert _threads.busy_elsewhere(fake_proc(tmp_path / "b", 1, "RRR")) == 0.0  # never below none


def test_without_proc_the_load_average_stands_in(tmp_path, monkeypatch):
    monkeypatch.setattr(_threads.os, "getloadavg", lambda: (2.5, 1.0, 1.0))
    assert _threads.busy_elsewhere(tmp_path / "absent") == 2.5


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="no /proc here")
def test_a_cpu_bound_process_shows_at_once_where_the_load_average_lags():
    """Started 0.3 s before: the load average (updated every 5 s, over a minute) has barely moved; the count has."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before = _threads.busy_elsewhere()
        assert before >= 1, before
    finally:
        hog.kill()
        hog.wait()


def test_free_cores_leaves_out_the_cores_others_run_on(monkeypatch):
    monkeypatch.setattr(_threads, "busy_elsewhere", lambda **sampling: 1.0)
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert _threads.free_cores() == 3
    monkeypatch.setattr(_threads, "busy_elsewhere", lambda **sampling: 9.0)
    assert _threads.free_cores() == 1
