"""How many threads torch uses for one job: one per core that is free, not one per core."""

from __future__ import annotations

import contextlib
import os


def free_cores() -> int:
    """Cores this process may use that are not already busy (at least 1), by the 1-minute load average.

    >>> free_cores() >= 1
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


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
