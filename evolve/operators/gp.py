"""`gp`: DEAP genetic programming over a seed's GP_TARGET expression, no LLM needed.

A module with several GP targets (GP_TARGET a tuple: one function per decision) has one
of them varied per proposal: `ctx.focus` when it names one, else one drawn with the
context's rng.

The parent's `return <expr>` (see `gp_tree`) becomes a DEAP PrimitiveTree; one DEAP
variation is applied (mutUniform, mutNodeReplacement, mutEphemeral, mutShrink, or
cxOnePoint with the second parent's tree when there is one with the same target); the
tree height is bounded; the result is rendered back into the EVOLVE-BLOCK. All randomness
comes from `ctx.rng`: DEAP draws from the module-global `random`, so while a variation runs
`deap.gp.random` is pointed at the context's rng (under a lock, so concurrent proposals
stay reproducible and the global `random` state is never touched).

`ctx.variation` (chosen by the run's bandit over variations, evolve/bandit.py) names the
variation to apply: one of the mutations, or `crossover` (a mutation drawn by weight when
there is no second tree); without it the variation is drawn by `crossover_prob` and the
mutation weights. The Proposal says which it was (`variation`), and for `add_term` carries
the child with the new term's sign flipped (`reverse`).
"""

from __future__ import annotations

import logging
import math
import random
import threading
from typing import Any

from deap import gp

from evolve.operators import gp_tree
from evolve.operators.base import MutationContext, Proposal, Rejected
from evolve.operators.edits import EditError, check_child
from evolve.operators.options import check_keys, number
from fitness import pyast
from fitness.features import scales_of, use_of, variation_of

log = logging.getLogger(__name__)

_DEAP_LOCK = threading.Lock()
MUTATIONS = ("uniform", "node_replacement", "ephemeral", "shrink", "add_term")
CONFIG_KEYS = frozenset({"weight", "max_height", "crossover_prob", "mutations", "attempts"})


