"""Optuna tuning of one runtime's parameters: engine parameters and every slot's TUNABLES.

The study lives in the same database as the population (the storage URL is the only switch
between one process and many machines tuning one study against PostgreSQL), is named after
the runtime and workload so it resumes by name, and starts with the runtime's own parameters
so the result is never worse than the defaults. Each trial is one harness evaluation; a trial
that fails any stage is a FAIL trial, never a score. The best parameters become a child
runtime (operator `tune`) with the best trial's stage results recorded as its evaluations.

Two fidelities. `engine` (the default): each trial runs correctness and bench on the real
engine, scored on `tok_s`. `sim` (`sim` among the stages): each trial runs only the
candidate's scheduler and cache policy on the engine with a runner that skips the forward
pass (fitness/sim.py), at full size for a fraction of the cost, scored on `modeled_tok_s`
(or any metric, either direction); the best trial alone is then confirmed on the real
engine (correctness + bench on a confirmation workload), and becomes a child only if it
passes: nothing is ranked best without `correctness` (population_db/queries.py).

Example:
    >>> from population_db import Store
    >>> res = tune_runtime(Store.open("sqlite:///results/sds.db"), 12, trials=20)
    >>> res.runtime_id, res.best_value, res.default_value
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from evolve.tune_space import (  # noqa: F401  (re-exported: tests and callers use them here)
    CUDA_ENGINE_SPACE,
    ENGINE_DEFAULTS,
    ENGINE_SPACE,
    Param,
    TuneError,
    apply_params,
    read_tunables,
    search_space,
    suggest,
)
from evolve.tune_study import (  # noqa: F401  (re-exported: tests and callers use them here)
    CONFIRM_STAGES,
    DEFAULT_WORKLOAD,
    DIRECTIONS,
    METRIC,
    SIM_METRIC,
    SIM_TRIAL_STAGES,
    SLOT_LEVEL,
    TUNE_STAGES,
    Evaluator,
    Scoring,
    TrialFailed,
    TuneResult,
    default_confirm_workload,
    fail_orphans,
    finished_trials,
    first_heartbeat,
    open_storage,
    parse_metric,
    setup_lock,
    study_name_for,
)
from runtime_modules.slots import RuntimeSpec, materialize, program_dir

if TYPE_CHECKING:
    from fitness.result import EvalReport
    from population_db import RuntimeRecord, Store

log = logging.getLogger(__name__)


def materialize_spec(store: Store, spec: RuntimeSpec) -> None:
    """Write every `sha256:` program of `spec` from the store to the program dir."""
    for slot, choice in spec.slots.items():
        if choice.program.startswith("sha256:"):
            prog = store.program_by_hash(choice.program.split(":", 1)[1])
            if prog is None:
                raise TuneError(f"slot {slot}: program {choice.program} is not in the database")
            materialize(prog.code)


def _stage_rows(report: EvalReport) -> list[dict[str, Any]]:
    """A report's stage results as plain data small enough for a trial's user attrs."""
    rows = []
    for s in getattr(report, "stages", None) or []:
        rows.append({"stage": s.stage, "status": s.status, "metrics": dict(s.metrics or {}),
                     "error": (s.error or None) and str(s.error)[-2000:],
                     "duration_s": s.duration_s})
    return rows


def _load_runtime(store: Store, runtime_id: int) -> RuntimeRecord:
    from population_db import NotFound
    try:
        rt = store.get_runtime(int(runtime_id))
    except (NotFound, ValueError, TypeError):
        rt = None
    if rt is None:
        raise TuneError(f"runtime {runtime_id!r} not found in the database")
    return rt


def _storage_url(store: Store) -> str:
    url = getattr(store, "url", None)
    if url is None:
        url = store.engine.url.render_as_string(hide_password=False)
    return str(url)


def _workload_facts(workload: str, model: str | None) -> tuple[frozenset[str], str]:
    """The engine keys a workload fixes itself, and the model it is sized for."""
    from fitness.workloads import get_workload
    try:
        w = get_workload(workload)
    except (KeyError, ValueError) as e:
        raise TuneError(str(e)) from None
    return frozenset(w.engine_overrides), model or w.model


def _scoring(stages: tuple[str, ...], metric: str | None, direction: str,
             confirm_workload: str | None, workload: str, device: str) -> Scoring:
    """How this study scores its trials, checked before any trial runs."""
    from fitness import STAGES

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise TuneError(f"stages must be drawn from {', '.join(STAGES)}, got {list(stages)}")
    if direction not in ("maximize", "minimize"):
        raise TuneError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if metric is not None:
        metric, _ = parse_metric(metric)
    if "sim" not in stages:
        if confirm_workload is not None:
            raise TuneError(f"confirm_workload={confirm_workload!r} needs the sim stage: an "
                            f"engine study's trials already run on the real engine")
        return Scoring("engine", metric or METRIC, direction)
    engine = [s for s in stages if s not in SIM_TRIAL_STAGES]
    if engine:
        raise TuneError(f"a sim study's trials run only {', '.join(SIM_TRIAL_STAGES)}; "
                        f"{', '.join(engine)} run once, to confirm the best, got {list(stages)}")
    cw = confirm_workload or default_confirm_workload(workload, device)
    _, confirm_model = _workload_facts(cw, None)
    return Scoring("sim", metric or SIM_METRIC, direction, cw, confirm_model)


def _usable(value: Any, metric: str) -> bool:
    """A finite number (and, for a throughput, a positive one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 or not metric.endswith("tok_s")


def _why(report: EvalReport) -> str:
    """One line: the stage a report failed at, its status, and its error."""
    failed = [s for s in getattr(report, "stages", None) or [] if s.status != "passed"]
    err = failed[-1].error if failed else None
    return " ".join(f"{report.failed_stage or '?'} {report.status}: "
                    f"{err or 'no error text'}".split())


def tune_runtime(store: Store, runtime_id: int, trials: int = 20,
                 workload: str = DEFAULT_WORKLOAD, study_name: str | None = None, seed: int = 0,
                 harness: Evaluator | None = None, timeout_s: float | None = None, *,
                 stages: tuple[str, ...] | None = None, model: str | None = None,
                 device: str | None = None, heartbeat_s: int | None = 30,
                 progress: bool = True, metric: str | None = None,
                 direction: str = "maximize",
                 confirm_workload: str | None = None) -> TuneResult:
    """Tune runtime `runtime_id` with `trials` harness evaluations; return what was found.

    Resumes the study of the same name: finished (COMPLETE or FAIL) trials count toward
    `trials` and are never repeated; a trial killed mid-way is retried once its heartbeat
    is stale. Example: `tune_runtime(store, 7, trials=30, workload="shared-prefix-cpu")`.

    With `sim` among `stages` (e.g. `("static", "contract", "sim")`) trials are scored in
    simulation on `metric` (default modeled_tok_s; `direction` "minimize" for latencies),
    and the best is confirmed with correctness + bench on `confirm_workload` (default:
    `default_confirm_workload`) before it becomes a child; a best that fails is not recorded
    and `TuneResult.confirm_error` says why. Example: `tune_runtime(store, 7, trials=40,
    workload="shared-prefix", stages=("static", "contract", "sim"))`.
    """
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise TuneError(f"trials must be a positive integer, got {trials!r}")
    rt = _load_runtime(store, runtime_id)
    spec = RuntimeSpec.from_dict(dict(rt.spec))
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stages = tuple(stages or TUNE_STAGES)
    scoring = _scoring(stages, metric, direction, confirm_workload, workload, device)
    if harness is None:
        from fitness import Harness
        # No store: trial results live in the study; only the winner is recorded (below).
        harness = Harness(store=None, device=device, program_dir=program_dir(), prestart=True)
    fixed, model = _workload_facts(workload, model)
    materialize_spec(store, spec)
    space = search_space(spec, device, fixed)
    name = study_name or study_name_for(rt.id, workload, scoring.fidelity, scoring.metric,
                                        scoring.direction)
    study, storage = _open_study(_storage_url(store), name, scoring, space, seed, heartbeat_s)

    def evaluate(cand: Any) -> Any:
        # The tuned runtime is the baseline: bench interleaves the two, so each trial also
        # carries its speed ratio over the untuned runtime measured in the same process
        # (sim: the harness simulates the baseline once and divides).
        return harness.evaluate(cand, stages=stages, workload=workload, model=model,
                                baseline=spec)

    objective = _objective(evaluate, spec, space, device, scoring,
                           storage if heartbeat_s else None)
    _optimize(study, objective, trials, timeout_s, scoring, progress, f"tune rt{rt.id}")
    return _finish(store, study, rt, spec, space, workload, device, trials, scoring, harness)


def _open_study(url: str, name: str, scoring: Scoring, space: list[Param], seed: int,
                heartbeat_s: int | None) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The study `name` (created or resumed, first trial the defaults) and its storage."""
    with setup_lock(url):
        storage = open_storage(url, heartbeat_s)
        study = optuna.create_study(study_name=name, storage=storage,
                                    direction=scoring.direction, load_if_exists=True)
        if study.direction.name.lower() != scoring.direction:
            raise TuneError(f"study {name!r} exists and {study.direction.name.lower()}s its "
                            f"objective; this tuning would {scoring.direction} "
                            f"{scoring.metric}: pick another study name")
        defaults = {p.name: p.default for p in space if p.default is not None}
        study.enqueue_trial(defaults, user_attrs={"sds_default": True}, skip_if_exists=True)
    # A resumed study must not replay the random start-up samples of the first session; on a
    # shared server (many workers, no reproducible order anyway) each worker also gets its own
    # stream so two workers never sample the same start-up points.
    salt = 0 if url.startswith("sqlite") else random.SystemRandom().getrandbits(31)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials) + salt,
                                               constant_liar=salt != 0)
    if heartbeat_s:
        fail_orphans(study, storage, 2 * heartbeat_s)
    return study, storage


def _objective(evaluate: Callable[[Any], Any], spec: RuntimeSpec, space: list[Param],
               device: str, scoring: Scoring,
               heartbeat: optuna.storages.RDBStorage | None = None,
               ) -> Callable[[optuna.Trial], float]:
    """Optuna's objective: one harness evaluation per trial; a failed one raises TrialFailed.

    With `heartbeat`, see `first_heartbeat`."""
    ratio_key = "modeled_ratio" if scoring.fidelity == "sim" else "ratio"

    def objective(trial: optuna.Trial) -> float:
        if heartbeat is not None:
            first_heartbeat(heartbeat, trial)
        trial.set_user_attr("sds_started", True)  # see tune_study.fail_orphans
        values = {p.name: suggest(trial, p) for p in space}
        report = evaluate(apply_params(spec, space, values, device))
        trial.set_user_attr("stages", _stage_rows(report))
        trial.set_user_attr("workload_hash", getattr(report, "workload_hash", None))
        trial.set_user_attr("ratio", (report.metrics or {}).get(ratio_key))
        value = (report.metrics or {}).get(scoring.metric)
        if report.status != "passed":
            reason = _why(report)
            trial.set_user_attr("fail_reason", reason[:500])
            raise TrialFailed(reason)
        if not _usable(value, scoring.metric):
            trial.set_user_attr("fail_reason", f"no usable {scoring.metric} metric: {value!r}")
            raise TrialFailed(f"passed without a usable {scoring.metric} metric: {value!r}")
        return float(value)

    return objective


def _optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float], trials: int,
              timeout_s: float | None, scoring: Scoring, progress: bool, desc: str) -> None:
    """Run trials until `trials` are finished (by any worker sharing the study)."""
    done = len(finished_trials(study))
    if done >= trials:
        return
    bar = tqdm(total=trials, initial=done, desc=desc, unit="trial", disable=not progress,
               dynamic_ncols=True)
    pick = max if scoring.direction == "maximize" else min

    def on_trial(st: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
        fin = finished_trials(st)
        bar.n = min(len(fin), trials)
        best = pick((t.value for t in fin if t.state == TrialState.COMPLETE), default=None)
        bar.set_postfix({f"best_{scoring.metric}": "-" if best is None else f"{best:.4g}",
                         "failed": sum(t.state == TrialState.FAIL for t in fin)})
        if len(fin) >= trials:  # other workers count too (one study, many machines)
            st.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=trials - done, timeout=timeout_s,
                       catch=(TrialFailed,), callbacks=[on_trial])
    bar.close()


def _finish(store: Store, study: optuna.Study, rt: RuntimeRecord, spec: RuntimeSpec, space: list[Param],
            workload: str, device: str, trials: int, scoring: Scoring,
            harness: Evaluator) -> TuneResult:
    """Record the best trial as a child runtime (once per best trial) and summarize.

    In sim, the best is first confirmed on the real engine (once per best trial: a failed
    confirmation is remembered in the study, not repeated on every resume).
    """
    all_trials = finished_trials(study)
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    failed = [t for t in all_trials if t.state == TrialState.FAIL]
    reasons: dict[str, int] = {}
    for t in failed:
        key = str(t.user_attrs.get("fail_reason", "unknown")).split(":", 1)[0]
        reasons[key] = reasons.get(key, 0) + 1
    default_vals = [t.value for t in complete if t.user_attrs.get("sds_default")]
    default_value = default_vals[0] if default_vals else None
    base = {"study_name": study.study_name, "parent_id": rt.id, "default_value": default_value,
            "n_complete": len(complete), "n_failed": len(failed), "trials": trials,
            "workload": workload, "fail_reasons": reasons, "fidelity": scoring.fidelity,
            "metric": scoring.metric, "direction": scoring.direction,
            "confirm_workload": scoring.confirm_workload}
    if not complete:
        return TuneResult(runtime_id=None, best_value=None, best_params={}, spec=None, **base)
    sign = 1.0 if scoring.direction == "maximize" else -1.0
    best = max(complete, key=lambda t: (sign * t.value, -t.number))
    tuned = apply_params(spec, space, best.params, device).to_dict()
    found = {"best_value": best.value, "best_params": dict(best.params), "spec": tuned,
             "best_ratio": best.user_attrs.get("ratio")}
    recorded = study.user_attrs.get("sds_tuned") or {}
    if recorded.get("trial") == best.number:
        return TuneResult(runtime_id=recorded["runtime_id"], **found, **base,
                          confirm_tok_s=recorded.get("confirm_tok_s"),
                          confirm_ratio=recorded.get("confirm_ratio"))
    rows = [(r, workload, best.user_attrs.get("workload_hash"))
            for r in best.user_attrs.get("stages", [])]
    extra: dict[str, Any] = {}
    confirmed: dict[str, Any] = {}
    if scoring.fidelity == "sim":
        conf = _confirm(study, best.number, tuned, spec, scoring, harness)
        if "error" in conf:
            return TuneResult(runtime_id=None, **found, **base, confirm_error=conf["error"])
        rows += [(r, scoring.confirm_workload, conf["workload_hash"]) for r in conf["rows"]]
        extra = {"fidelity": "sim", "confirmed": 1}
        confirmed = {"confirm_tok_s": conf["tok_s"], "confirm_ratio": conf["ratio"]}
    child = _record_child(store, rt, tuned, rows, extra, device,
                          {"study": study.study_name, "trial": best.number})
    study.set_user_attr("sds_tuned", {"trial": best.number, "runtime_id": child.id,
                                      **confirmed})
    log.info("tuned runtime %s -> %s (%s %.4g)", rt.id, child.id, scoring.metric, best.value)
    return TuneResult(runtime_id=child.id, **found, **base, **confirmed)


def _record_child(store: Store, rt: RuntimeRecord, tuned: dict[str, Any], rows: list[Any],
                  extra: dict[str, Any], device: str, artifacts: dict[str, Any]) -> Any:
    """The tuned runtime as a child of `rt`, with the best trial's stage results."""
    child = store.add_runtime(rt.run_id, tuned, island=getattr(rt, "island", 0) or 0,
                              generation=(getattr(rt, "generation", 0) or 0) + 1,
                              operator="tune", parents=[(rt.id, "parent")])
    for row, wl, whash in rows:
        if row["stage"] in SLOT_LEVEL:
            continue
        store.add_evaluation(stage=row["stage"], status=row["status"], runtime_id=child.id,
                             run_id=rt.run_id, metrics={**row["metrics"], **extra},
                             error=row["error"], workload=wl, device=device,
                             workload_hash=whash, artifacts=artifacts,
                             duration_s=row["duration_s"])
    return child


def _confirm(study: optuna.Study, trial: int, tuned: dict[str, Any], spec: RuntimeSpec,
             scoring: Scoring, harness: Evaluator) -> dict[str, Any]:
    """The sim best on the real engine: its stage rows, tok/s and ratio, or `error`.

    A failure is stored in the study for this trial and workload, so a resumed study with the
    same best reports it again without rerunning it.
    """
    key = {"trial": trial, "workload": scoring.confirm_workload}
    failed = study.user_attrs.get("sds_confirm_failed") or {}
    if {k: failed.get(k) for k in key} == key:
        return {"error": failed["error"]}
    report = harness.evaluate(tuned, stages=CONFIRM_STAGES, workload=scoring.confirm_workload,
                              model=scoring.confirm_model, baseline=spec)
    tok_s = (report.metrics or {}).get(METRIC)
    if report.status != "passed":
        error = _why(report)
    elif not _usable(tok_s, METRIC):
        error = f"bench passed without a usable {METRIC} metric: {tok_s!r}"
    else:
        return {"rows": _stage_rows(report), "tok_s": float(tok_s),
                "ratio": report.metrics.get("ratio"),
                "workload_hash": getattr(report, "workload_hash", None)}
    error = f"trial {trial} failed confirmation on {scoring.confirm_workload}: {error}"[:1000]
    study.set_user_attr("sds_confirm_failed", {**key, "error": error})
    log.warning("%s: %s", study.study_name, error)
    return {"error": error}
