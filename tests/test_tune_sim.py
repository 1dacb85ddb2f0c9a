"""sds tune in the sim fidelity: trials scored in simulation, the best confirmed on the engine."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from evolve.cli import main
from evolve.tune import CONFIRM_STAGES, default_confirm_workload, study_name_for, tune_runtime
from fitness.result import EvalReport, StageResult
from population_db import Store
from runtime_modules.slots import RuntimeSpec

SIM_STAGES = ("static", "contract", "sim")
SIM_WL = "shared-prefix-cpu"
BENCH_SMALL = {"bench_requests": 6, "bench_max_tokens": 12, "bench_repeats": 1}


def _seed_runtime(url: str) -> tuple[Store, int, int]:
    store = Store.open(url)
    run, _ = store.get_or_create_run("tune-sim-test", {"budget": 1})
    rt = store.add_runtime(run.id, RuntimeSpec.default("cpu").to_dict(), operator="seed")
    return store, run.id, rt.id


class FakeSimHarness:
    """Sim: modeled_tok_s peaks at `peak` max_num_batched_tokens (not the default, 16384);
    modeled TTFT grows with the scheduler's watermark.

    Confirmation (correctness + bench) passes with `confirm_tok_s`, or fails correctness
    with a multi-line error when `confirm_error` is set.
    """

    def __init__(self, peak: int, confirm_error: str | None = None, confirm_tok_s: float = 77.0):
        self.peak, self.confirm_error, self.confirm_tok_s = peak, confirm_error, confirm_tok_s
        self.calls: list[dict] = []

    def modeled(self, spec: RuntimeSpec) -> dict[str, float]:
        tokens = spec.engine["max_num_batched_tokens"]
        wm = spec.slots["scheduler"].params["watermark_blocks"]
        return {"modeled_tok_s": 5000.0 - 300.0 * abs(math.log2(tokens) - math.log2(self.peak)),
                "modeled_ttft_p99_s": 0.05 + 0.01 * wm + 0.001 * math.log2(tokens)}

    def evaluate(self, spec, stages=(), workload=None, model=None, baseline=None, **kw):
        spec = RuntimeSpec.from_dict(spec if isinstance(spec, dict) else spec.to_dict())
        self.calls.append({"spec": spec.to_dict(), "stages": tuple(stages),
                           "workload": workload, "model": model, "baseline": baseline})
        rep = EvalReport(spec=spec.to_dict(), workload=workload, workload_hash=f"h-{workload}")
        if "sim" in stages:
            m = {**self.modeled(spec), "fidelity": "sim", "modeled_ratio": 1.0}
            rep.stages += [StageResult("static", "passed"), StageResult("contract", "passed"),
                           StageResult("sim", "passed", m, duration_s=0.02)]
        elif self.confirm_error:
            rep.stages.append(StageResult("correctness", "failed", {}, self.confirm_error))
        else:
            rep.stages += [StageResult("correctness", "passed", {"tokens_compared": 9}),
                           StageResult("bench", "passed",
                                       {"tok_s": self.confirm_tok_s, "ratio": 1.1}, None, {},
                                       0.5)]
        return rep


class Spy:
    """The real harness, with every evaluate call's arguments kept."""

    def __init__(self, harness):
        self.harness, self.calls = harness, []

    def evaluate(self, spec, **kw):
        self.calls.append(kw)
        return self.harness.evaluate(spec, **kw)


