"""A synthetic evolution run, written straight into a database: for the UI's tests, its
screenshots and its benchmark, and for trying `sds ui` without running a search first.

The rows are the ones a real run writes (population/controller): seed programs stored by
name, children's programs with their diff and LLM call, runtimes with parent edges (a
crossover's second parent too), island and generation, slot-level `static`/`contract` rows
on programs, `sim` rows per workload, `correctness` and `bench` rows for confirmed children,
one keyed `full` row per runtime with per-workload metrics, rejected and duplicate
proposals, migrations, bandit and session events. Scores drift like a search's (each child
its parent's, times a small random factor), so curves and trees look like real ones. Bulk
inserts, one transaction: 10,000 runtimes take seconds, not the minutes 70,000 commits would.

    >>> store = Store.open("sqlite:///demo.db")
    >>> run_id = make_run(store, "demo", runtimes=500, seed=1)
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from population_db import Store, code_hash, spec_hash, unified_diff
from population_db.engine import run_write
from population_db.models import (
    Evaluation,
    Event,
    LLMCall,
    Program,
    Run,
    Runtime,
    RuntimeParent,
    RuntimeSlot,
)
from runtime_modules.programs import program_path

SLOTS = {"scheduler": "seed:scheduler/policy", "cache_policy": "seed:cache_policy/aware"}
WORKLOADS = ("shared-prefix", "trace:scripts/traces/chat.jsonl")
ARMS = ("gp", "literal", "llm-diff@model-a", "llm-diff@model-b", "crossover", "migration")
ARM_WEIGHTS = (0.28, 0.25, 0.17, 0.12, 0.12, 0.06)
FAILS = (("static", "rejected", "SyntaxError: invalid syntax (line 44)"),
         ("contract", "failed", "budget exceeded: scheduled 300 tokens > max_num_batched 256"),
         ("sim", "timeout", "sim: modeled clock passed 4x the seed's"),
         ("correctness", "failed", "token 17 of request 3 differs from transformers"))
_RETURN = re.compile(r"(# EVOLVE-BLOCK-START\n\s*return )([^\n]*)")
_FLOAT = re.compile(r"\d+\.\d+")


def _mutate(code: str, rng: random.Random, tag: int) -> str:
    """Change one EVOLVE-BLOCK expression: perturb a literal, or add a weighted term."""
    blocks = list(_RETURN.finditer(code))
    m = rng.choice(blocks)
    expr = m.group(2)
    lits = list(_FLOAT.finditer(expr))
    if lits and rng.random() < 0.6:
        lit = rng.choice(lits)
        new = f"{float(lit.group()) * rng.uniform(0.5, 1.5):.4g}"
        expr = expr[:lit.start()] + new + expr[lit.end():]
    else:
        expr = f"{expr} + {rng.uniform(-0.05, 0.05):.4f}"
    out = code[:m.start(2)] + expr + code[m.end(2):]
    return out if out != code else out + f"\n# variant {tag}\n"


def _ids(s: Session) -> dict[type, int]:
    """The next free id of each table the run writes with explicit ids."""
    return {m: (s.scalar(select(func.max(m.id))) or 0) + 1
            for m in (Program, Runtime, Evaluation, LLMCall, Event)}


def _prompt(code: str, metrics: dict[str, Any]) -> str:
    """The LLM prompt recorded for an llm-diff child of `code`."""
    return ("You improve one module of an LLM inference engine.\nObjective: modeled_ratio "
            f"(max). Parent metrics: {metrics}\nParent code:\n```python\n{code[:1500]}\n```\n"
            "Answer with SEARCH/REPLACE blocks inside the EVOLVE-BLOCKs only.")


def _config(runtimes: int, islands: int) -> dict[str, Any]:
    """The run config a real run of this shape would have stored."""
    return {"selection": {"objectives": ["modeled_ratio:max"]},
            "budget": {"max_evaluations": runtimes, "max_llm_usd": 2.0,
                       "max_wall_seconds": 12 * runtimes},
            "operators": {"gp": {"weight": 1.0}, "literal": {"weight": 1.0},
                          "llm-diff": {"weight": 1.0}, "crossover": {"weight": 0.5}},
            "llm": {"models": {"model-a": 1.0, "model-b": 1.0}},
            "evaluation": {"workloads": list(WORKLOADS),
                           "stages": ["static", "contract", "sim", "correctness", "bench"]},
            "islands": {"count": islands}, "target": {"slots": list(SLOTS)}}


def _metrics(rng: random.Random, score: float) -> dict[str, Any]:
    """A `full` row's sim metrics for `score`: per workload, and their mean."""
    per = {}
    for k, wl in enumerate(WORKLOADS):
        r = score * (rng.uniform(0.97, 1.03) if score != 1.0 else 1.0)
        per[wl] = {"modeled_ratio": r, "modeled_tok_s": 9000.0 * r * (1 + k),
                   "modeled_ttft_p99_s": 2.5 / r, "work_steps": int(4000 / r),
                   "work_tokens": 210_000 + k * 1000,
                   "work_prefix_hits": int(3000 * r), "work_preemptions": rng.randrange(40)}
    agg = {k: sum(p[k] for p in per.values()) / len(per) for k in per[WORKLOADS[0]]}
    return {**agg, "fidelity": "sim", "workloads": per}