class GPOperator:
    """DEAP GP over the GP_TARGET expression of the parent (scheduler priority, cache score)."""

    name = "gp"

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        check_keys(self.name, config, CONFIG_KEYS)
        self.max_height = number(self.name, config, "max_height", 8, int, 1, 90)
        self.crossover_prob = number(self.name, config, "crossover_prob", 0.5, float, 0, 1)
        self.attempts = number(self.name, config, "attempts", 20, int, 1)
        # a list (equal chances) or {mutation: weight}
        muts = config.get("mutations", MUTATIONS)
        if isinstance(muts, dict):
            weights = muts
        else:
            weights = dict.fromkeys((muts,) if isinstance(muts, str) else tuple(muts), 1.0)
        bad = [m for m in weights if m not in MUTATIONS]
        if bad or not weights or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"operators.gp.mutations must be a non-empty list from "
                             f"{list(MUTATIONS)} or a mapping of those to weights >= 0 (not "
                             f"all 0), got {muts!r}")
        self.mutations = tuple(m for m, w in weights.items() if w > 0)
        self.mutation_weights = tuple(float(weights[m]) for m in self.mutations)

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        """A child whose GP expression differs from the parent's; never raises."""
        try:
            return self._propose(ctx)
        except gp_tree.GPError as e:
            return Rejected(self.name, ctx.slot, f"gp: {e}")
        except Exception as e:
            log.exception("gp failed unexpectedly")
            return Rejected(self.name, ctx.slot, f"gp internal error: {type(e).__name__}: {e}")

    def _propose(self, ctx: MutationContext) -> Proposal | Rejected:
        parent = ctx.parent.code
        rng = random.Random(ctx.rng.getrandbits(64))
        targets = gp_tree.find_targets(parent)
        aimed = [t for t in targets if t.function == ctx.focus]
        if aimed:  # the controller's bandit chose the decision to change
            target = aimed[0]
        else:  # one decision, drawn
            target = targets[0] if len(targets) == 1 else rng.choice(targets)
        pset = gp_tree.primitive_set(target.args)
        scales = scales_of(ctx.parent.metrics, target.function)
        varies = variation_of(ctx.parent.metrics, target.function)
        uses = use_of(ctx.parent.metrics, target.function)
        with _DEAP_LOCK:
            tree = gp_tree.to_tree(target.expr, pset)
            other = self._other_tree(ctx, target, pset)
        parent_key = str(tree)
        height_limit = max(self.max_height, tree.height)
        probes = [[rng.uniform(0, 200) for _ in target.args] for _ in range(8)]
        last = "no variation changed the expression"
        for _ in range(self.attempts):
            with _DEAP_LOCK:
                child, how, mirror = self._vary(tree, other, pset, rng, scales, varies,
                                                ctx.variation, uses)
            if str(child) == parent_key:
                continue
            if child.height > height_limit:
                last = f"tree height {child.height} exceeds the bound {height_limit}"
                continue
            expr = gp_tree.render(child)
            bad = _probe(expr, target.args, probes)
            if bad:
                last = bad
                continue
            code = gp_tree.splice(parent, target, expr)
            try:
                check_child(parent, code)
            except EditError as e:
                last = str(e)
                continue
            reverse, reverse_note = None, ""
            if mirror is not None and str(mirror) != parent_key:
                rexpr = gp_tree.render(mirror)
                if not _probe(rexpr, target.args, probes):
                    reverse = gp_tree.splice(parent, target, rexpr)
                    reverse_note = f"{how} reversed on {target.function}: {rexpr}"
            return Proposal(self.name, ctx.slot, code=code,
                            note=f"{how} on {target.function}: {expr}",
                            variation=_VARIATION.get(how, how), reverse=reverse,
                            reverse_note=reverse_note)
        return Rejected(self.name, ctx.slot, f"gp: no valid new child in {self.attempts} "
                                             f"attempts (last: {last})")

    def _other_tree(self, ctx: MutationContext, target: gp_tree.GPTarget,
                    pset: gp.PrimitiveSet) -> gp.PrimitiveTree | None:
        """The second parent's tree, when it has the same GP target and arguments."""
        sp = ctx.second_parent
        if sp is None or sp.code == ctx.parent.code:
            return None
        try:
            t2 = gp_tree.find_target(sp.code, target.function)
        except gp_tree.GPError:
            return None
        if (t2.function, t2.args) != (target.function, target.args):
            return None
        return gp_tree.to_tree(t2.expr, pset)

    def _vary(self, tree: gp.PrimitiveTree, other: gp.PrimitiveTree | None,
              pset: gp.PrimitiveSet, rng: random.Random,
              scales: dict[str, float] | None = None,
              varies: dict[str, float] | None = None, variation: str | None = None,
              uses: dict[str, float] | None = None,
              ) -> tuple[gp.PrimitiveTree, str, gp.PrimitiveTree | None]:
        """One DEAP variation of a copy of `tree`, drawing only from `rng` (caller holds lock):
        (child, how, the opposite child for `add_term` else None)."""
        saved = gp.random
        gp.random = rng  # deap.gp calls random.choice/randint/...: give it ours
        gp_tree._state["rng"] = rng
        try:
            child = gp.PrimitiveTree(list(tree))
            if variation in self.mutations:
                how = variation
            else:
                # (the draw only with a second tree, as before variations could be asked for)
                if other is not None and (variation == "crossover" or variation is None
                                          and rng.random() < self.crossover_prob):
                    child, _ = gp.cxOnePoint(child, gp.PrimitiveTree(list(other)))
                    return child, "cxOnePoint", None
                how = rng.choices(self.mutations, self.mutation_weights)[0]
            if how == "add_term":
                new, mirror = _add_term(child, pset, rng, scales or {}, varies or {},
                                        uses or {})
                return new, "mut_add_term", mirror
            if how == "uniform":
                (child,) = gp.mutUniform(child, expr=lambda pset, type_: gp.genFull(
                    pset, min_=0, max_=2, type_=type_), pset=pset)
            elif how == "node_replacement":
                (child,) = gp.mutNodeReplacement(child, pset=pset)
            elif how == "ephemeral":
                (child,) = gp.mutEphemeral(child, mode="one")
            else:
                (child,) = gp.mutShrink(child)
            return child, f"mut_{how}", None
        finally:
            gp.random = saved

    def variation_weights(self) -> dict[str, float]:
        """The chance of each variation when none is asked for (the bandit's prior over them):
        `crossover` at `crossover_prob`, the mutations sharing the rest by their weights."""
        total = sum(self.mutation_weights)
        out = {m: (1 - self.crossover_prob) * w / total
               for m, w in zip(self.mutations, self.mutation_weights)}
        if self.crossover_prob > 0:
            out["crossover"] = self.crossover_prob
        return out


