"""The lineage of a whole run as columns of JSON, for the browser to lay out and draw.

Runtimes: one SQL statement over indexed columns (runtimes by run, their `parent` and
`second_parent` edges by child, each runtime's outcome row by runtime), so a
10,000-runtime run comes back in one round trip. Every runtime the run ever made is there, whether or not
it is still in a population: migrants and reseeded copies (no evaluation of their own),
failures, children never selected again. A runtime's outcome is its `full` row (the
controller's aggregate), else its newest evaluation of any stage; its score is the run's
objective in that row when it passed, with `confirmed` saying whether the real engine
confirmed it (a `sim` score alone is never best). Programs: the run's programs and the
seeds its runtimes use, each scored by the best runtime that uses it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, or_, select
from sqlalchemy.orm import Session, aliased

from evolve.cli.db import run_objective
from population_db import GENETIC_ROLES, Store
from population_db.models import Evaluation, Program, Runtime, RuntimeParent, RuntimeSlot


def runtime_query(run_id: int, metric: str) -> Any:
    """The statement: one row per (runtime, genetic parent edge), with its outcome row.

    The outcome row is picked per runtime by a correlated subquery on the
    (runtime_id, stage, status) index: a few rows read per runtime, whatever the run's size.
    """
    rt, edge = Runtime.__table__, RuntimeParent.__table__
    ev, e2 = aliased(Evaluation), aliased(Evaluation)
    pick = (select(ev.id)
            .where(ev.runtime_id == rt.c.id,
                   or_(ev.status.not_in(("pending", "running")), ev.stage == "full"))
            .order_by(case((ev.stage == "full", 0), else_=1), ev.id.desc())
            .limit(1).correlate(rt).scalar_subquery())
    return (select(rt.c.id, rt.c.island, rt.c.generation, rt.c.operator, edge.c.parent_id,
                   edge.c.role, e2.status, e2.stage, e2.metrics[metric].as_float(),
                   e2.metrics["confirmed"].as_float(), e2.artifacts["failed_stage"].as_string())
            .select_from(rt)
            .outerjoin(edge, and_(edge.c.child_id == rt.c.id,
                                  edge.c.role.in_(list(GENETIC_ROLES))))
            .outerjoin(e2, e2.id == pick)
            .where(rt.c.run_id == run_id)
            .order_by(rt.c.id, edge.c.role))


def _columns(keys: tuple[str, ...]) -> dict[str, list[Any]]:
    return {k: [] for k in keys}


KEYS = ("id", "parent", "second", "group", "gen", "op", "status", "stage", "score",
        "confirmed")


def runtime_lineage(store: Store, run_id: int) -> dict[str, Any]:
    """Every runtime of a run: ids, parents, island, generation, operator, outcome, score."""
    run = store.get_run(run_id)
    metric, higher = run_objective(store, str(run.id))
    cols = _columns(KEYS)
    with Session(store.engine) as s:
        rows = s.execute(runtime_query(run.id, metric)).all()
    last = None
    for rid, island, gen, op, pid, role, status, stage, score, conf, failed in rows:
        if rid == last:  # a second edge of the same runtime
            if role == "second_parent":
                cols["second"][-1] = pid
            continue
        last = rid
        cols["id"].append(rid)
        cols["parent"].append(pid if role == "parent" else None)
        cols["second"].append(pid if role == "second_parent" else None)
        cols["group"].append(island)
        cols["gen"].append(gen)
        cols["op"].append(op)
        cols["status"].append(status or ("copy" if op in ("migration", "reseed") else "none"))
        cols["stage"].append(failed if status not in (None, "passed") and failed else stage)
        cols["score"].append(score if status == "passed" else None)
        cols["confirmed"].append(None if conf is None else int(conf))
    return {"kind": "runtimes", "prefix": "r", "group_name": "island", "run": run.name,
            "run_id": run.id, "metric": metric, "higher": higher, "nodes": cols}


def program_lineage(store: Store, run_id: int) -> dict[str, Any]:
    """The run's programs (and the seeds it uses) by parent, scored by their runtimes."""
    data = runtime_lineage(store, run_id)
    n = data["nodes"]
    sign = 1.0 if data["higher"] else -1.0
    by_rt = {rid: (st, sc) for rid, st, sc in zip(n["id"], n["status"], n["score"])}
    p, rs, rt = Program.__table__, RuntimeSlot.__table__, Runtime.__table__
    used = (select(rs.c.program_id).join(rt, rt.c.id == rs.c.runtime_id)
            .where(rt.c.run_id == run_id, rs.c.program_id.is_not(None)))
    with Session(store.engine) as s:
        progs = s.execute(select(p.c.id, p.c.parent_id, p.c.slot, p.c.operator)
                          .where(or_(p.c.run_id == run_id, p.c.id.in_(used)))
                          .order_by(p.c.id)).all()
        uses = s.execute(select(rs.c.program_id, rs.c.runtime_id)
                         .join(rt, rt.c.id == rs.c.runtime_id)
                         .where(rt.c.run_id == run_id, rs.c.program_id.is_not(None))).all()
    best: dict[int, float] = {}
    status: dict[int, str] = {}
    for pid, rid in uses:
        st, sc = by_rt.get(rid, ("none", None))
        if status.get(pid) != "passed":
            status[pid] = st
        if sc is not None and (pid not in best or sign * sc > sign * best[pid]):
            best[pid] = sc
    cols = _columns(KEYS)
    for pid, parent, slot, op in progs:
        for k, v in (("id", pid), ("parent", parent), ("second", None), ("group", slot),
                     ("gen", None), ("op", op), ("status", status.get(pid, "unused")),
                     ("stage", None), ("score", best.get(pid)), ("confirmed", None)):
            cols[k].append(v)
    return {**data, "kind": "programs", "prefix": "p", "group_name": "slot", "nodes": cols}
