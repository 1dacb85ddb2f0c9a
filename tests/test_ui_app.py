"""`sds ui` without a browser: every page and JSON route, 404s, read-only, escaping, the
lineage data against the store's own lineage, and the verb's bad-input exits."""

# ruff: noqa: F811  (pytest fixtures imported from test_ui_fixtures are parameters here)

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the ui extra is not installed (pip install -e '.[ui]')")
pytest.importorskip("waitress", reason="the ui extra is not installed (pip install -e '.[ui]')")

from flask.testing import FlaskClient
from test_db_fixtures import fresh_pg_url, needs_pg
from test_ui_fixtures import UIData, build, ui_data  # noqa: F401

from evolve.cli import main
from evolve.ui.app import create_app
from evolve.ui.db import open_readonly
from evolve.ui.lineage import runtime_lineage
from population_db import Store


@pytest.fixture(scope="module")
def client(ui_data: UIData) -> FlaskClient:
    return create_app(open_readonly(ui_data.url)).test_client()


def _pages(d: UIData) -> list[str]:
    return ["/", f"/run/{d.run}", f"/run/{d.run}/lineage", f"/run/{d.run}/lineage?kind=programs",
            f"/runtime/{d.xss_runtime}", f"/program/{d.xss_program}",
            f"/evaluation/{d.xss_eval}", f"/compare?run={d.run}&run={d.live_run}",
            f"/api/run/{d.run}", f"/api/run/{d.run}/lineage",
            f"/api/run/{d.run}/lineage?kind=programs", f"/api/compare?run={d.run}",
            f"/compare.csv?run={d.run}&run={d.live_run}", "/static/lineage.js",
            "/static/pygments.css"]


def test_every_page_renders_with_a_strict_csp(client: FlaskClient, ui_data: UIData) -> None:
    for url in _pages(ui_data):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    html = client.get("/").text
    assert "search-a" in html and "modeled_ratio" in html
    assert "<script>" not in re.sub(r'<script src="/static/[a-z]+\.js"></script>', "", html)


def test_no_route_writes_and_none_accepts_other_methods(client: FlaskClient,
                                                         ui_data: UIData) -> None:
    for url in _pages(ui_data):
        for method in ("post", "put", "delete", "patch"):
            assert getattr(client, method)(url).status_code == 405, (method, url)
    rules = {m for rule in client.application.url_map.iter_rules() for m in rule.methods}
    assert rules <= {"GET", "HEAD", "OPTIONS"}


def test_the_store_it_uses_cannot_write(ui_data: UIData) -> None:
    store = open_readonly(ui_data.url)
    before = len(store.list_runs())
    with pytest.raises(Exception, match="(?i)readonly|read-only|query_only|attempt to write"):
        store.get_or_create_run("should-not-exist")
    assert len(Store.open(ui_data.url, create=False).list_runs()) == before


def test_unknown_ids_and_paths_give_a_404_page(client: FlaskClient) -> None:
    for url in ("/runtime/999999", "/program/999999", "/evaluation/999999", "/run/999999",
                "/run/999999/lineage", "/runtime/abc", "/static/../app.py",
                "/static/%2e%2e%2fapp.py", "/static/..%2f..%2fpyproject.toml", "/nothing",
                "/go?id=r999999", "/go?id=no-such-run"):
        r = client.get(url, follow_redirects=True)
        assert r.status_code == 404, (url, r.status_code)
        assert "Traceback" not in r.text and "404" in r.text
    r = client.get("/api/run/999999")
    assert r.status_code == 404 and r.json["error"] == "Not found"