_VARIATION = {"cxOnePoint": "crossover", **{f"mut_{m}": m for m in MUTATIONS}}
# an argument the result depends on in fewer of the sampled calls is treated as unused
MIN_USE = 0.02


def _add_term(tree: gp.PrimitiveTree, pset: gp.PrimitiveSet, rng: random.Random,
              scales: dict[str, float], varies: dict[str, float],
              uses: dict[str, float] | None = None,
              ) -> tuple[gp.PrimitiveTree, gp.PrimitiveTree]:
    """`expr + c * arg`: one more feature, weighted by a fresh constant. Subtree mutations
    rarely bring in an argument the expression lacks with a weight large enough to matter;
    this does it in one step, and `ephemeral` / the literal operator then tune the weight.

    With the parent's measured scales (`feat:*` metrics of its `sim` run, see
    fitness/features.py) the weight is `±10^U(-1, 1) * scale(result) / scale(arg)`: the
    new term is a tenth to ten times the size of the expression it joins, so it changes
    decisions without always drowning the rest. Without them (or for a feature that was
    always 0), a log-uniform magnitude 1e-3..10, either sign.

    The feature: mostly (3 in 4) one the expression does not use yet, weighted, when the
    parent's run measured it, by how often it differed between consecutive calls
    (`featvar:*`, floor 0.02): an argument that is the same for every candidate a ranking
    function compares cannot reorder them. "Uses" is what the parent's run measured when it
    could (`featuse:*`: the result changed with the argument in at least `MIN_USE` of the
    sampled calls), else what the expression names: `cached * num_preemptions` names
    `cached` but, with `num_preemptions` mostly 0, does not use it.

    Returns the child and its mirror, the same term with the opposite sign."""
    args = list(pset.arguments)
    # an argument terminal's `name` is DEAP's ARG<i>; its `value` is the argument's name
    used = {node.value for node in tree if isinstance(node, gp.Terminal)}
    if uses:  # named but measured to make (almost) no difference: not used
        used = {a for a in used if uses.get(a, 1.0) >= MIN_USE}
    fresh = [a for a in args if a not in used]
    # mostly a feature the expression does not use yet: that is what subtrees rarely add
    pool = fresh if fresh and rng.random() < 0.75 else args
    if varies:
        arg = rng.choices(pool, [max(varies.get(a, 1.0), 0.02) for a in pool])[0]
    else:
        arg = rng.choice(pool)
    const = _scaled_constant(scales, arg, rng)
    base = gp_tree.render(tree)
    return tuple(gp_tree.to_tree(pyast.parse(f"({base}) + {c!r} * {arg}", mode="eval").body,
                                 pset) for c in (const, -const))  # type: ignore[return-value]


def _scaled_constant(scales: dict[str, float], arg: str, rng: random.Random) -> float:
    """A weight for `arg` sized by the measured scales (see `_add_term`), 3 digits."""
    s_arg = scales.get(arg, 0.0)
    if not s_arg > 0:
        return gp_tree.random_constant()
    s_out = scales.get("return", 0.0)
    s_out = s_out if s_out > 0 else 1.0  # a result that was always 0: unit size
    value = rng.choice((-1.0, 1.0)) * 10 ** rng.uniform(-1, 1) * s_out / s_arg
    return float(f"{value:.3g}")


def _probe(expr: str, args: tuple[str, ...], probes: list[list[float]]) -> str | None:
    """Why the expression is unusable on sample inputs (raises or gives non-finite), else None."""
    for values in probes:
        try:
            out = gp_tree.evaluate(expr, args, values)
        except (ArithmeticError, ValueError, TypeError) as e:
            return f"expression fails on sample inputs: {type(e).__name__}: {e}"
        if not isinstance(out, (int, float)) or not math.isfinite(out):
            return f"expression gives {out!r} on sample inputs"
    return None
