"""A run's population as the controller sees it, rebuilt from the database.

The database is the single source of truth: on start or resume the controller calls
`load_state`, which reads every runtime of the run and its `full` evaluation (one keyed row
per runtime: pending while queued or running, then its final status and aggregate metrics).
A runtime with no final `full` row was interrupted and is queued again; one with a final row
is never evaluated twice. Migrants and reseeded copies carry no evaluation of their own: they
are scored by the runtime they copy (their `parent` edge).

Two identities: a runtime's (`runtime_key`: every slot's code hash and params, and the
engine params), by which a run never evaluates the same runtime twice, and its behaviour's
(`behaviour_key`: the engine's work counters on each workload), by which a child that does
exactly what an existing member does is told apart as not novel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evolve.selection import Member
from evolve.store_protocol import RunStore
from population_db.models import Evaluation, LLMCall, Runtime, RuntimeParent
from population_db.records import EvaluationRecord, RuntimeRecord
from runtime_modules.slots import RuntimeSpec, code_hash, program_path

FULL = "full"  # the stage name of the controller's one evaluation row per runtime
PROPOSE = "propose"  # stage of rejected / duplicate proposals
COPY_OPERATORS = ("migration", "reseed")  # runtimes scored by the runtime they copy
FINAL = ("passed", "failed", "timeout", "crashed", "rejected")


def run_runtimes(store: RunStore, run_id: int) -> list[RuntimeRecord]:
    """Every runtime of a run with its parent edges, oldest first."""
    with Session(store.engine) as s:
        rows = s.scalars(select(Runtime).where(Runtime.run_id == run_id)
                         .order_by(Runtime.id)).all()
        edges: dict[int, list[tuple[int, str]]] = {r.id: [] for r in rows}
        q = (select(RuntimeParent.child_id, RuntimeParent.parent_id, RuntimeParent.role)
             .join(Runtime, Runtime.id == RuntimeParent.child_id)
             .where(Runtime.run_id == run_id).order_by(RuntimeParent.parent_id))
        for child, parent, role in s.execute(q):
            edges[child].append((parent, role))
        return [RuntimeRecord.from_row(r, tuple(edges[r.id])) for r in rows]


def run_evaluations(store: RunStore, run_id: int, stage: str | None = None) -> list[EvaluationRecord]:
    """A run's evaluations (optionally of one stage), in id order."""
    with Session(store.engine) as s:
        q = select(Evaluation).where(Evaluation.run_id == run_id)
        if stage is not None:
            q = q.where(Evaluation.stage == stage)
        return [EvaluationRecord.from_row(r) for r in s.scalars(q.order_by(Evaluation.id))]


def llm_usage(store: RunStore, run_id: int) -> dict[str, float]:
    """LLM calls, tokens in/out and dollars of a run."""
    with Session(store.engine) as s:
        n, tin, tout, usd = s.execute(
            select(func.count(LLMCall.id), func.coalesce(func.sum(LLMCall.tokens_in), 0),
                   func.coalesce(func.sum(LLMCall.tokens_out), 0),
                   func.coalesce(func.sum(LLMCall.cost_usd), 0.0))
            .where(LLMCall.run_id == run_id)).one()
    return {"calls": int(n), "tokens_in": int(tin), "tokens_out": int(tout), "usd": float(usd)}


def slot_code(store: RunStore, slot: str, ref: str) -> str:
    """The source of a program reference (seed files from disk, sha256 from the store)."""
    if ref.startswith("sha256:"):
        return store.get_program(ref).code
    return program_path(slot, ref).read_text(encoding="utf-8")


def slot_hashes(store: RunStore, spec: dict[str, Any], slots: list[str],
                cache: dict[str, str]) -> set[tuple[str, str]]:
    """(slot, code hash) of the target slots' programs in `spec`."""
    out = set()
    for slot in slots:
        choice = spec.get("slots", {}).get(slot)
        if not choice:
            continue
        ref = choice["program"] if isinstance(choice, dict) else choice
        if ref.startswith("sha256:"):
            out.add((slot, ref[7:]))
            continue
        if ref not in cache:
            cache[ref] = code_hash(slot_code(store, slot, ref))
        out.add((slot, cache[ref]))
    return out


@dataclass
class RunState:
    """What the controller needs to go on: members, queue, counters, dedupe sets."""

    members: dict[int, Member] = field(default_factory=dict)
    full_rows: dict[int, EvaluationRecord] = field(default_factory=dict)  # runtime -> row
    to_evaluate: list[tuple[int, int]] = field(default_factory=list)  # (runtime id, eval id)
    unqueued: list[int] = field(default_factory=list)  # runtimes with no full row yet
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)  # final `full` rows
    proposal_status: dict[str, int] = field(default_factory=dict)  # rejected / duplicate
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    proposals: int = 0
    seen_specs: set[str] = field(default_factory=set)  # runtime_key of every runtime bred
    ref_hashes: dict[str, str] = field(default_factory=dict)  # program ref -> code hash
    behaviours: dict[str, int] = field(default_factory=dict)  # behaviour_key -> first runtime
    edges: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)  # parents
    history: list[tuple[int, int]] = field(default_factory=list)  # (runtime id, eval id) done
    seed_runtime_id: int | None = None
    device_seconds: float = 0.0
    gpu_seconds: float = 0.0


