"""Databases for the `sds ui` tests: a synthetic 200-runtime run, a running one, and a small
run written through the Store API whose code, prompt, reply and error hold markup that must
render as text. Also tests the synthetic run itself against the store's own queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from evolve.ui.sample import make_run
from population_db import Store

HOSTILE = '</textarea></pre><script>window.__xss = 1; alert("xss")</script>'
SEED = f'''"""A scheduler seed with hostile text: {HOSTILE}"""

def priority(wait_steps: float) -> float:
    # EVOLVE-BLOCK-START
    return wait_steps
    # EVOLVE-BLOCK-END
'''


@dataclass(frozen=True)
class UIData:
    """Ids of what the UI tests open."""

    url: str
    run: int  # the synthetic 200-runtime run
    live_run: int  # a second synthetic run, status running
    xss_run: int
    xss_runtime: int
    xss_program: int
    xss_eval: int
    xss_call: int


def build(path: Path | str, runtimes: int = 200, seed: int = 7) -> UIData:
    """Write the test database at `path` (a file, or a database URL; seeded: the same rows
    every time)."""
    url = path if isinstance(path, str) and "://" in path else f"sqlite:///{path}"
    store = Store.open(url)
    try:
        run = make_run(store, "search-a", runtimes=runtimes, seed=seed)
        live = make_run(store, "search-b", runtimes=60, seed=seed + 1, status="running")
        xrun, _ = store.get_or_create_run('xss-<script>alert("run")</script>',
                                          {"selection": {"objectives": ["tok_s:max"]}})
        seed_p = store.add_program("scheduler", SEED, operator="seed", name="hostile-seed")
        call = store.add_llm_call(xrun.id, "model-<b>x</b>",
                                  f"prompt with {HOSTILE}", f"reply </textarea>{HOSTILE}",
                                  tokens_in=1234, tokens_out=56, cost_usd=0.0123, latency_s=3.2)
        child_code = SEED.replace("return wait_steps", "return wait_steps * 2.0  # <script>")
        child = store.add_program("scheduler", child_code, parent_id=seed_p.id,
                                  operator="llm-diff", llm_call_id=call.id, run_id=xrun.id)
        r0 = store.add_runtime(xrun.id, {"slots": {"scheduler": {"program": seed_p.ref}}},
                               operator="seed")
        store.add_evaluation(stage="bench", status="passed", runtime_id=r0.id,
                             metrics={"tok_s": 100.0})
        r1 = store.add_runtime(xrun.id, {"slots": {"scheduler": {"program": child.ref}}},
                               generation=1, operator="llm-diff", parents=[(r0.id, "parent")])
        ev = store.add_evaluation(stage="correctness", status="failed", runtime_id=r1.id,
                                  error=f"token 3 differs {HOSTILE}",
                                  artifacts={"note": HOSTILE, "llm_calls": [call.id]})
        return UIData(url, run, live, xrun.id, r1.id, child.id, ev.id, call.id)
    finally:
        store.close()


@pytest.fixture(scope="session")
def ui_data(tmp_path_factory: pytest.TempPathFactory) -> UIData:
    """The UI test database, once per session (tests add rows only to the live run)."""
    return build(tmp_path_factory.mktemp("ui") / "sds.db")


def test_synthetic_run_reads_back_through_the_store(ui_data: UIData) -> None:
    store = Store.open(ui_data.url, create=False)
    rts = store.list_runtimes(ui_data.run)
    assert len(rts) == 200
    ops = {r.operator for r in rts}
    assert {"seed", "gp", "literal", "llm-diff", "crossover", "migration"} <= ops
    assert any(role == "second_parent" for r in rts for _, role in r.parents)
    best = store.best_runtime(ui_data.run, "modeled_ratio")
    assert best is not None and best.metrics["confirmed"] == 1
    # every child's program diff is against its parent's code
    chain = store.ancestors(best.runtime.id)
    assert chain[-1].node.operator == "seed" and len(chain) > 3
    counts = store.counts(ui_data.run)
    assert counts[("full", "passed")] > 100 and counts[("full", "failed")] > 0
