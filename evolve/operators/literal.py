"""`literal`: perturb numeric constants inside EVOLVE-BLOCKs, no LLM needed.

Numbers are found with `tokenize` (so strings, comments and names like `x2` are never
touched), only on lines inside an EVOLVE-BLOCK. A few are drawn with `ctx.rng` and scaled by
a log-normal factor; ints stay ints (and change by at least 1; powers of two from 16 up,
like Triton block sizes, are doubled or halved), floats stay floats, the sign is kept. Code without EVOLVE-BLOCKs or without numbers in them is rejected. With `ctx.focus` naming a
module-level function, only that function's constants change.

Each Proposal also carries the opposite move (`reverse`): every changed constant moved as far
the other way (x -> x^2/new for floats, 2x - new for ints, the other power of two), which
the search tries when the child does much worse than its parent (`search.reflect`).
"""

from __future__ import annotations

import io
import logging
import math
import random
import tokenize
from typing import Any

from evolve.operators.base import MutationContext, Proposal, Rejected
from evolve.operators.edits import EditError, check_child
from evolve.operators.options import check_keys, number
from fitness import pyast
from runtime_modules.slots import evolve_blocks

log = logging.getLogger(__name__)

CONFIG_KEYS = frozenset({"weight", "max_changes", "sigma"})


def numeric_literals(code: str) -> list[tuple[int, int, int, str]]:
    """(line 1-based, col start, col end, text) of int/float literals inside EVOLVE-BLOCKs."""
    inside = {i + 1 for s, e in evolve_blocks(code) for i in range(s, e)}
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type != tokenize.NUMBER or tok.start[0] not in inside:
            continue
        text = tok.string
        if text[-1] in "jJ":  # complex: not a tunable constant
            continue
        out.append((tok.start[0], tok.start[1], tok.end[1], text))
    return out


def _function_lines(code: str, name: str) -> range | None:
    """The 1-based lines of module-level function `name` (None if there is none)."""
    import ast

    for node in pyast.parse(code).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return range(node.lineno, (node.end_lineno or node.lineno) + 1)
    return None


def mirror(text: str, new: str) -> str | None:
    """The literal as far from `text` as `new` is, the other way (None: no such literal:
    a sign would flip, or it equals `text`)."""
    clean, moved = text.replace("_", ""), new.replace("_", "")
    is_int = not any(c in clean.lower() for c in ".e") or clean.lower().startswith("0x")
    if is_int:
        value, step = int(clean, 0), int(moved, 0)
        if value >= 16 and value & (value - 1) == 0:
            out = value // 2 if step > value else value * 2
        else:
            out = 2 * value - step
        return str(out) if out >= 0 and out != value else None
    value, step = float(clean), float(moved)
    if value == 0.0 or step == 0.0:
        out = -step
    else:
        out = float(f"{value * value / step:.4g}")  # the same factor, inverted
    return repr(out) if out != value and (out >= 0) == (value >= 0) else None


def perturb(text: str, rng: random.Random, sigma: float) -> str:
    """A new literal near `text`: same type and sign, scaled by exp(N(0, sigma))."""
    clean = text.replace("_", "")
    is_int = not any(c in clean.lower() for c in ".e") or clean.lower().startswith("0x")
    if is_int:
        value = int(clean, 0)
        if value >= 16 and value & (value - 1) == 0:  # Triton block sizes must stay powers of 2
            return str(value * 2 if rng.random() < 0.5 else value // 2)
        new = round(value * math.exp(rng.gauss(0.0, sigma)))
        if new == value:  # small ints: a multiplicative step rounds back to itself
            new = value + (rng.choice((-1, 1)) if value > 0 else 1)
        return str(max(new, 0))  # tokens are never negative: the minus is an operator
    value = float(clean)
    if value == 0.0:
        return repr(float(f"{rng.choice((-1, 1)) * 10 ** rng.uniform(-3, -1):.3g}"))
    for _ in range(10):
        new = float(f"{value * math.exp(rng.gauss(0.0, sigma)):.4g}")
        if new != value:
            return repr(new)
    return repr(value * 2.0)


class LiteralOperator:
    """Perturb a few numeric constants inside the parent's EVOLVE-BLOCKs."""

    name = "literal"

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        check_keys(self.name, config, CONFIG_KEYS)
        self.max_changes = number(self.name, config, "max_changes", 2, int, 1)
        self.sigma = number(self.name, config, "sigma", 0.3, float, 1e-6, 10)

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        """A child with some constants changed; never raises."""
        try:
            return self._propose(ctx)
        except (tokenize.TokenError, SyntaxError, ValueError) as e:
            return Rejected(self.name, ctx.slot, f"literal: cannot read the parent: {e}")
        except Exception as e:
            log.exception("literal failed unexpectedly")
            return Rejected(self.name, ctx.slot, f"literal internal error: "
                                                 f"{type(e).__name__}: {e}")

    def _propose(self, ctx: MutationContext) -> Proposal | Rejected:
        code = ctx.parent.code
        if not evolve_blocks(code):
            return Rejected(self.name, ctx.slot, "literal: the parent has no EVOLVE-BLOCK")
        lits = numeric_literals(code)
        if ctx.focus and lits:  # aimed at one function: only its constants
            lines = _function_lines(code, ctx.focus)
            if lines is not None:
                lits = [lit for lit in lits if lit[0] in lines]
                if not lits:
                    return Rejected(self.name, ctx.slot, f"literal: no numeric constants in "
                                                         f"{ctx.focus}'s EVOLVE-BLOCK")
        if not lits:
            return Rejected(self.name, ctx.slot, "literal: no numeric constants inside the "
                                                 "EVOLVE-BLOCKs")
        rng = random.Random(ctx.rng.getrandbits(64))
        chosen = sorted(rng.sample(lits, min(len(lits), rng.randint(1, self.max_changes))))
        lines = code.splitlines(keepends=True)
        back: list[str] | None = list(lines)
        changes, undo = [], []
        for line, c0, c1, text in reversed(chosen):  # right to left keeps columns valid
            new = perturb(text, rng, self.sigma)
            row = lines[line - 1]
            lines[line - 1] = row[:c0] + new + row[c1:]
            changes.append(f"line {line}: {text} -> {new}")
            other = mirror(text, new)
            if other is None or back is None:
                back = None
            else:
                back[line - 1] = back[line - 1][:c0] + other + back[line - 1][c1:]
                undo.append(f"line {line}: {text} -> {other}")
        child = "".join(lines)
        try:
            check_child(code, child)
        except EditError as e:
            return Rejected(self.name, ctx.slot, f"literal: {e}")
        reverse = "".join(back) if back is not None else None
        if reverse is not None:
            try:
                check_child(code, reverse)
            except EditError:
                reverse = None
        return Proposal(self.name, ctx.slot, code=child, note="; ".join(reversed(changes)),
                        reverse=reverse, reverse_note="reversed: " + "; ".join(reversed(undo))
                        if reverse is not None else "")
