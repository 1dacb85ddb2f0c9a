"""sds tune: the study never loses to the defaults, fails bad trials, records a child, resumes."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evolve.cli import main
from evolve.tune import finished_trials, study_name_for, tune_runtime
from population_db import Store
from runtime_modules.slots import RuntimeSpec

WORKLOAD = "nanovllm-bench-cpu"


@dataclass
class _Stage:
    stage: str
    status: str
    metrics: dict
    error: str | None = None
    duration_s: float = 0.01


@dataclass
class _Report:
    status: str
    failed_stage: str | None
    metrics: dict
    stages: list = field(default_factory=list)


class FakeHarness:
    """Scores a spec by a smooth function of its parameters; block_size 64 'fails correctness'.

    The optimum (`peak` max_num_seqs, watermark 0) is not the runtime's default (256).
    """

    def __init__(self, peak: int, log_path: str | None = None, sleep_s: float = 0.0):
        self.peak, self.log_path, self.sleep_s, self.calls = peak, log_path, sleep_s, []

    def score(self, spec: RuntimeSpec) -> float:
        seqs = spec.engine["max_num_seqs"]
        wm = spec.slots["scheduler"].params["watermark_blocks"]
        return 200.0 - 10.0 * abs(math.log2(seqs) - math.log2(self.peak)) - 0.5 * wm

    def evaluate(self, spec, stages=None, workload=None, model=None, **kw):
        spec = RuntimeSpec.from_dict(spec)
        self.calls.append(spec.to_json())
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(spec.to_json() + "\n")
        time.sleep(self.sleep_s)
        if spec.engine["block_size"] == 64:
            st = _Stage("correctness", "failed", {}, "token 5: 17 != 301")
            return _Report("failed", "correctness", {}, [_Stage("static", "passed", {}), st])
        m = {"tok_s": self.score(spec)}
        return _Report("passed", None, m, [_Stage("static", "passed", {}),
                                           _Stage("bench", "passed", m, None, 0.5)])


def _seed_runtime(url: str) -> tuple[Store, int, int]:
    store = Store.open(url)
    run, _ = store.get_or_create_run("tune-test", {"budget": 1})
    rt = store.add_runtime(run.id, RuntimeSpec.default("cpu").to_dict(), operator="seed")
    return store, run.id, rt.id


def test_tuning_never_worse_than_defaults_fails_bad_trials_and_records_child(tmp_path):
    store, run_id, rid = _seed_runtime(f"sqlite:///{tmp_path}/sds.db")
    peak = random.choice([8, 16, 32, 64])
    h = FakeHarness(peak)
    res = tune_runtime(store, rid, trials=12, workload=WORKLOAD, harness=h, device="cpu",
                       progress=False, seed=random.randrange(1000))
    assert len(h.calls) == 12 and res.n_complete + res.n_failed == 12
    # the first trial is the runtime's own parameters, made explicit
    first = RuntimeSpec.from_json(h.calls[0])
    assert first.engine["max_num_seqs"] == 256 and first.engine["block_size"] == 16
    assert res.default_value == pytest.approx(h.score(first))
    assert res.best_value >= res.default_value
    # failed trials are FAIL, never a value
    study = optuna.load_study(study_name=study_name_for(rid, WORKLOAD),
                              storage=f"sqlite:///{tmp_path}/sds.db")
    for t in study.trials:
        if t.params.get("engine.block_size") == 64:
            assert t.state == TrialState.FAIL and t.value is None
            assert "correctness" in t.user_attrs["fail_reason"]
    # the child runtime holds the best parameters, with its evaluations
    child = store.get_runtime(res.runtime_id)
    assert child.operator == "tune" and child.run_id == run_id and child.parents == ((rid, "parent"),)
    assert h.score(RuntimeSpec.from_dict(child.spec)) == pytest.approx(res.best_value)
    bench = store.evaluations(runtime_id=child.id, stage="bench", status="passed")
    assert bench and bench[-1].metrics["tok_s"] == pytest.approx(res.best_value)
    # tuning again with the same budget runs nothing and creates no second child
    again = tune_runtime(store, rid, trials=12, workload=WORKLOAD, harness=h, device="cpu",
                         progress=False)
    assert len(h.calls) == 12 and again.runtime_id == res.runtime_id


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_tune import FakeHarness
    from evolve.tune import tune_runtime
    from population_db import Store
    tune_runtime(Store.open({url!r}), {rid}, trials=8, workload={wl!r}, device="cpu",
                 harness=FakeHarness(32, {log!r}, sleep_s=0.4), progress=False, heartbeat_s=1)
""")