class _Rows:
    """A run's rows, collected with the ids they will get and inserted in bulk at the end."""

    def __init__(self, s: Session, run_id: int, rng: random.Random, t0: dt.datetime):
        self.run_id, self.rng, self.clock = run_id, rng, t0
        self.nxt = _ids(s)
        self.rows: dict[type, list[dict[str, Any]]] = {m: [] for m in (
            Program, Runtime, RuntimeSlot, RuntimeParent, Evaluation, LLMCall, Event)}
        self.codes: dict[int, str] = {}
        self.stored = dict(s.execute(select(Program.code_hash, Program.id)).all())
        self.hashes = set(self.stored)

    def tick(self, sec: float) -> dt.datetime:
        """Advance the run's clock by `sec` seconds; the new time."""
        self.clock += dt.timedelta(seconds=sec)
        return self.clock

    def new(self, table: type, **kw: Any) -> int:
        """Queue a row of `table`; its id."""
        i = self.nxt[table]
        self.nxt[table] += 1
        self.rows[table].append({"id": i, **kw})
        return i

    def ev(self, stage: str, status: str, at: dt.datetime, runtime_id: int | None = None,
           program_id: int | None = None, metrics: dict | None = None,
           error: str | None = None, artifacts: dict | None = None,
           workload: str | None = None) -> int:
        """Queue an evaluation row; its id."""
        return self.new(Evaluation, run_id=self.run_id, runtime_id=runtime_id,
                        program_id=program_id, stage=stage, status=status,
                        metrics=metrics or {}, error=error, artifacts=artifacts or {},
                        workload=workload, device="cpu", duration_s=self.rng.uniform(0.2, 3.0),
                        attempt=1, created_at=at, started_at=at, finished_at=at)

    def event(self, kind: str, at: dt.datetime, data: dict[str, Any]) -> int:
        """Queue an event row; its id."""
        return self.new(Event, run_id=self.run_id, kind=kind, data=data, created_at=at)

    def program(self, slot: str, code: str, parent: int | None, op: str, call: int | None,
                at: dt.datetime, name_: str | None = None) -> int:
        """Queue a program (a seed already stored is reused, a repeated code made unique)."""
        h = code_hash(code)
        if op == "seed" and h in self.stored:  # seeds are stored once, shared by runs
            self.codes[self.stored[h]] = code
            return self.stored[h]
        while h in self.hashes:
            code += "\n# again\n"
            h = code_hash(code)
        self.hashes.add(h)
        diff = (unified_diff(self.codes[parent], code, f"p{parent}", "child")
                if parent is not None else None)
        pid = self.new(Program, slot=slot, code=code, code_hash=h, name=name_, parent_id=parent,
                       operator=op, diff=diff, llm_call_id=call, run_id=self.run_id,
                       created_at=at)
        self.codes[pid] = code
        return pid

    def runtime(self, progs: dict[str, int], island: int, gen: int, op: str,
                parents: list[tuple[int, str]], at: dt.datetime) -> int:
        """Queue a runtime with its slot rows and parent edges; its id."""
        spec = {"slots": {sl: {"program": f"sha256:{code_hash(self.codes[p])}", "params": {}}
                          for sl, p in progs.items()}, "engine": {}}
        rid = self.new(Runtime, run_id=self.run_id, spec=spec, spec_hash=spec_hash(spec),
                       island=island, generation=gen, operator=op, created_at=at)
        for sl, p in progs.items():
            self.rows[RuntimeSlot].append({"runtime_id": rid, "slot": sl,
                                           "program_ref": spec["slots"][sl]["program"],
                                           "program_id": p, "params": {}})
        for p, role in parents:
            self.rows[RuntimeParent].append({"child_id": rid, "parent_id": p, "role": role})
        return rid

    def llm_call(self, model: str, code: str, score: float, at: dt.datetime) -> int:
        """Queue the LLM call behind an llm-diff child of `code`; its id."""
        tin, tout = self.rng.randrange(2000, 6000), self.rng.randrange(150, 900)
        return self.new(LLMCall, run_id=self.run_id, model=model,
                        prompt=_prompt(code, {"modeled_ratio": score}),
                        response="<<<<<<< SEARCH\n...\n=======\n...\n>>>>>>> REPLACE",
                        tokens_in=tin, tokens_out=tout, cost_usd=(tin + 4 * tout) * 1e-7,
                        latency_s=self.rng.uniform(2, 20), error=None, created_at=at)

    def insert(self, s: Session) -> None:
        """Insert the queued rows, parents' tables first."""
        for model in (LLMCall, Program, Runtime, RuntimeSlot, RuntimeParent, Evaluation, Event):
            if self.rows[model]:
                s.execute(insert(model), self.rows[model])
        if s.get_bind().dialect.name == "postgresql":  # explicit ids leave sequences behind
            for model in (Program, Runtime, Evaluation, LLMCall, Event):
                t = model.__tablename__
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                               f"(SELECT MAX(id) FROM {t}))"))


