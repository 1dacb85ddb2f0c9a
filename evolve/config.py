"""Run configs: YAML files validated on load by one typed schema (pydantic dataclasses).

A config says what to evolve (target slots, seed runtime), how (operators, LLM, islands,
selection), how to score (stages, workloads, thresholds, timeouts) and when to stop
(budgets, stagnation). Every section is a frozen dataclass checked by pydantic; errors name
the file, the key path, the bad value and what was expected, with a likely fix for a
misspelled key (evolve/config_errors.py), e.g.
`quickstart.yaml: budget.max_evaluations must be a positive integer, got -3`.
`check_resources` then checks what the schema cannot see (workloads, programs, the model)
before a run is created.

Example:
    cfg = load_config("scripts/quickstart.yaml", overrides=["budget.max_evaluations=8"])
    cfg.budget.max_evaluations  # 8
"""

from __future__ import annotations

import copy
from dataclasses import field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Strict,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass

from evolve.config_check import ConfigError, check_resources  # noqa: F401  (this module's API)
from evolve.config_errors import explain
from evolve.config_fields import (
    PRICES,
    Expect,
    NonNegFloat,
    NonNegInt,
    OptStr,
    PosFloat,
    PosInt,
    Section,
    Str,
    drawn_from,
    llm_models,
    llm_prices,
    objective_ok,
    one_of,
    operators_shorthand,
    price_pair,
    rule,
    timeouts_ok,
)
from fitness.result import STAGES
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

STAGE_NAMES = STAGES  # one list of stages: the harness's
_SCHEMA = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


# ConfigError is defined beside check_resources (evolve/config_check.py) and is part of this
# module's API: `from evolve.config import ConfigError`.


@dataclass(frozen=True, config=_SCHEMA)
class OperatorConfig:
    """One mutation operator: its sampling weight and options passed to make_operator."""

    weight: NonNegFloat = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, config=_SCHEMA)
class LLMConfig:
    """The OpenAI-compatible endpoint and its models, sampled by weight per call; the same
    keys and forms evolve.llm.LLMSettings accepts."""

    models: Annotated[dict[str, NonNegFloat], BeforeValidator(llm_models),
                      Expect("a mapping of model name to weight >= 0")] = \
        field(default_factory=dict)
    base_url: OptStr = None
    api_key_env: OptStr = "OPENAI_API_KEY"
    temperature: NonNegFloat = 0.8
    max_tokens: PosInt = 4096
    timeout_s: PosFloat = 120.0
    retries: NonNegInt = 3
    backoff_s: NonNegFloat = 1.0  # first back-off; doubles per retry, with full jitter
    backoff_max_s: NonNegFloat = 60.0
    prices: Annotated[dict[str, Annotated[list[NonNegFloat], AfterValidator(price_pair)]],
                      BeforeValidator(llm_prices), Expect(PRICES)] = field(default_factory=dict)
    system_prompt: OptStr = None
    max_consecutive_failures: PosInt = 6  # transport/auth failures in a row that stop a run


@dataclass(frozen=True, config=_SCHEMA)
class IslandsConfig:
    """Island model: populations evolving apart, with ring migration every few evaluations."""

    count: PosInt = 1
    population_size: PosInt = 8
    migration_interval: rule(int, "a positive integer (evaluations)", lambda v: v > 0) = 10
    migration_size: NonNegInt = 1


@dataclass(frozen=True, config=_SCHEMA)
class SelectionConfig:
    """Parent selection within an island (DEAP)."""

    method: one_of("tournament", "nsga2") = "tournament"
    tournament_size: PosInt = 3
    elitism: NonNegInt = 1
    objectives: rule(list[Str], "a non-empty list of 'metric:max' or 'metric:min'",
                      lambda v: len(v) > 0 and all(map(objective_ok, v))) = \
        field(default_factory=lambda: ["tok_s:max"])
    inspirations: NonNegInt = 2

    def parsed_objectives(self) -> list[tuple[str, float]]:
        """[(metric, +1.0 for max / -1.0 for min)]."""
        return [(o.split(":")[0], 1.0 if o.endswith(":max") else -1.0) for o in self.objectives]


