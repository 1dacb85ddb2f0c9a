"""Breeding children: parent selection, mutation contexts, and recording what comes back.

A mixin of the Controller (it shares the controller's store, run id, state and islands).
Each proposal's operator is an arm the bandit chooses (evolve/bandit.py). A Rejected
proposal becomes a `propose`/`rejected` row with the reason; a Proposal becomes a program,
then a runtime, deduplicated by the whole runtime (every slot's code hash and params: the
same code on another parent is a new child, the same runtime again a `duplicate` row, never
evaluated), with its parent, second-parent and inspiration edges, a `bandit` event naming
its arm, and one keyed `full` evaluation row in `pending` state for the evaluator pool.

A child that does much worse than its parent (`search.reflect`) has the opposite of its
change (carried by its Proposal as `reverse`) bred next from the same parent, ahead of new
proposals; pending opposites are not kept across a resume.

Under `search.method: random` every child is bred from the seed alone (parent and second
parent the seed, no inspirations), with the same operators drawn by their weights.
"""

from __future__ import annotations

import functools
import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from evolve import selection as sel
from evolve.bandit import (
    Pull,
    ThompsonBandit,
    change,
    operator_of,
    target_of,
)
from evolve.config import RunConfig
from evolve.operators.base import Candidate, MutationContext, Objective, Proposal, Rejected
from evolve.operators.edits import EditError, check_child
from evolve.population import FULL, PROPOSE, runtime_key, slot_code, spec_key
from evolve.prompts.failures import FailureBook, change_summary, describe_result
from evolve.store_protocol import RunStore
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

log = logging.getLogger(__name__)