@pytest.mark.timeout(200)
def test_real_sim_study_scores_modeled_tok_s_and_records_confirmed_child(tmp_path):
    from fitness import Harness

    url = f"sqlite:///{tmp_path}/sds.db"
    store, run_id, rid = _seed_runtime(url)
    h = Spy(Harness(store=None, device="cpu", program_dir=tmp_path / "programs",
                    options=BENCH_SMALL))
    res = tune_runtime(store, rid, trials=3, workload=SIM_WL, harness=h, stages=SIM_STAGES,
                       device="cpu", progress=False, seed=random.randrange(1000),
                       confirm_workload="kv-pressure-cpu")
    assert res.fidelity == "sim" and res.metric == "modeled_tok_s" and res.confirm_error is None
    # trials ran only sim-fidelity stages, and each is scored on its sim stage's modeled_tok_s
    trial_calls, confirm_calls = h.calls[:3], h.calls[3:]
    assert all(tuple(c["stages"]) == SIM_STAGES and c["workload"] == SIM_WL
               for c in trial_calls)
    study = optuna.load_study(study_name=study_name_for(rid, SIM_WL, "sim"), storage=url)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        sim = [r for r in t.user_attrs["stages"] if r["stage"] == "sim"]
        assert not {r["stage"] for r in t.user_attrs["stages"]} & {"correctness", "bench"}
        assert t.value == pytest.approx(sim[0]["metrics"]["modeled_tok_s"])
    assert res.best_value == pytest.approx(max(t.value for t in done))
    # the best alone was confirmed on the real engine, against the untuned runtime
    assert len(confirm_calls) == 1
    c = confirm_calls[0]
    assert tuple(c["stages"]) == CONFIRM_STAGES and c["workload"] == "kv-pressure-cpu"
    untuned = RuntimeSpec.from_dict(dict(store.get_runtime(rid).spec)).to_dict()
    assert c["model"] == "tiny" and c["baseline"].to_dict() == untuned
    # the child holds the sim row and the confirmation's rows, marked sim + confirmed
    child = store.get_runtime(res.runtime_id)
    assert child.operator == "tune" and child.parents == ((rid, "parent"),)
    assert dict(child.spec) == res.spec
    evals = {e.stage: e for e in store.evaluations(runtime_id=child.id)}
    assert {"sim", "correctness", "bench"} <= set(evals)
    assert evals["sim"].metrics["modeled_tok_s"] == pytest.approx(res.best_value)
    assert evals["sim"].workload == SIM_WL and evals["bench"].workload == "kv-pressure-cpu"
    for stage in ("sim", "bench"):
        assert evals[stage].metrics["fidelity"] == "sim" and evals[stage].metrics["confirmed"] == 1
    assert evals["bench"].metrics["tok_s"] == pytest.approx(res.confirm_tok_s) and res.confirm_tok_s > 0
    assert store.best_runtime(run_id).runtime.id == child.id  # ranked: it passed correctness
    # the same budget again: nothing runs, not even the confirmation, and no second child
    again = tune_runtime(store, rid, trials=3, workload=SIM_WL, harness=h, stages=SIM_STAGES,
                         device="cpu", progress=False, confirm_workload="kv-pressure-cpu")
    assert len(h.calls) == 4 and again.runtime_id == res.runtime_id
    assert again.confirm_tok_s == pytest.approx(res.confirm_tok_s)


def test_failed_confirmation_records_no_child_and_says_why(tmp_path):
    store, run_id, rid = _seed_runtime(f"sqlite:///{tmp_path}/sds.db")
    err = f"token {random.randint(1, 40)}: 17 != 301\n  at request 2"
    h = FakeSimHarness(random.choice([1024, 2048, 4096]), confirm_error=err)
    res = tune_runtime(store, rid, trials=6, workload="shared-prefix", harness=h,
                       stages=SIM_STAGES, device="cpu", progress=False)
    confirm = [c for c in h.calls if c["stages"] == CONFIRM_STAGES]
    assert len(confirm) == 1
    # default confirmation: the tuned workload's -cpu variant, with that workload's model
    assert confirm[0]["workload"] == "shared-prefix-cpu" and confirm[0]["model"] == "tiny"
    assert res.runtime_id is None and res.best_value is not None
    assert "correctness failed" in res.confirm_error and err.split("\n")[0] in res.confirm_error
    assert "\n" not in res.confirm_error
    assert not [r for r in store.list_runtimes(run_id) if r.operator == "tune"]
    # resumed with the same best: the failure is reported again without a second confirmation
    again = tune_runtime(store, rid, trials=6, workload="shared-prefix", harness=h,
                         stages=SIM_STAGES, device="cpu", progress=False)
    assert again.confirm_error == res.confirm_error and again.runtime_id is None
    assert len(h.calls) == 7


