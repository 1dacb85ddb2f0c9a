"""Multi-fidelity scoring: sim selects, the real engine confirms only what the gate lets
through, and nothing unconfirmed is ranked best."""

from __future__ import annotations

from evolve.scoring import Confirm, score_runtime
from fitness.result import EvalReport, StageResult
from population_db import Store


class _Harness:
    """Reports fixed metrics per stage; records which stages ran on which workloads."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self.fail = fail

    def evaluate_workloads(self, spec, stages, workloads, **kw):
        self.calls.append((tuple(stages), tuple(workloads)))
        out = []
        for wl in workloads:
            rep = EvalReport(spec=spec, workload=wl)
            for st in stages:
                ok = st != self.fail
                m = {"sim": {"modeled_ratio": 1.2, "modeled_tok_s": 10.0, "work_steps": 5},
                     "bench": {"tok_s": 3.0, "ratio": 1.01}}.get(st, {})
                rep.stages.append(StageResult(st, "passed" if ok else "failed", m,
                                              None if ok else f"{st} broke"))
                if not ok:
                    break
            out.append(rep)
            if rep.status != "passed":
                break
        return out


STAGES = ["static", "contract", "sim", "correctness", "bench"]


def _score(h: _Harness, gate: bool):
    return score_runtime(h, {"slots": {}}, STAGES, ["shared-prefix"], None, None, None,
                         "tiny", confirm=Confirm(["shared-prefix-cpu"], lambda m: gate))


def test_the_gate_decides_whether_the_real_engine_runs() -> None:
    h = _Harness()
    res = _score(h, gate=False)
    assert res.status == "passed" and res.metrics["confirmed"] == 0
    assert res.metrics["fidelity"] == "sim" and res.metrics["modeled_ratio"] == 1.2
    assert h.calls == [(("static", "contract", "sim"), ("shared-prefix",))]
    h = _Harness()
    res = _score(h, gate=True)
    assert res.metrics["confirmed"] == 1 and res.metrics["confirm_tok_s"] == 3.0
    assert h.calls[1] == (("correctness", "bench"), ("shared-prefix-cpu",))


def test_a_child_wrong_on_the_real_engine_fails() -> None:
    res = _score(_Harness(fail="correctness"), gate=True)
    assert res.status == "failed" and "correctness" in (res.error or "")


def test_an_unconfirmed_score_is_never_ranked(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/s.db")
    run, _ = store.get_or_create_run("r", {})
    ids = []
    for ratio, confirmed in ((1.5, 0), (1.1, 1), (1.0, None)):
        rt = store.add_runtime(run.id, {"slots": {}, "n": len(ids)}, operator="gp")
        m = {"modeled_ratio": ratio}
        if confirmed is not None:
            m["confirmed"] = confirmed
        store.add_evaluation("full", "passed", runtime_id=rt.id, metrics=m, run_id=run.id)
        ids.append(rt.id)
    board = store.leaderboard("r", metric="modeled_ratio")
    assert [b.runtime.id for b in board] == [ids[1], ids[2]]  # 1.5 (sim only) left out
