"""Lineage comes back in one recursive query, whatever the depth, on both backends."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from test_db_fixtures import db_url, store  # noqa: F401  (fixtures)

from population_db import ROLES, Store


@contextmanager
def count_statements(st: Store) -> Iterator[list[str]]:
    """Collect the SQL statements (not BEGIN/COMMIT) the store's engine executes."""
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, executemany) -> None:
        if not statement.strip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    event.listen(st.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(st.engine, "before_cursor_execute", before)


def test_thousand_generation_chain_in_one_query(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("chain")
    depth = 1000
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}}
    ids = [store.add_runtime(run.id, spec, generation=0).id]
    for g in range(1, depth + 1):
        ids.append(store.add_runtime(run.id, spec, generation=g, operator="llm-diff",
                                     parents=[(ids[-1], "parent")]).id)
    tip = ids[-1]
    with count_statements(store) as stmts:
        chain = store.ancestors(tip)
    assert len(stmts) == 1, stmts
    assert "RECURSIVE" in stmts[0].upper()
    assert [e.depth for e in chain] == list(range(depth + 1))
    assert [e.node.id for e in chain] == ids[::-1]
    assert [e.node.generation for e in chain] == list(range(depth, -1, -1))
    assert chain[0].role == "self" and chain[0].via_id is None
    assert all(e.via_id == ids[-1 - e.depth + 1] for e in chain[1:])
    assert chain[-1].node.parents == ()  # the seed

    k = rng.randrange(1, depth)
    with count_statements(store) as stmts:
        below = store.descendants(ids[k])
    assert len(stmts) == 1
    assert [e.node.id for e in below] == ids[k:]
    assert [e.node.id for e in store.ancestors(tip, max_depth=7)] == ids[::-1][:8]


def test_program_chain_in_one_query(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    progs = [store.add_program("rmsnorm", f"X = {rng.random()!r}\n")]
    for _ in range(60):
        progs.append(store.add_program("rmsnorm", f"X = {rng.random()!r}\n",
                                       parent_id=progs[-1].id, operator="literal"))
    with count_statements(store) as stmts:
        chain = store.program_ancestors(progs[-1].id)
    assert len(stmts) == 1
    assert [e.node for e in chain] == progs[::-1]
    assert all(e.node.diff for e in chain[:-1]) and chain[-1].node.diff is None
    kids = store.program_descendants(progs[30].id)
    assert [e.node.id for e in kids] == [p.id for p in progs[30:]]


def test_dag_roles_and_depths(store: Store) -> None:
    run, _ = store.get_or_create_run("dag")
    spec = {"slots": {}}
    a = store.add_runtime(run.id, spec)
    b = store.add_runtime(run.id, spec)
    insp = store.add_runtime(run.id, spec)
    c = store.add_runtime(run.id, spec, parents=[(a.id, "parent"), (b.id, "second_parent"),
                                                 (insp.id, "inspiration")])
    d = store.add_runtime(run.id, spec, parents=[(c.id, "parent"), (a.id, "second_parent")])
    got = {(e.depth, e.role, e.via_id, e.node.id) for e in store.ancestors(d.id)}
    assert got == {(0, "self", None, d.id), (1, "parent", d.id, c.id),
                   (1, "second_parent", d.id, a.id), (2, "parent", c.id, a.id),
                   (2, "second_parent", c.id, b.id)}
    with_insp = {(e.role, e.node.id) for e in store.ancestors(d.id, roles=ROLES)}
    assert ("inspiration", insp.id) in with_insp
    tip = store.ancestors(d.id)[0].node
    assert set(tip.parents) == {(c.id, "parent"), (a.id, "second_parent")}
    down = {(e.depth, e.node.id) for e in store.descendants(a.id)}
    assert down == {(0, a.id), (1, c.id), (1, d.id), (2, d.id)}


def test_best_path_from_seed_to_best(store: Store) -> None:
    rng = random.Random(random.getrandbits(64))
    run, _ = store.get_or_create_run("bp")
    spec = {"slots": {}}
    chain = [store.add_runtime(run.id, spec)]
    for _ in range(5):
        chain.append(store.add_runtime(run.id, spec, parents=[(chain[-1].id, "parent")]))
    side = store.add_runtime(run.id, spec, parents=[(chain[2].id, "parent")])
    vals = sorted(rng.uniform(1, 100) for _ in range(6))
    for rt, v in zip(chain, vals):
        store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                             metrics={"tok_s": v})
    store.add_evaluation(stage="bench", status="passed", runtime_id=side.id,
                         metrics={"tok_s": vals[0] / 2})
    path = store.best_path(run.id)
    assert [r.id for r, _ in path] == [r.id for r in chain]
    assert [s for _, s in path] == vals
