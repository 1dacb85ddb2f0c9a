"""`sds runs | leaderboard | lineage | show | diff`: browse the population database.

Ids: runtimes `r12`, programs `p7` or a code-hash prefix (`sha256:3fa9c1` or `3fa9c1`, at
least 6 hex digits), evaluations `e5` (show only). Each verb takes --db URL and --json.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from evolve.cli.common import (
    ID_HELP,
    UsageError,
    add_db,
    add_json,
    db_url,
    emit_json,
    open_db,
    parse_id,
    table,
)

if TYPE_CHECKING:
    from population_db import ProgramRecord, RuntimeRecord, Store


def open_store(args: argparse.Namespace) -> Store:
    """The store at --db (never created by a browsing verb); any problem -> UsageError."""
    return open_db(db_url(args), create=False)


def _node(store: Store, kind: str, key: int | str) -> RuntimeRecord | ProgramRecord:
    from population_db import NotFound

    try:
        return store.get_runtime(int(key)) if kind == "r" else store.get_program(key)
    except NotFound as e:
        raise UsageError(str(e)) from None


def _metrics(m: dict[str, Any], n: int = 4) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in list(m.items())[:n] if not isinstance(v, dict | list))


# --------------------------------------------------------------------------- runs, board

def runs_rows(store: Store) -> list[dict[str, Any]]:
    """One row per run, from the summary `sds status` prints: best and seed by the run's
    objective (with the fidelity of the best's score), evaluations counted alike."""
    from evolve.runs_csv import run_summary

    rows = []
    for rec in store.list_runs():
        s = run_summary(store, rec.id)
        rows.append({"id": rec.id, "run": s["run"], "status": s["status"],
                     "runtimes": s["runtimes"], "evaluations": s["evaluations"],
                     "objective": s["objective"], "best": s["best"], "seed": s["seed"],
                     "gain": s["gain"], "fidelity": s["fidelity"],
                     "best_runtime": f"r{s['best_runtime']}" if s["best_runtime"] else None,
                     "best_tok_s": s["best_tok_s"], "llm_calls": s["llm_calls"],
                     "cost_usd": s["llm_usd"], "created_at": s["created_at"]})
    return rows


def run_objective(store: Store, run: str) -> tuple[str, bool]:
    """The metric a run selected on (its config's first objective) and whether higher is
    better; ("tok_s", True) for runs without one."""
    from population_db import NotFound

    try:
        config = store.get_run(run).config or {}
    except NotFound as e:
        raise UsageError(str(e)) from None
    objectives = (config.get("selection") or {}).get("objectives") or ["tok_s:max"]
    metric, _, sense = str(objectives[0]).partition(":")
    return metric, sense != "min"


def leaderboard_rows(store: Store, run: str, metric: str | None, limit: int,
                     higher: bool | None = None) -> list[dict[str, Any]]:
    """A run's best runtimes, best first, by `metric` (default: the run's own objective)."""
    if metric is None or higher is None:
        own, own_higher = run_objective(store, run)
        metric = metric or own
        if higher is None:  # the objective's sense applies to its own metric only
            higher = own_higher if metric == own else True
    from population_db import NotFound

    try:
        board = store.leaderboard(run, metric=metric, limit=limit, higher_is_better=higher)
    except NotFound as e:
        raise UsageError(str(e)) from None
    rows = []
    for b in board:
        m = b.metrics or {}
        row = {"rank": b.rank, "runtime": f"r{b.runtime.id}", metric: b.score,
               # which fidelity made the score: `sim` (confirmed on the real engine, or it
               # would not be ranked) or `engine`
               "fidelity": m.get("fidelity", "engine")}
        if metric != "tok_s":  # wall-clock throughput alongside, always
            row["tok_s"] = m.get("tok_s", m.get("confirm_tok_s"))
        row.update({"island": b.runtime.island, "generation": b.runtime.generation,
                    "operator": b.runtime.operator, "evaluation": f"e{b.evaluation_id}",
                    "created_at": b.runtime.created_at})
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- lineage

def lineage_nodes(store: Store, ident: str, metric: str | None = None) -> list[dict[str, Any]]:
    """Every ancestor of a runtime or program, with depth, role, operator, status, metrics.

    A runtime's `score` is `metric` (default: its run's selection objective) from its
    latest passed bench row, with wall-clock `tok_s` alongside.
    """
    kind, key = parse_id(ident)
    node = _node(store, kind, key)
    entries = (store.ancestors(node.id) if kind == "r"
                                   else store.program_ancestors(node.id))
    ids = sorted({e.node.id for e in entries})
    latest = store.latest_evaluations(**({"runtime_ids": ids} if kind == "r"
                                         else {"program_ids": ids}), skip_stages=("propose",))
    scores: dict[int, float] = {}
    tok: dict[int, float] = {}
    changes: dict[int, dict[str, Any]] = {}
    if kind == "r":
        metric = metric or run_objective(store, node.run_id)[0]
        scores = store.scores(node.run_id, ids, metric)
        tok = scores if metric == "tok_s" else store.scores(node.run_id, ids, "tok_s")
        changes = {int(e.data["runtime"]): e.data for e in store.events(node.run_id, "bandit")
                   if (e.data or {}).get("runtime") in ids}
    rows = []
    for e in entries:
        ev = latest.get((kind, e.node.id))
        made = changes.get(e.node.id, {})
        rows.append({"id": f"{kind}{e.node.id}", "depth": e.depth, "role": e.role,
                     "via": f"{kind}{e.via_id}" if e.via_id is not None else None,
                     "operator": e.node.operator,
                     "generation": getattr(e.node, "generation", None),
                     "score": scores.get(e.node.id), "metric": metric if kind == "r" else None,
                     "tok_s": tok.get(e.node.id),
                     "sim_score": (_full_score(store, e.node.id, metric)
                                   if kind == "r" and e.node.id not in scores else None),
                     "arm": made.get("arm"), "variation": made.get("variation"),
                     "change": made.get("note"),
                     "stage": ev.stage if ev else None, "status": ev.status if ev else None,
                     "metrics": ev.metrics if ev else {}})
    return rows


def _full_score(store: Store, runtime_id: int, metric: str | None) -> float | None:
    """`metric` of a runtime's passed `full` row when it is not confirmed on the real engine
    (a `sim`-only score: it never ranks, but shows where the lineage climbed)."""
    rows = [r for r in store.evaluations(runtime_id=runtime_id, stage="full")
            if r.status == "passed" and isinstance((r.metrics or {}).get(metric), (int, float))]
    return float(rows[-1].metrics[metric]) if rows else None


def render_tree(rows: list[dict[str, Any]]) -> str:
    """An indented ancestry tree: each node, then its parents one level deeper."""
    by_id = {r["id"]: r for r in rows}
    parents: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["via"] is not None:
            parents.setdefault(r["via"], []).append(r)
    lines: list[str] = []
    shown: set[str] = set()

    def walk(r: dict[str, Any], indent: str, role: str) -> None:
        head = f"{indent}{'' if role == 'self' else role + ': '}{r['id']} [{r['operator']}]"
        if r["generation"] is not None:
            head += f" gen {r['generation']}"
        if r["status"]:
            head += f"  {r['stage']} {r['status']}"
        if r["score"] is not None:
            head += f"  {r['metric']} {r['score']:.4g}"
            if r["metric"] != "tok_s" and r["tok_s"] is not None:
                head += f"  tok_s {r['tok_s']:.4g}"
        elif r.get("sim_score") is not None:
            head += f"  {r['metric']} {r['sim_score']:.4g} (sim, not confirmed)"
        elif r["metrics"]:
            head += f"  {_metrics(r['metrics'])}"
        if r.get("arm"):
            head += f"  via {r['arm']}" + (f"/{r['variation']}" if r.get("variation") else "")
        if r["id"] in shown and parents.get(r["id"]):
            lines.append(head + "  (ancestry shown above)")
            return
        lines.append(head)
        if r.get("change"):  # what the operator changed (its note)
            lines.append(f"{indent}    = {r['change']}")
        shown.add(r["id"])
        for p in sorted(parents.get(r["id"], []), key=lambda p: (p["role"], p["id"])):
            walk(by_id[p["id"]] | {"role": p["role"]}, indent + "  ", p["role"])

    root = next(r for r in rows if r["depth"] == 0)
    walk(root, "", "self")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- show

def show_data(store: Store, ident: str) -> dict[str, Any]:
    """Everything about one runtime, program or evaluation, as plain data."""
    from population_db import NotFound, RuntimeRecord

    kind, key = parse_id(ident, kinds="rpe")
    if kind == "e":
        try:
            return {"evaluation": _plain(store.get_evaluation(int(key)))}
        except NotFound as e:
            raise UsageError(str(e)) from None
    node = _node(store, kind, key)
    out: dict[str, Any] = {"kind": "runtime" if kind == "r" else "program"}
    if isinstance(node, RuntimeRecord):
        out["runtime"] = _plain(node)
        out["programs"] = {slot: _program(store, p) if not isinstance(p, str) else p
                           for slot, p in store.runtime_programs(node.id).items()}
        out["evaluations"] = [_plain(e) for e in store.evaluations(runtime_id=node.id)]
    else:
        out["program"] = _program(store, node)
        out["evaluations"] = [_plain(e) for e in store.evaluations(program_id=node.id)]
    return out


def _program(store: Store, p: ProgramRecord) -> dict[str, Any]:
    d = _plain(p)
    d.pop("is_new", None)
    d["llm_call"] = _plain(store.get_llm_call(p.llm_call_id)) if p.llm_call_id else None
    return d


def _plain(rec: Any) -> dict[str, Any]:
    return {k: getattr(rec, k) for k in rec.__dataclass_fields__}


def render_show(d: dict[str, Any]) -> str:
    """Human-readable `sds show`."""
    if "evaluation" in d:
        return json.dumps(d["evaluation"], indent=2, default=str)
    out: list[str] = []
    if d["kind"] == "runtime":
        r = d["runtime"]
        ps = ", ".join(f"{role} r{pid}" for pid, role in r["parents"]) or "none (seed)"
        out += [(f"runtime r{r['id']}  run {r['run_id']}  island {r['island']}  "
                 f"gen {r['generation']}  operator {r['operator']}"), f"parents: {ps}",
                "spec: " + json.dumps(r["spec"], sort_keys=True)]
        for slot, p in d["programs"].items():
            out.append(f"\n== slot {slot}: " + (p if isinstance(p, str) else
                                                 f"p{p['id']} sha256:{p['code_hash'][:12]}"))
            if not isinstance(p, str):
                out += _program_lines(p)
    else:
        p = d["program"]
        out.append(f"program p{p['id']}  slot {p['slot']}  sha256:{p['code_hash']}")
        out += _program_lines(p)
    out.append("\n== evaluations")
    out.append(table([{"id": f"e{e['id']}", "stage": e["stage"], "status": e["status"],
                       "metrics": _metrics(e["metrics"]), "duration_s": e["duration_s"],
                       "error": (e["error"] or "").splitlines()[0][:60] if e["error"] else None}
                      for e in d["evaluations"]]))
    return "\n".join(out)


def _program_lines(p: dict[str, Any]) -> list[str]:
    parent = f"p{p['parent_id']}" if p["parent_id"] else "-"
    lines = [f"operator {p['operator']}  parent {parent}", "--- code", p["code"]]
    if p["llm_call"]:
        c = p["llm_call"]
        lines += [(f"--- LLM call {c['id']}: {c['model']}, {c['tokens_in']} in / "
                   f"{c['tokens_out']} out, ${c['cost_usd']:.4f}"), "--- prompt", c["prompt"],
                  "--- reply", c["response"] or f"(no reply: {c['error']})"]
    return lines


# -------------------------------------------------------------------------------- diff

def diff_text(store: Store, a: str, b: str) -> str:
    """Unified diff from A to B: program code, or a runtime's spec and changed slots' code."""
    from population_db import ProgramRecord, unified_diff

    (ka, xa), (kb, xb) = parse_id(a), parse_id(b)
    if ka != kb:
        raise UsageError(f"cannot diff {a!r} with {b!r}: both must be runtimes or programs")
    na, nb = _node(store, ka, xa), _node(store, kb, xb)
    if isinstance(na, ProgramRecord):
        return unified_diff(na.code, nb.code, f"p{na.id}", f"p{nb.id}")
    spec_a = json.dumps(na.spec, indent=2, sort_keys=True) + "\n"
    spec_b = json.dumps(nb.spec, indent=2, sort_keys=True) + "\n"
    parts = [unified_diff(spec_a, spec_b, f"r{na.id}/spec", f"r{nb.id}/spec")]
    pa, pb = store.runtime_programs(na.id), store.runtime_programs(nb.id)
    for slot in sorted(set(pa) | set(pb)):
        ca, cb = _slot_code(slot, pa.get(slot)), _slot_code(slot, pb.get(slot))
        if ca != cb:
            parts.append(unified_diff(ca, cb, f"r{na.id}/{slot}", f"r{nb.id}/{slot}"))
    return "".join(parts)


def _slot_code(slot: str, p: ProgramRecord | str | None) -> str:
    from population_db import ProgramRecord

    if p is None:
        return ""
    if isinstance(p, ProgramRecord):
        return p.code
    try:  # a seed or file reference: read it where it lives
        from runtime_modules.slots import program_path

        return program_path(slot, p).read_text()
    except Exception:  # noqa: BLE001  (an unresolvable ref still diffs by name)
        return f"# {p}\n"


# ---------------------------------------------------------------------------- handlers

def cmd_runs(args: argparse.Namespace) -> int:
    rows = runs_rows(open_store(args))
    emit_json(rows) if args.json else print(table(rows, ["id", "run", "status", "runtimes",
                                                         "evaluations", "objective",
                                                         "best", "gain", "fidelity",
                                                         "best_runtime", "llm_calls",
                                                         "cost_usd", "created_at"]))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    rows = leaderboard_rows(open_store(args), args.run, args.metric, args.limit,
                            False if args.lower_is_better else None)
    emit_json(rows) if args.json else print(table(rows))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    rows = lineage_nodes(open_store(args), args.id, args.metric)
    emit_json(rows) if args.json else print(render_tree(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    d = show_data(open_store(args), args.id)
    emit_json(d) if args.json else print(render_show(d))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    text = diff_text(open_store(args), args.a, args.b)
    emit_json({"a": args.a, "b": args.b, "diff": text}) if args.json else print(
        text or "(identical)", end="" if text else "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="the runs in the database")
    p.set_defaults(func=cmd_runs)
    add_db(p), add_json(p)
    p = sub.add_parser("leaderboard", help="a run's best runtimes")
    p.add_argument("run", help="run name or id")
    p.add_argument("--metric", default=None,
                   help="metric to rank by (default: the run's selection objective, else tok_s)")
    p.add_argument("--limit", type=int, default=10, help="rows to show (10)")
    p.add_argument("--lower-is-better", action="store_true", help="rank ascending")
    p.set_defaults(func=cmd_leaderboard)
    add_db(p), add_json(p)
    p = sub.add_parser("lineage", help="ancestry tree of a runtime or program")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("--metric", default=None,
                   help="runtime score shown (default: the run's selection objective)")
    p.set_defaults(func=cmd_lineage)
    add_db(p), add_json(p)
    p = sub.add_parser("show", help="one runtime, program or evaluation in full")
    p.add_argument("id", help=ID_HELP + ", or e<N> (evaluation)")
    p.set_defaults(func=cmd_show)
    add_db(p), add_json(p)
    p = sub.add_parser("diff", help="code change from A to B (programs or runtimes)")
    p.add_argument("a", help=ID_HELP)
    p.add_argument("b", help="same kind as A")
    p.set_defaults(func=cmd_diff)
    add_db(p), add_json(p)
