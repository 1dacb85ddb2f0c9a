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
from typing import Any

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
    return {m: (s.scalar(select(func.max(m.id))) or 0) + 1
            for m in (Program, Runtime, Evaluation, LLMCall, Event)}


def _prompt(code: str, metrics: dict[str, Any]) -> str:
    return ("You improve one module of an LLM inference engine.\nObjective: modeled_ratio "
            f"(max). Parent metrics: {metrics}\nParent code:\n```python\n{code[:1500]}\n```\n"
            "Answer with SEARCH/REPLACE blocks inside the EVOLVE-BLOCKs only.")


def make_run(store: Store, name: str, runtimes: int = 200, seed: int = 0, islands: int = 4,
             status: str = "finished", start: dt.datetime | None = None) -> int:
    """Write a synthetic run of `runtimes` runtimes (the seed included); returns its id."""
    rng = random.Random(seed)
    seed_code = {s: program_path(s, ref).read_text(encoding="utf-8") for s, ref in SLOTS.items()}
    t0 = start or dt.datetime(2026, 11, 30, 9, 0, 0)
    config = {"selection": {"objectives": ["modeled_ratio:max"]},
              "budget": {"max_evaluations": runtimes, "max_llm_usd": 2.0,
                         "max_wall_seconds": 12 * runtimes},
              "operators": {"gp": {"weight": 1.0}, "literal": {"weight": 1.0},
                            "llm-diff": {"weight": 1.0}, "crossover": {"weight": 0.5}},
              "llm": {"models": {"model-a": 1.0, "model-b": 1.0}},
              "evaluation": {"workloads": list(WORKLOADS),
                             "stages": ["static", "contract", "sim", "correctness", "bench"]},
              "islands": {"count": islands}, "target": {"slots": list(SLOTS)}}

    def _go(s: Session) -> int:
        run = Run(name=name, config=config, status=status, seed=seed, created_at=t0,
                  updated_at=t0)
        s.add(run)
        s.flush()
        nxt = _ids(s)
        rows: dict[type, list[dict[str, Any]]] = {m: [] for m in (
            Program, Runtime, RuntimeSlot, RuntimeParent, Evaluation, LLMCall, Event)}
        clock = [t0]

        def tick(sec: float) -> dt.datetime:
            clock[0] += dt.timedelta(seconds=sec)
            return clock[0]

        def new(table: type, **kw: Any) -> int:
            i = nxt[table]
            nxt[table] += 1
            rows[table].append({"id": i, **kw})
            return i

        def ev(stage: str, status: str, at: dt.datetime, runtime_id: int | None = None,
               program_id: int | None = None, metrics: dict | None = None,
               error: str | None = None, artifacts: dict | None = None,
               workload: str | None = None) -> int:
            return new(Evaluation, run_id=run.id, runtime_id=runtime_id, program_id=program_id,
                       stage=stage, status=status, metrics=metrics or {}, error=error,
                       artifacts=artifacts or {}, workload=workload, device="cpu",
                       duration_s=rng.uniform(0.2, 3.0), attempt=1, created_at=at,
                       started_at=at, finished_at=at)

        codes: dict[int, str] = {}
        stored = dict(s.execute(select(Program.code_hash, Program.id)).all())
        hashes = set(stored)

        def program(slot: str, code: str, parent: int | None, op: str, call: int | None,
                    at: dt.datetime, name_: str | None = None) -> int:
            h = code_hash(code)
            if op == "seed" and h in stored:  # seeds are stored once, shared by runs
                codes[stored[h]] = code
                return stored[h]
            while h in hashes:
                code += "\n# again\n"
                h = code_hash(code)
            hashes.add(h)
            diff = (unified_diff(codes[parent], code, f"p{parent}", "child")
                    if parent is not None else None)
            pid = new(Program, slot=slot, code=code, code_hash=h, name=name_, parent_id=parent,
                      operator=op, diff=diff, llm_call_id=call, run_id=run.id, created_at=at)
            codes[pid] = code
            return pid

        def runtime(progs: dict[str, int], island: int, gen: int, op: str,
                    parents: list[tuple[int, str]], at: dt.datetime) -> int:
            spec = {"slots": {sl: {"program": f"sha256:{code_hash(codes[p])}", "params": {}}
                              for sl, p in progs.items()}, "engine": {}}
            rid = new(Runtime, run_id=run.id, spec=spec, spec_hash=spec_hash(spec),
                      island=island, generation=gen, operator=op, created_at=at)
            for sl, p in progs.items():
                rows[RuntimeSlot].append({"runtime_id": rid, "slot": sl,
                                          "program_ref": spec["slots"][sl]["program"],
                                          "program_id": p, "params": {}})
            for p, role in parents:
                rows[RuntimeParent].append({"child_id": rid, "parent_id": p, "role": role})
            return rid

        def metrics(score: float) -> dict[str, Any]:
            per = {}
            for k, wl in enumerate(WORKLOADS):
                r = score * (rng.uniform(0.97, 1.03) if score != 1.0 else 1.0)
                per[wl] = {"modeled_ratio": r, "modeled_tok_s": 9000.0 * r * (1 + k),
                           "modeled_ttft_p99_s": 2.5 / r, "work_steps": int(4000 / r),
                           "work_tokens": 210_000 + k * 1000,
                           "work_prefix_hits": int(3000 * r), "work_preemptions": rng.randrange(40)}
            agg = {k: sum(p[k] for p in per.values()) / len(per) for k in per[WORKLOADS[0]]}
            return {**agg, "fidelity": "sim", "workloads": per}

        def event(kind: str, at: dt.datetime, data: dict[str, Any]) -> int:
            return new(Event, run_id=run.id, kind=kind, data=data, created_at=at)

        event("start", t0, {"config_file": "scripts/quickstart.yaml",
                            "max_evaluations": runtimes})
        seed_progs = {sl: program(sl, seed_code[sl], None, "seed", None, t0, ref)
                      for sl, ref in SLOTS.items()}
        root = runtime(seed_progs, 0, 0, "seed", [], t0)
        m0 = metrics(1.0)
        ev("full", "passed", tick(2.0), runtime_id=root,
           metrics={**m0, "confirmed": 1, "confirm_tok_s": 212.0, "tok_s": 212.0})
        members = {root: (seed_progs, 1.0, 0, True)}  # runtime -> (programs, score, gen, ok)
        by_island: dict[int, list[int]] = {i: [root] for i in range(islands)}
        best = [1.0] * islands
        while len(members) < runtimes:
            isl = rng.randrange(islands)
            pool = [r for r in by_island[isl][-60:] if members[r][3]] or [root]
            parent = max(rng.sample(pool, min(3, len(pool))), key=lambda r: members[r][1])
            pprogs, pscore, pgen, _ok = members[parent]
            arm = rng.choices(ARMS, ARM_WEIGHTS)[0]
            at = tick(rng.uniform(1.0, 6.0))
            if arm == "migration":
                dest = (isl + 1) % islands
                rid = runtime(pprogs, dest, pgen, "migration", [(parent, "parent")], at)
                members[rid] = members[parent]
                by_island[dest].append(rid)
                event("migration", at, {"from": isl, "to": dest, "runtime": rid})
                continue
            op = arm.split("@")[0]
            parents = [(parent, "parent")]
            progs = dict(pprogs)
            if op == "crossover":
                other = rng.choice([r for r in by_island[rng.randrange(islands)][-60:]
                                    if members[r][3]] or [root])
                sl = rng.choice(list(SLOTS))
                progs[sl] = members[other][0][sl]
                if other != parent:
                    parents.append((other, "second_parent"))
                if progs == pprogs:
                    continue
            else:
                sl = rng.choice(list(SLOTS))
                call = None
                if op == "llm-diff":
                    tin, tout = rng.randrange(2000, 6000), rng.randrange(150, 900)
                    call = new(LLMCall, run_id=run.id, model=arm.split("@")[1],
                               prompt=_prompt(codes[pprogs[sl]], {"modeled_ratio": pscore}),
                               response="<<<<<<< SEARCH\n...\n=======\n...\n>>>>>>> REPLACE",
                               tokens_in=tin, tokens_out=tout, cost_usd=(tin + 4 * tout) * 1e-7,
                               latency_s=rng.uniform(2, 20), error=None, created_at=at)
                if rng.random() < 0.05:  # a rejected proposal, recorded on the parent's program
                    ev("propose", "rejected", at, program_id=pprogs[sl],
                       error=f"{op}: edit outside the EVOLVE-BLOCKs",
                       artifacts={"operator": op, "arm": arm, "llm_calls": [call] if call else []})
                    continue
                progs[sl] = program(sl, _mutate(codes[pprogs[sl]], rng, nxt[Program]),
                                    pprogs[sl], op, call, at)
            gen = pgen + 1
            rid = runtime(progs, isl, gen, op, parents, at)
            event("bandit", at, {"runtime": rid, "arm": arm})
            by_island[isl].append(rid)
            done = tick(rng.uniform(1.0, 8.0))
            fail = rng.random()
            if fail < 0.22:
                stage, st, err = FAILS[min(int(fail / 0.055), 3)]
                if stage in ("static", "contract"):
                    ev(stage, st, done, program_id=progs[sl], error=err)
                else:
                    ev(stage, st, done, runtime_id=rid, error=err, workload=WORKLOADS[0])
                ev("full", st, done, runtime_id=rid, error=f"{stage}: {err}",
                   artifacts={"failed_stage": stage, "workload": WORKLOADS[0],
                              "stage_artifacts": {"step": rng.randrange(100)}})
                members[rid] = (progs, 0.0, gen, False)
                continue
            # small steps that level off, as gains on one workload do (no runaway product)
            score = 1.0 + 0.97 * (pscore - 1.0) + rng.gauss(0.004, 0.012)
            m = metrics(score)
            for wl in WORKLOADS:
                ev("sim", "passed", done, runtime_id=rid, metrics=m["workloads"][wl], workload=wl)
            conf = 0
            if score > best[isl]:
                best[isl] = score
                ev("correctness", "passed", done, runtime_id=rid, workload="chat-cpu")
                tok = 212.0 * rng.uniform(0.9, 1.1)
                ev("bench", "passed", done, runtime_id=rid, metrics={"tok_s": tok},
                   workload="chat-cpu")
                m.update({"confirm_tok_s": tok})
                conf = 1
            ev("full", "passed", done, runtime_id=rid, metrics={**m, "confirmed": conf})
            members[rid] = (progs, score, gen, True)
        if status in ("finished", "stopped"):
            event("session_end", clock[0], {"wall_s": (clock[0] - t0).total_seconds(),
                                            "reason": "budget"})
        for model in (LLMCall, Program, Runtime, RuntimeSlot, RuntimeParent, Evaluation, Event):
            if rows[model]:
                s.execute(insert(model), rows[model])
        if s.get_bind().dialect.name == "postgresql":  # explicit ids leave sequences behind
            for model in (Program, Runtime, Evaluation, LLMCall, Event):
                t = model.__tablename__
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                               f"(SELECT MAX(id) FROM {t}))"))
        return run.id

    return run_write(store.engine, _go)
