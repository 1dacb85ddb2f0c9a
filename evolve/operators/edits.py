"""Turning an LLM reply into new code, or into the precise reason it cannot be.

Two reply forms: SEARCH/REPLACE blocks (`llm-diff`) and one fenced ```python module
(`llm-rewrite`). A SEARCH text matches whole lines only, never the inside of a line: a
fragment that matched mid-line would splice the replacement's later lines in at the wrong
indentation. A SEARCH copied with a uniformly different indentation (models often drop or
add one level) still matches, and its REPLACE lines are re-indented by the same amount.
Every child, whatever operator made it, goes through `check_child`: it must compile (so
`return` at module level is caught here, not in a later stage), keep outside the parent's
EVOLVE-BLOCKs unchanged, differ from the parent, and, given its slot, pass the harness's
own static checks (fitness/static.py).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from fitness import pyast
from fitness.static import check_static
from runtime_modules.slots import check_evolve_blocks

SEARCH, DIVIDER, REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_BLOCK = re.compile(r"^[ \t]*<<<<<<< SEARCH[ \t]*\n(.*?)^[ \t]*=======[ \t]*\n(.*?)"
                    r"^[ \t]*>>>>>>> REPLACE[ \t]*$", re.DOTALL | re.MULTILINE)
_FENCE = re.compile(r"^```[ \t]*(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
MAX_SHOWN_LINES = 12  # code lines quoted back in an error, around the closest match


class EditError(ValueError):
    """A reply that does not give a usable child.

    `str(e)` is the one-line recorded reason; `detail` holds the exact lines involved
    (what the SEARCH text said, what the code has there), shown in the repair prompt.
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail

    def full(self) -> str:
        """The reason with its detail lines, as a repair prompt shows it."""
        return f"{self}\n{self.detail}" if self.detail else str(self)


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


@dataclass(frozen=True, slots=True)
class _Match:
    start: int  # index of the first matched code line
    add: str = ""  # indentation the code has beyond the SEARCH text's
    remove: str = ""  # indentation the SEARCH text has beyond the code's


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip() for ln in lines]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _match_at(code: list[str], i: int, search: list[str]) -> _Match | None:
    """Whether `search` equals code[i:i+n] line by line, up to one uniform indentation shift."""
    window = code[i: i + len(search)]
    if len(window) < len(search):
        return None
    if window == search:
        return _Match(i)
    pairs = [(s, c) for s, c in zip(search, window) if s.strip() or c.strip()]
    if not pairs or any(not s.strip() or not c.strip() for s, c in pairs):
        return None  # a blank line against a non-blank one
    s0, c0 = pairs[0]
    ws, wc = _indent(s0), _indent(c0)
    if wc.startswith(ws):
        add = wc[len(ws):]
        return _Match(i, add=add) if all(c == add + s for s, c in pairs) else None
    if ws.startswith(wc):
        rem = ws[len(wc):]
        return _Match(i, remove=rem) if all(s == rem + c for s, c in pairs) else None
    return None


def _reindent(lines: list[str], m: _Match) -> list[str]:
    out = []
    for ln in lines:
        if not ln.strip():
            out.append("")
        elif m.add:
            out.append(m.add + ln)
        elif m.remove:
            cut = min(len(m.remove), len(_indent(ln)))
            out.append(ln[cut:])
        else:
            out.append(ln)
    return out


def _similar(a: str, b: str) -> float:
    if not a or not b:
        return float(a == b)
    if a in b:  # a fragment of the line
        return 0.9 + 0.1 * len(a) / len(b)
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _closest(code: list[str], search: list[str]) -> str:
    """The SEARCH lines that are not in the code, and the code region closest to the block."""
    stripped = [c.strip() for c in code]
    out = []
    missing = [s for s in search if s.strip() and s.strip() not in stripped]
    for s in missing[:4]:
        key = s.strip()
        k = max(range(len(code)), key=lambda j: _similar(key, stripped[j]), default=None)
        hint = ""
        if k is not None and key in stripped[k]:
            hint = f"; it is only part of line {k + 1}: {code[k]!r}"
        elif k is not None and _similar(key, stripped[k]) >= 0.5:
            hint = f"; the closest code line is {k + 1}: {code[k]!r}"
        out.append(f"- the SEARCH line {s!r} is in no line of the code{hint}")
    if not missing:
        out.append("- every SEARCH line exists, but not in this order and indentation")
    keys = [s.strip() for s in search]
    n = max(1, len(keys))
    best, best_i = -1.0, 0
    for i in range(max(1, len(code) - n + 1)):
        score = sum(_similar(a, b) for a, b in zip(keys, stripped[i: i + n]))
        if score > best:
            best, best_i = score, i
    lo = max(0, best_i - 1)  # one line of context either side
    hi = min(len(code), best_i + n + 1, lo + MAX_SHOWN_LINES)
    out.append(f"The code's closest region (lines {lo + 1}-{hi}); copy SEARCH lines "
               "exactly from it, whole lines:")
    out += [f"{k + 1:4d}| {code[k]}" for k in range(lo, hi)]
    return "\n".join(out)


