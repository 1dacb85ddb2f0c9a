"""`sds runs | leaderboard | lineage | show | diff` on a real database, through main()."""

from __future__ import annotations

import json
import random

import pytest

from evolve.cli import main
from evolve.cli.common import UsageError
from evolve.cli.db import parse_id
from population_db import Store


@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> dict:
    """A run with a three-generation lineage, programs, an LLM call and evaluations (read-only)."""
    rng = random.Random(random.getrandbits(64))
    url = f"sqlite:///{tmp_path_factory.mktemp('cli')}/cli.db"
    st = Store.open(url)
    run, _ = st.get_or_create_run("demo")
    prompt, reply = f"make it faster {rng.random()}", f"<<<SEARCH {rng.random()}"
    call = st.add_llm_call(run.id, "m", prompt, reply, 10, 20, 0.01, 1.0)
    k1, k2 = rng.randint(1, 10**6), rng.randint(1, 10**6)
    p1 = st.add_program("scheduler", f"def f():\n    return {k1}\n")
    p2 = st.add_program("scheduler", f"def f():\n    return {k2}\n", parent_id=p1.id,
                        operator="llm-diff", llm_call_id=call.id)
    norm = {"program": "seed:rmsnorm/torch_rms"}
    r1 = st.add_runtime(run.id, {"slots": {"scheduler": {"program": p1.ref}, "rmsnorm": norm}})
    r2 = st.add_runtime(run.id, {"slots": {"scheduler": {"program": p2.ref}, "rmsnorm": norm}},
                        generation=1, operator="llm-diff", parents=[(r1.id, "parent")])
    r3 = st.add_runtime(run.id, {"slots": {"scheduler": {"program": p2.ref}},
                                 "engine": {"block_size": 32}}, generation=2,
                        operator="assembly", parents=[(r2.id, "parent"), (r1.id, "second_parent")])
    scores = {r.id: rng.uniform(10, 1000) for r in (r1, r2, r3)}
    for rid, s in scores.items():
        st.add_evaluation(stage="bench", status="passed", runtime_id=rid, metrics={"tok_s": s})
    st.add_evaluation(stage="contract", status="failed", program_id=p2.id, error="Boom: x")
    st.close()
    return {"url": url, "scores": scores, "p": (p1, p2), "r": (r1, r2, r3), "k": (k1, k2),
            "prompt": prompt, "reply": reply}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_and_leaderboard(populated, capsys) -> None:
    db = ["--db", populated["url"]]
    code, out, _ = _run(capsys, "runs", *db, "--json")
    rows = json.loads(out)
    best = max(populated["scores"], key=populated["scores"].get)
    assert code == 0 and rows[0]["run"] == "demo" and rows[0]["best_runtime"] == f"r{best}"
    code, out, _ = _run(capsys, "leaderboard", "demo", *db, "--json", "--limit", "2")
    board = json.loads(out)
    want = sorted(populated["scores"], key=lambda i: -populated["scores"][i])[:2]
    assert [b["runtime"] for b in board] == [f"r{i}" for i in want]
    code, out, _ = _run(capsys, "leaderboard", "demo", *db)
    assert code == 0 and f"r{want[0]}" in out.splitlines()[2]


def test_lineage_tree_and_json(populated, capsys) -> None:
    r1, r2, r3 = populated["r"]
    db = ["--db", populated["url"]]
    code, out, _ = _run(capsys, "lineage", f"r{r3.id}", *db)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"r{r3.id} [assembly] gen 2")
    assert lines[1].startswith(f"  parent: r{r2.id} [llm-diff]")
    assert lines[2].startswith(f"    parent: r{r1.id} [seed]")
    assert any(ln.startswith(f"  second_parent: r{r1.id}") for ln in lines)
    assert f"tok_s {populated['scores'][r3.id]:.4g}" in lines[0]  # no objective: tok_s
    code, out, _ = _run(capsys, "lineage", f"r{r3.id}", *db, "--json")
    nodes = json.loads(out)
    assert {(n["id"], n["depth"], n["role"]) for n in nodes} == {
        (f"r{r3.id}", 0, "self"), (f"r{r2.id}", 1, "parent"), (f"r{r1.id}", 1, "second_parent"),
        (f"r{r1.id}", 2, "parent")}
    p1, p2 = populated["p"]
    code, out, _ = _run(capsys, "lineage", p2.code_hash[:8], *db)
    assert out.splitlines()[0].startswith(f"p{p2.id} [llm-diff]  contract failed")
    assert out.splitlines()[1].startswith(f"  parent: p{p1.id} [seed]")


def test_show_has_code_metrics_and_llm_exchange(populated, capsys) -> None:
    _, p2 = populated["p"]
    r1, r2, _ = populated["r"]
    db = ["--db", populated["url"]]
    code, out, _ = _run(capsys, "show", f"p{p2.id}", *db)
    assert code == 0 and f"return {populated['k'][1]}" in out
    assert populated["prompt"] in out and populated["reply"] in out and "Boom: x" in out
    code, out, _ = _run(capsys, "show", f"r{r2.id}", *db, "--json")
    d = json.loads(out)
    assert d["runtime"]["parents"] == [[r1.id, "parent"]]
    assert d["programs"]["scheduler"]["llm_call"]["prompt"] == populated["prompt"]
    assert d["evaluations"][0]["metrics"]["tok_s"] == pytest.approx(populated["scores"][r2.id])


