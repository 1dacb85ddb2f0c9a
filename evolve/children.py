"""Breeding children: parent selection, mutation contexts, and recording what comes back.

A mixin of the Controller (it shares the controller's store, run id, state and islands).
A Rejected proposal becomes a `propose`/`rejected` row with the reason; a Proposal becomes a
program (deduplicated by code hash: one the run already has is a `duplicate` row, never
evaluated), then a runtime with its parent, second-parent and inspiration edges, and one
keyed `full` evaluation row in `pending` state for the evaluator pool.
"""

from __future__ import annotations

import functools
import logging
import random
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from evolve import selection as sel
from evolve.config import ConfigError, RunConfig
from evolve.operators.base import Candidate, MutationContext, Proposal, Rejected
from evolve.operators.edits import EditError, check_child
from evolve.population import FULL, PROPOSE, slot_code, slot_hashes, spec_key
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

log = logging.getLogger(__name__)


class ChildrenMixin:
    """Proposal submission and recording for the Controller."""

    cfg: RunConfig
    store: Any
    run_id: int

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
        held: list[float] = []  # this proposal's dollar reservations
        ctx = MutationContext(
            slot=slot, contract=SLOTS[slot].contract.__doc__ or "",
            parent=self._candidate(parent, slot), second_parent=self._candidate(second, slot),
            inspirations=tuple(self._candidate(m, slot) for m in insp),
            recent_failures=tuple(self.book.failures[island]),
            rng=random.Random(rng.getrandbits(64)),
            budget_ok=functools.partial(self.reserve_usd, held=held))
        self.st.proposals += 1
        fut = pool.submit(_propose, self.operators[op_name], ctx, op_name)
        return fut, (island, op_name, slot, parent, second, insp, held)

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
        island, op_name, slot, parent, second, insp, held = info
        calls = [self.store.add_llm_call(self.run_id, c.model, c.prompt, c.response, c.tokens_in,
                                         c.tokens_out, c.cost_usd, c.latency_s, c.error).id
                 for c in result.llm_calls]
        self.settle_usd(held, sum(c.cost_usd for c in result.llm_calls))
        parent_prog = self._program_id(slot, self._ref(parent, slot))
        arts = {"operator": op_name, "slot": slot, "parent_runtime": parent.runtime_id,
                "llm_calls": calls, "recorded_on": "the parent's program"}
        if isinstance(result, Rejected):
            self._record_proposal("rejected", parent_prog, result.reason, arts)
            self.book.failures[island].append(f"proposal ({op_name}) rejected: {result.reason}")
            return None
        if result.code is not None:
            # Every operator checks its child, but the run does not rely on it: frozen code
            # outside the EVOLVE-BLOCKs, a syntax error or no change never gets stored.
            try:
                check_child(self._code_cache[self._ref(parent, slot)], result.code)
            except EditError as e:
                self._record_proposal("rejected", parent_prog, f"{op_name}: {e}", arts)
                self.book.failures[island].append(f"proposal ({op_name}) rejected: {e}")
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
        self.st.edges[rt.id] = tuple(edges)
        self.st.seen_specs.add(spec_key(spec_d))
        if code_key:
            self.st.seen_codes.add(code_key)
        self.note_parent_code(rt.id)
        return rt.id, self.store.enqueue_evaluation(self.run_id, rt.id, FULL)

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
            return
        self.store.add_evaluation(stage=PROPOSE, status=status, program_id=program_id,
                                  run_id=self.run_id, error=reason, artifacts=arts)


def _propose(op: Any, ctx: MutationContext, name: str) -> Proposal | Rejected:
    """Operators never raise by contract; a bug that does becomes a recorded rejection."""
    try:
        return op.propose(ctx)
    except Exception as e:
        log.exception("operator %s raised", name)
        return Rejected(name, ctx.slot, f"operator raised {type(e).__name__}: {e}")


def build_operators(cfg: RunConfig) -> dict[str, Any]:
    """The configured operators, built through the registry (LLM ones get `llm` settings)."""
    from evolve.operators import make_operator

    ops = {}
    for name, oc in cfg.operators.items():
        options = dict(oc.options)
        if name.startswith("llm"):
            options.setdefault("llm", asdict(cfg.llm))
        try:
            ops[name] = make_operator(name, options)
        except ValueError as e:  # unknown operator, bad option, missing API key: bad input
            raise ConfigError(f"{cfg.source}: operators.{name}: {e}") from None
    return ops