class ChildrenMixin:
    """Proposal submission and recording for the Controller."""

    cfg: RunConfig
    store: RunStore
    run_id: int
    bandit: ThompsonBandit
    open_arms: dict[int, tuple[str, float, str | None]]  # child -> (arm, usd, variation)
    reverses: dict[int, tuple]  # child -> (its opposite change as a Proposal, info)
    reflections: list[tuple]  # (Proposal, info, child, change): opposites to breed next
    objectives: list[tuple[str, float]]
    feedback: FailureBook  # actionable failures per island and slot, for the prompts
    llm_failed: int
    stop_detail: str

    def _add_seed(self) -> None:
        spec = self.cfg.seed_spec(self.device).to_dict()
        rt = self.store.add_runtime(self.run_id, spec, island=0, generation=0, operator="seed")
        for slot, choice in spec.get("slots", {}).items():  # stored as `seed` programs before
            self._program_id(slot, choice["program"])  # the harness records them as `eval`
        self.st.members[rt.id] = sel.Member(rt.id, 0, rt.spec, 0, "seed")
        self.st.seed_runtime_id = rt.id
        self.st.seen_specs.add(runtime_key(self.store, rt.spec, self.st.ref_hashes))
        self.st.unqueued.insert(0, rt.id)

    def _submit_proposal(self, pool: ThreadPoolExecutor) -> tuple[Future, tuple]:
        cfg, rng = self.cfg, self.rng
        island = self.st.proposals % cfg.islands.count
        arm = self.bandit.choose(rng)
        variation = self.bandit.choose_variation(arm, rng)  # how gp changes its expression
        slot = rng.choice(cfg.target.slots)
        aimed, focus = target_of(arm)  # an arm aimed at one function of one slot
        if aimed in cfg.target.slots:
            slot = aimed
        if cfg.search.method == "random":  # the baseline: every child a mutation of the seed
            parent = second = self.st.members[self.st.seed_runtime_id]
            insp: list[sel.Member] = []
        else:
            parent = sel.tournament(self.book.pool(island), self.objectives,
                                    cfg.selection.method, cfg.selection.tournament_size, rng)
            second = self._second_parent(parent)
            insp = self._inspirations(island, parent, slot)
        held: list[float] = []  # this proposal's dollar reservations
        seed = self.st.members.get(self.st.seed_runtime_id)
        choice = parent.spec.get("slots", {}).get(slot)
        objective = Objective(
            tuple((name, "max" if sign > 0 else "min") for name, sign in self.objectives),
            tuple(cfg.evaluation.workloads),
            "sim" if "sim" in cfg.evaluation.stages else "engine")
        ctx = MutationContext(
            slot=slot, contract=SLOTS[slot].contract.__doc__ or "",
            parent=self._candidate(parent, slot), second_parent=self._candidate(second, slot),
            inspirations=tuple(self._candidate(m, slot) for m in insp),
            recent_failures=self.feedback.recent(island, slot),
            rng=random.Random(rng.getrandbits(64)),
            budget_ok=functools.partial(self.reserve_usd, held=held),
            objective=objective, seed_metrics=dict(seed.metrics) if seed else {},
            parent_params=dict((choice.get("params") if isinstance(choice, dict) else None)
                               or {}),
            engine_params=dict(parent.spec.get("engine") or {}), focus=focus,
            variation=variation)
        self.st.proposals += 1
        op = self.operators.get(arm) or self.operators[operator_of(arm)]
        fut = pool.submit(_propose, op, ctx, arm)
        return fut, (island, arm, slot, parent, second, insp, held)

    def _second_parent(self, parent: sel.Member) -> sel.Member:
        """A tournament among members that changed a slot `parent` did not (so a crossover
        can join gains made in different slots); else among all other members."""
        cfg, everyone = self.cfg, self.book.pool(None)
        others = [m for m in everyone if spec_key(m.spec) != spec_key(parent.spec)]
        mine = self._changed(parent)
        other_change = [m for m in others if self._changed(m) - mine]
        return sel.tournament(other_change or others or everyone, self.objectives,
                              cfg.selection.method, cfg.selection.tournament_size, self.rng)

    def _changed(self, m: sel.Member) -> set[str]:
        """The slots (and `engine`) where `m` differs from the seed runtime."""
        seed = self.st.members[self.st.seed_runtime_id].spec
        mine, base = m.spec.get("slots", {}), seed.get("slots", {})
        out = {s for s in set(mine) | set(base) if mine.get(s) != base.get(s)}
        return out | ({"engine"} if (m.spec.get("engine") or {}) != (seed.get("engine") or {})
                      else set())

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
        """Record what an operator returned: a rejection, a duplicate, or a new child queued
        for evaluation ((runtime id, evaluation id))."""
        island, arm, slot, parent, _, _, held = info
        op_name = operator_of(arm)
        calls, usd = self._record_calls(result, held)
        parent_prog = self._program_id(slot, self._ref(parent, slot))
        arts = {"operator": op_name, "arm": arm, "usd": usd, "slot": slot,
                "parent_runtime": parent.runtime_id, "llm_calls": calls,
                "finish_reasons": [c.finish_reason for c in result.llm_calls],
                "recorded_on": "the parent's program"}
        if isinstance(result, Proposal) and result.variation:
            arts["variation"] = result.variation
        if isinstance(result, Rejected):
            arts["fixable"] = result.fixable  # for the prompts' feedback, also on resume
            arts["island"] = island
            self._record_proposal("rejected", parent_prog, result.reason, arts)
            if result.fixable:
                self.feedback.rejected(island, slot, op_name, result.reason)
            return None
        made = self._child_spec(result, info, parent_prog, calls, arts)
        if made is None:
            return None
        spec_d, prog = made
        key = runtime_key(self.store, spec_d, self.st.ref_hashes)
        if key in self.st.seen_specs:
            self._note_duplicate(island, slot, key, parent, result.code)
            self._record_proposal("duplicate", prog.id if prog else parent_prog,
                                  "the run already has this runtime (every slot's code and "
                                  "params)", {**arts, "recorded_on": "the child's program"
                                              if prog else "the parent's program"})
            return None
        rid = self._add_child(result, info, spec_d, key, usd)
        return rid, self.store.enqueue_evaluation(self.run_id, rid, FULL)

    def _record_calls(self, result: Proposal | Rejected, held: list[float]
                      ) -> tuple[list[int], float]:
        """Store the proposal's LLM calls, settle its dollar reservations, and stop the run
        on a fatal endpoint error; (call ids, dollars)."""
        calls = [self.store.add_llm_call(self.run_id, c.model, c.prompt, c.response, c.tokens_in,
                                         c.tokens_out, c.cost_usd, c.latency_s, c.error).id
                 for c in result.llm_calls]
        usd = sum(c.cost_usd for c in result.llm_calls)
        self.settle_usd(held, usd)
        self.llm_failed += sum(1 for c in result.llm_calls if c.error)
        if isinstance(result, Rejected) and result.fatal:  # e.g. a wrong URL or a missing key
            self.stop_detail = result.fatal
            self._stop("llm_endpoint", {"error": result.fatal}, "llm_stop")
        return calls, usd

    def _child_spec(self, result: Proposal, info: tuple, parent_prog: int | None,
                    calls: list[int], arts: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
        """The child's RuntimeSpec dict and its new program (None for a spec-only child), or
        None after recording why the proposal cannot be stored."""
        island, _, slot, parent, *_ = info
        op_name = arts["operator"]
        if result.code is not None:
            # Every operator checks its child, but the run does not rely on it: frozen code
            # outside the EVOLVE-BLOCKs, a syntax error or no change never gets stored.
            try:
                check_child(self._code_cache[self._ref(parent, slot)], result.code)
            except EditError as e:
                self._record_proposal("rejected", parent_prog, f"{op_name}: {e}", arts)
                self.feedback.rejected(island, slot, op_name, str(e))
                return None
        try:
            spec = RuntimeSpec.from_dict(result.spec or parent.spec)
            prog = None
            if result.code is not None:
                prog = self.store.add_program(slot, result.code, parent_id=parent_prog,
                                              operator=result.operator,
                                              llm_call_id=calls[-1] if calls else None,
                                              run_id=self.run_id)
                params = dict(spec.slots[slot].params) if slot in spec.slots else {}
                spec = spec.with_slot(slot, prog.ref, params)
            return spec.to_dict(), prog
        except SlotError as e:
            self._record_proposal("rejected", parent_prog, f"invalid child spec: {e}", arts)
            return None

    def _add_child(self, result: Proposal, info: tuple, spec_d: dict[str, Any], key: Any,
                   usd: float) -> int:
        """Store a new child runtime with its edges and bandit event; remember its arm and,
        under `search.reflect`, its opposite change. Its runtime id."""
        island, arm, slot, parent, second, insp, _ = info
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
        self.st.edges[rt.id] = tuple(edges)
        self.st.seen_specs.add(key)
        self.store.add_event(self.run_id, "bandit", {
            "runtime": rt.id, "arm": arm, "usd": usd,
            **({"note": result.note} if result.note else {}),
            **({"variation": result.variation} if result.variation else {})})
        self.open_arms[rt.id] = (arm, usd, result.variation)
        if (result.reverse is not None and cfg_reflects(self.cfg)
                and result.code is not None and not result.spec):
            self.reverses[rt.id] = (
                Proposal(result.operator, slot, code=result.reverse, variation=result.variation,
                         note=f"reflects r{rt.id}: {result.reverse_note}"),
                (island, arm, slot, parent, parent, [], []))
        self.note_parent_code(rt.id)
        return rt.id

    def consider_reflection(self, runtime_id: int) -> None:
        """A child that did much worse than its parent (`search.reflect`) has the opposite of
        its change bred next, from the same parent and credited to the same arm: on the
        quickstart's chat trace a term `-0.0107 * cached` in the admission order cost 16%,
        and `+0.0683 * cached` gained 13%."""
        item = self.reverses.pop(runtime_id, None)
        row = self.st.full_rows.get(runtime_id)
        if item is None or row is None or row.status != "passed":
            return
        parent = item[1][3]
        if not parent.passed:
            return
        d = change(dict(row.metrics or {}), parent.metrics, self.objectives[0])
        if d <= -float(self.cfg.search.reflect or 0.0):
            self.reflections.append((*item, runtime_id, d))

    def breed_reflection(self) -> tuple[int, int] | None:
        """Breed the oldest pending opposite (a `reflect` event names the child it mirrors);
        what `_on_proposal` returns."""
        prop, info, runtime_id, d = self.reflections.pop(0)
        self.st.proposals += 1
        self.store.add_event(self.run_id, "reflect", {"runtime": runtime_id,
                                                      "change": round(d, 6)})
        return self._on_proposal(prop, info)

    def _note_duplicate(self, island: int, slot: str, key: Any, parent: sel.Member,
                        code: str | None) -> None:
        """Tell later prompts for `slot` that this change was tried, and how it did."""
        same = next((m for m in self.st.members.values() if runtime_key(
            self.store, m.spec, self.st.ref_hashes) == key), None)

        def result() -> str:  # read when a prompt is built: it may be evaluated by then
            if same is None:
                return "unknown"
            row = self.st.full_rows.get(same.score_from or same.runtime_id)
            text = describe_result(row.status if row else None, row.metrics if row else None,
                                   row.error if row else None, self.objectives[0][0])
            return f"{text} (runtime r{same.runtime_id})"

        parent_code = self._code_cache.get(self._ref(parent, slot), "")
        change = change_summary(parent_code, code) if code is not None else ""
        self.feedback.duplicate(island, slot, change, result,
                                same.runtime_id if same else None)

    def note_failure(self, runtime_id: int, error: str | None,
                     artifacts: dict[str, Any]) -> None:
        """Tell later prompts for each slot this failed child's code changed what failed."""
        m = self.st.members[runtime_id]
        codes = {}
        for slot in self._parent_code.get(runtime_id, {}):
            ref = self._ref(m, slot)
            if ref not in self._code_cache:
                self._code_cache[ref] = slot_code(self.store, slot, ref)
            codes[slot] = self._code_cache[ref]
        self.feedback.child_failed(m.island, codes, error, artifacts)

    def replay_feedback(self) -> None:
        """Rebuild the prompts' failure notes from the database, oldest first (a resumed
        run): failed children's code and fixable rejected replies."""
        rows = [r for rid, r in self.st.full_rows.items()
                if r.status not in ("passed", "pending", "running") and r.runtime_id == rid
                and rid != self.st.seed_runtime_id and rid in self.st.members]
        rows += [r for r in self.store.evaluations(run=self.run_id, stage=PROPOSE,
                                                   status="rejected")
                 if (r.artifacts or {}).get("fixable") and (r.artifacts or {}).get("slot")]
        for r in sorted(rows, key=lambda r: r.id):
            a = r.artifacts or {}
            if r.stage == PROPOSE:
                self.feedback.rejected(int(a.get("island", 0)), a["slot"],
                                       str(a.get("operator", "")), r.error or "")
            else:
                self.note_parent_code(r.runtime_id)
                self.note_failure(r.runtime_id, r.error or r.status, a)

    def note_parent_code(self, runtime_id: int) -> None:
        """Remember, for the harness's EVOLVE-BLOCK check, the parent's code of each target
        slot whose program a code mutation changed (none for crossovers: their programs
        were each checked when made). From the state, so a re-queued child gets it too."""
        edges = self.st.edges.get(runtime_id, ())
        pid = next((p for p, role in edges if role == "parent"), None)
        if pid not in self.st.members or any(r == "second_parent" for _, r in edges):
            return
        child, parent = self.st.members[runtime_id], self.st.members[pid]
        out = {}
        for slot in self.cfg.target.slots:
            ref, pref = self._ref(child, slot), self._ref(parent, slot)
            if ref != pref and ref.startswith("sha256:") and pref:
                if pref not in self._code_cache:
                    self._code_cache[pref] = slot_code(self.store, slot, pref)
                out[slot] = self._code_cache[pref]
        if out:
            self._parent_code[runtime_id] = out

    def _record_proposal(self, status: str, program_id: int | None, reason: str,
                         arts: dict[str, Any]) -> None:
        self.st.proposal_status[status] = self.st.proposal_status.get(status, 0) + 1
        if program_id is None:
            log.warning("proposal %s with no program to record it on: %s", status, reason)
        else:
            self.store.add_evaluation(stage=PROPOSE, status=status, program_id=program_id,
                                      run_id=self.run_id, error=reason, artifacts=arts)
        # settled at once: no gain; its cost is what its LLM calls cost
        self.bandit.settle(Pull(arts["arm"], 0.0, arts["usd"] * self.cfg.search.seconds_per_usd),
                           arts.get("variation"))


def cfg_reflects(cfg: RunConfig) -> bool:
    """Whether children that do much worse get their opposite change tried (evolution only)."""
    return cfg.search.method == "evolve" and cfg.search.reflect is not None


def _propose(op: Any, ctx: MutationContext, name: str) -> Proposal | Rejected:
    """Operators never raise by contract; a bug that does becomes a recorded rejection."""
    try:
        return op.propose(ctx)
    except Exception as e:
        log.exception("operator %s raised", name)
        return Rejected(name, ctx.slot, f"operator raised {type(e).__name__}: {e}")