def spec_key(spec: dict[str, Any]) -> str:
    """Identity of a runtime spec within a run (canonical JSON hash)."""
    return RuntimeSpec.from_dict(spec).fingerprint()


def runtime_key(store: RunStore, spec: dict[str, Any], ref_hashes: dict[str, str]) -> str:
    """Identity of a whole runtime: `spec_key` with every program ref replaced by its code's
    hash, so a seed named `seed:...` and the same code stored as `sha256:...` are one."""
    d = RuntimeSpec.from_dict(spec).to_dict()
    for slot, choice in d["slots"].items():
        ref = choice["program"]
        if ref.startswith("sha256:"):
            continue
        if ref not in ref_hashes:
            try:
                ref_hashes[ref] = code_hash(slot_code(store, slot, ref))
            except (OSError, ValueError):  # a ref that cannot be read stays itself
                ref_hashes[ref] = ref
        h = ref_hashes[ref]
        choice["program"] = h if h == ref else f"sha256:{h}"
    return spec_key(d)


WORK_PREFIX = "work_"  # the engine's work counters (steps, scheduled tokens, cache hits, ...)


def behaviour_key(metrics: dict[str, Any] | None) -> str | None:
    """What a runtime did: its work counters per workload (None when none were recorded).

    Two runtimes with equal keys scheduled and evicted alike on every workload: their
    fitness can differ only by measurement noise. The baseline's counters are left out.
    """
    per = (metrics or {}).get("workloads")
    if not isinstance(per, dict) or not per:
        per = {"": metrics or {}}
    counters = {wl: {k: v for k, v in (m or {}).items()
                     if k.startswith(WORK_PREFIX) and not k.endswith("_baseline")}
                for wl, m in per.items() if isinstance(m, dict)}
    if not any(counters.values()):
        return None
    return json.dumps(counters, sort_keys=True, default=str)


def record_result(state: RunState, runtime_id: int, row: EvaluationRecord) -> None:
    """Fold one final `full` row into the state."""
    state.full_rows[runtime_id] = row
    state.done += 1
    state.by_status[row.status] = state.by_status.get(row.status, 0) + 1
    if row.status != "passed":
        stage = (row.artifacts or {}).get("failed_stage") or "unknown"
        state.failures_by_stage[stage] = state.failures_by_stage.get(stage, 0) + 1
    dur = float(row.duration_s or 0.0)
    state.device_seconds += dur
    if (row.device or "").startswith("cuda"):
        state.gpu_seconds += dur
    m = state.members.get(runtime_id)
    if m is not None:
        m.passed = row.status == "passed"
        m.metrics = dict(row.metrics or {})
    if row.status == "passed":
        key = behaviour_key(row.metrics)
        if key is not None:
            state.behaviours.setdefault(key, runtime_id)
    state.history.append((runtime_id, row.id))


def load_state(store: RunStore, run_id: int) -> RunState:
    """Rebuild a run's state from the database (fresh runs give an empty state)."""
    st = RunState()
    runtimes = run_runtimes(store, run_id)
    full = run_evaluations(store, run_id, FULL)
    rows_by_rt: dict[int, list[EvaluationRecord]] = {}
    for r in full:
        rows_by_rt.setdefault(r.runtime_id, []).append(r)
    for rt in runtimes:
        parent = next((p for p, role in rt.parents if role == "parent"), None)
        m = Member(rt.id, rt.island, rt.spec, rt.generation, rt.operator,
                   score_from=parent if rt.operator in COPY_OPERATORS else None)
        st.members[rt.id] = m
        st.edges[rt.id] = tuple(rt.parents)
        if rt.operator == "seed" and st.seed_runtime_id is None:
            st.seed_runtime_id = rt.id
        if rt.operator in COPY_OPERATORS:
            continue
        st.seen_specs.add(runtime_key(store, rt.spec, st.ref_hashes))
        rows = rows_by_rt.get(rt.id, [])
        final = [r for r in rows if r.status in FINAL]
        if not final:
            open_rows = [r for r in rows if r.status in ("pending", "running")]
            if open_rows:
                st.to_evaluate.append((rt.id, open_rows[0].id))
            else:
                st.unqueued.append(rt.id)
    # Final rows in the order they finished, so stagnation history replays faithfully.
    finals = sorted((r for r in full if r.status in FINAL),
                    key=lambda r: (r.finished_at or r.created_at, r.id))
    for r in finals:
        if r.runtime_id in st.members and r.runtime_id not in st.full_rows:
            record_result(st, r.runtime_id, r)
    for m in st.members.values():
        if m.score_from is not None and m.score_from in st.members:
            src = st.members[m.score_from]
            m.passed, m.metrics = src.passed, dict(src.metrics)
    proposals = run_evaluations(store, run_id, PROPOSE)
    st.proposals = len(proposals) + sum(1 for rt in runtimes
                                        if rt.operator not in COPY_OPERATORS + ("seed",))
    for r in proposals:
        st.proposal_status[r.status] = st.proposal_status.get(r.status, 0) + 1
    return st
