"""An extension point: one library internal the fast path relies on, and how to check it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExtensionPoint:
    """`check()` returns None when the internal is there and behaves, else what is wrong."""

    name: str  # what a log line names, e.g. "engineio Socket._websocket_handler"
    purpose: str
    check: Callable[[], str | None]

    def problem(self) -> str | None:
        try:
            return self.check()
        except Exception as exc:  # a check that cannot even run has found its answer
            return f"check failed: {exc!r:.120}"


def code_names(function) -> set[str]:
    """The attribute and global names a function's code uses (its nested functions' too)."""
    names: set[str] = set()
    stack = [getattr(function, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names)
        names.update(c for c in code.co_consts if isinstance(c, str))
        stack.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return names
