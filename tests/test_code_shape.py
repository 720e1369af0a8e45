"""The shape of the source: no function over 80 lines of body, none that passes ``locals()`` on."""

from __future__ import annotations

import ast
from pathlib import Path

import losstrail

SOURCE = Path(losstrail.__file__).parent
MAX_BODY_LINES = 80


def _functions():
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(SOURCE.parent).as_posix(), node


def body_lines(node: ast.FunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line.

    >>> body_lines(ast.parse('def f():\\n    "doc"\\n    x = 1\\n    return x\\n').body[0])
    2
    """
    body = node.body
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    if not body:
        return 0
    return node.end_lineno - body[0].lineno + 1


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{where}::{node.name} ({body_lines(node)} lines)"
        for where, node in _functions()
        if body_lines(node) > MAX_BODY_LINES
    ]
    assert long == [], "functions over 80 lines of body: " + ", ".join(long)


def test_no_function_passes_locals_on():
    calls = [
        f"{where}:{call.lineno} in {node.name}"
        for where, node in _functions()
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in ("locals", "vars")
        and not call.args
    ]  # fmt: skip
    assert calls == []


def test_no_function_swallows_unknown_keywords():
    """A ``**_`` parameter silently takes any argument a caller misspells or a refactoring forgets."""
    swallowing = [
        f"{where}::{node.name}" for where, node in _functions() if node.args.kwarg and node.args.kwarg.arg == "_"
    ]
    assert swallowing == []


def test_the_length_rule_counts_from_after_the_docstring():
    source = "def f(a):\n    '''doc\n    more'''\n" + "    a += 1\n" * 81 + "    return a\n"
    (node,) = ast.parse(source).body
    assert body_lines(node) == 82
