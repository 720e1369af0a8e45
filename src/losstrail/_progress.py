"""Progress bars shared by every long-running step (training, grid, rendering)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bar(total: int, desc: str, quiet: bool, unit: str = "it"):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere); disabled when ``quiet``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, leave=False, dynamic_ncols=True)


def track(items: Iterable[T], total: int, desc: str, quiet: bool, unit: str = "it") -> Iterator[T]:
    """Iterate ``items`` while advancing a progress bar."""
    with bar(total, desc, quiet, unit) as pbar:
        for item in items:
            yield item
            pbar.update(1)
