"""The evolution controller: steady state, asynchronous, resumable from the database.

A bounded number of proposals (operator calls; LLM calls are slow) and of evaluations (each
already a sandboxed subprocess in the harness) run in two thread pools; the main thread is
the only one that writes the run's records, and it records each result as it lands.

Flow per child: pick an island, select parent(s) and inspirations, build a MutationContext,
`operator.propose`, record its LLM calls; a Rejected becomes a `propose`/`rejected` row with
the reason, a Proposal a program (dedupe by code hash: a child the run already has becomes a
`duplicate` row and is not evaluated), then a runtime with its parent edges and one keyed
`full` evaluation row (pending -> final status). A SIGKILL at any point is recoverable:
`population.load_state` re-queues every runtime without a final row and counts the rest.

Example:
    outcome = Controller(cfg, store, harness, name="demo").run()
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

from evolve import selection as sel
from evolve.config import RunConfig
from evolve.islands import IslandBook
from evolve.operators.base import Candidate, MutationContext, Proposal, Rejected
from evolve.population import (
    FULL,
    PROPOSE,
    llm_usage,
    load_state,
    record_result,
    slot_code,
    slot_hashes,
    spec_key,
)
from evolve.scoring import ChildResult, score_runtime
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a controller session ended."""

    run_id: int
    name: str
    status: str  # run status: finished | stopped | failed
    reason: str  # max_evaluations, max_llm_usd, ..., stagnation, interrupted, seed_failed
    evaluations: int
    wall_s: float


