"""`ast.parse` and `compile` under one lock, for code that parses in several threads at once.

CPython 3.11 keeps the AST converter's recursion counter in per-interpreter state, not per
thread, so two threads converting ASTs at the same moment can corrupt it and one of them
raises `SystemError: AST constructor recursion depth mismatch` (CPython issue gh-106905,
fixed in later releases). The controller does exactly that: proposals are made in a
thread pool (gp, literal), the static stage runs in evaluation threads, and the main thread
checks each child. Not every parser can take the lock: the standard library's traceback
formatting parses source to place its `^^^` markers, so an exception logged in one thread
while another parses hits the same bug (seen in this repository's tests on Python 3.11.7:
the main thread's check of a child failed while an operator's error was being logged). So
a call that fails with that error is also retried a few times.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.RLock()


_RETRIES = 5


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(_RETRIES):
        try:
            with _LOCK:
                return fn(*args, **kwargs)
        except SystemError as e:
            if "recursion depth mismatch" not in str(e) or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def parse(source: str, **kwargs: Any) -> Any:
    """`ast.parse`, serialized (and retried on the race above)."""
    return _guarded(ast.parse, source, **kwargs)


def compile_(source: Any, filename: str, mode: str, **kwargs: Any) -> Any:
    """`compile`, serialized (and retried on the race above)."""
    return _guarded(compile, source, filename, mode, **kwargs)
