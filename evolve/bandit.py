"""Choosing each proposal's operator (and LLM model) by a bandit over improvement per cost.

An arm is an operator (`gp`, `literal`, ...) or, for an LLM operator when `llm.models` names
several, that operator with one model (`llm-diff@gpt-4o-mini`). With `search.targets` (the
default), an operator that can be aimed (`gp`, `literal`: FOCUSABLE) has one arm per
evolvable function of each target slot (`gp#scheduler.priority`, `literal#cache_policy.score`;
the functions are the seed program's GP_TARGET names, `gp#<slot>` for a slot with none): the
bandit then learns *where* a change pays, not only *how*. Most of a policy's functions change
nothing on a given workload (a preemption victim where nothing is preempted), and choosing
the function uniformly spent most proposals there. The operator's weight is split evenly over
the target slots and then over each slot's functions, so with the bandit off (random
sampling) the operator and slot are drawn exactly as without targets. A pull is one proposal,
settled when its outcome is known: a rejection or a duplicate at once, a child when its
evaluation lands. Its gain is the child's relative improvement on its parent in the first
objective, sign * (child - parent) / |parent| when that is at least MIN_GAIN (0.1%), else 0:
0 for a rejection, a duplicate, a failed child or a behavioural duplicate (`novel: 0`). Its cost is the child's evaluation
seconds plus the proposal's LLM dollars times `search.seconds_per_usd` (at least
MIN_COST_S); its reward is (gain + `search.leverage` * spread) / cost, where spread is the
size of the child's change either way (floored at MIN_GAIN, capped at MAX_SPREAD for a gain
and at MAX_DROP for a drop).

Why spread counts: the bandit picks which operator and which function to change, and the
function that matters most is the one whose changes move the objective most, for better or
worse; selection keeps the good tail. Measured on the quickstart's chat trace (150 one-step
children of the policy seed, 2-core CPU): changes to the admission order moved the
objective by 0.59% on average (10 of 11 changed it), the preemption victim by 0.18%, the
eviction score by 0.08%; but the victim's small gains (+0.2%) came first and often, and a
bandit rewarded by gains alone then gave it most proposals and the admission order almost
none (1 pull in 50), where the large gains are (cached-prefix-first admission: +23%).

Every arm is pulled `search.min_pulls` times (in random order) before Thompson sampling
decides: an arm's prior is its share of the weights, so with eleven arms an untried one
starts at Beta(0.1, 1.9), and once any other arm had a success it was never drawn (the
admission order's `gp` arm: 0 pulls in 46 evaluations).

Why Thompson sampling and not UCB1: proposals run concurrently, several are chosen before
the outcomes of earlier ones land, and UCB1, being deterministic, would give them all the
same arm; Thompson's draws spread them by the belief that each arm is best. It takes the
config weights as a prior directly and has no exploration constant to tune. Rewards are
scaled to [0, 1] by the largest seen so far (R) and each arm keeps a Beta posterior with the
scaled rewards as fractional successes (the deterministic form of Agrawal & Goyal's
Bernoulli trick for [0, 1] rewards): alpha = s*p + sum(r)/R, beta = s*(1 - p) + n - sum(r)/R,
where p is the arm's share of the weights, s `search.prior_strength` and n its pulls.

A second bandit of the same kind chooses *how* `gp` changes an expression (its variations:
`gp/add_term`, `gp/uniform`, ..., `gp/crossover`), its prior the operator's own chances
(`crossover_prob` and `mutations` weights), shared by every `gp` arm and rewarded by the
same pulls. Measured in the sim-only search-vs-random runs (2-core CPU, 50 evaluations, 5
seeds): of the admission order's `gp` changes, the ones that found the large gain were all
`add_term`, yet evolution spent most of its admission-order pulls on subtree mutations that
moved the objective by under 1%; the variation bandit learns that from the spread.

No state of its own: each proposal's arm is recorded with its outcome (artifacts `arm` and
`usd` of a rejected or duplicate `propose` row; a `bandit` event {runtime, arm, usd} per
child, with its `variation` when it has one), and `restore` rebuilds every pull from those and the children's `full` rows, so a
resumed run and `sds status` see the posterior the earlier session had.

Example:
    b = ThompsonBandit({"gp": 3.0, "literal": 1.0})
    b.record(Pull("gp", gain=0.02, cost=1.5))
    arm = b.choose(random.Random(0))
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evolve.config import ConfigError, RunConfig, config_from_dict
from evolve.population import COPY_OPERATORS, PROPOSE, RunState, load_state, run_evaluations
from evolve.selection import fitness_values
from evolve.store_protocol import RunStore

MIN_COST_S = 0.1  # a cost floor, so a near-free lucky pull cannot dwarf every other reward
# Relative gains below this count as none. Rewards are scaled by the largest seen, so
# without a floor the first 1e-6 improvement (a tie broken differently) made its arm look
# as good as any could be: in a 14-evaluation run such an arm took half the next proposals.
MIN_GAIN = 1e-3
# A child's change counts toward its arm's spread up to this much: moving the objective
# matters, wrecking it (a reserve that holds back half the cache: -30%) is not more useful.
MAX_SPREAD = 0.02
# ... and a change for the worse only up to this much. With drops counted up to 2%, a run
# gave 18 of its 50 proposals to the KV reserve, whose changes were wrecks (-3% to -15%)
# and +0.5% gains, and 4 to the admission order; the opposite of a large drop is tried
# anyway (`search.reflect`), and credited to the arm when it gains.
MAX_DROP = 0.005
ARM_SEP = "@"  # operator@model
VARIATION_SEP = "/"  # gp/add_term: a variation of the one operator that has a bandit over them
VARIED = "gp"
TARGET_SEP = "#"  # operator#slot.function
FOCUSABLE = ("gp", "literal")  # operators that take MutationContext.focus


@dataclass(frozen=True)
class Pull:
    """One settled proposal: its arm, its gain on the parent, its cost in seconds, and the
    size of its change in the objective either way (`spread`, see `ThompsonBandit`)."""

    arm: str
    gain: float
    cost: float
    spread: float = 0.0

    def reward_with(self, leverage: float) -> float:
        """(gain + leverage * spread) per second of cost."""
        return (self.gain + leverage * self.spread) / max(self.cost, MIN_COST_S)


@dataclass(frozen=True)
class ArmStatus:
    """What the bandit knows of one arm, as `sds status` shows it."""

    arm: str
    prior: float  # the arm's share of the configured weights
    pulls: int
    improved: int  # pulls whose child beat its parent
    mean_reward: float  # gain per second of cost, mean over pulls
    probability: float  # chance that the next proposal uses this arm


def run_arms(cfg: RunConfig, targets: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Arm -> weight: each operator's weight; an LLM operator's split over `llm.models` when
    it names several (unless the operator brings its own `llm` settings); a FOCUSABLE
    operator's split over `targets` ({slot: [function, ...]}, see `search_targets`) when
    given."""
    models = {m: w for m, w in cfg.llm.models.items() if w > 0}
    total = sum(models.values())
    out: dict[str, float] = {}
    for name, oc in cfg.operators.items():
        if oc.weight <= 0:
            continue
        if name.startswith("llm") and len(models) > 1 and "llm" not in oc.options:
            out.update({f"{name}{ARM_SEP}{m}": oc.weight * w / total for m, w in models.items()})
        elif targets and name in FOCUSABLE:
            for slot, fns in targets.items():
                share = oc.weight / len(targets)
                for fn in fns or [""]:
                    out[target_arm(name, slot, fn)] = share / max(len(fns), 1)
        else:
            out[name] = oc.weight
    return out