def test_loopback_server_refuses_other_host_names(client: FlaskClient) -> None:
    assert client.get("/", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400


def test_markup_in_code_prompt_reply_and_error_is_escaped(client: FlaskClient,
                                                          ui_data: UIData) -> None:
    for url in (f"/runtime/{ui_data.xss_runtime}", f"/program/{ui_data.xss_program}",
                f"/evaluation/{ui_data.xss_eval}", "/", f"/run/{ui_data.xss_run}"):
        html = client.get(url).text
        assert "<script>window.__xss" not in html, url
        assert "</textarea></pre><script>" not in html, url
    html = client.get(f"/evaluation/{ui_data.xss_eval}").text
    assert "&lt;script&gt;window.__xss = 1;" in html  # the error and the LLM call, as text
    assert "model-&lt;b&gt;x&lt;/b&gt;" in html and "tokens in <b>1234</b>" in html
    prog = client.get(f"/program/{ui_data.xss_program}").text
    assert "Diff against the parent" in prog and "2.0" in prog


def test_lineage_json_has_every_runtime_and_edge(client: FlaskClient, ui_data: UIData) -> None:
    data = client.get(f"/api/run/{ui_data.run}/lineage").json
    n = data["nodes"]
    store = Store.open(ui_data.url, create=False)
    rts = {r.id: r for r in store.list_runtimes(ui_data.run)}
    assert sorted(n["id"]) == sorted(rts) and len(n["id"]) == 200
    for i, rid in enumerate(n["id"]):
        parents = {role: p for p, role in rts[rid].parents}
        assert n["parent"][i] == parents.get("parent")
        assert n["second"][i] == parents.get("second_parent")
        assert n["group"][i] == rts[rid].island and n["op"][i] == rts[rid].operator
    # migrants have no evaluation of their own but stay in the tree
    copies = [i for i, op in enumerate(n["op"]) if op == "migration"]
    assert copies and all(n["status"][i] == "copy" for i in copies)
    scores = store.scores(ui_data.run, list(rts), "modeled_ratio")
    for i, rid in enumerate(n["id"]):
        if n["confirmed"][i] == 1:
            assert n["score"][i] == pytest.approx(scores[rid])
    assert data["metric"] == "modeled_ratio" and data["higher"] is True
    progs = client.get(f"/api/run/{ui_data.run}/lineage?kind=programs").json["nodes"]
    assert "seed" in progs["op"] and all(s in ("scheduler", "cache_policy") for s in progs["group"])


def test_runtime_lineage_is_one_statement(ui_data: UIData) -> None:
    from sqlalchemy import event

    store = open_readonly(ui_data.url)
    seen: list[str] = []

    def before(conn, cursor, statement, *a) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "runtime_parents" in statement:
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", before)
    runtime_lineage(store, ui_data.run)
    event.remove(store.engine, "before_cursor_execute", before)
    assert len(seen) == 1


def test_run_api_and_compare_csv(client: FlaskClient, ui_data: UIData) -> None:
    d = client.get(f"/api/run/{ui_data.run}").json
    best = d["curve"]["best"]
    assert best == sorted(best) and best[-1] == pytest.approx(d["card"]["best"])
    assert d["card"]["fidelity"] == "sim"
    assert sum(d["summary"]["by_status"].values()) == d["summary"]["evaluations"]
    arms = d["operators"]["arms"]
    assert "llm-diff@model-a" in arms and "gp" in arms
    assert sum(sum(b.values()) for b in d["operators"]["buckets"]) == d["summary"]["evaluations"]
    assert sum(sum(b.values()) for b in d["operators"]["passed"]) == d["summary"]["by_status"][
        "passed"]
    assert {i["island"] for i in d["islands"]} == {0, 1, 2, 3}
    csv_text = client.get(f"/compare.csv?run={ui_data.run}&run={ui_data.live_run}").text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("tags.run,") and len(lines) == 3
    assert "search-a" in lines[1] and "search-b" in lines[2]


def test_runtime_page_has_export_command_diff_and_workloads(client: FlaskClient,
                                                            ui_data: UIData) -> None:
    d = client.get(f"/api/run/{ui_data.run}").json
    rid = d["card"]["best_runtime"]
    html = client.get(f"/runtime/{rid}").text
    assert f"sds export {rid} --db" in html and f"--out sds-runtime-{rid}" in html
    assert "Diff against the parent" in html and 'class="hl"' in html
    assert "work_steps" in html and "shared-prefix" in html and "modeled_ratio" in html


def test_cli_bad_database_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    empty = tmp_path / "empty.db"
    Store.open(f"sqlite:///{tmp_path / 'other.db'}").close()
    import sqlite3

    sqlite3.connect(empty).execute("create table t (x)").connection.close()
    for url in (f"sqlite:///{tmp_path}/missing.db", f"sqlite:///{junk}", f"sqlite:///{empty}",
                "notadb://x", "postgresql+psycopg://u:secret@127.0.0.1:1/none"):
        capsys.readouterr()
        assert main(["ui", "--db", url, "--port", "0"]) == 2, url
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sds ui: "), (url, err)
        assert "secret" not in err[0]
    assert not (tmp_path / "missing.db").exists()


@needs_pg
def test_postgresql_pages_and_read_only() -> None:
    url, drop = fresh_pg_url()
    try:
        d = build(url, runtimes=80)
        store = open_readonly(url)
        try:
            with pytest.raises(Exception, match="read-only"):
                store.get_or_create_run("should-not-exist")
            client = create_app(store).test_client()
            for page in ("/", f"/run/{d.run}", f"/runtime/{d.xss_runtime}",
                         f"/evaluation/{d.xss_eval}", f"/api/run/{d.run}"):
                assert client.get(page).status_code == 200, page
            n = client.get(f"/api/run/{d.run}/lineage").json["nodes"]
            assert len(n["id"]) == 80 and "passed" in n["status"]
        finally:
            store.close()
    finally:
        drop()


def test_reads_while_a_run_writes(tmp_path: Path) -> None:
    import threading

    url = f"sqlite:///{tmp_path}/live.db"
    d = build(tmp_path / "live.db", runtimes=30)
    writer = Store.open(url)
    seed = writer.list_runtimes(d.live_run)[0]
    client = create_app(open_readonly(url)).test_client()
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            rt = writer.add_runtime(d.live_run, seed.spec, generation=1, operator="gp",
                                    parents=[(seed.id, "parent")])
            writer.add_evaluation(stage="full", status="passed", runtime_id=rt.id,
                                  metrics={"modeled_ratio": 1.01, "confirmed": 1})

    t = threading.Thread(target=write)
    t.start()
    try:
        seen = []
        for _ in range(5):
            r = client.get(f"/api/run/{d.live_run}")
            assert r.status_code == 200
            seen.append(r.json["card"]["runtimes"])
            assert client.get(f"/api/run/{d.live_run}/lineage").status_code == 200
    finally:
        stop.set()
        t.join()
    assert seen == sorted(seen) and seen[-1] > seen[0]


def test_page_cache_reuses_until_the_run_changes(tmp_path: Path) -> None:
    from evolve.ui.app import PageCache

    url = f"sqlite:///{tmp_path}/c.db"
    d = build(tmp_path / "c.db", runtimes=20)
    cache = PageCache(open_readonly(url))
    built = []

    def make() -> int:
        built.append(1)
        return len(built)

    assert cache.get(("k",), d.run, make) == 1
    assert cache.get(("k",), d.run, make) == 1  # unchanged: reused
    writer = Store.open(url)
    seed = writer.list_runtimes(d.run)[0]
    writer.add_evaluation(stage="bench", status="failed", runtime_id=seed.id, error="x")
    assert cache.get(("k",), d.run, make) == 2  # a new evaluation: rebuilt


def test_cli_port_in_use_exits_2_and_loopback_names(ui_data: UIData, capsys) -> None:
    import socket

    from evolve.ui.server import is_loopback

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        capsys.readouterr()
        assert main(["ui", "--db", ui_data.url, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0]
    assert all(map(is_loopback, ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "example.com")))


def test_every_page_of_a_controller_run(tmp_path: Path) -> None:
    """A run the real controller wrote (fake harness and operator): every runtime, program
    and evaluation of it has a page, and the tree has every runtime."""
    import random

    from test_controller_fakes import FakeHarness, FakeOperator

    from evolve.config import config_from_dict
    from evolve.launch import launch

    seed = random.randrange(1000)
    print("seed", seed)
    cfg = config_from_dict(
        {"target": {"slots": ["scheduler", "cache_policy"],
                    "runtime": {"slots": {"scheduler": "seed:scheduler/priority",
                                          "cache_policy": "seed:cache_policy/scored"}}},
         "operators": {"fake": 1}, "islands": {"count": 2, "migration_interval": 4},
         "evaluation": {"workloads": ["w1", "w2"], "device": "cpu"},
         "budget": {"max_evaluations": 12}, "seed": seed}, "ui-test.yaml")
    url = f"sqlite:///{tmp_path}/run.db"
    out, _ = launch(cfg, name="real", db=url, harness=FakeHarness(fail_rate=0.2),
                    operators={"fake": FakeOperator()}, runs_csv=None, progress=False)
    store = Store.open(url, create=False)
    client = create_app(open_readonly(url)).test_client()
    pages = ["/", f"/run/{out.run_id}", f"/api/run/{out.run_id}",
             f"/run/{out.run_id}/lineage", f"/api/run/{out.run_id}/lineage?kind=programs"]
    rts = store.list_runtimes(out.run_id)
    pages += [f"/runtime/{r.id}" for r in rts]
    evals = store.evaluations(run=out.run_id)
    pages += [f"/evaluation/{e.id}" for e in evals]
    pages += sorted({f"/program/{e.program_id}" for e in evals if e.program_id})
    for page in pages:
        r = client.get(page)
        assert r.status_code == 200, (page, r.status_code, r.text[:300])
    data = client.get(f"/api/run/{out.run_id}").json
    assert data["summary"]["evaluations"] == 12 and data["card"]["best"] is not None
    n = client.get(f"/api/run/{out.run_id}/lineage").json["nodes"]
    assert sorted(n["id"]) == sorted(r.id for r in rts)
    assert n["status"].count("passed") == data["summary"]["by_status"].get("passed", 0)


def test_lower_is_better_objective(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/min.db"
    store = Store.open(url)
    run, _ = store.get_or_create_run("min", {"selection": {"objectives": ["ttft_s:min"]}})
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}}
    root = store.add_runtime(run.id, spec, operator="seed")
    ids, values = [root.id], [2.0, 1.5, 3.0, 1.2]
    for v in values[1:]:
        ids.append(store.add_runtime(run.id, spec, generation=1, operator="gp",
                                     parents=[(root.id, "parent")]).id)
    for rid, v in zip(ids, values):
        store.add_evaluation(stage="full", status="passed", runtime_id=rid,
                             metrics={"ttft_s": v})
    client = create_app(open_readonly(url)).test_client()
    d = client.get(f"/api/run/{run.id}").json
    assert d["card"]["higher"] is False and d["card"]["best"] == 1.2
    assert d["card"]["best_runtime"] == ids[-1]
    assert d["curve"]["best"] == [2.0, 1.5, 1.2]
    lin = client.get(f"/api/run/{run.id}/lineage").json
    assert lin["higher"] is False and lin["nodes"]["score"] == values