def test_tuning_resumes_after_kill_without_repeating_finished_trials(tmp_path):
    url = f"sqlite:///{tmp_path}/sds.db"
    store, _, rid = _seed_runtime(url)
    log = tmp_path / "calls.log"
    code = _CHILD.format(tests=str(Path(__file__).parent), url=url, rid=rid, wl=WORKLOAD,
                         log=str(log))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    name = study_name_for(rid, WORKLOAD)
    deadline = time.time() + 120
    target = random.randint(2, 4)
    while time.time() < deadline:  # kill it mid-trial, after a random number of trials
        try:
            study = optuna.load_study(study_name=name, storage=url)
            if len(finished_trials(study)) >= target:
                break
        except KeyError:
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished_trials(optuna.load_study(study_name=name, storage=url))
    assert target <= len(before) < 8
    # Past the 2 s grace period even at SQLite's one-second CURRENT_TIMESTAMP resolution
    # (a heartbeat at 10.0 and a check at 12.9 both truncate to a 2 s gap: not stale yet).
    time.sleep(3.5)
    h = FakeHarness(32)
    res = tune_runtime(store, rid, trials=8, workload=WORKLOAD, harness=h, device="cpu",
                       progress=False, heartbeat_s=1)
    study = optuna.load_study(study_name=name, storage=url)
    after = finished_trials(study)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the killed one was failed
    assert len(after) == 8 and res.n_complete + res.n_failed == 8
    assert len(h.calls) == 8 - len(before)  # nothing finished was evaluated again
    old = {json.dumps(t.params, sort_keys=True) for t in before}
    resumed = [t for t in after if t.number > max(t.number for t in before)]
    assert not old & {json.dumps(t.params, sort_keys=True) for t in resumed}
    assert {t.number for t in before} <= {t.number for t in after}
    assert len(log.read_text().splitlines()) >= len(before)
    assert res.best_value >= res.default_value


_DIES_UNBEATEN = textwrap.dedent("""
    import contextlib, os, sys
    sys.path.insert(0, {tests!r})
    import optuna.study._optimize as opt
    # Optuna's heartbeat thread never gets to write: the process dies first.
    opt.get_heartbeat_thread = lambda *a, **k: contextlib.nullcontext()
    from test_tune import FakeHarness
    from evolve.tune import tune_runtime
    from population_db import Store

    class Dies(FakeHarness):
        def evaluate(self, spec, **kw):
            if len(self.calls) == {n}:
                os._exit(9)
            return super().evaluate(spec, **kw)

    tune_runtime(Store.open({url!r}), {rid}, trials=8, workload={wl!r}, device="cpu",
                 harness=Dies(32), progress=False, heartbeat_s=1)
""")