class _Member(NamedTuple):
    """A runtime of the synthetic population."""

    progs: dict[str, int]  # slot -> program id
    score: float
    gen: int
    ok: bool  # passed its evaluation


class _Search:
    """The synthetic search's population: its members, each island's runtimes and best."""

    def __init__(self, root: _Member, root_id: int, islands: int):
        self.root, self.islands = root_id, islands
        self.members = {root_id: root}
        self.by_island: dict[int, list[int]] = {i: [root_id] for i in range(islands)}
        self.best = [1.0] * islands

    def pool(self, island: int) -> list[int]:
        """The island's latest 60 runtimes that passed (the seed when there are none)."""
        return [r for r in self.by_island[island][-60:] if self.members[r].ok] or [self.root]


def _seed(w: _Rows, seed_code: dict[str, str], runtimes: int, islands: int) -> _Search:
    """Write the start event, the seed programs and runtime and its evaluation."""
    t0 = w.clock
    w.event("start", t0, {"config_file": "scripts/quickstart.yaml", "max_evaluations": runtimes})
    seed_progs = {sl: w.program(sl, seed_code[sl], None, "seed", None, t0, ref)
                  for sl, ref in SLOTS.items()}
    root = w.runtime(seed_progs, 0, 0, "seed", [], t0)
    m0 = _metrics(w.rng, 1.0)
    w.ev("full", "passed", w.tick(2.0), runtime_id=root,
         metrics={**m0, "confirmed": 1, "confirm_tok_s": 212.0, "tok_s": 212.0})
    return _Search(_Member(seed_progs, 1.0, 0, True), root, islands)


def _crossover(w: _Rows, pop: _Search, parent: int
               ) -> tuple[dict[str, int], str, list[tuple[int, str]]] | None:
    """A parent's programs with one slot's taken from another; None when nothing changed."""
    pprogs = pop.members[parent].progs
    other = w.rng.choice(pop.pool(w.rng.randrange(pop.islands)))
    sl = w.rng.choice(list(SLOTS))
    progs = dict(pprogs)
    progs[sl] = pop.members[other].progs[sl]
    parents = [(parent, "parent")]
    if other != parent:
        parents.append((other, "second_parent"))
    return None if progs == pprogs else (progs, sl, parents)


def _mutation(w: _Rows, pop: _Search, parent: int, arm: str, at: dt.datetime
              ) -> tuple[dict[str, int], str, list[tuple[int, str]]] | None:
    """A parent's programs with one slot's code mutated; None for a rejected proposal."""
    pprogs, pscore = pop.members[parent].progs, pop.members[parent].score
    op = arm.split("@")[0]
    sl = w.rng.choice(list(SLOTS))
    call = None
    if op == "llm-diff":
        call = w.llm_call(arm.split("@")[1], w.codes[pprogs[sl]], pscore, at)
    if w.rng.random() < 0.05:  # a rejected proposal, recorded on the parent's program
        w.ev("propose", "rejected", at, program_id=pprogs[sl],
             error=f"{op}: edit outside the EVOLVE-BLOCKs",
             artifacts={"operator": op, "arm": arm, "llm_calls": [call] if call else []})
        return None
    progs = dict(pprogs)
    progs[sl] = w.program(sl, _mutate(w.codes[pprogs[sl]], w.rng, w.nxt[Program]),
                          pprogs[sl], op, call, at)
    return progs, sl, [(parent, "parent")]