def variation_arm(variation: str) -> str:
    """`gp/add_term`."""
    return f"{VARIED}{VARIATION_SEP}{variation}"


def variation_bandit(cfg: RunConfig) -> ThompsonBandit | None:
    """The bandit over `gp`'s variations, or None when the run has no `gp` operator."""
    oc = cfg.operators.get(VARIED)
    if oc is None or oc.weight <= 0:
        return None
    from evolve.operators.gp import GPOperator

    weights = GPOperator(dict(oc.options)).variation_weights()
    return ThompsonBandit({variation_arm(k): w for k, w in weights.items()},
                          cfg.search.prior_strength, cfg.search.uses_bandit(),
                          cfg.search.leverage, cfg.search.min_pulls)


def target_arm(operator: str, slot: str, function: str = "") -> str:
    """`gp#scheduler.priority` (or `gp#scheduler` without a function)."""
    return f"{operator}{TARGET_SEP}{slot}" + (f".{function}" if function else "")


def operator_of(arm: str) -> str:
    """The operator name of an arm (`llm-diff@m` -> `llm-diff`, `gp#s.f` -> `gp`)."""
    return arm.split(ARM_SEP, 1)[0].split(TARGET_SEP, 1)[0]


def target_of(arm: str) -> tuple[str | None, str | None]:
    """(slot, function) an arm aims at, (None, None) for an arm without a target."""
    if TARGET_SEP not in arm:
        return None, None
    slot, _, fn = arm.split(TARGET_SEP, 1)[1].partition(".")
    return slot, fn or None