def test_trial_killed_before_optunas_first_heartbeat_is_failed_on_resume(tmp_path):
    # The race behind a CI failure: a kill after the trial was marked started but before
    # Optuna's heartbeat thread wrote once left that trial RUNNING for ever.
    url = f"sqlite:///{tmp_path}/sds.db"
    store, _, rid = _seed_runtime(url)
    n = random.randint(0, 3)
    code = _DIES_UNBEATEN.format(tests=str(Path(__file__).parent), url=url, rid=rid,
                                 wl=WORKLOAD, n=n)
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=120)
    assert proc.returncode == 9
    study = optuna.load_study(study_name=study_name_for(rid, WORKLOAD), storage=url)
    (orphan,) = study.get_trials(states=(TrialState.RUNNING,))
    assert orphan.user_attrs.get("sds_started") and len(finished_trials(study)) == n
    time.sleep(3.5)  # past the 2 s grace period at SQLite's one-second timestamp resolution
    res = tune_runtime(store, rid, trials=8, workload=WORKLOAD, harness=FakeHarness(32),
                       device="cpu", progress=False, heartbeat_s=1)
    study = optuna.load_study(study_name=study_name_for(rid, WORKLOAD), storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert len(finished_trials(study)) == 8 and res.n_complete + res.n_failed == 8


def test_tune_cli_unknown_runtime_exit_2(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/sds.db"
    Store.open(url)
    assert main(["tune", "999", "--db", url, "--trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "999" in err[0]
    assert main(["tune", "abc", "--db", url]) == 2


PG_URL = os.environ.get("SDS_TEST_PG_URL")

_WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_tune import FakeHarness
    from evolve.tune import tune_runtime
    from population_db import Store
    tune_runtime(Store.open({url!r}), {rid}, trials=8, workload={wl!r}, device="cpu",
                 harness=FakeHarness(32, {log!r}, sleep_s=0.6), progress=False)
""")


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="SDS_TEST_PG_URL not set (scripts/start_postgres.sh)")
def test_two_workers_tune_one_study_on_postgresql(tmp_path):
    from population_db.engine import scratch_schema

    url, drop = scratch_schema(PG_URL, "tune")
    try:
        store, _, rid = _seed_runtime(url)
        logs = [tmp_path / f"w{i}.log" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER.format(
            tests=str(Path(__file__).parent), url=url, rid=rid, wl=WORKLOAD, log=str(log))])
            for log in logs]
        assert all(p.wait(timeout=120) == 0 for p in procs)
        study = optuna.load_study(study_name=study_name_for(rid, WORKLOAD), storage=url)
        done = finished_trials(study)
        assert 8 <= len(done) <= 9  # the other worker may finish the trial it had started
        calls = [log.read_text().splitlines() for log in logs]
        assert all(calls) and sum(map(len, calls)) == len(done)  # both worked, none twice
        params = [json.dumps(t.params, sort_keys=True) for t in done]
        assert len(set(params)) == len(params)
        tuned = [rt for rt in store.list_runtimes("tune-test") if rt.operator == "tune"]
        best = max(t.value for t in done if t.value is not None)
        assert tuned and FakeHarness(32).score(RuntimeSpec.from_dict(tuned[-1].spec)) == best
    finally:
        drop()


@pytest.mark.timeout(200)
def test_real_small_study_on_cpu_is_at_least_as_good_as_defaults(tmp_path):
    """Two real harness trials (bench only, a cut-down CPU workload): defaults first."""
    from fitness import Harness

    store, run_id, rid = _seed_runtime(f"sqlite:///{tmp_path}/sds.db")
    h = Harness(store=None, device="cpu", program_dir=tmp_path / "programs",
                options={"bench_requests": 6, "bench_max_tokens": 12, "bench_repeats": 1})
    res = tune_runtime(store, rid, trials=2, workload=WORKLOAD, harness=h, stages=("bench",),
                       device="cpu", progress=False, seed=random.randrange(1000))
    assert res.n_complete + res.n_failed == 2 and res.default_value is not None
    assert res.best_value >= res.default_value > 0
    child = store.get_runtime(res.runtime_id)
    assert child.operator == "tune" and child.parents == ((rid, "parent"),)
    bench = store.evaluations(runtime_id=child.id, stage="bench", status="passed")
    assert bench[-1].metrics["tok_s"] == pytest.approx(res.best_value)
    assert bench[-1].workload == WORKLOAD and bench[-1].workload_hash
    assert store.best_runtime(run_id) is not None


def test_search_space_reads_tunables_from_source_without_running_it(tmp_path):
    from evolve.tune import TuneError, search_space

    marker = tmp_path / "ran"
    lo = random.randint(1, 5)
    mod = tmp_path / "sched.py"
    mod.write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("candidate code ran in the tuner")
        TUNABLES = {{"mode": ["a", "b"], "depth": ({lo}, 1 << 4), "alpha": (0.1, 0.9)}}

        class Scheduler:
            def __init__(self, config, block_manager, mode="c", depth={lo + 1}, alpha=0.5):
                pass
    """))
    spec = RuntimeSpec.default("cpu").with_slot("scheduler", f"file:{mod}", {"alpha": 0.7})
    space = {p.name: p for p in search_space(spec, "cpu", {"block_size"})}
    assert not marker.exists()
    assert "engine.block_size" not in space and "engine.max_num_seqs" in space
    assert space["scheduler.mode"].space == ["a", "b", "c"]  # the default joins the choices
    assert space["scheduler.depth"].space == (lo, 16) and space["scheduler.depth"].default == lo + 1
    assert space["scheduler.alpha"].default == 0.7  # the spec's value wins over the signature
    mod.write_text(mod.read_text().replace('"mode": ["a", "b"]', '"mode": make()'))
    with pytest.raises(TuneError, match="scheduler.*literal"):
        search_space(spec, "cpu")