def _evaluate(w: _Rows, rid: int, program: int, pscore: float, best: list[float],
              isl: int) -> float | None:
    """Write a child's evaluations: a stage's failure (None) or sim scores (its score)."""
    # a static or contract failure is recorded on `program`, the one the child changed;
    # a score above the island's best is confirmed on the engine (correctness, bench)
    done = w.tick(w.rng.uniform(1.0, 8.0))
    fail = w.rng.random()
    if fail < 0.22:
        stage, st, err = FAILS[min(int(fail / 0.055), 3)]
        if stage in ("static", "contract"):
            w.ev(stage, st, done, program_id=program, error=err)
        else:
            w.ev(stage, st, done, runtime_id=rid, error=err, workload=WORKLOADS[0])
        w.ev("full", st, done, runtime_id=rid, error=f"{stage}: {err}",
             artifacts={"failed_stage": stage, "workload": WORKLOADS[0],
                        "stage_artifacts": {"step": w.rng.randrange(100)}})
        return None
    # small steps that level off, as gains on one workload do (no runaway product)
    score = 1.0 + 0.97 * (pscore - 1.0) + w.rng.gauss(0.004, 0.012)
    m = _metrics(w.rng, score)
    for wl in WORKLOADS:
        w.ev("sim", "passed", done, runtime_id=rid, metrics=m["workloads"][wl], workload=wl)
    conf = 0
    if score > best[isl]:
        best[isl] = score
        w.ev("correctness", "passed", done, runtime_id=rid, workload="chat-cpu")
        tok = 212.0 * w.rng.uniform(0.9, 1.1)
        w.ev("bench", "passed", done, runtime_id=rid, metrics={"tok_s": tok},
             workload="chat-cpu")
        m.update({"confirm_tok_s": tok})
        conf = 1
    w.ev("full", "passed", done, runtime_id=rid, metrics={**m, "confirmed": conf})
    return score


def _step(w: _Rows, pop: _Search) -> None:
    """Write one proposal's rows: a migration, a rejected proposal, or an evaluated child."""
    isl = w.rng.randrange(pop.islands)
    pool = pop.pool(isl)
    parent = max(w.rng.sample(pool, min(3, len(pool))), key=lambda r: pop.members[r].score)
    pm = pop.members[parent]
    arm = w.rng.choices(ARMS, ARM_WEIGHTS)[0]
    at = w.tick(w.rng.uniform(1.0, 6.0))
    if arm == "migration":
        dest = (isl + 1) % pop.islands
        rid = w.runtime(pm.progs, dest, pm.gen, "migration", [(parent, "parent")], at)
        pop.members[rid] = pm
        pop.by_island[dest].append(rid)
        w.event("migration", at, {"from": isl, "to": dest, "runtime": rid})
        return
    op = arm.split("@")[0]
    child = (_crossover(w, pop, parent) if op == "crossover"
             else _mutation(w, pop, parent, arm, at))
    if child is None:
        return
    progs, sl, parents = child
    rid = w.runtime(progs, isl, pm.gen + 1, op, parents, at)
    w.event("bandit", at, {"runtime": rid, "arm": arm})
    pop.by_island[isl].append(rid)
    score = _evaluate(w, rid, progs[sl], pm.score, pop.best, isl)
    pop.members[rid] = _Member(progs, 0.0 if score is None else score, pm.gen + 1,
                               score is not None)


def make_run(store: Store, name: str, runtimes: int = 200, seed: int = 0, islands: int = 4,
             status: str = "finished", start: dt.datetime | None = None) -> int:
    """Write a synthetic run of `runtimes` runtimes (the seed included); returns its id."""
    rng = random.Random(seed)
    seed_code = {s: program_path(s, ref).read_text(encoding="utf-8") for s, ref in SLOTS.items()}
    t0 = start or dt.datetime(2026, 11, 30, 9, 0, 0)
    config = _config(runtimes, islands)

    def _go(s: Session) -> int:
        run = Run(name=name, config=config, status=status, seed=seed, created_at=t0,
                  updated_at=t0)
        s.add(run)
        s.flush()
        w = _Rows(s, run.id, rng, t0)
        pop = _seed(w, seed_code, runtimes, islands)
        while len(pop.members) < runtimes:
            _step(w, pop)
        if status in ("finished", "stopped"):
            w.event("session_end", w.clock, {"wall_s": (w.clock - t0).total_seconds(),
                                             "reason": "budget"})
        w.insert(s)
        return run.id

    return run_write(store.engine, _go)