def test_diff_programs_and_runtimes(populated, capsys) -> None:
    p1, p2 = populated["p"]
    r1, r2, r3 = populated["r"]
    k1, k2 = populated["k"]
    db = ["--db", populated["url"]]
    code, out, _ = _run(capsys, "diff", f"p{p1.id}", f"p{p2.id}", *db)
    assert code == 0 and f"-    return {k1}" in out and f"+    return {k2}" in out
    code, out, _ = _run(capsys, "diff", f"r{r1.id}", f"r{r3.id}", *db)
    assert '+    "block_size": 32' in out and f"+    return {k2}" in out
    assert f"--- r{r1.id}/rmsnorm" in out  # the seed slot dropped from r3
    code, out, _ = _run(capsys, "diff", f"r{r2.id}", f"r{r2.id}", *db, "--json")
    assert json.loads(out)["diff"] == ""


@pytest.mark.parametrize("argv", [
    ["lineage", "r999"], ["show", "p999"], ["show", "zz9"], ["leaderboard", "nope"],
    ["diff", "r1", "p1"], ["show", "e999"]])
def test_bad_ids_exit_2_with_one_line(populated, capsys, argv) -> None:
    code, out, err = _run(capsys, *argv, "--db", populated["url"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_bad_urls_exit_2(tmp_path, capsys) -> None:
    for url in (f"sqlite:///{tmp_path}/absent.db", "nosuch://x",
                "postgresql+psycopg://u:p@127.0.0.1:1/d"):
        code, out, err = _run(capsys, "runs", "--db", url)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (url, err)
    assert not (tmp_path / "absent.db").exists()


def test_parse_id_forms() -> None:
    assert parse_id("r12") == ("r", 12) and parse_id("p7") == ("p", 7)
    assert parse_id("sha256:ABCDEF12") == ("p", "abcdef12")
    with pytest.raises(UsageError, match="bad id .e5."):
        parse_id("e5")  # evaluations only where the verb allows them
    with pytest.raises(UsageError, match="bad id 'r'"):
        parse_id("r")


def test_lineage_scores_by_the_runs_objective_with_tok_s_alongside(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/obj.db"
    st = Store.open(url)
    run, _ = st.get_or_create_run("obj", {"selection": {"objectives": ["modeled_ratio:max"]}})
    r1 = st.add_runtime(run.id, {"slots": {}})
    r2 = st.add_runtime(run.id, {"slots": {}}, generation=1, operator="gp",
                        parents=[(r1.id, "parent")])
    rng = random.Random(random.getrandbits(64))
    vals = {r.id: (rng.uniform(0.9, 1.1), rng.uniform(100, 900)) for r in (r1, r2)}
    for rid, (ratio, tok) in vals.items():
        st.add_evaluation(stage="bench", status="passed", runtime_id=rid, run_id=run.id,
                          metrics={"modeled_ratio": ratio, "tok_s": tok})
    st.close()
    code, out, _ = _run(capsys, "lineage", f"r{r2.id}", "--db", url)
    first = out.splitlines()[0]
    assert code == 0
    assert f"modeled_ratio {vals[r2.id][0]:.4g}  tok_s {vals[r2.id][1]:.4g}" in first
    code, out, _ = _run(capsys, "lineage", f"r{r2.id}", "--db", url, "--metric", "tok_s")
    assert "modeled_ratio" not in out and f"tok_s {vals[r1.id][1]:.4g}" in out.splitlines()[1]


def test_lineage_says_how_each_child_was_made_and_its_unconfirmed_sim_score(tmp_path,
                                                                           capsys) -> None:
    url = f"sqlite:///{tmp_path}/how.db"
    st = Store.open(url)
    run, _ = st.get_or_create_run("how", {"selection": {"objectives": ["modeled_ratio:max"]}})
    r1 = st.add_runtime(run.id, {"slots": {}})
    r2 = st.add_runtime(run.id, {"slots": {}}, generation=1, operator="gp",
                        parents=[(r1.id, "parent")])
    r3 = st.add_runtime(run.id, {"slots": {}}, generation=2, operator="literal",
                        parents=[(r2.id, "parent")])
    ratio = random.Random(random.getrandbits(64)).uniform(1.01, 1.3)
    st.add_evaluation(stage="full", status="passed", runtime_id=r2.id, run_id=run.id,
                      metrics={"modeled_ratio": ratio, "confirmed": 0})  # sim only
    st.add_evaluation(stage="full", status="passed", runtime_id=r3.id, run_id=run.id,
                      metrics={"modeled_ratio": ratio * 1.1, "tok_s": 50.0, "confirmed": 1})
    st.add_event(run.id, "bandit", {"runtime": r2.id, "arm": "gp#scheduler.priority",
                                    "variation": "add_term",
                                    "note": "mut_add_term on priority: x + 0.5 * cached"})
    st.add_event(run.id, "bandit", {"runtime": r3.id, "arm": "literal#scheduler.priority",
                                    "note": "line 44: 0.5 -> 0.9"})
    st.close()
    code, out, _ = _run(capsys, "lineage", f"r{r3.id}", "--db", url)
    lines = out.splitlines()
    assert code == 0
    assert f"modeled_ratio {ratio * 1.1:.4g}  tok_s 50" in lines[0]  # confirmed: ranks
    assert "via literal#scheduler.priority" in lines[0] and "line 44: 0.5 -> 0.9" in lines[1]
    assert f"modeled_ratio {ratio:.4g} (sim, not confirmed)" in lines[2]
    assert "via gp#scheduler.priority/add_term" in lines[2]
    assert "x + 0.5 * cached" in lines[3]
    assert lines[4].strip().startswith(f"parent: r{r1.id} [seed]") and "via" not in lines[4]
    code, out, _ = _run(capsys, "lineage", f"r{r3.id}", "--db", url, "--json")
    nodes = {n["id"]: n for n in json.loads(out)}
    assert nodes[f"r{r2.id}"]["variation"] == "add_term"
    assert nodes[f"r{r2.id}"]["sim_score"] == pytest.approx(ratio)