def test_sim_metric_can_be_minimized_and_studies_are_separate_per_fidelity(tmp_path):
    url = f"sqlite:///{tmp_path}/sds.db"
    store, _, rid = _seed_runtime(url)
    h = FakeSimHarness(2048)
    res = tune_runtime(store, rid, trials=8, workload=SIM_WL, harness=h, stages=SIM_STAGES,
                       device="cpu", progress=False, metric="modeled_ttft_p99_s",
                       direction="minimize", seed=random.randrange(1000))
    assert res.direction == "minimize" and res.runtime_id is not None
    ttfts = [h.modeled(RuntimeSpec.from_dict(c["spec"]))["modeled_ttft_p99_s"]
             for c in h.calls if c["stages"] == SIM_STAGES]
    assert res.best_value == pytest.approx(min(ttfts)) and res.best_value <= res.default_value
    bench = store.evaluations(runtime_id=res.runtime_id, stage="bench")
    assert bench[-1].metrics["tok_s"] == pytest.approx(h.confirm_tok_s)
    # engine, sim and sim-on-another-metric studies of one runtime and workload never share
    names = {study_name_for(rid, SIM_WL), study_name_for(rid, SIM_WL, "sim"),
             study_name_for(rid, SIM_WL, "sim", "modeled_ttft_p99_s", "minimize")}
    assert len(names) == 3 and res.study_name in names
    default = tune_runtime(store, rid, trials=2, workload=SIM_WL, harness=h, stages=SIM_STAGES,
                           device="cpu", progress=False)
    assert default.study_name != res.study_name and default.n_complete == 2  # not resumed


def _tune_cli(url: str, rid: int, *extra: str) -> int:
    return main(["tune", str(rid), "--db", url, "--trials", "3", "--json", *extra])


def test_cli_sim_confirmation_failure_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    import fitness

    url = f"sqlite:///{tmp_path}/sds.db"
    _, _, rid = _seed_runtime(url)
    monkeypatch.setattr(fitness, "Harness",
                        lambda **kw: FakeSimHarness(4096, confirm_error="bench timeout\nafter 300 s"))
    assert _tune_cli(url, rid, "--stages", "static,contract,sim", "--workload", SIM_WL,
                     "--metric", "modeled_tok_s:max") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "confirmation" in err[0] and "bench timeout" in err[0]


@pytest.mark.parametrize("extra, needle", [
    (["--stages", "static,contract,sim", "--metric", "modeled_tok_s:sideways"], "sideways"),
    (["--stages", "static,contract,sim", "--metric", ":min"], ":min"),
    (["--stages", "static,contract"], "static,contract"),
    (["--stages", "static,contract,sim", "--confirm-workload", "no-such-wl"], "no-such-wl"),
    (["--confirm-workload", "kv-pressure-cpu"], "sim"),
    (["--stages", "static,contract,sim,bench"], "bench"),
])
def test_cli_bad_sim_values_exit_2_with_one_line(tmp_path, capsys, extra, needle):
    url = f"sqlite:///{tmp_path}/sds.db"
    _, _, rid = _seed_runtime(url)
    assert _tune_cli(url, rid, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_default_confirm_workload_is_the_cpu_variant_on_cpu():
    assert default_confirm_workload("kv-pressure", "cpu") == "kv-pressure-cpu"
    assert default_confirm_workload("kv-pressure-cpu", "cpu") == "kv-pressure-cpu"
    assert default_confirm_workload("trace:chat.jsonl", "cpu") == "nanovllm-bench-cpu"
    assert default_confirm_workload("kv-pressure", "cuda") == "kv-pressure"  # full size on GPU
