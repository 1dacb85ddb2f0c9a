"""EVOLVE-BLOCKs: the marked regions of a module that evolution may change."""

from __future__ import annotations

EVOLVE_START = "# EVOLVE-BLOCK-START"
EVOLVE_END = "# EVOLVE-BLOCK-END"

def evolve_blocks(code: str) -> list[tuple[int, int]]:
    """Line ranges (start, end), 0-based and exclusive of the marker lines, of EVOLVE-BLOCKs."""
    blocks, start = [], None
    for i, line in enumerate(code.splitlines()):
        s = line.strip()
        if s.startswith(EVOLVE_START):
            if start is not None:
                raise ValueError(f"line {i + 1}: nested {EVOLVE_START}")
            start = i + 1
        elif s.startswith(EVOLVE_END):
            if start is None:
                raise ValueError(f"line {i + 1}: {EVOLVE_END} without a start")
            blocks.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{EVOLVE_START} at line {start} is never closed")
    return blocks


def _frozen_parts(code: str) -> list[str]:
    lines = code.splitlines()
    parts, prev = [], 0
    for start, end in evolve_blocks(code):
        parts.append("\n".join(lines[prev:start]))
        prev = end
    parts.append("\n".join(lines[prev:]))
    return parts


def check_evolve_blocks(old_code: str, new_code: str) -> str | None:
    """None if `new_code` only changes `old_code` inside its EVOLVE-BLOCKs, else the reason.

    A module without markers may be changed anywhere.
    """
    try:
        old_blocks = evolve_blocks(old_code)
    except ValueError as e:
        return f"parent's EVOLVE-BLOCK markers are malformed: {e}"
    if not old_blocks:
        return None
    try:
        new_blocks = evolve_blocks(new_code)
    except ValueError as e:
        return f"EVOLVE-BLOCK markers are malformed: {e}"
    if len(new_blocks) != len(old_blocks):
        return (f"the edit changed the number of EVOLVE-BLOCKs ({len(old_blocks)} -> "
                f"{len(new_blocks)}); only code inside them may change")
    old_parts, new_parts = _frozen_parts(old_code), _frozen_parts(new_code)
    for i, (a, b) in enumerate(zip(old_parts, new_parts)):
        if a.rstrip() != b.rstrip():
            where = "before the first" if i == 0 else f"after EVOLVE-BLOCK {i}"
            return f"the edit changes code outside the EVOLVE-BLOCKs ({where} block)"
    return None
