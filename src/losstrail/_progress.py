"""Progress bars shared by every long-running step (training, grid, rendering), and the one-line notes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# How a note names the caller's options: as Python keywords (grid='adaptive'), unless a caller such as the
# command line says otherwise for the duration (``spoken``).
_WORDS: list[Callable[[str], str]] = [lambda message: message]


def say(message: str, quiet: bool = False) -> None:
    """One plain line on stderr (not a warning with a source line), unless ``quiet``; options named as the
    caller spells them (Python keywords, or the command line's flags inside ``spoken``); said by the first rank
    of a process group only."""
    if not quiet and not other_rank():
        print(f"losstrail: {_WORDS[-1](message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def spoken(words: Callable[[str], str]):
    """Notes in the block pass through ``words`` (the command line turns ``subset=500`` into ``--subset 500``)."""
    _WORDS.append(words)
    try:
        yield
    finally:
        _WORDS.remove(words)


def other_rank() -> bool:
    """True in a process of a ``torch.distributed`` group other than its first (rank 0 shows the progress)."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def bar(total: int, desc: str, quiet: bool, unit: str = "it"):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere); disabled when ``quiet``, and on every rank of a
    process group but the first."""
    from tqdm.auto import tqdm

    disable = quiet or other_rank()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


def track(items: Iterable[T], total: int, desc: str, quiet: bool, unit: str = "it") -> Iterator[T]:
    """Iterate ``items`` while advancing a progress bar."""
    with bar(total, desc, quiet, unit) as pbar:
        for item in items:
            yield item
            pbar.update(1)
