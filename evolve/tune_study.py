"""The Optuna study behind `sds tune`: its storage, its name, its score and its result.

The study lives in the same database URL as the population (the storage URL is the only
switch between one process and many machines), is named after the runtime, workload and
fidelity so it resumes by name, and counts a trial as done when it COMPLETEs or FAILs with a
recorded reason. Only Optuna's public API is used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import TrialState

from evolve.tune_space import TuneError

if TYPE_CHECKING:
    from fitness.result import EvalReport

log = logging.getLogger(__name__)


class Evaluator(Protocol):
    """What tuning needs from a harness (fitness.Harness, or a fake in tests)."""

    def evaluate(self, spec: Any, *, stages: tuple[str, ...], workload: str,
                 model: str | None, baseline: Any) -> EvalReport:
        """Run `spec` through `stages` on `workload`, against `baseline` where it is timed."""
        ...

DEFAULT_WORKLOAD = "nanovllm-bench-cpu"
METRIC = "tok_s"
# quick_bench only screens against a parent; a trial has none, and bench measures anyway.
TUNE_STAGES = ("static", "contract", "correctness", "bench")
SLOT_LEVEL = ("static", "contract")  # recorded per program by the harness, not per runtime
SIM_TRIAL_STAGES = ("static", "contract", "sim")  # what a sim trial may run: no real engine
CONFIRM_STAGES = ("correctness", "bench")  # the sim fidelity's best, once, on the real engine
SIM_METRIC = "modeled_tok_s"
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize",
              "minimize": "minimize"}

class TrialFailed(Exception):
    """A trial whose evaluation did not pass: Optuna records it as FAIL."""


@dataclass(frozen=True, slots=True)
class Scoring:
    """How trials are scored: fidelity, metric and its direction, and (sim) the confirmation."""

    fidelity: str  # "engine" or "sim"
    metric: str
    direction: str  # "maximize" or "minimize"
    confirm_workload: str | None = None  # sim only: where the best is confirmed
    confirm_model: str | None = None

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` beats score `b` in this direction."""
        return a > b if self.direction == "maximize" else a < b


@dataclass(frozen=True, slots=True)
class TuneResult:
    """What a tuning study found."""

    study_name: str
    parent_id: int
    runtime_id: int | None  # the tuned child runtime (None when no trial passed)
    best_value: float | None
    default_value: float | None  # the value of the runtime's own parameters (first trial)
    best_params: dict[str, Any]
    spec: dict[str, Any] | None
    n_complete: int
    n_failed: int
    trials: int
    workload: str
    fail_reasons: dict[str, int] = field(default_factory=dict)
    # best trial's tok/s over the untuned runtime's, interleaved (sim: modeled_ratio)
    best_ratio: float | None = None
    fidelity: str = "engine"
    metric: str = METRIC
    direction: str = "maximize"
    confirm_workload: str | None = None  # sim: the real-engine workload of the confirmation
    confirm_tok_s: float | None = None  # sim: the confirmed best's real tok/s
    confirm_ratio: float | None = None  # ... over the untuned runtime's
    confirm_error: str | None = None  # sim: why the best was not recorded (failed confirmation)

    @property
    def improved(self) -> bool:
        """Whether the best trial beat the runtime's own parameters."""
        if self.best_value is None or self.default_value is None:
            return False
        if self.direction == "minimize":
            return self.best_value < self.default_value
        return self.best_value > self.default_value


def parse_metric(text: str) -> tuple[str, str]:
    """`NAME[:max|:min]` as (NAME, "maximize" | "minimize"); no suffix means maximize.

    >>> parse_metric("modeled_ttft_p99_s:min")
    ('modeled_ttft_p99_s', 'minimize')
    """
    name, _, sense = str(text).strip().partition(":")
    name = name.strip()
    if not name or not name.replace("_", "").isalnum() or (sense and sense not in DIRECTIONS):
        raise TuneError(f"metric must be NAME, NAME:max or NAME:min (e.g. modeled_tok_s:max, "
                        f"modeled_ttft_p99_s:min), got {text!r}")
    return name, DIRECTIONS[sense or "max"]


