"""A field of a frozen value that is given, or made once from the value's tensors when first read."""

from __future__ import annotations

from collections.abc import Callable


class MadeOnRead:
    """The array stored under ``name``; when it was not given and the value holds ``tensors``, ``make(value, name)``
    builds it on first read and keeps it (a plane of a big model is flat only when someone asks).

    >>> from types import SimpleNamespace
    >>> class V(SimpleNamespace):
    ...     flat = MadeOnRead("flat", lambda value, name: sum(value.tensors))
    >>> V(tensors=[1, 2], flat=None).flat, V(tensors=None, flat=None).flat, V(tensors=[1], flat=7).flat
    (3, None, 7)
    """

    def __init__(self, name: str, make: Callable):
        self.name, self.make = name, make

    def __get__(self, value, owner=None):
        if value is None:
            return self
        found = value.__dict__.get(self.name)
        if found is None and value.__dict__.get("tensors") is not None:
            found = self.make(value, self.name)
            value.__dict__[self.name] = found
        return found

    def __set__(self, value, found):  # only a dataclass's __init__ sets (the values are frozen)
        value.__dict__[self.name] = found
