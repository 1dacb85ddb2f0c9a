"""The harness: one runtime through the stages, cheapest first, stopping at the first failure.

`static` runs here, in-process (it never executes candidate code); everything else runs in
one sandboxed worker (fitness.sandbox), given as a fitness.jobs.WorkerJob, each stage under
its own wall-clock limit; fitness.outcome turns what the worker said into results.
Slot-level results (`static`, `contract`) are cached by code hash, in memory and in the
store (fitness.slotcache), so the same program is never contract-tested twice on one
device. Every stage is recorded in the store when one is given (fitness.recording).

Example:
    report = Harness().evaluate({"slots": {"scheduler": "file:/tmp/my_sched.py"}},
                                stages=("static", "contract"))
    report.status, report.failed_stage, report.error
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

from fitness import integrity
from fitness.channel import SandboxRun
from fitness.jobs import StageRun, WorkerJob
from fitness.oracle import OracleJudge
from fitness.outcome import stage_results
from fitness.recording import RecordTarget, environment, record
from fitness.result import BENCH_STAGES, STAGES, EvalReport, StageResult
from fitness.sandbox import (
    SandboxLimits,
    Worker,
    discard_worker,
    run_worker,
    spawn_worker,
)
from fitness.slotcache import SlotCache

DEFAULT_TIMEOUTS = {"static": 10.0, "contract": 120.0, "sim": 300.0, "correctness": 300.0,
                    "quick_bench": 300.0, "bench": 1800.0}


def _detect_device(device: str) -> str:
    if device != "auto":
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"Harness(device=...) must be 'auto', 'cpu' or 'cuda[:N]', "
                             f"got {device!r}")
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


class Harness:
    """Evaluates runtime specs through the stages; see the module docstring."""

    def __init__(self, store: Any = None, device: str = "auto",
                 timeouts: dict[str, float] | None = None, limits: SandboxLimits | None = None,
                 program_dir: str | Path | None = None, startup_timeout_s: float = 60.0,
                 options: dict[str, Any] | None = None, prestart: bool = False):
        unknown = set(timeouts or {}) - set(STAGES)
        if unknown:
            raise ValueError(f"Harness(timeouts=...): unknown stage(s) {sorted(unknown)}; "
                             f"stages are {STAGES}")
        self.store = store
        self.device = _detect_device(device)
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.limits = limits or SandboxLimits()
        if program_dir is None:  # our own: removed with the harness (one per Harness leaked)
            program_dir = tempfile.mkdtemp(prefix="sds-programs-")
            weakref.finalize(self, shutil.rmtree, program_dir, True)
        self.program_dir = Path(program_dir)
        self.startup_timeout_s = startup_timeout_s
        self.options = dict(options or {})  # passed to the worker's stages
        self.slot_cache = SlotCache(store, self.device)  # `static` and `contract` results
        # the baseline's sim metrics per (baseline, workload hash, sim options): one
        # simulation of the seed per workload per harness, not one per evaluation
        self._sim_base: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._oracle: OracleJudge | None = None  # made on first use (loads transformers)
        self._oracle_lock = threading.Lock()  # evaluations may run in several threads
        # prestart: a worker started ahead for the next evaluation (from the second one
        # on), so its process start and imports (~2 s on a CPU) overlap the current one.
        # Runs and tuning turn it on (evolve/launch.py, evolve/tune.py).
        self.prestart = prestart
        self._spare: list[Worker] = []
        self._worker_runs = 0
        self._spare_lock = threading.Lock()
        weakref.finalize(self, _discard_all, self._spare, self._spare_lock)
        self.last_run: SandboxRun | None = None  # the latest sandboxed worker run (debugging)

    # ------------------------------------------------------------------ spec handling

    def _resolve(self, spec: Any) -> dict[str, Any]:
        """The spec with every slot filled, sha256 refs materialized, file refs absolute."""
        from runtime_modules.slots import RuntimeSpec, SlotError, materialize, parse_ref

        d = RuntimeSpec.from_dict(spec).resolved(self.device).to_dict()
        for slot, choice in d["slots"].items():
            scheme, rest = parse_ref(slot, choice["program"])
            if scheme == "file":
                choice["program"] = "file:" + str(Path(rest).resolve())
            elif scheme == "sha256" and not (self.program_dir / f"{rest}.py").is_file():
                rec = self.store.program_by_hash(rest) if self.store is not None else None
                if rec is None:
                    raise SlotError(slot, f"program {choice['program']} is not in the store "
                                          f"({'no store given' if self.store is None else 'unknown hash'})")
                materialize(rec.code, self.program_dir)
        return d

    def _code(self, slot: str, ref: str) -> str:
        from runtime_modules.slots import parse_ref, program_path

        scheme, rest = parse_ref(slot, ref)
        path = self.program_dir / f"{rest}.py" if scheme == "sha256" else program_path(slot, ref)
        return path.read_text(encoding="utf-8")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, spec: Any, stages: tuple[str, ...] | list[str] = STAGES,
                 workload: str = "nanovllm-bench-cpu", baseline: Any = None,
                 runtime_id: int | None = None, run_id: int | None = None,
                 model: str = "tiny", slots: list[str] | None = None,
                 parents: dict[str, str] | None = None) -> EvalReport:
        """Run `stages` (in canonical order) on `spec`; slot stages cover `slots`.

        `slots` defaults to the spec's non-seed slots (all slots for an all-seed runtime);
        `parents` maps a slot to its parent's code, for the EVOLVE-BLOCK check.
        """
        return self.evaluate_workloads(spec, stages, [workload], baseline, runtime_id, run_id,
                                       model, slots, parents)[0]

    def evaluate_workloads(self, spec: Any, stages: tuple[str, ...] | list[str],
                           workloads: list[str], baseline: Any = None,
                           runtime_id: int | None = None, run_id: int | None = None,
                           model: str = "tiny", slots: list[str] | None = None,
                           parents: dict[str, str] | None = None) -> list[EvalReport]:
        """`stages` on the first workload, then the bench stages among them on each other one.

        One worker runs them all (one process start and one set of imports instead of one
        per workload). One report per workload, in order, up to the first that did not pass:
        the workloads after it are left out, not reported as passed. Without bench stages
        the other workloads' reports are empty (nothing depends on the workload).
        """
        workloads = list(workloads)
        wanted = _stage_plan(stages, workloads)
        benches = [s for s in wanted if s in BENCH_STAGES]
        d = self._resolve(spec)
        slots = _slots_under_test(d, slots)
        codes = {s: self._code(s, d["slots"][s]["program"]) for s in slots}
        reports = [EvalReport(spec=d, workload=wl, device=self.device,
                              workload_hash=self._workload_hash(wl) if benches else None)
                   for wl in workloads]
        worker_stages = self._stages_here(wanted, slots, d, codes, parents or {}, reports[0])
        # the first workload's stages, then the other workloads' bench stages
        runs = [(StageRun(s), 0) for s in worker_stages] + [
            (StageRun(s, workloads[i]), i) for i in range(1, len(workloads)) for s in benches]
        if runs and (not reports[0].stages or reports[0].stages[-1].ok):
            base_d, sim_base = self._sim_baselines(d, baseline, workloads, model) \
                if "sim" in benches else ({}, {})
            job = WorkerJob(runs=tuple(r for r, _ in runs), spec=d, slots=tuple(slots),
                            device=self.device, model=model, workload=workloads[0],
                            seed=secrets.randbelow(2**31),
                            baseline=self._resolve(baseline) if baseline is not None else None,
                            options={**self.options, "parents": parents or {},
                                     **self._sim_limits(sim_base)})
            for res, (stage, i) in zip(self._run_worker(job), runs):
                if stage.name == "sim":
                    res = self._sim_ratio(res, d, base_d, workloads[i],
                                          reports[i].workload_hash, sim_base.get(workloads[i]))
                reports[i].stages.append(res)
        return self._recorded(reports, RecordTarget(runtime_id, run_id, codes, d))

    def _stages_here(self, wanted: list[str], slots: list[str], d: dict[str, Any],
                     codes: dict[str, str], parents: dict[str, str],
                     report: EvalReport) -> list[str]:
        """Run the leading stages that need no worker (`static`; `contract` when every slot's
        result is cached) into `report`; return the stages left for the worker (none after
        a failure)."""
        for k, stage in enumerate(wanted):
            if stage == "static":
                res = self.slot_cache.static(slots, codes, parents)
            elif stage == "contract" and self.slot_cache.all_contracts_cached(d, codes):
                res = self.slot_cache.merged_contract(d, codes)
            else:
                return wanted[k:]
            report.stages.append(res)
            if not res.ok:
                return []
        return []

    def _recorded(self, reports: list[EvalReport], target: RecordTarget) -> list[EvalReport]:
        """Record the reports up to the first that did not pass, stage by stage; return them."""
        ran = []
        for r in reports:
            ran.append(r)
            for res in r.stages:
                record(self.store, res, target, r, self.device)
            if r.status != "passed":
                break
        return ran

    # ------------------------------------------------------------------ sim baselines

    def _sim_key(self, base_d: dict[str, Any], wl: str) -> tuple[str, str, str]:
        import json

        from fitness.sim import sim_options
        return (json.dumps(base_d, sort_keys=True), self._workload_hash(wl) or wl,
                json.dumps(sim_options(self.options), sort_keys=True))

    def _sim_baselines(self, d: dict[str, Any], baseline: Any, workloads: list[str],
                       model: str) -> tuple[dict[str, Any],
                                            dict[str, dict[str, Any] | StageResult]]:
        """The baseline's sim metrics per workload, simulated once in a worker of its own.

        The baseline (the run's seed runtime, else the device default) runs alone, so no
        candidate code shares its process; when the candidate *is* the baseline its own
        result fills the cache instead (`_sim_ratio`). A baseline that fails is returned as
        its StageResult, which the candidate's sim stage then reports.
        """
        from runtime_modules.slots import RuntimeSpec

        base_d = self._resolve(baseline if baseline is not None
                               else RuntimeSpec.default(self.device).to_dict())
        out: dict[str, dict[str, Any] | StageResult] = {}
        todo = []
        for wl in workloads:
            hit = self._sim_base.get(self._sim_key(base_d, wl))
            if hit is not None:
                out[wl] = hit
            elif base_d != d:
                todo.append(wl)
        if todo:
            runs = (StageRun("sim"),) + tuple(StageRun("sim", w) for w in todo[1:])
            job = WorkerJob(runs=runs, spec=base_d, device=self.device, model=model,
                            workload=todo[0], seed=secrets.randbelow(2**31),
                            options=dict(self.options))
            results = self._run_worker(job)
            for wl, res in zip(todo, results):
                if res.ok:
                    self._sim_base[self._sim_key(base_d, wl)] = dict(res.metrics)
                    out[wl] = dict(res.metrics)
                else:
                    out[wl] = res
            for wl in todo[len(results):]:
                out[wl] = results[-1]
        return base_d, out

    def _sim_limits(self, sim_base: dict[str, dict[str, Any] | StageResult]) -> dict[str, Any]:
        """Options that cut off a candidate far slower than the baseline, per workload."""
        if not sim_base:
            return {}
        factor = float(self.options.get("sim_max_slowdown", 4.0))
        # on the modeled clock; and in engine steps, which are what a simulation costs on a CPU
        return {"sim_max_modeled_s": {w: factor * b["modeled_time_s"]
                                      for w, b in sim_base.items() if isinstance(b, dict)},
                "sim_max_steps": {w: int(factor * b["work_steps"]) + 100
                                  for w, b in sim_base.items()
                                  if isinstance(b, dict) and "work_steps" in b}}

    def _sim_ratio(self, res: StageResult, d: dict[str, Any], base_d: dict[str, Any],
                   wl: str, whash: str | None,
                   base: dict[str, Any] | StageResult | None) -> StageResult:
        """The candidate's sim result with `modeled_ratio` against the baseline's."""
        if not res.ok:
            return res
        if base is None and base_d == d:  # the baseline itself: its result is the reference
            base = dict(res.metrics)
            self._sim_base[self._sim_key(base_d, wl)] = base
        if isinstance(base, StageResult) or base is None:
            why = base.error if isinstance(base, StageResult) else "no baseline result"
            return StageResult("sim", "crashed", res.metrics,
                               f"sim: the baseline runtime failed on {wl}: {why}",
                               res.artifacts, res.duration_s)
        if whash and res.artifacts.get("workload_hash") not in (None, whash):
            return StageResult("sim", "rejected", res.metrics, f"sim ran workload "
                               f"{res.artifacts.get('workload_hash')}, not {whash}",
                               res.artifacts, res.duration_s)
        m = dict(res.metrics)
        m["modeled_tok_s_baseline"] = base["modeled_tok_s"]
        m["modeled_ratio"] = m["modeled_tok_s"] / base["modeled_tok_s"]
        for k in ("modeled_ttft_p99_s", "modeled_tpot_p99_s", "goodput"):
            if k in base:
                m[f"{k}_baseline"] = base[k]
        return dataclasses.replace(res, metrics=m)

    def _run_worker(self, job: WorkerJob) -> list[StageResult]:
        """Run `job` in a sandboxed worker: one result per run, up to the first not passed."""
        env = {"SDS_PROGRAM_DIR": str(self.program_dir)}
        if not self.device.startswith("cuda"):
            env["TRITON_INTERPRET"] = "1"  # Triton kernels run under the interpreter on CPU
        judge = None
        if {"correctness", "bench"} & set(job.stage_names):
            oracle = self.oracle()
            judge = lambda run, msg: oracle.judge(job, run, msg)
        cpu_only = not self.device.startswith("cuda")
        with self._spare_lock:
            worker = self._spare.pop() if self._spare else None
        self._worker_runs += 1
        # the next evaluation's worker starts now, beside this one; not for a harness used
        # once (as in most tests), where it would only cost a process start
        if self.prestart and self._worker_runs >= 2:
            spare = spawn_worker(self.limits, cpu_only, env, preimport=list(STAGES))
            with self._spare_lock:
                self._spare.append(spare)
        if worker is None and len(job.runs) > 1 and job.runs[0].name == "contract" \
                and integrity.light_contract(job.slots):
            results = self._contract_first(job, env, cpu_only, judge)
        else:
            results = self._sandboxed(job, env, cpu_only, judge, worker)
        if job.runs and job.runs[0].name == "contract" and results and \
                results[0].stage == "contract" and results[0].status in ("passed", "failed"):
            codes = {s: self._code(s, job.spec["slots"][s]["program"]) for s in job.slots}
            self.slot_cache.remember_contract(job.spec, codes, results[0])
        return results

    def _contract_first(self, job: WorkerJob, env: dict[str, str], cpu_only: bool,
                        judge: Any) -> list[StageResult]:
        """`job` (contract first, no worker started ahead, scheduler or cache-policy slots
        only) as two workers: the contract in one that imports no engine or torch, while
        the one for the later stages starts (imports and all) beside it. A rejection then
        costs a light process start, not a torch import; a pass costs about what one
        worker did. The second worker is killed if the contract fails. (A kernel's
        contract needs torch itself: its job stays in one worker.)"""
        head = dataclasses.replace(job, runs=job.runs[:1])
        tail = dataclasses.replace(job, runs=job.runs[1:])
        later = spawn_worker(self.limits, cpu_only, env, preimport=tail.stage_names)
        try:
            results = self._sandboxed(head, env, cpu_only, None, None)
            if len(results) != 1 or results[0].status != "passed":
                return results
            worker, later = later, None
        finally:
            if later is not None:
                discard_worker(later)
        return results + self._sandboxed(tail, env, cpu_only, judge, worker)

    def _sandboxed(self, job: WorkerJob, env: dict[str, str], cpu_only: bool, judge: Any,
                   worker: Worker | None) -> list[StageResult]:
        """One sandboxed worker run of `job` (on `worker` if given): its stage results."""
        run = run_worker(job, self.timeouts, startup_timeout_s=self.startup_timeout_s,
                         limits=self.limits, cpu_only=cpu_only, env_extra=env, judge=judge,
                         worker=worker)
        self.last_run = run
        return stage_results(run, job.runs)

    def close(self) -> None:
        """Stop the worker started ahead, if any (also done when the harness is collected)."""
        _discard_all(self._spare, self._spare_lock)

    def oracle(self) -> OracleJudge:
        """The judge of worker outputs (fitness/oracle.py), one per harness."""
        with self._oracle_lock:
            if self._oracle is None:
                workdir = tempfile.mkdtemp(prefix="sds-oracle-")
                weakref.finalize(self, shutil.rmtree, workdir, True)
                self._oracle = OracleJudge(self.device, workdir)
            return self._oracle

    def _workload_hash(self, name: str) -> str | None:
        from fitness.workloads import get_workload
        return get_workload(name).content_hash

def _stage_plan(stages: tuple[str, ...] | list[str], workloads: list[str]) -> list[str]:
    """`stages` in canonical order, after checking them and that there is a workload."""
    if not workloads:
        raise ValueError("evaluate_workloads needs at least one workload")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; stages are {STAGES}")
    return [s for s in STAGES if s in stages]


def _slots_under_test(d: dict[str, Any], slots: list[str] | None) -> list[str]:
    """`slots`, checked against the spec `d`; by default its non-seed slots (all of them for
    an all-seed runtime)."""
    if slots is None:
        slots = [s for s, c in d["slots"].items() if not c["program"].startswith("seed:")]
        slots = slots or list(d["slots"])
    unknown = [s for s in slots if s not in d["slots"]]
    if unknown:
        raise ValueError(f"evaluate(slots=...): unknown slot(s) {unknown}")
    return slots


def _discard_all(spare: list[Worker], lock: threading.Lock) -> None:
    with lock:
        workers, spare[:] = list(spare), []
    for w in workers:
        discard_worker(w)


__all__ = ["DEFAULT_TIMEOUTS", "Harness", "environment"]
