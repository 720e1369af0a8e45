"""How busy the cores are with other work, and how many threads torch uses for one job: one per core that is
free, not one per core."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def busy_elsewhere(proc: Path = Path("/proc"), samples: int = 5, apart: float = 0.002) -> float:
    """Threads of other processes that want a core now: the median of ``samples`` samples ``apart`` seconds apart
    of the kernel's count of runnable threads (``/proc/loadavg``) less this process's own runnable threads;
    where there is no ``/proc``, the 1-minute load average.

    The load average lags a minute behind: a CPU-bound process started 10 s before a grid showed in it as 0.2
    of a core, and the grid's first units ran on two threads beside it at 2.5x one thread's time. The count
    sees it at once; the median leaves out a short burst of other work.

    >>> busy_elsewhere() >= 0
    True
    """
    try:
        counts = []
        for i in range(samples):
            if i:
                time.sleep(apart)
            runnable = int((proc / "loadavg").read_text().split()[3].split("/")[0])
            counts.append(max(0, runnable - _own_runnable(proc / "self" / "task")))
        return float(sorted(counts)[len(counts) // 2])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _own_runnable(tasks: Path) -> int:
    """This process's threads that are running or waiting for a core (state ``R`` in ``task/*/stat``)."""
    count = 0
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            count += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    return count


def free_cores() -> int:
    """Cores this process may use that other processes' threads are not running on now (at least 1), over 50 ms:
    it sets the threads of a whole job, so a burst of other work shorter than that is left out.

    >>> free_cores() >= 1
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, int(cores - busy_elsewhere(samples=11, apart=0.005) + 0.5)))


@contextlib.contextmanager
def free_core_threads():
    """Within the block, torch runs one thread per free core; its previous count is restored after.

    Torch's default counts every core, busy or not, and threads beyond the idle cores wait on
    each other: on two cores busy with other work the default job took 77-196 s with two
    threads and 37 s with one. Only the command line and the one-call API use this;
    ``import losstrail`` changes nothing. Setting ``OMP_NUM_THREADS`` turns it off.
    """
    import torch

    previous = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(previous, free_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