def search_targets(cfg: RunConfig, store: RunStore) -> dict[str, list[str]] | None:
    """{slot: GP_TARGET functions of the seed program} for the run's target slots, or None
    when `search.targets` is off. A seed that cannot be read gives its slot no functions."""
    if not cfg.search.targets:
        return None
    from evolve.operators.gp_tree import GPError, target_names
    from evolve.population import slot_code

    try:
        spec = cfg.seed_spec(cfg.evaluation.device if cfg.evaluation.device in ("cpu", "cuda")
                             else "cpu").to_dict()
    except Exception:  # noqa: BLE001 - a bad seed is the seed evaluation's error to report
        return None
    out: dict[str, list[str]] = {}
    for slot in cfg.target.slots:
        choice = (spec.get("slots") or {}).get(slot) or {}
        try:
            out[slot] = list(target_names(slot_code(store, slot, str(choice.get("program")))))
        except (GPError, OSError, LookupError, ValueError):
            out[slot] = []
    return out


class ThompsonBandit:
    """Beta-posterior Thompson sampling over arms (see the module docstring)."""

    def __init__(self, priors: dict[str, float], strength: float = 2.0,
                 enabled: bool = True, leverage: float = 0.0, min_pulls: int = 0):
        live = {a: w for a, w in priors.items() if w > 0}
        if not live:
            raise ValueError(f"a bandit needs an arm with weight > 0, got {priors!r}")
        total = sum(live.values())
        self.prior = {a: w / total for a, w in live.items()}
        self.strength, self.enabled, self.leverage = strength, enabled, leverage
        self.min_pulls = min_pulls
        self.pulls = dict.fromkeys(self.prior, 0)
        self.improved = dict.fromkeys(self.prior, 0)
        self.rewards = dict.fromkeys(self.prior, 0.0)
        self.max_reward = 0.0
        self.variations: ThompsonBandit | None = None  # over gp's variations (see module doc)

    def settle(self, pull: Pull, variation: str | None = None) -> None:
        """Record a pull, and, for a `gp` child that says how it was made, the same pull for
        its variation."""
        self.record(pull)
        if variation and self.variations is not None and operator_of(pull.arm) == VARIED:
            self.variations.record(Pull(variation_arm(variation), pull.gain, pull.cost,
                                        pull.spread))

    def choose_variation(self, arm: str, rng: random.Random) -> str | None:
        """How a `gp` proposal should change its expression (None: the operator draws it by
        its own weights, as with the bandit off)."""
        if self.variations is None or not self.enabled or operator_of(arm) != VARIED:
            return None
        return self.variations.choose(rng).split(VARIATION_SEP, 1)[1]

    def record(self, pull: Pull) -> None:
        """Fold one settled pull in (an arm no longer configured is ignored)."""
        if pull.arm not in self.prior:
            return
        r = pull.reward_with(self.leverage)
        self.pulls[pull.arm] += 1
        self.improved[pull.arm] += pull.gain > 0
        self.rewards[pull.arm] += r
        self.max_reward = max(self.max_reward, r)

    def posterior(self, arm: str) -> tuple[float, float]:
        """(alpha, beta) of the arm's Beta posterior."""
        p, n = self.prior[arm], self.pulls[arm]
        wins = self.rewards[arm] / self.max_reward if self.max_reward > 0 else 0.0
        # a lone arm has p = 1; the floor keeps beta a valid parameter
        return self.strength * p + wins, max(self.strength * (1 - p), 1e-3) + n - wins

    def choose(self, rng: random.Random) -> str:
        """The next arm: Thompson's draw when enabled, else drawn by the weights."""
        arms = list(self.prior)
        if not self.enabled or len(arms) == 1:
            return rng.choices(arms, [self.prior[a] for a in arms])[0]
        fresh = [a for a in arms if self.pulls[a] < self.min_pulls]
        if fresh:  # every arm is tried min_pulls times before the posterior decides
            return rng.choice(fresh)
        draws = {a: rng.betavariate(*self.posterior(a)) for a in arms}
        return max(arms, key=lambda a: draws[a])

    def probabilities(self, draws: int = 4000, seed: int = 0) -> dict[str, float]:
        """Each arm's chance of being chosen next (Monte Carlo for Thompson; fixed seed)."""
        arms = list(self.prior)
        if not self.enabled or len(arms) == 1:
            return dict(self.prior)
        gen = np.random.default_rng(seed)
        ab = np.array([self.posterior(a) for a in arms])  # [arms, 2]
        theta = gen.beta(ab[:, 0], ab[:, 1], size=(draws, len(arms)))  # [draws, arms]
        wins = np.bincount(theta.argmax(axis=1), minlength=len(arms))
        return {a: float(w) / draws for a, w in zip(arms, wins)}

    def status(self) -> list[ArmStatus]:
        """One row per arm, in configuration order."""
        probs = self.probabilities()
        return [ArmStatus(a, self.prior[a], self.pulls[a], self.improved[a],
                          self.rewards[a] / self.pulls[a] if self.pulls[a] else 0.0, probs[a])
                for a in self.prior]


