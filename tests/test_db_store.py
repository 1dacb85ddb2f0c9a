"""The Store returns what was put in, on SQLite and (when available) PostgreSQL."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import random
import threading
import uuid

import pytest
from test_db_fixtures import db_url, store  # noqa: F401  (fixtures)

from population_db import NotFound, ProgramRecord, Store, StoreError, code_hash


def _code(rng: random.Random) -> str:
    return f"def f(x):\n    return x * {rng.random()!r}\n"


def _spec(prog: ProgramRecord, rng: random.Random) -> dict:
    return {"slots": {prog.slot: {"program": prog.ref, "params": {"k": rng.randint(1, 99)}},
                      "rmsnorm": {"program": "seed:rmsnorm/torch_rmsnorm"}},
            "engine": {"max_num_seqs": rng.choice([8, 16, 32])}}


def test_runs_create_resume_and_status(store: Store) -> None:
    name = f"run-{uuid.uuid4().hex[:6]}"
    cfg = {"budget": {"max_evaluations": random.randint(1, 1000)}}
    run, created = store.get_or_create_run(name, cfg, seed=7, environment={"gpu": "none"})
    again, created2 = store.get_or_create_run(name, {"other": 1})
    assert created and not created2
    assert again == run and again.config == cfg and again.seed == 7
    assert store.get_run(run.id) == run == store.get_run(name)
    assert store.set_run_status(name, "running").status == "running"
    assert [r.name for r in store.list_runs()] == [name]
    with pytest.raises(NotFound, match="no run 'nope'"):
        store.get_run("nope")
    with pytest.raises(ValueError, match="run status"):
        store.set_run_status(run.id, "exploded")


def test_programs_dedupe_diff_and_lookup(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("r")
    seed_code, child_code = _code(rng), _code(rng)
    seed = store.add_program("rmsnorm", seed_code, name="torch")
    child = store.add_program("rmsnorm", child_code, parent_id=seed.id, operator="llm-diff",
                              run_id=run.id)
    dup = store.add_program("rmsnorm", child_code, parent_id=seed.id, operator="literal")
    assert seed.is_new and child.is_new and not dup.is_new
    assert dup.id == child.id and dup.operator == "llm-diff"
    assert child.code_hash == code_hash(child_code) and child.parent_id == seed.id
    assert f"-    return x * {seed_code.split('* ')[1].strip()}" in child.diff
    assert f"+    return x * {child_code.split('* ')[1].strip()}" in child.diff
    assert seed.diff is None
    assert store.get_program(child.id) == store.program_by_hash(child.code_hash)
    assert store.get_program(child.ref).id == child.id
    assert store.get_program(child.code_hash[:10]).id == child.id
    assert store.program_by_hash("0" * 64) is None
    with pytest.raises(NotFound):
        store.get_program(10_000)
    with pytest.raises(NotFound, match="at least 6"):
        store.get_program("abc")
    with pytest.raises(StoreError, match="slot 'rmsnorm'"):
        store.add_program("scheduler", child_code)
    with pytest.raises(NotFound, match="parent"):
        store.add_program("rmsnorm", _code(rng), parent_id=10_000)


def test_runtimes_parents_slots_and_evaluations(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("r")
    prog = store.add_program("scheduler", _code(rng))
    a = store.add_runtime(run.id, _spec(prog, rng))
    b = store.add_runtime(run.id, _spec(prog, rng), island=1)
    c = store.add_runtime(run.id, _spec(prog, rng), island=1, generation=3, operator="assembly",
                          parents=[(a.id, "parent"), (b.id, "second_parent")])
    got = store.get_runtime(c.id)
    assert got == c and got.spec["engine"] == c.spec["engine"]
    assert set(got.parents) == {(a.id, "parent"), (b.id, "second_parent")}
    progs = store.runtime_programs(c.id)
    assert progs["scheduler"] == prog and progs["rmsnorm"] == "seed:rmsnorm/torch_rmsnorm"
    assert [r.id for r in store.list_runtimes(run.id, island=1)] == [b.id, c.id]
    with pytest.raises(ValueError, match="role"):
        store.add_runtime(run.id, _spec(prog, rng), parents=[(a.id, "uncle")])
    with pytest.raises(NotFound):
        store.add_runtime(run.id, _spec(prog, rng), parents=[(99_999, "parent")])
    with pytest.raises(TypeError, match="slots"):
        store.add_runtime(run.id, {"engine": {}})

    metrics = {"tok_s": rng.uniform(10, 1000), "ttft_ms": rng.uniform(1, 50)}
    ev = store.add_evaluation(stage="bench", status="passed", runtime_id=c.id, metrics=metrics,
                              artifacts={"log": "ok"}, workload="w", workload_hash="h" * 8,
                              device="cpu", environment={"torch": "x"}, duration_s=1.5)
    assert ev.run_id == run.id and ev.metrics == metrics and ev.artifacts == {"log": "ok"}
    store.add_evaluation(stage="contract", status="failed", runtime_id=a.id, error="boom")
    store.add_evaluation(stage="contract", status="failed", runtime_id=b.id, error="bang")
    assert store.counts(run.id) == {("bench", "passed"): 1, ("contract", "failed"): 2}
    assert [e.error for e in store.evaluations(run=run.id, stage="contract")] == ["boom", "bang"]
    assert store.get_evaluation(ev.id) == ev
    with pytest.raises(ValueError, match="status"):
        store.add_evaluation(stage="bench", status="great", runtime_id=a.id)


def test_program_evaluation_cache_by_hash(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    prog = store.add_program("decode_attention", _code(rng))
    assert store.cached_program_evaluation(prog.code_hash, "contract") is None
    store.add_evaluation(stage="contract", status="running", program_id=prog.id)
    assert store.cached_program_evaluation(prog.code_hash, "contract") is None
    first = store.add_evaluation(stage="contract", status="failed", program_id=prog.id,
                                 error="mismatch")
    hit = store.cached_program_evaluation(prog.ref, "contract")
    assert hit == first
    assert store.cached_program_evaluation(prog.code_hash, "static") is None


def test_leaderboard_uses_latest_passed_bench(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("lb")
    other, _ = store.get_or_create_run("other")
    prog = store.add_program("scheduler", _code(rng))
    scores = {}
    for _ in range(12):
        rt = store.add_runtime(run.id, _spec(prog, rng))
        store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                             metrics={"tok_s": rng.uniform(1, 100)})
        scores[rt.id] = rng.uniform(1, 100)  # the newer passed bench wins
        store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                             metrics={"tok_s": scores[rt.id]})
        # a later failure or another stage must not change the score
        store.add_evaluation(stage="bench", status="failed", runtime_id=rt.id,
                             metrics={"tok_s": 1e9})
        store.add_evaluation(stage="quick_bench", status="passed", runtime_id=rt.id,
                             metrics={"tok_s": 1e9})
    unscored = store.add_runtime(run.id, _spec(prog, rng))
    o = store.add_runtime(other.id, _spec(prog, rng))
    store.add_evaluation(stage="bench", status="passed", runtime_id=o.id, metrics={"tok_s": 1e9})

    board = store.leaderboard("lb", limit=5)
    want = sorted(scores, key=lambda i: -scores[i])[:5]
    assert [r.runtime.id for r in board] == want
    assert [r.rank for r in board] == [1, 2, 3, 4, 5]
    assert board[0].score == pytest.approx(scores[want[0]])
    assert unscored.id not in [r.runtime.id for r in store.leaderboard("lb", limit=None)]
    worst = store.leaderboard("lb", limit=1, higher_is_better=False)[0]
    assert worst.runtime.id == min(scores, key=scores.get)
    assert store.best_runtime(run.id).runtime.id == want[0]
    assert store.best_runtime(run.id, metric="missing") is None
    got = store.scores(run.id, list(scores))
    assert got == pytest.approx(scores)


def test_llm_calls_and_events(store: Store) -> None:
    run, _ = store.get_or_create_run("ev")
    tin, tout = random.randint(1, 5000), random.randint(1, 5000)
    call = store.add_llm_call(run.id, "gpt-x", "prompt text", "reply text", tin, tout,
                              cost_usd=0.0123, latency_s=1.25)
    assert store.get_llm_call(call.id) == call and call.tokens_in == tin
    prog = store.add_program("rmsnorm", _code(random.Random(random.getrandbits(64))), operator="llm-rewrite",
                             llm_call_id=call.id)
    assert store.get_program(prog.id).llm_call_id == call.id
    store.add_event(run.id, "resume", {"finished": 3})
    store.add_event(run.id, "stagnation", {"island": 1})
    store.add_event(run.id, "resume", {"finished": 9})
    assert [e.data["finished"] for e in store.events(run.id, kind="resume")] == [3, 9]
    assert [e.kind for e in store.events(run.id)] == ["resume", "stagnation", "resume"]
    summary = store.run_summary("ev")
    assert summary["llm_calls"] == 1 and summary["cost_usd"] == pytest.approx(0.0123)
    assert summary["programs"] == 0  # the program was not tagged with the run


def test_one_store_shared_by_threads(store: Store) -> None:
    run, _ = store.get_or_create_run("threads")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        rng = random.Random(k)
        try:
            for _ in range(15):
                p = store.add_program("scheduler", _code(rng), run_id=run.id)
                rt = store.add_runtime(run.id, _spec(p, rng), island=k)
                store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                                     metrics={"tok_s": rng.random()})
                store.leaderboard(run.id, limit=3)
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert store.counts(run.id) == {("bench", "passed"): 60}
    assert len(store.leaderboard(run.id, limit=None)) == 60
