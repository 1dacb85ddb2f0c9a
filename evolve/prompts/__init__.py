"""Prompt templates (plain text with `$field`s in this folder) and their rendering.

`diff.txt` and `rewrite.txt` carry the slot's contract, the objective and how it is
computed, the parent's code, metrics (per workload against the seed's, `feedback.py`),
parameters in effect and evaluation artifacts, recent failures, inspirations, the
EVOLVE-BLOCK rule and the exact reply format; `repair.txt` shows a rejected reply with its
error.

Example:
    prompt = build_prompt("diff", ctx)             # ctx: evolve.operators.base.MutationContext
    again = build_repair_prompt(prompt, reply, "SEARCH/REPLACE block 1: ...")
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from evolve.operators.base import Candidate, MutationContext
from evolve.prompts.feedback import format_objective, format_params, format_workload_table

PROMPT_DIR = Path(__file__).resolve().parent
KINDS = ("diff", "rewrite")
MAX_ARTIFACT_CHARS = 2000  # per artifact: enough for a traceback, not a log dump
MAX_FAILURE_CHARS = 1500  # per note: its error and the failing child's lines


@cache
def template(name: str) -> Template:
    """The template `<name>.txt` of this folder."""
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name!r} (looked for {path})")
    return Template(path.read_text(encoding="utf-8"))


def render(name: str, **fields: Any) -> str:
    """Fill template `name`; a field missing from `fields` is a KeyError naming it."""
    try:
        return template(name).substitute(**{k: str(v) for k, v in fields.items()})
    except KeyError as e:
        raise KeyError(f"prompt template {name!r} needs field {e.args[0]!r}") from None


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more chars)"


def _clip_lines(text: str, limit: int) -> str:
    """`text` cut at a line end (never inside a quoted code line), with what was left out."""
    text = text.strip()
    if len(text) <= limit:
        return text
    lines, out, n = text.splitlines(), [], 0
    for ln in lines:
        if n + len(ln) + 1 > limit and out:
            break
        out.append(ln[:limit])
        n += len(ln) + 1
    return "\n".join(out) + f"\n  ... ({len(lines) - len(out)} more lines)"


def compact_json(value: Any, limit: int) -> str:
    """`value` as JSON of at most about `limit` characters that is still valid JSON: items
    that do not fit are dropped whole and counted (`"...": "3 more"`), never cut mid-string."""
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) <= limit:
        return text
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        keys = sorted(value, key=str)
        for i, k in enumerate(keys):
            sub = compact_json(value[k], max(20, limit // 2))
            trial = {**out, str(k): json.loads(sub), "...": f"{len(keys) - i - 1} more"}
            if len(json.dumps(trial, sort_keys=True, default=str)) > limit and out:
                out["..."] = f"{len(keys) - i} more"
                return json.dumps(out, sort_keys=True, default=str)
            out[str(k)] = json.loads(sub)
        return json.dumps(out, sort_keys=True, default=str)
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for i, x in enumerate(value):
            sub = json.loads(compact_json(x, max(20, limit // 2)))
            if len(json.dumps([*items, sub, f"... {len(value) - i} more"], default=str)) > \
                    limit and items:
                return json.dumps([*items, f"... {len(value) - i} more"], default=str)
            items.append(sub)
        return json.dumps(items, default=str)
    if isinstance(value, str):
        return json.dumps(value[: max(0, limit - 20)] + f"... ({len(value)} chars)")
    return text


def format_metrics(metrics: dict[str, Any], skip: frozenset[str] = frozenset()) -> str:
    """Metrics as `- key: value` lines (but the keys in `skip`), floats to 4 significant digits."""
    if not metrics:
        return "- (not measured yet)"
    lines = []
    for key, value in sorted(metrics.items()):
        if key in skip:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            value = compact_json(value, 300)
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def format_artifacts(artifacts: dict[str, Any]) -> str:
    """Evaluation artifacts (errors, stage notes) clipped to a readable size."""
    if not artifacts:
        return "- (nothing reported)"
    parts = []
    for key, value in sorted(artifacts.items()):
        text = (_clip(value, MAX_ARTIFACT_CHARS) if isinstance(value, str)
                else compact_json(value, MAX_ARTIFACT_CHARS))
        parts.append(f"- {key}:\n{text}" if "\n" in text else f"- {key}: {text}")
    return "\n".join(parts)


def format_failures(failures: tuple[str, ...]) -> str:
    """Recent failures on this slot (evolve/prompts/failures.py), one per bullet."""
    if not failures:
        return "- (none recently)"
    return "\n".join(f"- {_clip_lines(f, MAX_FAILURE_CHARS)}" for f in failures)


def format_per_workload(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    """One line of `keys` per workload, side by side (never maxed or cut across workloads)."""
    per = (metrics or {}).get("workloads")
    if not isinstance(per, dict) or not keys:
        return ""
    parts = []
    for w, m in sorted(per.items()):
        if isinstance(m, dict):
            vals = [f"{k} {m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float))]
            if vals:
                parts.append(f"`{w}` " + ", ".join(vals))
    return "- per workload: " + "; ".join(parts) if parts else ""


def format_inspirations(cands: tuple[Candidate, ...], limit: int,
                        keys: tuple[str, ...] = ()) -> str:
    """Up to `limit` inspiration programs with their metrics (per workload: `keys`, the
    objective's); the first is the island's best."""
    if not cands or limit <= 0:
        return "(none yet)"
    out = []
    for i, c in enumerate(cands[:limit], 1):
        label = "the island's best" if i == 1 else "a diverse strong program"
        metrics = format_metrics(c.metrics, frozenset({"workloads"}))
        per = format_per_workload(c.metrics, keys)
        out.append(render("inspiration", index=i, label=label,
                          metrics=metrics + ("\n" + per if per else ""), code=c.code.rstrip()))
    return "\n".join(out)


def build_prompt(kind: str, ctx: MutationContext, max_inspirations: int = 3) -> str:
    """The full mutation prompt of `kind` ("diff" or "rewrite") for `ctx`."""
    if kind not in KINDS:
        raise ValueError(f"prompt kind must be one of {KINDS}, got {kind!r}")
    return render(kind, slot=ctx.slot, contract=inspect.cleandoc(ctx.contract or "(no contract given)"),
                  parent_code=ctx.parent.code.rstrip(),
                  objective=format_objective(ctx.objective, ctx.parent.metrics,
                                             ctx.seed_metrics),
                  parent_metrics=format_metrics(ctx.parent.metrics, frozenset({"workloads"})),
                  workload_table=format_workload_table(ctx.parent.metrics, ctx.seed_metrics,
                                                       ctx.objective),
                  params=format_params(ctx),
                  parent_artifacts=format_artifacts(ctx.parent.artifacts),
                  failures=format_failures(ctx.recent_failures),
                  inspirations=format_inspirations(
                      ctx.inspirations, max_inspirations,
                      tuple(m for m, _ in ctx.objective.metrics) if ctx.objective else ()),
                  evolve_rule=evolve_rule())


def evolve_rule() -> str:
    """The rules every edit must follow, with the static check's lists as it enforces them."""
    from fitness import static  # the lists the harness really enforces, so they never drift

    def names(xs: frozenset[str]) -> str:
        return ", ".join(f"`{x}`" for x in sorted(xs))

    return render("evolve_rule", modules=names(static.FORBIDDEN_MODULES),
                  builtins=names(static.FORBIDDEN_BUILTINS | static.FORBIDDEN_CALLS),
                  attrs=names(static.FORBIDDEN_ATTRS)).strip()


def build_repair_prompt(original_prompt: str, previous_reply: str | None, error: str) -> str:
    """A follow-up prompt: the rejected reply, why it was rejected, and the original request."""
    return render("repair", error=error, previous_reply=_clip(previous_reply or "(empty)", 20000),
                  original_prompt=original_prompt)