def change(child: dict[str, Any], parent: dict[str, Any], objective: tuple[str, float]) -> float:
    """Relative change of `child` on `parent` in `objective`, positive when better (0 if
    unknown, if the child behaves as an existing member, or if smaller than MIN_GAIN)."""
    if child.get("novel") == 0:  # behaves as an existing member: nothing new was found
        return 0.0
    c, p = fitness_values(child, [objective]), fitness_values(parent, [objective])
    if c is None or p is None or p[0] == 0:
        return 0.0
    d = objective[1] * (c[0] - p[0]) / abs(p[0])
    return d if abs(d) >= MIN_GAIN else 0.0


def gain(child: dict[str, Any], parent: dict[str, Any], objective: tuple[str, float]) -> float:
    """Relative improvement of `child` on `parent` in `objective` (0 if none or unknown)."""
    return max(0.0, change(child, parent, objective))


def child_pull(state: RunState, runtime_id: int, arm: str, usd: float,
               objective: tuple[str, float], seconds_per_usd: float) -> Pull | None:
    """The settled pull of an evaluated child (None while its evaluation is open)."""
    row = state.full_rows.get(runtime_id)
    if row is None:
        return None
    cost = float(row.duration_s or 0.0) + usd * seconds_per_usd
    if row.status != "passed":
        return Pull(arm, 0.0, cost)
    parent = next((p for p, role in state.edges.get(runtime_id, ()) if role == "parent"), None)
    pm = state.members.get(parent) if parent is not None else None
    if pm is None or not pm.passed:
        return Pull(arm, 0.0, cost)
    d = change(dict(row.metrics or {}), pm.metrics, objective)
    return Pull(arm, max(0.0, d), cost, spread_of(d))


