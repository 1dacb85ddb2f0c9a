"""`sds run` with an LLM endpoint that cannot work: the run stops, exits 1, says why.

A wrong base_url (nothing listens: connection refused), a base_url without `/v1` (404), a
server that needs a key the environment does not hold (401): each must end the run with
status `failed`, exit code 1 and one console line naming the URL, the model and the last
error, after at most `llm.max_consecutive_failures` calls (a 401/404 on the first call at
once). The harness is the cheap fake of the controller tests; the LLM traffic is real HTTP
to a loopback server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from fake_llm_server import FakeLLMServer, Reply, closed_port_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness

import evolve.launch
from evolve.cli import main
from evolve.population import PROPOSE, llm_usage, run_evaluations
from population_db import Store

KEY_VAR = "SDS_TEST_LLM_KEY_NOT_SET"


def write_config(tmp_path: Path, url: str, **llm) -> Path:
    raw = {"name": "llm-fail", "seed": 3,
           "target": {"slots": ["cache_policy"],
                      "runtime": {"slots": {"cache_policy": "seed:cache_policy/scored"}}},
           "operators": {"llm-diff": {"weight": 1, "repair_rounds": 0}},
           "llm": {"models": {"coder-7b": 1.0}, "base_url": url, "api_key_env": KEY_VAR,
                   "prices": {"coder-7b": [0.5, 1.5]}, "retries": 1, "backoff_s": 0.01,
                   "timeout_s": 5,
                   "max_consecutive_failures": 4, **llm},
           "evaluation": {"workloads": ["shared-prefix-cpu"], "device": "cpu", "model": "tiny"},
           "budget": {"max_evaluations": 40},
           "concurrency": {"max_proposals": 2, "max_evaluations": 1}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def fake_harness(monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    monkeypatch.setattr(evolve.launch, "make_harness",
                        lambda cfg, store, device: FakeHarness(fail_rate=0.0))


def run_cli(tmp_path: Path, cfg: Path, capsys, progress: bool = False) -> tuple[int, str, Store]:
    db = f"sqlite:///{tmp_path}/sds.db"
    argv = ["run", str(cfg), "--db", db, "--runs-csv", "-"]
    code = main(argv + ([] if progress else ["--no-progress"]))
    err = capsys.readouterr().err
    return code, err, Store.open(db)


def the_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("sds run: run llm-fail failed")]
    assert len(lines) == 1, err
    return lines[0]


def test_connection_refused_stops_the_run_after_a_few_calls(tmp_path, capsys, fake_harness):
    url = closed_port_url()
    code, err, store = run_cli(tmp_path, write_config(tmp_path, url), capsys)
    line = the_line(err)
    print(line)
    assert code == 1
    assert url in line and "coder-7b" in line and "connection error" in line
    assert "failed 4 calls in a row" in line
    run = store.get_run("llm-fail")
    assert run.status == "failed"
    stop = store.events(run.id, "llm_stop")[0].data
    assert stop["reason"] == "llm_endpoint" and url in stop["error"]
    n = llm_usage(store, run.id)["calls"]
    # 4 in a row make it dead; a proposal already in flight may add its own attempts
    assert 4 <= n <= 4 + 2, n
    rows = run_evaluations(store, run.id, PROPOSE)
    assert rows and all(url in (r.error or "") for r in rows)  # every reason names the URL


def test_missing_key_is_fatal_on_the_first_401(tmp_path, capsys, fake_harness):
    with FakeLLMServer([Reply("never sent")], api_key="sk-real") as srv:
        code, err, store = run_cli(tmp_path, write_config(tmp_path, srv.base_url), capsys)
        sent = len(srv.requests)
    line = the_line(err)
    print(line)
    assert code == 1 and sent <= 2  # two proposals may be in flight (max_proposals)
    assert "answered HTTP 401 to the first call" in line and srv.base_url in line
    assert f"{KEY_VAR} is not set" in line and "coder-7b" in line
    assert store.get_run("llm-fail").status == "failed"


def test_base_url_without_v1_is_fatal_on_the_first_404(tmp_path, capsys, fake_harness):
    with FakeLLMServer([Reply("never sent")]) as srv:
        url = srv.base_url.removesuffix("/v1")
        code, err, _ = run_cli(tmp_path, write_config(tmp_path, url), capsys)
        sent = len(srv.requests)
    line = the_line(err)
    assert code == 1 and sent <= 2
    assert "HTTP 404" in line and url in line and "ends in /v1" in line


def test_a_404_after_calls_succeeded_is_not_fatal_at_once(tmp_path, capsys, fake_harness):
    """A model that answered before is not 'wrong URL': one 404 among replies is retried
    by later proposals; only the run of failures in a row counts."""
    good = ("<<<<<<< SEARCH\n    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - "
            "0.001 * position\n=======\n    return hashed * (1.0 + 2.0 * num_hits) / (1.0 + "
            "0.01 * idle) - 0.001 * position\n>>>>>>> REPLACE\n")
    script = [Reply(good), Reply(status=404), Reply("no blocks here")]
    with FakeLLMServer(script, repeat_last=True, max_requests=60) as srv:
        cfg = write_config(tmp_path, srv.base_url)
        raw = yaml.safe_load(cfg.read_text())
        raw["budget"] = {"max_evaluations": 3}
        raw["concurrency"]["max_proposals"] = 1
        cfg.write_text(yaml.safe_dump(raw))
        code, err, store = run_cli(tmp_path, cfg, capsys)
    assert code == 0, err
    assert store.get_run("llm-fail").status == "finished"


def test_the_progress_bar_shows_llm_failures(tmp_path, capsys, fake_harness):
    code, err, _ = run_cli(tmp_path, write_config(tmp_path, closed_port_url()), capsys,
                           progress=True)
    assert code == 1
    assert "llm fail=" in err  # the bar's postfix, as the failures happened


def test_the_dollar_budget_is_spent_not_reserved_away(tmp_path, capsys, fake_harness):
    """Replies cost $0.0033 each (1500 in at $1/M + 90 out at $20/M); a reservation of
    max_tokens=4096 at the output price ($0.083) would have refused the first call of a
    $0.05 budget. Reserving by recent replies, the run spends most of it, never more."""
    reply = ("<<<<<<< SEARCH\n    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - "
             "0.001 * position\n=======\n    return hashed * (1.0 + num_hits) / (1.0 + 0.01 "
             "* idle) - 0.002 * position\n>>>>>>> REPLACE\n")
    with FakeLLMServer([], responder=lambda p, i: Reply("no idea" if i % 2 else reply,
                                                        usage=(1500, 90)),
                       max_requests=100) as srv:
        cfg = write_config(tmp_path, srv.base_url, prices={"coder-7b": [1.0, 20.0]})
        raw = yaml.safe_load(cfg.read_text())
        raw["budget"] = {"max_evaluations": 200, "max_llm_usd": 0.05}
        cfg.write_text(yaml.safe_dump(raw))
        code, _err, store = run_cli(tmp_path, cfg, capsys)
    run = store.get_run("llm-fail")
    usd = llm_usage(store, run.id)["usd"]
    stop = store.events(run.id, "budget_stop")[0].data
    print(f"spent ${usd:.4f} of $0.05 in {llm_usage(store, run.id)['calls']} calls")
    assert code == 0 and stop["budget"] == "max_llm_usd"
    assert 0.8 * 0.05 <= usd <= 0.05


def test_truncated_replies_are_named_on_the_console_and_in_status(tmp_path, capsys, caplog,
                                                                  fake_harness):
    """Every reply cut at max_tokens: the run ends normally (the endpoint works), one
    warning line says what to change, and `sds status` gives the reason with its count."""
    cut = Reply("<<<<<<< SEARCH\n    return hashed * (1.0 + num", finish_reason="length",
                usage=(1500, 512))
    with FakeLLMServer([cut], repeat_last=True, max_requests=100) as srv:
        cfg = write_config(tmp_path, srv.base_url, max_tokens=512)
        raw = yaml.safe_load(cfg.read_text())
        raw["budget"] = {"max_evaluations": 3, "max_proposals": 6}
        cfg.write_text(yaml.safe_dump(raw))
        code, _err, store = run_cli(tmp_path, cfg, capsys)
    # a WARNING record: the CLI's logging prints it on stderr (pytest captures it here)
    warn = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
            and "truncated at max_tokens=512" in r.getMessage()]
    print(warn)
    assert code == 0 and len(warn) == 1 and "raise llm.max_tokens" in warn[0]
    assert srv.base_url in warn[0] and "coder-7b" in warn[0]
    rows = run_evaluations(store, store.get_run("llm-fail").id, PROPOSE)
    assert len(rows) == 6 and all(r.error == "truncated at max_tokens=512 (finish_reason "
                                                "length)" for r in rows)
    assert all(r.artifacts["finish_reasons"] == ["length"] for r in rows)  # recorded
    assert main(["status", "llm-fail", "--db", f"sqlite:///{tmp_path}/sds.db"]) == 0
    out = capsys.readouterr().out
    assert "rejected: truncated at max_tokens=512 (finish_reason length)" in out
    assert out.split("rejected: truncated", 1)[1].splitlines()[0].split()[-1] == "6"
