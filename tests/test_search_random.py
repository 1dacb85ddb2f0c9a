"""Random search, the baseline: every child is bred from the seed alone with the same
operators by weight; `sds status` shows how operators were chosen; the search-vs-random
script's curves and paired comparison."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator

from evolve.cli import main
from evolve.config import ConfigError, config_from_dict
from evolve.launch import launch
from evolve.population import FULL, run_evaluations, run_runtimes
from population_db import Store

ROOT = Path(__file__).resolve().parents[1]


def _cfg(method: str, budget: int = 16, **over):
    return config_from_dict({
        "target": {"slots": ["scheduler", "cache_policy"]},
        "operators": {"fake": 3, "assemble": 1}, "islands": {"count": 2},
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": budget}, "search": {"method": method, **over},
        "concurrency": {"max_proposals": 2, "max_evaluations": 2},
        "seed": random.randrange(1000)}, "random.yaml")


def _run(tmp_path, method: str, name: str, budget: int = 16):
    from evolve.operators.assemble import AssembleOperator

    db = f"sqlite:///{tmp_path}/r.db"
    out, _ = launch(_cfg(method, budget), name=name, db=db,
                          harness=FakeHarness(fail_rate=0.1),
                          operators={"fake": FakeOperator(), "assemble": AssembleOperator()},
                          runs_csv=None, progress=False)
    return out, db


def test_random_breeds_every_child_from_the_seed(tmp_path):
    out, db = _run(tmp_path, "random", "rnd")
    store = Store.open(db)
    assert out.evaluations == 16
    rts = run_runtimes(store, out.run_id)
    seed = next(r.id for r in rts if r.operator == "seed")
    children = [r for r in rts if r.operator not in ("seed", "migration", "reseed")]
    assert len(children) == 15
    for r in children:
        assert r.parents == ((seed, "parent"),) and r.generation == 1, r
    # assemble of the seed with itself never makes a child: its proposals are rejections
    props = run_evaluations(store, out.run_id, "propose")
    assert all(r.artifacts["parent_runtime"] == seed for r in props)
    crossed = [r for r in props if r.artifacts["arm"] == "assemble"]
    assert all(r.status == "rejected" and "same spec" in r.error for r in crossed)


def test_evolve_breeds_from_its_children(tmp_path):
    """The same fakes under `evolve`: the contrast that shows the random branch is taken."""
    out, db = _run(tmp_path, "evolve", "evo", budget=20)
    rts = run_runtimes(Store.open(db), out.run_id)
    assert any(r.generation >= 2 for r in rts)


def test_random_takes_no_bandit():
    with pytest.raises(ConfigError, match=r"search.bandit .*random.* got true"):
        _cfg("random", bandit=True)
    assert not _cfg("random").search.uses_bandit() and _cfg("evolve").search.uses_bandit()
    assert not _cfg("evolve", bandit=False).search.uses_bandit()
    with pytest.raises(ConfigError, match=r"search.method must be one of"):
        _cfg("hillclimb")


def test_status_shows_the_operator_choice(tmp_path, capsys):
    _run(tmp_path, "evolve", "evo")
    capsys.readouterr()
    assert main(["status", "evo", "--db", f"sqlite:///{tmp_path}/r.db", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["operator_choice"]
    assert s["method"] == "evolve" and s["bandit"] is True
    arms = {a["arm"]: a for a in s["arms"]}
    assert set(arms) == {"fake", "assemble"} and arms["fake"]["prior"] == 0.75
    assert sum(a["pulls"] for a in arms.values()) >= 15  # every child and rejection settled
    assert abs(sum(a["probability"] for a in arms.values()) - 1.0) < 1e-9
    assert main(["status", "evo", "--db", f"sqlite:///{tmp_path}/r.db"]) == 0
    text = capsys.readouterr().out
    assert "evolve / bandit (Thompson)" in text and "p(next)" in text


def _script():
    spec = importlib.util.spec_from_file_location("svr", ROOT / "scripts" / "search_vs_random.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_search_vs_random_curves_and_comparison(tmp_path):
    svr = _script()
    out, db = _run(tmp_path, "evolve", "svr-evolve-0")
    curve = svr.best_so_far(Store.open(db), out.run_id, "tok_s", 1.0)
    rows = run_evaluations(Store.open(db), out.run_id, FULL)
    assert len(curve) == len(rows) == 16
    assert all(b is None or a is None or b >= a for a, b in itertools.pairwise(curve))
    assert curve[-1] == max(r.metrics["tok_s"] for r in rows if r.status == "passed")
    finals = {("evolve", 0): 1.2, ("random", 0): 1.0, ("evolve", 1): 1.0,
              ("random", 1): 1.5, ("evolve", 2): 1.3, ("random", 2): None}
    res = svr.compare(finals, 1.0)
    assert res == {"median": {"evolve": 1.2, "random": 1.25}, "wins": 1, "pairs": 2}
    assert svr.compare(finals, -1.0)["wins"] == 1  # minimising: 1.0 < 1.5 only
    svr.write_csv(tmp_path / "c.csv", {("evolve", 0): curve, ("random", 0): [None, 2.0]})
    got = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert got[0].keys() == {"method", "seed", "evaluation", "best"} and len(got) == 18
    assert got[-1] == {"method": "random", "seed": "0", "evaluation": "2", "best": "2"}
    over = svr.overrides("random", 3, 50, ["a.b=1"])
    assert over[0] == "a.b=1" and "seed=3" in over and "search.method=random" in over
    assert "stagnation.window=null" in over and "budget.max_wall_seconds=null" in over
