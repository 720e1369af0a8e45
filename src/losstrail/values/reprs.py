"""Short reprs for the values passed between stages: shapes instead of every array element."""

from __future__ import annotations

import dataclasses

import numpy as np


def _field(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<{value.dtype} array {'x'.join(map(str, value.shape))}>"
    if isinstance(value, (tuple, list)) and len(value) > 4:
        return f"<{len(value)} items: {', '.join(map(repr, value[:2]))}, ...>"
    if isinstance(value, dict):
        return f"<{len(value)} entries: {', '.join(map(str, list(value)[:3]))}{', ...' if len(value) > 3 else ''}>"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def short_repr(value) -> str:
    """``Name(field=<float32 array 10x5>, ...)``: one line, whatever the size of the arrays.

    >>> @dataclasses.dataclass
    ... class V:
    ...     a: np.ndarray
    ...     name: str
    >>> short_repr(V(np.zeros((3, 2), np.float32), "x"))
    "V(a=<float32 array 3x2>, name='x')"
    """
    fields = ", ".join(f"{f.name}={_field(getattr(value, f.name))}" for f in dataclasses.fields(value) if f.repr)
    return f"{type(value).__name__}({fields})"