class Controller:
    """Runs (or resumes) one named run of a config; see the module docstring."""

    def __init__(self, cfg: RunConfig, store: Any, harness: Any, name: str | None = None,
                 operators: dict[str, Any] | None = None, device: str = "cpu",
                 on_progress: Callable[[dict[str, Any]], None] | None = None):
        self.cfg, self.store, self.harness, self.device = cfg, store, harness, device
        self.name = name or cfg.name or "run"
        self.objectives = cfg.selection.parsed_objectives()
        self.operators = operators if operators is not None else _build_operators(cfg)
        self.on_progress = on_progress
        self.reason: str | None = None
        self._interrupts = 0
        self._lock = threading.Lock()
        self._usd = 0.0
        self._code_cache: dict[str, str] = {}
        self._prog_ids: dict[str, int] = {}
        self._parent_code: dict[int, dict[str, str]] = {}  # child -> {slot: parent's code}

    # ------------------------------------------------------------------ the main loop

    def run(self) -> Outcome:
        """Run until a budget, stagnation, Ctrl-C or a failing seed stops it."""
        cfg = self.cfg
        run, created = self.store.get_or_create_run(self.name, config=cfg.raw, seed=cfg.seed)
        self.run_id = run.id
        self.st = load_state(self.store, run.id, cfg.target.slots)
        self.book = IslandBook(self, self.store.events(run.id))
        self.rng = random.Random(f"{cfg.seed}/{self.st.proposals}")  # fresh stream on resume
        self._usd = llm_usage(self.store, run.id)["usd"]
        self.prior_wall = sum(float((e.data or {}).get("wall_s", 0.0))
                              for e in self.store.events(run.id, "session_end"))
        self.t0 = time.monotonic()
        self.done0 = self.st.done
        self.store.set_run_status(run.id, "running")
        if self.st.seed_runtime_id is None:
            self._add_seed()
        for rid in self.st.unqueued:
            self.st.to_evaluate.append((rid, self.store.enqueue_evaluation(run.id, rid, FULL)))
        self.store.add_event(run.id, "start" if created else "resume",
                             {"evaluations_done": self.st.done, "config_file": cfg.source,
                              "requeued": [r for r, _ in self.st.to_evaluate]})
        queue = deque(self.st.to_evaluate)
        old = self._install_sigint()
        try:
            self._loop(queue)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        status = {"interrupted": "stopped", "seed_failed": "failed"}.get(self.reason or "",
                                                                          "finished")
        wall = time.monotonic() - self.t0
        self.store.add_event(run.id, "session_end", {"wall_s": wall, "reason": self.reason,
                                                     "evaluations_done": self.st.done})
        self.store.set_run_status(run.id, status)
        self._progress()
        return Outcome(run.id, self.name, status, self.reason or "", self.st.done, wall)

    def _loop(self, queue: deque) -> None:
        cc = self.cfg.concurrency
        pp = ThreadPoolExecutor(cc.max_proposals, "sds-propose")
        ep = ThreadPoolExecutor(cc.max_evaluations, "sds-eval")
        try:
            self._steps(queue, pp, ep)
        except KeyboardInterrupt:  # a second Ctrl-C: in-flight work stays pending for resume
            self._stop("interrupted", {})
            pp.shutdown(wait=False, cancel_futures=True)
            ep.shutdown(wait=False, cancel_futures=True)
            return
        pp.shutdown()
        ep.shutdown()

    def _steps(self, queue: deque, pp: ThreadPoolExecutor, ep: ThreadPoolExecutor) -> None:
        cc = self.cfg.concurrency
        props: dict[Future, tuple] = {}
        evals: dict[Future, tuple[int, int]] = {}
        while True:
            if self.reason is None:
                self._check_budgets(len(evals) + len(queue) + len(props))
            if self.reason is None:
                while queue and len(evals) < cc.max_evaluations:
                    rid, eid = queue.popleft()
                    evals[ep.submit(self._evaluate, rid)] = (rid, eid)
                while len(props) < cc.max_proposals and self._may_propose(
                        len(evals) + len(queue) + len(props)):
                    fut, info = self._submit_proposal(pp)
                    props[fut] = info
            if not props and not evals:
                if self.reason is None and not queue:
                    self._stop("nothing_to_do", {})
                if self.reason is not None:
                    return
            done, _ = wait(list(props) + list(evals), timeout=0.5,
                           return_when=FIRST_COMPLETED)
            for fut in done:
                if fut in props:
                    queued = self._on_proposal(fut.result(), props.pop(fut))
                    if queued:
                        queue.append(queued)
                else:
                    rid, eid = evals.pop(fut)
                    self._on_result(rid, eid, fut.result())
            self._progress()

    # ------------------------------------------------------------------ budgets and stops

    def _stop(self, reason: str, data: dict[str, Any], kind: str = "stop") -> None:
        if self.reason is None:
            self.reason = reason
            self.store.add_event(self.run_id, kind, {"reason": reason, **data})
            log.info("run %s stopping: %s %s", self.name, reason, data)

    def _check_budgets(self, in_flight: int) -> None:
        b, st = self.cfg.budget, self.st
        wall = self.prior_wall + time.monotonic() - self.t0
        checks = [("max_evaluations", st.done, b.max_evaluations),
                  ("max_llm_usd", self._usd, b.max_llm_usd),
                  ("max_gpu_seconds", st.gpu_seconds, b.max_gpu_seconds),
                  ("max_wall_seconds", wall, b.max_wall_seconds)]
        for name, used, limit in checks:
            if limit is not None and used >= limit:
                return self._stop(name, {"budget": name, "used": used, "limit": limit},
                                  "budget_stop")
        if st.proposals >= self.cfg.max_proposals() and in_flight == 0:
            self._stop("max_proposals", {"budget": "max_proposals", "used": st.proposals,
                                         "limit": self.cfg.max_proposals()}, "budget_stop")

    def _may_propose(self, in_flight: int) -> bool:
        seed = self.st.members.get(self.st.seed_runtime_id)
        return (seed is not None and seed.passed
                and self.st.done + in_flight < self.cfg.budget.max_evaluations
                and self.st.proposals < self.cfg.max_proposals())

    def budget_ok(self, est_cost: float) -> bool:
        """Whether an LLM call of `est_cost` dollars fits the dollar budget (any thread)."""
        limit = self.cfg.budget.max_llm_usd
        with self._lock:
            return limit is None or self._usd + est_cost <= limit

    def _install_sigint(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt  # second Ctrl-C: leave in-flight work pending
            log.warning("Ctrl-C: finishing in-flight work, then stopping (again to abandon it)")
            self._stop("interrupted", {})

        return signal.signal(signal.SIGINT, handler)

    # ------------------------------------------------------------------ children

    def _add_seed(self) -> None:
        spec = self.cfg.seed_spec(self.device).to_dict()
        rt = self.store.add_runtime(self.run_id, spec, island=0, generation=0, operator="seed")
        self.st.members[rt.id] = sel.Member(rt.id, 0, rt.spec, 0, "seed")
        self.st.seed_runtime_id = rt.id
        self.st.seen_specs.add(spec_key(rt.spec))
        self.st.seen_codes |= slot_hashes(self.store, rt.spec, self.cfg.target.slots, {})
        self.st.unqueued.insert(0, rt.id)

    def _submit_proposal(self, pool: ThreadPoolExecutor) -> tuple[Future, tuple]:
        cfg, rng = self.cfg, self.rng
        island = self.st.proposals % cfg.islands.count
        members = self.book.pool(island)
        parent = sel.tournament(members, self.objectives, cfg.selection.method,
                                cfg.selection.tournament_size, rng)
        names = [n for n, o in cfg.operators.items() if o.weight > 0]
        op_name = rng.choices(names, [cfg.operators[n].weight for n in names])[0]
        slot = rng.choice(cfg.target.slots)
        everyone = self.book.pool(None)
        others = [m for m in everyone if spec_key(m.spec) != spec_key(parent.spec)]
        second = sel.tournament(others or everyone, self.objectives, cfg.selection.method,
                                cfg.selection.tournament_size, rng)
        insp = self._inspirations(island, parent, slot)
        ctx = MutationContext(
            slot=slot, contract=SLOTS[slot].contract.__doc__ or "",
            parent=self._candidate(parent, slot), second_parent=self._candidate(second, slot),
            inspirations=tuple(self._candidate(m, slot) for m in insp),
            recent_failures=tuple(self.book.failures[island]),
            rng=random.Random(rng.getrandbits(64)), budget_ok=self.budget_ok)
        self.st.proposals += 1
        fut = pool.submit(_propose, self.operators[op_name], ctx, op_name)
        return fut, (island, op_name, slot, parent, second, insp)

    def _inspirations(self, island: int, parent: sel.Member, slot: str) -> list[sel.Member]:
        """The island's best, then the best of other islands with different code for `slot`."""
        k = self.cfg.selection.inspirations
        seen = {self._ref(parent, slot)}
        out = []
        ranked = sel.rank(self.book.pool(island), self.objectives, self.cfg.selection.method)
        ranked += sel.rank(self.book.pool(None), self.objectives, self.cfg.selection.method)
        for m in ranked:
            if len(out) >= k:
                break
            if self._ref(m, slot) not in seen:
                seen.add(self._ref(m, slot))
                out.append(m)
        return out

    @staticmethod
    def _ref(m: sel.Member, slot: str) -> str:
        choice = m.spec.get("slots", {}).get(slot) or {}
        return choice.get("program", "") if isinstance(choice, dict) else str(choice)

    def _candidate(self, m: sel.Member, slot: str) -> Candidate:
        ref = self._ref(m, slot)
        if ref not in self._code_cache:
            self._code_cache[ref] = slot_code(self.store, slot, ref)
        row = self.st.full_rows.get(m.score_from or m.runtime_id)
        return Candidate(m.runtime_id, self._program_id(slot, ref), slot, self._code_cache[ref],
                         m.spec, dict(m.metrics), dict(row.artifacts) if row else {})

    def _program_id(self, slot: str, ref: str) -> int | None:
        """The stored program of a reference (seed programs are stored on first use)."""
        if ref not in self._prog_ids:
            if ref.startswith("sha256:"):
                prog = self.store.program_by_hash(ref)
            else:
                code = self._code_cache.get(ref) or slot_code(self.store, slot, ref)
                prog = self.store.add_program(slot, code, operator="seed", name=ref)
            if prog is None:
                return None
            self._prog_ids[ref] = prog.id
        return self._prog_ids[ref]

    def _on_proposal(self, result: Proposal | Rejected, info: tuple) -> tuple[int, int] | None:
        island, op_name, slot, parent, second, insp = info
        calls = [self.store.add_llm_call(self.run_id, c.model, c.prompt, c.response, c.tokens_in,
                                         c.tokens_out, c.cost_usd, c.latency_s, c.error).id
                 for c in result.llm_calls]
        with self._lock:
            self._usd += sum(c.cost_usd for c in result.llm_calls)
        parent_prog = self._program_id(slot, self._ref(parent, slot))
        arts = {"operator": op_name, "slot": slot, "parent_runtime": parent.runtime_id,
                "llm_calls": calls, "recorded_on": "the parent's program"}
        if isinstance(result, Rejected):
            self._record_proposal("rejected", parent_prog, result.reason, arts)
            self.book.failures[island].append(f"proposal ({op_name}) rejected: {result.reason}")
            return None
        try:
            spec = RuntimeSpec.from_dict(result.spec or parent.spec)
            prog, code_key = None, None
            if result.code is not None:
                prog = self.store.add_program(slot, result.code, parent_id=parent_prog,
                                              operator=result.operator,
                                              llm_call_id=calls[-1] if calls else None,
                                              run_id=self.run_id)
                code_key = (slot, prog.code_hash)
                params = dict(spec.slots[slot].params) if slot in spec.slots else {}
                spec = spec.with_slot(slot, prog.ref, params)
            spec_d = spec.to_dict()
        except SlotError as e:
            self._record_proposal("rejected", parent_prog, f"invalid child spec: {e}", arts)
            return None
        if code_key in self.st.seen_codes or spec_key(spec_d) in self.st.seen_specs:
            what = "code hash" if code_key in self.st.seen_codes else "runtime spec"
            self._record_proposal("duplicate", prog.id if prog else parent_prog,
                                  f"the run already has this {what}",
                                  {**arts, "recorded_on": "the child's program" if prog
                                   else "the parent's program"})
            return None
        uses_second = result.spec is not None
        edges = [(parent.runtime_id, "parent")]
        if uses_second and second.runtime_id != parent.runtime_id:
            edges.append((second.runtime_id, "second_parent"))
        edges += [(m.runtime_id, "inspiration") for m in insp
                  if m.runtime_id not in {e[0] for e in edges}]
        gen = 1 + max(parent.generation, second.generation if uses_second else 0)
        rt = self.store.add_runtime(self.run_id, spec_d, island=island, generation=gen,
                                    operator=result.operator, parents=edges)
        self.st.members[rt.id] = sel.Member(rt.id, island, rt.spec, gen, result.operator)
        self.st.seen_specs.add(spec_key(spec_d))
        if code_key:
            self.st.seen_codes.add(code_key)
            self._parent_code[rt.id] = {slot: self._code_cache[self._ref(parent, slot)]}
        return rt.id, self.store.enqueue_evaluation(self.run_id, rt.id, FULL)

    def _record_proposal(self, status: str, program_id: int | None, reason: str,
                         arts: dict[str, Any]) -> None:
        self.st.proposal_status[status] = self.st.proposal_status.get(status, 0) + 1
        if program_id is None:
            log.warning("proposal %s with no program to record it on: %s", status, reason)
            return
        self.store.add_evaluation(stage=PROPOSE, status=status, program_id=program_id,
                                  run_id=self.run_id, error=reason, artifacts=arts)

    # ------------------------------------------------------------------ evaluations

    def _evaluate(self, runtime_id: int) -> ChildResult:
        cfg = self.cfg
        seed = self.st.members[self.st.seed_runtime_id]
        return score_runtime(self.harness, self.st.members[runtime_id].spec,
                             cfg.evaluation.stages, cfg.evaluation.workloads,
                             baseline=seed.spec,  # the seed too: its ratio shows the noise
                             runtime_id=runtime_id, run_id=self.run_id,
                             model=cfg.evaluation.model, device=self.device,
                             parents=self._parent_code.get(runtime_id))

    def _on_result(self, runtime_id: int, eval_id: int, res: ChildResult) -> None:
        row = self.store.complete_evaluation(eval_id, res.status, metrics=res.metrics,
                                             error=res.error, artifacts=res.artifacts,
                                             duration_s=res.duration_s,
                                             device=res.device or self.device)
        record_result(self.st, runtime_id, row)
        self.book.refresh_copies(runtime_id)
        m = self.st.members[runtime_id]
        if res.status != "passed":
            self.book.failures[m.island].append(res.error or res.status)
            if runtime_id == self.st.seed_runtime_id:
                self._stop("seed_failed", {"error": res.error}, "seed_failed")
            return
        self.book.after_result()

    def stats(self) -> dict[str, Any]:
        """Progress figures: done/budget, best and seed values, rate, failures, dollars."""
        st, (metric, sign) = self.st, self.objectives[0]
        seed = st.members.get(st.seed_runtime_id)
        seed_v = seed.metrics.get(metric) if seed and seed.passed else None
        best = max((m for m in sel.eligible(list(st.members.values()), self.objectives)
                    if m.score_from is None), key=lambda m: sign * m.metrics[metric],
                   default=None)
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return {"done": st.done, "budget": self.cfg.budget.max_evaluations, "metric": metric,
                "best": best.metrics[metric] if best else None,
                "best_runtime": best.runtime_id if best else None, "seed": seed_v,
                "gain": (best.metrics[metric] / seed_v if best and seed_v else None),
                "per_min": 60.0 * (st.done - self.done0) / elapsed,
                "failed_by_stage": dict(st.failures_by_stage), "usd": self._usd}

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats())


def _propose(op: Any, ctx: MutationContext, name: str) -> Proposal | Rejected:
    """Operators never raise by contract; a bug that does becomes a recorded rejection."""
    try:
        return op.propose(ctx)
    except Exception as e:
        log.exception("operator %s raised", name)
        return Rejected(name, ctx.slot, f"operator raised {type(e).__name__}: {e}")


def _build_operators(cfg: RunConfig) -> dict[str, Any]:
    from evolve.operators import make_operator

    ops = {}
    for name, oc in cfg.operators.items():
        options = dict(oc.options)
        if name.startswith("llm"):
            options.setdefault("llm", asdict(cfg.llm))
        ops[name] = make_operator(name, options)
    return ops