@dataclass(frozen=True, config=_SCHEMA)
class ConfirmConfig:
    """Multi-fidelity: which children selected in `sim` are confirmed on the real engine."""

    # beats_parent: the child's sim objective beats its parent's (the seed is always
    # confirmed); top_k: it is among its island's top_k; always; never (sim only: nothing
    # can then be called best, since best needs `correctness`)
    when: one_of("beats_parent", "top_k", "always", "never") = "beats_parent"
    top_k: PosInt = 2
    # the workloads of the real-engine stages (correctness, quick_bench, bench); default:
    # evaluation.workloads. Full-size workloads in sim, their -cpu versions here on a CPU.
    workloads: rule(list[Str] | None, "a non-empty list of workload names or null",
                     lambda v: len(v) > 0) = None


@dataclass(frozen=True, config=_SCHEMA)
class EvaluationConfig:
    """How each child is scored by the fitness harness."""

    # default: the engine stages; add `sim` to select in simulation (scheduler and cache
    # policy searches) and confirm on the engine. A kernel's speed is invisible to `sim`.
    stages: drawn_from(STAGE_NAMES, "stage names") = \
        field(default_factory=lambda: [s for s in STAGE_NAMES if s != "sim"])
    workloads: rule(list[Str], "a non-empty list of workload names", lambda v: len(v) > 0) = \
        field(default_factory=lambda: ["nanovllm-bench-cpu"])
    model: Str = "tiny"
    device: one_of("auto", "cpu", "cuda") = "auto"
    # Stage options passed to the harness (fitness.Harness(options=...)): thresholds such as
    # quick_bench_min_ratio, and bench sizes (bench_requests, bench_repeats, bench_max_tokens).
    thresholds: dict[str, Annotated[float, Strict()]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    timeouts: rule(dict[str, float], f"a mapping of stage name {list(STAGE_NAMES)} to "
                    "seconds > 0", timeouts_ok) = field(default_factory=dict)
    confirm: Annotated[ConfirmConfig, Section] = field(default_factory=ConfirmConfig)
    # local: concurrency.max_evaluations at once on this machine; ray: one Ray task per
    # evaluation (one GPU each, or ray.num_cpus CPUs), as many at once as the cluster holds
    executor: one_of("local", "ray") = "local"


@dataclass(frozen=True, config=_SCHEMA)
class RayConfig:
    """The Ray cluster evaluations run on (evaluation.executor: ray; evolve/executors/)."""

    # auto: the cluster this machine belongs to; ray://host:10001: a remote one; null or
    # empty: a local instance started and stopped by the run
    address: OptStr = None
    num_cpus: PosFloat = 1.0  # CPUs each evaluation task asks for (GPU runs ask 1 GPU too)
    max_retries: NonNegInt = 2  # re-runs of a task whose worker or node died, then `crashed`


@dataclass(frozen=True, config=_SCHEMA)
class BudgetConfig:
    """When the run stops; unset (null) means no limit, except evaluations."""

    max_evaluations: PosInt = 20
    max_llm_usd: rule(float | None, "a number >= 0 or null", lambda v: v >= 0) = None
    max_gpu_seconds: rule(float | None, "a positive number or null", lambda v: v > 0) = None
    max_wall_seconds: rule(float | None, "a positive number or null", lambda v: v > 0) = None
    max_proposals: rule(int | None, "a positive integer or null (default: 10 x "
                         "max_evaluations)", lambda v: v > 0) = None


@dataclass(frozen=True, config=_SCHEMA)
class StagnationConfig:
    """No relative improvement above `min_improvement` within `window` evaluations."""

    window: rule(int | None, "a positive integer or null (off)", lambda v: v > 0) = None
    min_improvement: rule(float, "a number >= 0 (relative)", lambda v: v >= 0) = 0.01
    action: one_of("stop", "reseed") = "stop"


@dataclass(frozen=True, config=_SCHEMA)
class ConcurrencyConfig:
    """How much work is in flight at once."""

    # proposals in flight plus children waiting for an evaluator (a short line keeps the
    # search steady-state: each child is bred from the population as it is then)
    max_proposals: PosInt = 2
    max_evaluations: PosInt = 1


@dataclass(frozen=True, config=_SCHEMA)
class TuneConfig:
    """Optuna tuning of the top runtimes at the end (evolve.tune.tune_runtime)."""

    top_k: rule(int, "an integer >= 0 (0: off)", lambda v: v >= 0) = 0
    trials: PosInt = 10
    workload: OptStr = None


@dataclass(frozen=True, config=_SCHEMA)
class SearchConfig:
    """How children are bred: evolution (selection, bandit over operators) or random sampling."""

    # evolve: parents by selection; random: every child a mutation of the seed (the baseline a
    # search must beat at an equal evaluation budget; no selection, no bandit)
    method: one_of("evolve", "random") = "evolve"
    # choose each proposal's operator (and LLM model) by Thompson sampling over improvement
    # per unit cost (evolve/bandit.py), the operator weights as its prior; null: on for
    # evolve, off for random. False: operators drawn by their weights alone.
    bandit: Annotated[bool | None, Strict()] = None
    # what one dollar of LLM calls counts for in the bandit's cost, in evaluation seconds
    # (1800: a GPU-hour at about $2 costs as much as $1 of tokens)
    seconds_per_usd: NonNegFloat = 1800.0
    # pseudo-proposals the operator weights are worth before any outcome is known
    prior_strength: PosFloat = 2.0
    # aimable operators (gp, literal) get one bandit arm per evolvable function of each
    # slot (`gp#scheduler.priority`), so the bandit learns where changes pay (evolve/bandit.py)
    targets: Annotated[bool, Strict()] = True
    # weight, in the bandit's reward, of how far a child moved the objective either way
    # (the function whose changes matter most gets explored; evolve/bandit.py)
    leverage: NonNegFloat = 3.0
    # pulls of every arm before the bandit's posterior chooses (0: from the first proposal)
    min_pulls: rule(int, "an integer >= 0", lambda v: v >= 0) = 2
    # a child this much worse than its parent (relative, first objective) has the opposite
    # of its change tried next on the same parent (a gp term with its sign flipped, literal
    # constants moved the other way): a change that hurts a lot touched something that
    # matters. Evolution only (random sampling never looks at outcomes); null: off
    reflect: rule(float | None, "a number > 0 or null", lambda v: v > 0) = 0.02

    def uses_bandit(self) -> bool:
        """Whether operators are chosen by the bandit (default: yes for evolve)."""
        return self.method == "evolve" if self.bandit is None else self.bandit


@dataclass(frozen=True, config=_SCHEMA)
class TargetConfig:
    """What evolves: slots, and the seed runtime every island starts from."""

    slots: drawn_from(SLOTS, "slot names") = field(default_factory=lambda: ["scheduler"])
    runtime: dict[str, Any] | None = None  # a RuntimeSpec dict; None: the device's defaults


@dataclass(frozen=True, config=_SCHEMA)
class RunConfig:
    """A whole run config (see module docstring)."""

    name: OptStr = None
    seed: NonNegInt = 0
    db: OptStr = None
    target: Annotated[TargetConfig, Section] = field(default_factory=TargetConfig)
    operators: Annotated[dict[str, OperatorConfig], BeforeValidator(operators_shorthand)] = \
        field(default_factory=dict)
    llm: Annotated[LLMConfig, Section] = field(default_factory=LLMConfig)
    islands: Annotated[IslandsConfig, Section] = field(default_factory=IslandsConfig)
    selection: Annotated[SelectionConfig, Section] = field(default_factory=SelectionConfig)
    evaluation: Annotated[EvaluationConfig, Section] = field(default_factory=EvaluationConfig)
    budget: Annotated[BudgetConfig, Section] = field(default_factory=BudgetConfig)
    stagnation: Annotated[StagnationConfig, Section] = field(default_factory=StagnationConfig)
    concurrency: Annotated[ConcurrencyConfig, Section] = \
        field(default_factory=ConcurrencyConfig)
    tune: Annotated[TuneConfig, Section] = field(default_factory=TuneConfig)
    search: Annotated[SearchConfig, Section] = field(default_factory=SearchConfig)
    ray: Annotated[RayConfig, Section] = field(default_factory=RayConfig)
    source: str = field(default="<dict>", compare=False)  # file it came from (not a YAML key)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # merged YAML, for the db

    def seed_spec(self, device: str) -> RuntimeSpec:
        """The seed runtime, missing slots filled with the device's defaults."""
        spec = RuntimeSpec.from_dict(self.target.runtime or {})
        return spec.resolved(device)

    def max_proposals(self) -> int:
        """Cap on proposals (rejected and duplicates included), so a run always ends."""
        return self.budget.max_proposals or 10 * self.budget.max_evaluations


_NOT_KEYS = frozenset({"source", "raw"})
_ADAPTER = TypeAdapter(RunConfig)


def _check_whole(cfg: RunConfig, src: str) -> None:
    """Cross-field rules that no single key can check."""
    if cfg.target.runtime is not None:
        try:
            RuntimeSpec.from_dict(cfg.target.runtime)
        except SlotError as e:
            raise ConfigError(f"{src}: target.runtime is not a valid runtime spec: {e}") from None
    if cfg.selection.method == "tournament" and len(cfg.selection.objectives) > 1:
        raise ConfigError(f"{src}: selection.objectives has {len(cfg.selection.objectives)} "
                          "objectives; tournament selection takes one (use method: nsga2)")
    if cfg.selection.elitism > cfg.islands.population_size:
        raise ConfigError(f"{src}: selection.elitism must be <= islands.population_size "
                          f"({cfg.islands.population_size}), got {cfg.selection.elitism}")
    if not {"bench", "sim"} & set(cfg.evaluation.stages):
        raise ConfigError(f"{src}: evaluation.stages must include 'sim' or 'bench' (fitness "
                          f"comes from them), got {cfg.evaluation.stages}")
    if cfg.search.method == "random" and cfg.search.bandit:
        raise ConfigError(f"{src}: search.bandit must be false or null with search.method "
                          "random (random sampling draws operators by their weights), got true")
    if cfg.operators and not any(o.weight > 0 for o in cfg.operators.values()):
        raise ConfigError(f"{src}: operators needs at least one operator with weight > 0")
    llm_ops = [n for n, o in cfg.operators.items() if n.startswith("llm") and o.weight > 0]
    if llm_ops and not cfg.llm.models:
        raise ConfigError(f"{src}: operators {llm_ops} need llm.models (a mapping of model name "
                          "to weight), got none")


# ----------------------------------------------------------------------------- loading


def apply_override(raw: dict[str, Any], item: str, src: str = "--set") -> None:
    """Apply one `a.b.c=value` override (value parsed as YAML) to `raw` in place."""
    if "=" not in item:
        raise ConfigError(f"{src}: override {item!r} must look like key.path=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{src}: override {item!r} has an empty key path")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise ConfigError(f"{src}: override {item!r}: the value is not valid YAML "
                          f"({problem}{where}); quote it or fix it") from None
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{src}: override {item!r}: {'.'.join(parts[:i + 1])} is "
                              f"{nxt!r}, not a mapping")
        node = nxt
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any], source: str = "<dict>",
                     overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a config mapping (plus `key=value` overrides) into a RunConfig."""
    raw = copy.deepcopy(raw if raw is not None else {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a run config must be a YAML mapping, got {raw!r}")
    for item in overrides:
        apply_override(raw, item, f"{source} (--set {item})")
    keys = {str(k) for k in raw}
    try:
        if keys & _NOT_KEYS:
            raise ConfigError(f"{source}: unknown key {min(keys & _NOT_KEYS)}")
        try:
            cfg = _ADAPTER.validate_python({**raw, "source": source, "raw": raw})
        except ValidationError as e:
            raise ConfigError(explain(e, RunConfig, raw, source, _NOT_KEYS)) from None
        _check_whole(cfg, source)
    except ConfigError as e:
        # Say where a bad value came from when an override set it.
        hits = [o for o in overrides if f" {o.split('=', 1)[0].strip()} " in f" {e} "
                or f" {o.split('=', 1)[0].strip()};" in f" {e}"
                or f" {o.split('=', 1)[0].strip()}." in f" {e}"]
        if hits:
            raise ConfigError(f"{e} (from --set {hits[-1]})") from None
        raise
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load and validate a YAML run config file."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not a UTF-8 text file ({e.reason} at byte {e.start})") \
            from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise ConfigError(f"{name}: not valid YAML: {problem}{where}") from None
    cfg = config_from_dict(raw or {}, name, overrides)
    return replace(cfg, source=str(path))
