"""The leaderboard ranks an evolution run by each runtime's aggregated `full` row."""
# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import random

from test_db_fixtures import db_url, store  # noqa: F401  (fixtures)

from population_db import Store

SPEC = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}, "engine": {}}


def test_full_row_outranks_single_workload_bench_rows(store: Store):
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run(f"lb-{rng.random()}", {})
    want = {}
    for i in range(5):
        rt = store.add_runtime(run.id, {**SPEC, "engine": {"max_num_seqs": i + 1}})
        # two workloads' bench rows, the later one deliberately the higher...
        for wl in ("a", "b"):
            store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                                 run_id=run.id, workload=wl,
                                 metrics={"tok_s": rng.uniform(100, 200)})
        if i < 4:  # ...then the controller's aggregate, lower than either
            want[rt.id] = rng.uniform(1, 99)
            store.add_evaluation(stage="full", status="passed", runtime_id=rt.id,
                                 run_id=run.id, metrics={"tok_s": want[rt.id]})
        else:  # a runtime scored by bench alone keeps its latest bench score
            want[rt.id] = store.evaluations(runtime_id=rt.id)[-1].metrics["tok_s"]
    failed = store.add_runtime(run.id, {**SPEC, "engine": {"max_num_seqs": 99}})
    store.add_evaluation(stage="full", status="failed", runtime_id=failed.id, run_id=run.id,
                         metrics={"tok_s": 1e9}, error="correctness")
    board = store.leaderboard(run.name, limit=None)
    assert [r.runtime.id for r in board] == sorted(want, key=want.get, reverse=True)
    assert [r.score for r in board] == sorted(want.values(), reverse=True)


def test_cli_leaderboard_ranks_by_the_runs_own_objective(tmp_path, capsys):
    import json

    from evolve.cli import main

    url = f"sqlite:///{tmp_path}/sds.db"
    store = Store.open(url)
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("obj", {"selection": {"objectives": ["cost:min"]}})
    costs = {}
    for i in range(4):
        rt = store.add_runtime(run.id, {**SPEC, "engine": {"max_num_seqs": i + 1}})
        costs[rt.id] = rng.uniform(1, 10)
        store.add_evaluation(stage="full", status="passed", runtime_id=rt.id, run_id=run.id,
                             metrics={"cost": costs[rt.id], "tok_s": rng.uniform(1, 10)})
    capsys.readouterr()
    assert main(["leaderboard", "obj", "--db", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["runtime"] for r in rows] == [f"r{i}" for i in sorted(costs, key=costs.get)]
    assert all("tok_s" in r for r in rows)  # wall-clock throughput is always shown
    assert main(["leaderboard", "obj", "--db", url, "--json", "--metric", "tok_s"]) == 0
    by_tok = json.loads(capsys.readouterr().out)
    assert [r["tok_s"] for r in by_tok] == sorted((r["tok_s"] for r in by_tok), reverse=True)
