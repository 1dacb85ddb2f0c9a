"""Benchmark the population database: inserts with lineage, leaderboard, deep ancestry.

Inserts N programs as C chains of N/C generations (each generation: a program whose parent
is the previous one, a runtime with a parent edge, and a passed bench evaluation; in bulk,
one transaction per chain, after timing --api-n generations through the public Store API,
three transactions each), then times the leaderboard of the run and the ancestry of a chain
tip (depth N/C, default 1,000) for runtimes and programs. SQLite always (a fresh file under
a temp dir); PostgreSQL too when --pg URL (or $SDS_TEST_PG_URL) is given, in a fresh schema.

    python scripts/bench_db.py                       # 10,000 programs, 10 chains of 1,000
    python scripts/bench_db.py --pg postgresql+psycopg://u:p@127.0.0.1:5432/db --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from sqlalchemy import func, insert, select, text

from population_db import Store, code_hash, spec_hash, unified_diff
from population_db.engine import scratch_schema
from population_db.models import Evaluation, Program, Runtime, RuntimeParent, RuntimeSlot

log = logging.getLogger("bench_db")


def populate_api(store: Store, n: int, seed: int) -> dict[str, Any]:
    """Insert one chain of `n` generations through the public API (3 transactions each)."""
    rng = random.Random(seed)
    run, _ = store.get_or_create_run(f"api-{uuid.uuid4().hex[:8]}", {"bench": True})
    prog_id = rt_id = None
    t0 = time.perf_counter()
    for g in range(n):
        code = f"# api gen {g}\ndef score(x):\n    return x * {rng.random()!r}\n"
        prog = store.add_program("scheduler", code, parent_id=prog_id, run_id=run.id,
                                 operator="seed" if g == 0 else "llm-diff")
        rt = store.add_runtime(run.id, {"slots": {"scheduler": {"program": prog.ref}}},
                               generation=g, operator=prog.operator,
                               parents=[(rt_id, "parent")] if rt_id else [])
        store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                             metrics={"tok_s": rng.uniform(100, 2000)}, duration_s=1.0)
        prog_id, rt_id = prog.id, rt.id
    return {"api_insert_s": time.perf_counter() - t0}


def populate_bulk(store: Store, n: int, chains: int, seed: int) -> dict[str, Any]:
    """Insert `n` programs as `chains` chains in bulk (one transaction per chain).

    Rows are the ones the API writes (diffs, spec hashes, slot rows, parent edges, a passed
    bench evaluation per runtime), built here so 30,000 rows do not take 30,000 commits.
    """
    rng = random.Random(seed)
    run, _ = store.get_or_create_run(f"bench-{uuid.uuid4().hex[:8]}", {"bench": True})
    depth = n // chains
    with store._read() as s:
        next_prog = (s.scalar(select(func.max(Program.id))) or 0) + 1
        next_rt = (s.scalar(select(func.max(Runtime.id))) or 0) + 1
    tips: list[tuple[int, int]] = []
    t0 = time.perf_counter()
    for c in range(chains):
        rows: dict[type, list[dict[str, Any]]] = {m: [] for m in (Program, Runtime, RuntimeSlot,
                                                                  RuntimeParent, Evaluation)}
        prev_code = None
        for g in range(depth):
            code = f"# chain {c} gen {g}\ndef score(x):\n    return x * {rng.random()!r}\n"
            pid, rid = next_prog, next_rt
            next_prog, next_rt = next_prog + 1, next_rt + 1
            spec = {"slots": {"scheduler": {"program": f"sha256:{code_hash(code)}"}}}
            op = "seed" if g == 0 else "llm-diff"
            rows[Program].append({
                "id": pid, "slot": "scheduler", "code": code, "code_hash": code_hash(code),
                "parent_id": pid - 1 if g else None, "operator": op, "run_id": run.id,
                "diff": unified_diff(prev_code, code, f"p{pid - 1}", "child") if g else None})
            rows[Runtime].append({"id": rid, "run_id": run.id, "spec": spec,
                                  "spec_hash": spec_hash(spec), "island": c % 4,
                                  "generation": g, "operator": op})
            rows[RuntimeSlot].append({"runtime_id": rid, "slot": "scheduler", "params": {},
                                      "program_ref": spec["slots"]["scheduler"]["program"],
                                      "program_id": pid})
            if g:
                rows[RuntimeParent].append({"child_id": rid, "parent_id": rid - 1,
                                            "role": "parent"})
            rows[Evaluation].append({"run_id": run.id, "runtime_id": rid, "stage": "bench",
                                     "status": "passed", "duration_s": 1.0, "attempt": 1,
                                     "metrics": {"tok_s": rng.uniform(100, 2000)},
                                     "artifacts": {}})
            prev_code = code
        tips.append((next_prog - 1, next_rt - 1))

        def _insert(s: Any, rows: dict = rows) -> None:
            for model, batch in rows.items():
                if batch:
                    s.execute(insert(model), batch)

        store._write(_insert)
        log.info("chain %d/%d inserted", c + 1, chains)
    if store.dialect == "postgresql":  # explicit ids: move the sequences past them
        def _seq(s: Any) -> None:
            for table in ("programs", "runtimes"):
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT max(id) FROM {table}))"))
        store._write(_seq)
    return {"run": run.id, "insert_s": time.perf_counter() - t0, "tips": tips, "depth": depth}


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls (ms) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def bench(url: str, n: int, chains: int, repeats: int, seed: int,
          api_n: int) -> dict[str, Any]:
    """All measurements on one database URL."""
    store = Store.open(url)
    try:
        api = populate_api(store, api_n, seed + 1)
        pop = populate_bulk(store, n, chains, seed)
        run, (tip_prog, tip_rt), depth = pop["run"], pop["tips"][0], pop["depth"]
        lb_ms, board = timed(lambda: store.leaderboard(run, limit=10), repeats)
        lb_all_ms, full = timed(lambda: store.leaderboard(run, limit=None), max(1, repeats // 4))
        anc_ms, anc = timed(lambda: store.ancestors(tip_rt), repeats)
        panc_ms, panc = timed(lambda: store.program_ancestors(tip_prog), repeats)
        assert len(board) == 10 and len(full) == n, (len(board), len(full))
        assert len(anc) == depth and len(panc) == depth, (len(anc), len(panc))
        return {"backend": store.dialect, "programs": n, "runtimes": n, "evaluations": n,
                "chain_depth": depth, "bulk_insert_s": round(pop["insert_s"], 2),
                "api_generations_per_s": round(api_n / api["api_insert_s"], 1),
                "leaderboard_top10_ms": round(lb_ms, 2), "leaderboard_all_ms": round(lb_all_ms, 2),
                "ancestors_runtime_ms": round(anc_ms, 2),
                "ancestors_program_ms": round(panc_ms, 2)}
    finally:
        store.close()


def fresh_schema(url: str) -> tuple[str, Any]:
    """A URL into a new PostgreSQL schema, and a function that drops it."""
    return scratch_schema(url, "bench")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="programs to insert (10000)")
    ap.add_argument("--chains", type=int, default=10, help="lineage chains (10: depth 1000)")
    ap.add_argument("--repeats", type=int, default=20, help="query repetitions (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-n", type=int, default=300,
                    help="generations also inserted one by one through the API, timed (300)")
    ap.add_argument("--pg", default=os.environ.get("SDS_TEST_PG_URL"),
                    help="PostgreSQL URL (default $SDS_TEST_PG_URL); omitted: SQLite only")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.n < args.chains or args.n % args.chains:
        ap.error(f"--n must be a positive multiple of --chains, got {args.n} and {args.chains}")
    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as d:
            results.append(bench(f"sqlite:///{d}/bench.db", args.n, args.chains, args.repeats,
                                 args.seed, args.api_n))
            log.info("%s", results[-1])
    if args.pg:
        url, drop = fresh_schema(args.pg)
        try:
            results.append(bench(url, args.n, args.chains, args.repeats, args.seed, args.api_n))
            log.info("%s", results[-1])
        finally:
            drop()
    cols = list(results[0])
    print("  ".join(cols))
    for r in results:
        print("  ".join(str(r[c]).ljust(len(c)) for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
