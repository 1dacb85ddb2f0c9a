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
from collections.abc import Callable
from dataclasses import field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from evolve.config_errors import Expect, did_you_mean, explain
from fitness.result import STAGES
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

STAGE_NAMES = STAGES  # one list of stages: the harness's
_SCHEMA = ConfigDict(extra="forbid", arbitrary_types_allowed=False)


class ConfigError(ValueError):
    """A run config that cannot be used; the message names file, key, value and expectation."""


def _rule(tp: Any, expect: str, ok: Callable[[Any], bool] | None = None) -> Any:
    """`tp` (strict: no "3" for 3, no true for 1) whose values satisfy `ok`, described as
    `expect` in errors."""
    def check(v: Any) -> Any:
        if ok is not None and v is not None and not ok(v):
            raise ValueError(expect)
        return v
    return Annotated[tp, Strict(), AfterValidator(check), Expect(expect)]


def _drawn_from(options: tuple[str, ...], what: str, empty_ok: bool = False) -> Any:
    """A list of names from `options` (non-empty unless `empty_ok`), with a likely fix."""
    def check(v: list[str]) -> list[str]:
        bad = [s for s in v if s not in options]
        if bad or (not v and not empty_ok):
            hint = did_you_mean(bad[0], options) if bad else ""
            raise ValueError(f"a non-empty list drawn from {list(options)}{hint}")
        return v
    return Annotated[list[Annotated[str, Strict()]], AfterValidator(check),
                     Expect(f"a non-empty list of {what}")]


def _one_of(*choices: str) -> Any:
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"one of {list(choices)}{did_you_mean(v, choices)}")
        return v
    return Annotated[str, Strict(), AfterValidator(check), Expect(f"one of {list(choices)}")]


def _section(v: Any) -> Any:
    return {} if v is None else v  # an empty YAML section (`budget:`) means the defaults


Section = BeforeValidator(_section)
PosInt = _rule(int, "a positive integer", lambda v: v > 0)
NonNegInt = _rule(int, "an integer >= 0", lambda v: v >= 0)
PosFloat = _rule(float, "a positive number", lambda v: v > 0)
NonNegFloat = _rule(float, "a number >= 0", lambda v: v >= 0)
Str = Annotated[str, Strict()]
OptStr = Annotated[str | None, Strict()]


def _objective(o: str) -> bool:
    name, _, sense = o.partition(":")
    return bool(name) and sense in ("max", "min")


def _llm_models(v: Any) -> Any:
    """{name: weight}, or a name, or [name | {name, weight}] (all the forms LLMSettings takes)."""
    if isinstance(v, str):
        return {v: 1.0}
    if isinstance(v, list):
        out = {}
        for item in v:
            if isinstance(item, str):
                out[item] = 1.0
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                out[item["name"]] = item.get("weight", 1.0)
            else:
                raise ValueError("a mapping of model name to weight >= 0, a name, or a list of "
                                 "names or {name, weight}")
        return out
    return v


def _llm_prices(v: Any) -> Any:
    """{model: [in, out]} or {model: {input, output}} -> {model: [in, out]}."""
    if isinstance(v, dict):
        return {m: [p["input"], p["output"]] if isinstance(p, dict)
                and set(p) == {"input", "output"} else p for m, p in v.items()}
    return v


PRICES = ("a mapping of model name to [USD per 1M input tokens, USD per 1M output tokens] "
          "or {input, output}")


def _pair(p: list[float]) -> list[float]:
    if len(p) != 2:
        raise ValueError("[USD per 1M input tokens, USD per 1M output tokens] or "
                         "{input, output}")
    return p


@dataclass(frozen=True, config=_SCHEMA)
class OperatorConfig:
    """One mutation operator: its sampling weight and options passed to make_operator."""

    weight: NonNegFloat = 1.0
    options: dict[str, Any] = field(default_factory=dict)


def _operators(v: Any) -> Any:
    """`{name: weight}` or `{name: {weight: w, ...options}}` -> {name: {weight, options}}."""
    if not isinstance(v, dict) or not v:
        raise ValueError("a non-empty mapping of operator name to a weight or "
                         "{weight: w, ...options}")
    out: dict[str, Any] = {}
    for name, spec in v.items():
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"weight": spec}
        if isinstance(spec, dict):
            opts = dict(spec)
            spec = {"weight": opts.pop("weight", 1.0), "options": opts}
        out[str(name)] = spec
    return out


