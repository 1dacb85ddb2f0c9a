"""What the runtime, program and evaluation pages show: code, diffs, stages, LLM calls.

Code and diffs are highlighted here with Pygments, which escapes every character it emits,
so a program holding `<script>` or `</textarea>` renders as text. Seed programs are read
from the seeds package by their `seed:` reference (never from a path found in a URL or
in the database).
"""

from __future__ import annotations

import shlex
from typing import Any

from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from evolve.cli.db import run_objective
from population_db import (
    DEFAULT_URL,
    EvaluationRecord,
    LLMCallRow,
    NotFound,
    ProgramRecord,
    Store,
    unified_diff,
)
from population_db.models import Runtime, RuntimeSlot
from runtime_modules.programs import program_path

FORMATTER = HtmlFormatter(cssclass="hl", linenos="table")
DIFF_FORMATTER = HtmlFormatter(cssclass="hl")
MAX_LIST = 200  # runtimes using a program, children of a node: shown up to this many


def code_html(code: str) -> Markup:
    """Python source as highlighted, escaped HTML."""
    return Markup(highlight(code, PythonLexer(), FORMATTER))


def diff_html(diff: str) -> Markup:
    """A unified diff as highlighted, escaped HTML."""
    return Markup(highlight(diff, DiffLexer(), DIFF_FORMATTER))


def pygments_css() -> str:
    """The stylesheet of the highlighted code."""
    return FORMATTER.get_style_defs(".hl")


def export_command(store: Store, runtime_id: int) -> str:
    """The `sds export` command for a runtime (no --db when it is the default, nor when
    the URL holds a password, which stays in $SDS_DB)."""
    parts = ["sds", "export", str(runtime_id)]
    url = make_url(store.url)
    if store.url != DEFAULT_URL and not url.password:
        parts += ["--db", store.url]
    parts += ["--out", f"sds-runtime-{runtime_id}"]
    return shlex.join(parts)


def _slot_code(slot: str, prog: ProgramRecord | str) -> tuple[str | None, str]:
    """(code, label) of a runtime's slot: a stored program, or a seed read from seeds/."""
    if isinstance(prog, ProgramRecord):
        return prog.code, f"p{prog.id}"
    if prog.startswith("seed:"):
        try:
            return program_path(slot, prog).read_text(encoding="utf-8"), prog
        except Exception:  # noqa: BLE001  (an unknown seed still shows its reference)
            return None, prog
    return None, prog


def _call(store: Store, call_id: int | None) -> LLMCallRow | None:
    if call_id is None:
        return None
    try:
        return store.get_llm_call(int(call_id))
    except (NotFound, TypeError, ValueError):
        return None