def apply_diff(code: str, blocks: list[tuple[str, str]]) -> str:
    """Apply SEARCH/REPLACE blocks in order; each SEARCH must match exactly once, as whole
    lines, tolerating one uniform indentation difference (REPLACE is re-indented to fit)."""
    trailing = code.endswith("\n")
    lines = _lines(code)
    for i, (search, replace) in enumerate(blocks, 1):
        s_lines = _lines(search)
        while s_lines and not s_lines[0].strip():  # blank lines around a SEARCH text
            s_lines.pop(0)
        while s_lines and not s_lines[-1].strip():
            s_lines.pop()
        if not s_lines:
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text is empty")
        exact = [k for k in range(len(lines) - len(s_lines) + 1)
                 if lines[k: k + len(s_lines)] == s_lines]
        found = [_Match(k) for k in exact] or [
            m for k in range(len(lines) - len(s_lines) + 1)
            if (m := _match_at(lines, k, s_lines)) is not None]
        if not found:
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text is not in the code "
                            f"as whole lines (it begins {s_lines[0].strip()[:80]!r})",
                            _closest(lines, s_lines))
        if len(found) > 1:
            where = ", ".join(str(m.start + 1) for m in found[:6])
            raise EditError(f"SEARCH/REPLACE block {i}: the SEARCH text matches "
                            f"{len(found)} places (at lines {where}); include more lines so "
                            "it matches exactly once")
        m = found[0]
        lines[m.start: m.start + len(s_lines)] = _reindent(_lines(replace), m)
    return "\n".join(lines) + ("\n" if trailing else "")


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


def _around(code: str, lineno: int | None, radius: int = 2) -> str:
    lines = code.splitlines()
    if not lineno or not 1 <= lineno <= len(lines):
        return ""
    lo, hi = max(1, lineno - radius), min(len(lines), lineno + radius)
    return "\n".join(f"{'>' if k == lineno else ' '}{k:4d}| {lines[k - 1]}"
                     for k in range(lo, hi + 1))


def _syntax_error(e: SyntaxError, code: str) -> EditError:
    line = (e.text or "").strip()
    return EditError(f"syntax error at line {e.lineno}: {e.msg}"
                     + (f" ({line[:80]!r})" if line else ""), _around(code, e.lineno))


def check_child(parent_code: str, child_code: str, slot: str | None = None) -> None:
    """Raise EditError unless the child compiles, keeps the frozen code, changes something
    and (given `slot`) passes the static stage's checks."""
    if not child_code.strip():
        raise EditError("the child module is empty")
    try:
        pyast.parse(child_code)
    except SyntaxError as e:
        raise _syntax_error(e, child_code) from None
    except ValueError as e:  # null bytes
        raise EditError(f"the child does not parse: {e}") from None
    reason = check_evolve_blocks(parent_code, child_code)
    if reason:
        raise EditError(reason)
    try:
        # compile, not just parse: `return` or `yield` outside a function parses fine
        pyast.compile_(child_code, "<child>", "exec", dont_inherit=True)
    except SyntaxError as e:
        raise _syntax_error(e, child_code) from None
    if child_code.strip() == parent_code.strip():
        raise EditError("no change: the child is identical to the parent")
    if slot is not None:
        res = check_static(slot, child_code)
        if not res.ok:
            raise EditError(f"static check: {res.error}",
                            _around(child_code, (res.artifacts or {}).get("line")))