@dataclass(frozen=True, config=_SCHEMA)
class LLMConfig:
    """The OpenAI-compatible endpoint and its models, sampled by weight per call; the same
    keys and forms evolve.llm.LLMSettings accepts."""

    models: Annotated[dict[str, NonNegFloat], BeforeValidator(_llm_models),
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
    prices: Annotated[dict[str, Annotated[list[NonNegFloat], AfterValidator(_pair)]],
                      BeforeValidator(_llm_prices), Expect(PRICES)] = field(default_factory=dict)
    system_prompt: OptStr = None
    max_consecutive_failures: PosInt = 6  # transport/auth failures in a row that stop a run


@dataclass(frozen=True, config=_SCHEMA)
class IslandsConfig:
    """Island model: populations evolving apart, with ring migration every few evaluations."""

    count: PosInt = 1
    population_size: PosInt = 8
    migration_interval: _rule(int, "a positive integer (evaluations)", lambda v: v > 0) = 10
    migration_size: NonNegInt = 1


@dataclass(frozen=True, config=_SCHEMA)
class SelectionConfig:
    """Parent selection within an island (DEAP)."""

    method: _one_of("tournament", "nsga2") = "tournament"
    tournament_size: PosInt = 3
    elitism: NonNegInt = 1
    objectives: _rule(list[Str], "a non-empty list of 'metric:max' or 'metric:min'",
                      lambda v: len(v) > 0 and all(map(_objective, v))) = \
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
    when: _one_of("beats_parent", "top_k", "always", "never") = "beats_parent"
    top_k: PosInt = 2
    # the workloads of the real-engine stages (correctness, quick_bench, bench); default:
    # evaluation.workloads. Full-size workloads in sim, their -cpu versions here on a CPU.
    workloads: _rule(list[Str] | None, "a non-empty list of workload names or null",
                     lambda v: len(v) > 0) = None


def _timeouts_ok(d: dict[str, float]) -> bool:
    return all(k in STAGE_NAMES and t > 0 for k, t in d.items())


@dataclass(frozen=True, config=_SCHEMA)
class EvaluationConfig:
    """How each child is scored by the fitness harness."""

    # default: the engine stages; add `sim` to select in simulation (scheduler and cache
    # policy searches) and confirm on the engine. A kernel's speed is invisible to `sim`.
    stages: _drawn_from(STAGE_NAMES, "stage names") = \
        field(default_factory=lambda: [s for s in STAGE_NAMES if s != "sim"])
    workloads: _rule(list[Str], "a non-empty list of workload names", lambda v: len(v) > 0) = \
        field(default_factory=lambda: ["nanovllm-bench-cpu"])
    model: Str = "tiny"
    device: _one_of("auto", "cpu", "cuda") = "auto"
    # Stage options passed to the harness (fitness.Harness(options=...)): thresholds such as
    # quick_bench_min_ratio, and bench sizes (bench_requests, bench_repeats, bench_max_tokens).
    thresholds: dict[str, Annotated[float, Strict()]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    timeouts: _rule(dict[str, float], f"a mapping of stage name {list(STAGE_NAMES)} to "
                    "seconds > 0", _timeouts_ok) = field(default_factory=dict)
    confirm: Annotated[ConfirmConfig, Section] = field(default_factory=ConfirmConfig)
    # local: concurrency.max_evaluations at once on this machine; ray: one Ray task per
    # evaluation (one GPU each, or ray.num_cpus CPUs), as many at once as the cluster holds
    executor: _one_of("local", "ray") = "local"


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
    max_llm_usd: _rule(float | None, "a number >= 0 or null", lambda v: v >= 0) = None
    max_gpu_seconds: _rule(float | None, "a positive number or null", lambda v: v > 0) = None
    max_wall_seconds: _rule(float | None, "a positive number or null", lambda v: v > 0) = None
    max_proposals: _rule(int | None, "a positive integer or null (default: 10 x "
                         "max_evaluations)", lambda v: v > 0) = None


@dataclass(frozen=True, config=_SCHEMA)
class StagnationConfig:
    """No relative improvement above `min_improvement` within `window` evaluations."""

    window: _rule(int | None, "a positive integer or null (off)", lambda v: v > 0) = None
    min_improvement: _rule(float, "a number >= 0 (relative)", lambda v: v >= 0) = 0.01
    action: _one_of("stop", "reseed") = "stop"


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

    top_k: _rule(int, "an integer >= 0 (0: off)", lambda v: v >= 0) = 0
    trials: PosInt = 10
    workload: OptStr = None


@dataclass(frozen=True, config=_SCHEMA)
class SearchConfig:
    """How children are bred: evolution (selection, bandit over operators) or random sampling."""

    # evolve: parents by selection; random: every child a mutation of the seed (the baseline a
    # search must beat at an equal evaluation budget; no selection, no bandit)
    method: _one_of("evolve", "random") = "evolve"
    # choose each proposal's operator (and LLM model) by Thompson sampling over improvement
    # per unit cost (evolve/bandit.py), the operator weights as its prior; null: on for
    # evolve, off for random. False: operators drawn by their weights alone.
    bandit: Annotated[bool | None, Strict()] = None
    # what one dollar of LLM calls counts for in the bandit's cost, in evaluation seconds
    # (1800: a GPU-hour at about $2 costs as much as $1 of tokens)
    seconds_per_usd: NonNegFloat = 1800.0
    # pseudo-proposals the operator weights are worth before any outcome is known
    prior_strength: PosFloat = 2.0

    def uses_bandit(self) -> bool:
        """Whether operators are chosen by the bandit (default: yes for evolve)."""
        return self.method == "evolve" if self.bandit is None else self.bandit


@dataclass(frozen=True, config=_SCHEMA)
class TargetConfig:
    """What evolves: slots, and the seed runtime every island starts from."""

    slots: _drawn_from(SLOTS, "slot names") = field(default_factory=lambda: ["scheduler"])
    runtime: dict[str, Any] | None = None  # a RuntimeSpec dict; None: the device's defaults


@dataclass(frozen=True, config=_SCHEMA)
class RunConfig:
    """A whole run config (see module docstring)."""

    name: OptStr = None
    seed: NonNegInt = 0
    db: OptStr = None
    target: Annotated[TargetConfig, Section] = field(default_factory=TargetConfig)
    operators: Annotated[dict[str, OperatorConfig], BeforeValidator(_operators)] = \
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
    unpriced = [m for m in cfg.llm.models if m not in cfg.llm.prices]
    if llm_ops and unpriced:
        raise ConfigError(f"{src}: llm.prices has no entry for model(s) {unpriced}; expected "
                          "[USD per 1M input tokens, USD per 1M output tokens] for each "
                          "(0 for a free local server)")


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
            raise ConfigError(f"{source}: unknown key {sorted(keys & _NOT_KEYS)[0]}")
        try:
            cfg = _ADAPTER.validate_python({**raw, "source": source, "raw": raw})
        except ValidationError as e:
            message, path = explain(e, RunConfig, raw, source, _NOT_KEYS)
            raise ConfigError(message) from None
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


def check_resources(cfg: RunConfig) -> None:
    """What the schema cannot see, checked before a run is created: every workload
    resolves, the seed runtime's programs exist, the model is a preset or a model folder."""
    from fitness.workloads import get_workload

    src = Path(cfg.source).name
    named = [("evaluation.workloads", w) for w in cfg.evaluation.workloads]
    named += [("evaluation.confirm.workloads", w) for w in cfg.evaluation.confirm.workloads or []]
    if cfg.tune.workload:
        named.append(("tune.workload", cfg.tune.workload))
    for key, w in named:
        try:
            get_workload(w)
        except (KeyError, ValueError, TypeError, OSError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            raise ConfigError(f"{src}: {key}: {' '.join(msg.split())}") from None
    from runtime_modules.slots import program_path

    try:  # seed: and file: programs must exist; sha256: ones resolve through the database
        spec = RuntimeSpec.from_dict(cfg.target.runtime or {}).resolved("cpu")
        for slot, choice in spec.slots.items():
            if not choice.program.startswith("sha256:"):
                program_path(slot, choice.program)
    except SlotError as e:
        raise ConfigError(f"{src}: target.runtime: {e}") from None
    _check_model(cfg.evaluation.model, src)


def _check_model(name: str, src: str) -> None:
    """A model preset, or a folder with config.json (read as the engine reads it)."""
    from runtime_modules.config import ModelConfig

    try:
        if Path(name).is_dir():
            ModelConfig.from_hf(name)
        else:
            ModelConfig.from_name(name)
    except (ValueError, NotImplementedError, KeyError, OSError) as e:
        raise ConfigError(f"{src}: evaluation.model: {e}") from None