def spread_of(d: float) -> float:
    """The size of a relative change `d` as the bandit credits it: a gain up to MAX_SPREAD,
    a drop up to MAX_DROP."""
    return min(d, MAX_SPREAD) if d >= 0 else min(-d, MAX_DROP)


def restore(cfg: RunConfig, store: RunStore, run_id: int, state: RunState, events: list[Any]
            ) -> tuple[ThompsonBandit, dict[int, tuple[str, float, str | None]]]:
    """The run's bandit with every recorded pull folded in, and its open children
    (arm, usd, variation).

    A child with no `bandit` event (its session killed between storing it and writing the
    event) is credited to the arm named like its operator, if there is one.
    """
    priors = run_arms(cfg, search_targets(cfg, store))
    bandit = ThompsonBandit(priors, cfg.search.prior_strength, cfg.search.uses_bandit(),
                            cfg.search.leverage, cfg.search.min_pulls)
    bandit.variations = variation_bandit(cfg)
    objective, rate = cfg.selection.parsed_objectives()[0], cfg.search.seconds_per_usd
    for row in run_evaluations(store, run_id, PROPOSE):
        arts = row.artifacts or {}
        arm = arts.get("arm") or arts.get("operator")
        if arm:
            bandit.settle(Pull(str(arm), 0.0, float(arts.get("usd", 0.0)) * rate),
                          arts.get("variation"))
    arms: dict[int, tuple[str, float, str | None]] = {}
    for e in events:
        d = e.data or {}
        if e.kind == "bandit" and "runtime" in d:
            arms[int(d["runtime"])] = (str(d["arm"]), float(d.get("usd", 0.0)),
                                       d.get("variation"))
    open_: dict[int, tuple[str, float, str | None]] = {}
    for rid, m in state.members.items():
        if m.operator in COPY_OPERATORS + ("seed",):
            continue
        arm, usd, variation = arms.get(rid, (m.operator, 0.0, None))
        if arm not in bandit.prior:
            continue
        pull = child_pull(state, rid, arm, usd, objective, rate)
        if pull is None:
            open_[rid] = (arm, usd, variation)
        else:
            bandit.settle(pull, variation)
    return bandit, open_


def stored_status(store: RunStore, run: int | str) -> dict[str, Any] | None:
    """A stored run's operator choice as plain data, under the config the run began with
    (None if that config no longer loads)."""
    rec = store.get_run(run)
    try:
        cfg = config_from_dict(rec.config, f"run {rec.name}'s stored config")
    except ConfigError:
        return None
    bandit, _ = restore(cfg, store, rec.id, load_state(store, rec.id), store.events(rec.id))
    return {"method": cfg.search.method, "bandit": bandit.enabled,
            "arms": [asdict(a) for a in bandit.status()],
            "variations": [asdict(a) for a in bandit.variations.status()]
            if bandit.variations is not None and bandit.enabled else []}


def build_operators(cfg: RunConfig) -> dict[str, Any]:
    """The configured operators by arm (evolve/bandit.py), built through the registry: LLM
    ones get the `llm` settings, narrowed to one model for an `llm-diff@model` arm."""
    from evolve.operators import make_operator

    arms = run_arms(cfg)
    ops = {}
    for name, oc in cfg.operators.items():
        for arm in [a for a in arms if operator_of(a) == name] or [name]:
            options = dict(oc.options)
            if name.startswith("llm"):
                llm = asdict(cfg.llm)
                if ARM_SEP in arm:
                    llm["models"] = {arm.split(ARM_SEP, 1)[1]: 1.0}
                options.setdefault("llm", llm)
            try:
                ops[arm] = make_operator(name, options)
            except ValueError as e:  # unknown operator, bad option, missing API key
                raise ConfigError(f"{cfg.source}: operators.{name}: {e}") from None
    return ops
