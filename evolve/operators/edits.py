"""Turning an LLM reply into new code, or into the precise reason it cannot be.

Two reply forms: SEARCH/REPLACE blocks (`llm-diff`) and one fenced ```python module
(`llm-rewrite`). Every child, whatever operator made it, goes through `check_child`: it must
parse, keep outside the parent's EVOLVE-BLOCKs unchanged, and differ from the parent.
"""

from __future__ import annotations

import ast
import re

from runtime_modules.slots import check_evolve_blocks

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_BLOCK = re.compile(r"^[ \t]*<<<<<<< SEARCH[ \t]*\n(.*?)^[ \t]*=======[ \t]*\n(.*?)"
                    r"^[ \t]*>>>>>>> REPLACE[ \t]*$", re.DOTALL | re.MULTILINE)
_FENCE = re.compile(r"^```[ \t]*(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


class EditError(ValueError):
    """A reply that does not give a usable child; the message is the recorded reason."""


def parse_diff(reply: str) -> list[tuple[str, str]]:
    """The (search, replace) pairs of a SEARCH/REPLACE reply, in order."""
    if not reply or not reply.strip():
        raise EditError("empty reply")
    reply = reply.replace("\r\n", "\n")  # some servers answer with CRLF line ends
    blocks = [(s, r) for s, r in _BLOCK.findall(reply)]
    if not blocks:
        if SEARCH in reply:
            raise EditError(f"malformed SEARCH/REPLACE block: every '{SEARCH}' needs a "
                            f"'{DIVIDER}' line and a '{REPLACE}' line")
        raise EditError(f"no SEARCH/REPLACE blocks in the reply (expected '{SEARCH}' ... "
                        f"'{DIVIDER}' ... '{REPLACE}')")
    unclosed = reply.count(SEARCH) - len(blocks)
    if unclosed:
        raise EditError(f"{unclosed} SEARCH block(s) are not closed by '{DIVIDER}' and "
                        f"'{REPLACE}' lines")
    return blocks


def apply_diff(code: str, blocks: list[tuple[str, str]]) -> str:
    """Apply SEARCH/REPLACE blocks in order; each SEARCH must match exactly once."""
    for i, (search, replace) in enumerate(blocks, 1):
        if not search.strip():
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text is empty")
        n = code.count(search)
        if n == 0:
            first = search.strip().splitlines()[0]
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text is not in the code "
                            f"(it must match exactly, whitespace included); it begins "
                            f"{first[:80]!r}")
        if n > 1:
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text matches {n} places; "
                            "include more lines so it matches exactly once")
        code = code.replace(search, replace, 1)
    return code


def extract_module(reply: str) -> str:
    """The code of the single fenced python block of a rewrite reply."""
    if not reply or not reply.strip():
        raise EditError("empty reply")
    reply = reply.replace("\r\n", "\n")
    fences = [(lang, body) for lang, body in _FENCE.findall(reply)]
    python = [body for lang, body in fences if lang.lower() in ("python", "py")]
    if not python:
        python = [body for lang, body in fences if not lang]
    if not python:
        raise EditError("no ```python fenced code block in the reply")
    if len(python) > 1:
        raise EditError(f"{len(python)} python code blocks in the reply; expected exactly one "
                        "with the whole module")
    return python[0]


def check_child(parent_code: str, child_code: str) -> None:
    """Raise EditError unless the child parses, keeps the frozen code, and changes something."""
    if not child_code.strip():
        raise EditError("the child module is empty")
    try:
        ast.parse(child_code)
    except SyntaxError as e:
        line = (e.text or "").strip()
        raise EditError(f"syntax error at line {e.lineno}: {e.msg}"
                        + (f" ({line[:80]!r})" if line else "")) from None
    reason = check_evolve_blocks(parent_code, child_code)
    if reason:
        raise EditError(reason)
    if child_code.strip() == parent_code.strip():
        raise EditError("no change: the child is identical to the parent")
