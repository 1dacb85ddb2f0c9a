"""A session killed without a trace still counts toward `max_wall_seconds` on resume: up to
its last write, recorded once as a `session_lost` event."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator
from test_controller_run import _cfg

from evolve.launch import launch
from population_db import Store
from population_db.models import Event, utcnow


def _killed_session(store, run_id, started_s_ago, last_write_s_ago):
    """What a SIGKILLed session leaves: its start event and a last write, no session_end."""
    now = utcnow()
    store._write(lambda s: s.add_all([
        Event(run_id=run_id, kind="start", data={},
              created_at=now - dt.timedelta(seconds=started_s_ago)),
        Event(run_id=run_id, kind="migration", data={},
              created_at=now - dt.timedelta(seconds=last_write_s_ago))]))


def _launch(tmp_path, cfg):
    return launch(cfg, name="t", db=f"sqlite:///{tmp_path}/sds.db", harness=FakeHarness(),
                  operators={"fake": FakeOperator()}, runs_csv=tmp_path / "runs.csv",
                  progress=False)


def test_killed_session_counts_toward_the_wall_budget(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/sds.db")
    cfg = _cfg(budget={"max_evaluations": 6, "max_wall_seconds": 30})
    run, _ = store.get_or_create_run("t", config=cfg.raw, seed=cfg.seed)
    _killed_session(store, run.id, started_s_ago=100, last_write_s_ago=40)
    out, _ = _launch(tmp_path, cfg)
    assert out.reason == "max_wall_seconds" and out.evaluations == 0  # 60 s already spent
    (lost,) = store.events(run.id, "session_lost")
    assert 59.0 <= lost.data["wall_s"] <= 61.0
    # a larger budget goes on; the lost session is counted once, not again on each resume
    cfg2 = _cfg(budget={"max_evaluations": 6, "max_wall_seconds": 1000})
    out2, summary = _launch(tmp_path, cfg2)
    assert out2.reason == "max_evaluations", out2
    assert len(store.events(run.id, "session_lost")) == 1
    ends = store.events(run.id, "session_end")
    assert len(ends) == 2
    assert summary["wall_s"] >= 60.0 + sum(e.data["wall_s"] for e in ends) - 1e-6