def default_confirm_workload(workload: str, device: str) -> str:
    """Where a sim study's best is confirmed on the real engine: on CUDA the tuned workload
    itself; on CPU its `-cpu` variant when one exists, else nanovllm-bench-cpu."""
    from fitness.workloads import WORKLOADS

    if device != "cpu" or workload.endswith("-cpu"):
        return workload
    return f"{workload}-cpu" if f"{workload}-cpu" in WORKLOADS else DEFAULT_WORKLOAD


def study_name_for(runtime_id: int, workload: str, fidelity: str = "engine",
                   metric: str | None = None, direction: str = "maximize") -> str:
    """The study name of a runtime on a workload: tuning resumes by it.

    The fidelity, and a metric or direction other than the fidelity's default, are part of
    the name, so a sim study never resumes an engine study (their values are not comparable).
    """
    name = f"sds-tune-rt{runtime_id}-{workload}" if fidelity == "engine" \
        else f"sds-tune-{fidelity}-rt{runtime_id}-{workload}"
    default = SIM_METRIC if fidelity == "sim" else METRIC
    if (metric or default) != default or direction != "maximize":
        name += f"-{metric or default}-{direction[:3]}"
    return name


def open_storage(url: str, heartbeat_s: int | None = 30) -> optuna.storages.RDBStorage:
    """An Optuna RDBStorage on the sds database URL, with stale-trial retry by heartbeat."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Optuna writes in its own connections beside the store's: wait for the lock
        # instead of failing with "database is locked".
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    hb: dict[str, Any] = {}
    if heartbeat_s:
        retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
            or optuna.storages.RetryFailedTrialCallback
        hb = {"heartbeat_interval": int(heartbeat_s), "grace_period": int(heartbeat_s) * 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if heartbeat_s:
            hb["heartbeat_stale_trial_callback"] = retry_cls(max_retry=2)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **hb)
        except TypeError:  # optuna < 4.9 names it failed_trial_callback
            hb["failed_trial_callback"] = hb.pop("heartbeat_stale_trial_callback")
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **hb)


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, one worker at a time creates Optuna's tables, the study and its first
    trial (concurrent workers race on all three otherwise)."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(731002)"))
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(731002)"))
    finally:
        engine.dispose()


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward the budget: COMPLETE, or FAIL with a recorded reason.

    A trial killed mid-way (its heartbeat went stale) also ends as FAIL, but without a
    reason: it is retried, not counted.
    """
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs)]


def first_heartbeat(storage: optuna.storages.RDBStorage, trial: optuna.Trial) -> None:
    """Write `trial`'s heartbeat now, before the objective marks it `sds_started`.

    Optuna's stale check skips a RUNNING trial with no heartbeat at all, and its heartbeat
    thread races the objective: a process killed after the mark but before that thread's
    first write would leave the trial RUNNING for ever (`fail_orphans` spares marked ones).
    """
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                             trial.number))


def fail_orphans(study: optuna.Study, storage: optuna.storages.RDBStorage,
                 grace_s: float) -> None:
    """FAIL trials killed before their objective started (stale-trial checks never see them).

    Optuna fails a trial whose heartbeat went stale, but a process killed between a trial
    becoming RUNNING and its first heartbeat leaves it RUNNING forever. Every objective
    marks its trial `sds_started` first thing (tune.py), so a RUNNING trial without the
    mark, older than `grace_s`, never ran.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    now = dt.datetime.now()  # Optuna stores local naive times
    for t in running:
        if "sds_started" in t.user_attrs or t.datetime_start is None \
                or (now - t.datetime_start).total_seconds() <= grace_s:
            continue
        log.warning("trial %d of %s was killed before it started; marking it failed",
                    t.number, study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
