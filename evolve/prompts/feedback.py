"""The feedback sections of a mutation prompt: objective, per-workload counters, parameters.

What a person tuning a scheduler by hand would look at: what is optimized and how it is
computed (`format_objective`), where the parent does more or less work than the seed on
each workload (`format_workload_table`: steps, tokens computed, prefix-cache hits,
preemptions), and the parameter values the parent really runs with (`format_params`): a
value set in the runtime spec overrides the default in the code, so a prompt that showed
only the code would mislead.

Example:
    text = format_workload_table(ctx.parent.metrics, ctx.seed_metrics, ctx.objective)
"""

from __future__ import annotations

import ast
import math
from typing import Any

from evolve.operators.base import MutationContext, Objective
from fitness import pyast

MAX_TABLE_ROWS = 12  # workloads shown; the rest are counted, not listed
MAX_PARAMS = 30  # parameters shown per line
MAX_VALUE_CHARS = 80  # a parameter's value is cut to this

# (metric key, column header): the per-workload figures a scheduler's author would compare
COLUMNS: tuple[tuple[str, str], ...] = (
    ("modeled_tok_s", "modeled tok/s"),
    ("work_steps", "steps"),
    ("work_prefill_steps", "prefill steps"),
    ("work_decode_steps", "decode steps"),
    ("work_scheduled_tokens", "tokens computed"),
    ("work_prefix_cache_hit_tokens", "prefix-hit tokens"),
    ("work_preemptions", "preemptions"),
    ("work_kv_tokens_attended", "KV tokens read"),
    ("work_attn_pairs", "attention pairs"),
    ("modeled_ttft_p99_s", "TTFT p99 s"),
    ("num_kv_blocks", "KV blocks"),
)

COST_MODEL = """\
The cost model (fitness/costmodel.py) prices each engine step as a roofline on the GPU:
max((weights + KV read and written) / memory bandwidth, (GEMM + attention FLOPs) / compute)
plus a fixed per-step overhead; a run's time is the sum of its steps. So fewer, fuller steps
win (every step reads all the weights once), and so do fewer recomputed prompt tokens: more
prefix-cache hits and fewer preemptions (a preempted sequence computes its prompt again)."""

WALL_CLOCK = """\
The metrics are measured wall-clock on the real engine, so small differences are noise;
fewer, fuller steps and fewer recomputed prompt tokens (prefix-cache hits, fewer
preemptions) still do less work."""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if not _num(v):
        return "-"
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return f"{int(v):d}"
    return f"{v:.4g}"


def format_objective(obj: Objective | None, parent: dict[str, Any],
                     seed: dict[str, Any]) -> str:
    """What the run optimizes, on which workloads, how it is computed, parent against seed."""
    if obj is None or not obj.metrics:
        return "Serve more tokens per second while staying exactly correct."
    lines = []
    for i, (name, sense) in enumerate(obj.metrics):
        word = "maximize" if sense == "max" else "minimize"
        role = "the objective" if i == 0 else "also"
        lines.append(f"- {role}: {word} `{name}` (parent {_fmt(parent.get(name))}, "
                     f"seed {_fmt(seed.get(name))})")
    if obj.workloads:
        lines.append("- workloads: " + ", ".join(f"`{w}`" for w in obj.workloads)
                     + " (an aggregate is the geometric mean over them)")
    fid = parent.get("fidelity") or obj.fidelity
    modeled = fid == "sim" or any(n.startswith("modeled_") for n, _ in obj.metrics)
    where = ("`sim`: the real engine, scheduler and KV cache run your code exactly, but the "
             "forward pass is skipped and each step's time comes from a cost model"
             if fid == "sim" else "`engine`: the real engine runs every step")
    lines.append(f"- fidelity: {where}")
    lines.append("")
    lines.append(COST_MODEL if modeled else WALL_CLOCK)
    return "\n".join(lines)


def format_workload_table(parent: dict[str, Any], seed: dict[str, Any],
                          obj: Objective | None = None, max_rows: int = MAX_TABLE_ROWS) -> str:
    """Per workload, the parent's figures next to the seed's (`parent / seed`); `-` if missing."""
    pw, sw = _per_workload(parent), _per_workload(seed)
    order = list(obj.workloads) if obj else []
    order += sorted((set(pw) | set(sw)) - set(order))
    names = [w for w in order if w in pw or w in sw]
    if not names:
        return "(no per-workload measurements yet)"
    cols = [(m, m) for m, _ in (obj.metrics if obj else ()) if m not in dict(COLUMNS)]
    cols += list(COLUMNS)
    cols = [(k, h) for k, h in cols
            if any(_num(pw.get(w, {}).get(k)) or _num(sw.get(w, {}).get(k)) for w in names)]
    if not cols:
        return "(no per-workload counters reported)"
    out = ["Each cell: parent / seed.", "",
           "| workload | " + " | ".join(h for _, h in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    for w in names[:max_rows]:
        p, s = pw.get(w, {}), sw.get(w, {})
        cells = [f"{_fmt(p.get(k))} / {_fmt(s.get(k))}" for k, _ in cols]
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    if len(names) > max_rows:
        out.append(f"... ({len(names) - max_rows} more workloads not shown)")
    return "\n".join(out)


def _per_workload(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    per = (metrics or {}).get("workloads")
    if not isinstance(per, dict):
        return {}
    return {str(w): m for w, m in per.items() if isinstance(m, dict)}


def code_defaults(code: str) -> dict[str, Any]:
    """The literal defaults the code gives its `TUNABLES` (keyword defaults of any function);
    empty when the module does not parse or declares none."""
    try:
        tree = pyast.parse(code)
    except (SyntaxError, ValueError):
        return {}
    names: set[str] = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "TUNABLES" for t in node.targets)):
            names |= {k.value for k in node.value.keys
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    out: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        pos = a.posonlyargs + a.args
        pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
        pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
        for arg, default in pairs:
            if arg.arg in names and arg.arg not in out:
                try:
                    out[arg.arg] = ast.literal_eval(default)
                except ValueError:
                    continue
    return out


def _value(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _param_lines(items: list[str]) -> list[str]:
    if len(items) > MAX_PARAMS:
        items = items[:MAX_PARAMS] + [f"... ({len(items) - MAX_PARAMS} more)"]
    return [f"  - {x}" for x in items]


def format_params(ctx: MutationContext) -> str:
    """The parent's parameters in effect: set by its runtime spec, else the code's defaults."""
    defaults = code_defaults(ctx.parent.code)
    items = []
    for name in sorted(set(ctx.parent_params) | set(defaults)):
        if name in ctx.parent_params:
            v = ctx.parent_params[name]
            note = "set by the runtime"
            if name in defaults and defaults[name] != v:
                note += f"; the code's default {_value(defaults[name])} is not used"
            items.append(f"{name}: {_value(v)} ({note})")
        else:
            items.append(f"{name}: {_value(defaults[name])} (the code's default)")
    lines = [f"- `{ctx.slot}` parameters:"] + (_param_lines(items) or ["  - (none)"])
    eng = [f"{k}: {_value(v)}" for k, v in sorted(ctx.engine_params.items())]
    lines.append("- engine parameters set by the runtime:")
    lines += _param_lines(eng) or ["  - (none: the engine's defaults and each workload's own)"]
    lines.append("A value the runtime sets overrides the default in the code: editing that "
                 "default does not change this runtime.")
    return "\n".join(lines)