def _children(store: Store, runtime_id: int) -> list[tuple[int, str]]:
    below = store.descendants(runtime_id, max_depth=1)
    return sorted({(e.node.id, e.role) for e in below if e.depth == 1})[:MAX_LIST]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _workload_table(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Metrics as rows x columns (each workload, then the aggregate the run selects on),
    grouped: modeled (cost model), measured (real engine, `confirm_*` in a sim run),
    counters (the engine's work)."""
    per = metrics.get("workloads")
    per = per if isinstance(per, dict) else {}
    wls = sorted(per)
    flat = {k: v for k, v in metrics.items() if _number(v) and k != "confirmed"}
    keys = sorted({k for m in per.values() if isinstance(m, dict) for k in m} | set(flat))
    if not keys:
        return None
    groups: dict[str, list[tuple[str, list[Any]]]] = {"modeled": [], "measured": [],
                                                      "counters": []}
    for k in keys:
        g = "counters" if k.startswith("work_") else "modeled" if "modeled" in k else "measured"
        groups[g].append((k, [(per[w] or {}).get(k) for w in wls] + [flat.get(k)]))
    return {"workloads": [*wls, "aggregate"], "groups": {g: v for g, v in groups.items() if v}}


def evaluation_view(e: EvaluationRecord) -> dict[str, Any]:
    """An evaluation with its flat metrics and per-workload table split out."""
    flat = {k: v for k, v in (e.metrics or {}).items() if k != "workloads"}
    table = _workload_table(e.metrics or {}) if "workloads" in (e.metrics or {}) else None
    return {"e": e, "flat": flat, "table": table}


def runtime_page(store: Store, runtime_id: int) -> dict[str, Any]:
    """A runtime: spec, parents and children, each slot's code and diff against its parent,
    the LLM calls that made it, every stage's result, per-workload figures."""
    rt = store.get_runtime(runtime_id)
    run = store.get_run(rt.run_id)
    metric, higher = run_objective(store, str(run.id))
    progs = store.runtime_programs(rt.id)
    parent = next((p for p, role in rt.parents if role == "parent"), None)
    pprogs = store.runtime_programs(parent) if parent is not None else {}
    slots = []
    for slot, prog in progs.items():
        code, label = _slot_code(slot, prog)
        before = pprogs.get(slot)
        diff = None
        if before is not None and before != prog and code is not None:
            pcode, plabel = _slot_code(slot, before)
            if pcode is not None:
                diff = unified_diff(pcode, code, f"{plabel} (r{parent})", f"{label} (r{rt.id})")
        call = _call(store, prog.llm_call_id) if isinstance(prog, ProgramRecord) else None
        slots.append({"slot": slot, "label": label, "program": prog if isinstance(
            prog, ProgramRecord) else None, "changed": diff is not None,
            "code": code_html(code) if code is not None else None,
            "diff": diff_html(diff) if diff else None, "call": call if diff else None})
    evals = store.evaluations(runtime_id=rt.id)
    pids = [p.id for p in progs.values() if isinstance(p, ProgramRecord)]
    slot_evals = [e for pid in pids for e in store.evaluations(program_id=pid)
                  if e.run_id in (None, run.id) and e.stage != "propose"]
    full = next((e for e in reversed(evals) if e.stage == "full"), None)
    return {"rt": rt, "run": run, "metric": metric, "higher": higher, "slots": slots,
            "children": _children(store, rt.id),
            "score": store.scores(run.id, [rt.id], metric).get(rt.id),
            "evaluations": [evaluation_view(e) for e in
                            sorted(evals + slot_evals, key=lambda e: e.id)],
            "table": _workload_table(full.metrics or {}) if full else None,
            "export": export_command(store, rt.id)}


def _runtimes_using(store: Store, program_id: int) -> list[int]:
    with Session(store.engine) as s:
        q = (select(RuntimeSlot.runtime_id).join(Runtime, Runtime.id == RuntimeSlot.runtime_id)
             .where(RuntimeSlot.program_id == program_id).order_by(Runtime.id).limit(MAX_LIST))
        return list(s.scalars(q))


def program_page(store: Store, program_id: int) -> dict[str, Any]:
    """A program: code, diff against its parent, the LLM call that wrote it, its own
    evaluations (slot stages, rejected proposals), the runtimes using it."""
    p = store.get_program(int(program_id))
    diff = p.diff
    if not diff and p.parent_id is not None:
        diff = unified_diff(store.get_program(p.parent_id).code, p.code, f"p{p.parent_id}",
                            f"p{p.id}")
    kids = sorted({e.node.id for e in store.program_descendants(p.id, max_depth=1)
                   if e.depth == 1})[:MAX_LIST]
    return {"p": p, "code": code_html(p.code), "diff": diff_html(diff) if diff else None,
            "call": _call(store, p.llm_call_id), "children": kids,
            "evaluations": [evaluation_view(e) for e in store.evaluations(program_id=p.id)],
            "runtimes": _runtimes_using(store, p.id),
            "run": store.get_run(p.run_id) if p.run_id is not None else None}


def evaluation_page(store: Store, eval_id: int) -> dict[str, Any]:
    """An evaluation: stage, status, error, artifacts, metrics, and the LLM calls behind the
    candidate (those its artifacts name, or those that wrote its runtime's new programs)."""
    e = store.get_evaluation(int(eval_id))
    ids = [i for i in (e.artifacts or {}).get("llm_calls") or [] if isinstance(i, int)]
    if e.runtime_id is not None:
        rt = store.get_runtime(e.runtime_id)
        parent = next((p for p, role in rt.parents if role == "parent"), None)
        before = set(store.runtime_programs(parent).values()) if parent is not None else set()
        ids += [p.llm_call_id for p in store.runtime_programs(rt.id).values()
                if isinstance(p, ProgramRecord) and p.llm_call_id and p not in before]
    elif e.program_id is not None:
        p = store.get_program(e.program_id)
        if p.llm_call_id and e.stage != "propose":
            ids.append(p.llm_call_id)
    calls = [c for c in (_call(store, i) for i in dict.fromkeys(ids)) if c is not None]
    run = store.get_run(e.run_id) if e.run_id is not None else None
    return {**evaluation_view(e), "calls": calls, "run": run}
