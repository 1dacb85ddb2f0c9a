"""Run configs: YAML files validated on load into frozen dataclasses.

A config says what to evolve (target slots, seed runtime), how (operators, LLM, islands,
selection), how to score (stages, workloads, thresholds, timeouts) and when to stop
(budgets, stagnation). Errors name the file, the key path, the bad value and what was
expected, e.g. `quickstart.yaml: budget.max_evaluations must be a positive integer, got -3`.

Example:
    cfg = load_config("scripts/quickstart.yaml", overrides=["budget.max_evaluations=8"])
    cfg.budget.max_evaluations  # 8
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from fitness.result import STAGES
from runtime_modules.slots import SLOTS, RuntimeSpec, SlotError

STAGE_NAMES = STAGES  # one list of stages: the harness's


class ConfigError(ValueError):
    """A run config that cannot be used; the message names file, key, value and expectation."""


def _pos(v: Any) -> bool:
    return v > 0


def _nonneg(v: Any) -> bool:
    return v >= 0


def _opt(default: Any = None, *, check: Any = None, expect: str = "", choices: tuple = ()) -> Any:
    """A dataclass field with a validation rule in its metadata."""
    meta = {"check": check, "expect": expect, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OperatorConfig:
    """One mutation operator: its sampling weight and options passed to make_operator."""

    weight: float = _opt(1.0, check=_nonneg, expect="a number >= 0")
    options: dict[str, Any] = _opt({})  # noqa: RUF009


@dataclass(frozen=True)
class LLMConfig:
    """The OpenAI-compatible endpoint and its models, sampled by weight per call."""

    models: dict[str, float] = _opt({}, check=lambda d: all(w >= 0 for w in d.values()),  # noqa: RUF009
                                    expect="a mapping of model name to weight >= 0")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = _opt(0.8, check=_nonneg, expect="a number >= 0")
    max_tokens: int = _opt(4096, check=_pos, expect="a positive integer")
    timeout_s: float = _opt(120.0, check=_pos, expect="a positive number")
    retries: int = _opt(3, check=_nonneg, expect="an integer >= 0")
    prices: dict[str, list[float]] = _opt(  # noqa: RUF009
        {}, check=lambda d: all(len(p) == 2 and min(p) >= 0 for p in d.values()),
        expect="a mapping of model name to [USD per 1M input tokens, USD per 1M output tokens]")


@dataclass(frozen=True)
class IslandsConfig:
    """Island model: populations evolving apart, with ring migration every few evaluations."""

    count: int = _opt(1, check=_pos, expect="a positive integer")
    population_size: int = _opt(8, check=_pos, expect="a positive integer")
    migration_interval: int = _opt(10, check=_pos, expect="a positive integer (evaluations)")
    migration_size: int = _opt(1, check=_nonneg, expect="an integer >= 0")


@dataclass(frozen=True)
class SelectionConfig:
    """Parent selection within an island (DEAP)."""

    method: str = _opt("tournament", choices=("tournament", "nsga2"))
    tournament_size: int = _opt(3, check=_pos, expect="a positive integer")
    elitism: int = _opt(1, check=_nonneg, expect="an integer >= 0")
    objectives: list[str] = _opt(["tok_s:max"], check=lambda v: len(v) > 0 and all(  # noqa: RUF009
        isinstance(o, str) and o.count(":") == 1 and o.split(":")[1] in ("max", "min")
        and o.split(":")[0] for o in v), expect="a non-empty list of 'metric:max' or 'metric:min'")
    inspirations: int = _opt(2, check=_nonneg, expect="an integer >= 0")

    def parsed_objectives(self) -> list[tuple[str, float]]:
        """[(metric, +1.0 for max / -1.0 for min)]."""
        return [(o.split(":")[0], 1.0 if o.endswith(":max") else -1.0) for o in self.objectives]


@dataclass(frozen=True)
class ConfirmConfig:
    """Multi-fidelity: which children selected in `sim` are confirmed on the real engine."""

    # beats_parent: the child's sim objective beats its parent's (the seed is always
    # confirmed); top_k: it is among its island's top_k; always; never (sim only: nothing
    # can then be called best, since best needs `correctness`)
    when: str = _opt("beats_parent", choices=("beats_parent", "top_k", "always", "never"))
    top_k: int = _opt(2, check=_pos, expect="a positive integer")
    # the workloads of the real-engine stages (correctness, quick_bench, bench); default:
    # evaluation.workloads. Full-size workloads in sim, their -cpu versions here on a CPU.
    workloads: list[str] | None = _opt(None, check=lambda v: len(v) > 0,  # noqa: RUF009
                                       expect="a non-empty list of workload names or null")


@dataclass(frozen=True)
class EvaluationConfig:
    """How each child is scored by the fitness harness."""

    # default: the engine stages; add `sim` to select in simulation (scheduler and cache
    # policy searches) and confirm on the engine. A kernel's speed is invisible to `sim`.
    stages: list[str] = _opt([s for s in STAGE_NAMES if s != "sim"], check=lambda v: len(v) > 0 and all(  # noqa: RUF009
        s in STAGE_NAMES for s in v), expect=f"a non-empty list drawn from {list(STAGE_NAMES)}")
    workloads: list[str] = _opt(["nanovllm-bench-cpu"], check=lambda v: len(v) > 0,  # noqa: RUF009
                                expect="a non-empty list of workload names")
    model: str = "tiny"
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"))
    # Stage options passed to the harness (fitness.Harness(options=...)): thresholds such as
    # quick_bench_min_ratio, and bench sizes (bench_requests, bench_repeats, bench_max_tokens).
    thresholds: dict[str, float] = _opt({})  # noqa: RUF009
    options: dict[str, Any] = _opt({})  # noqa: RUF009
    timeouts: dict[str, float] = _opt({}, check=lambda d: all(  # noqa: RUF009
        k in STAGE_NAMES and t > 0 for k, t in d.items()),
        expect=f"a mapping of stage name {list(STAGE_NAMES)} to seconds > 0")
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


@dataclass(frozen=True)
class BudgetConfig:
    """When the run stops; unset (null) means no limit, except evaluations."""

    max_evaluations: int = _opt(20, check=_pos, expect="a positive integer")
    max_llm_usd: float | None = _opt(None, check=_nonneg, expect="a number >= 0 or null")
    max_gpu_seconds: float | None = _opt(None, check=_pos, expect="a positive number or null")
    max_wall_seconds: float | None = _opt(None, check=_pos, expect="a positive number or null")
    max_proposals: int | None = _opt(None, check=_pos, expect="a positive integer or null "
                                     "(default: 10 x max_evaluations)")


@dataclass(frozen=True)
class StagnationConfig:
    """No relative improvement above `min_improvement` within `window` evaluations."""

    window: int | None = _opt(None, check=_pos, expect="a positive integer or null (off)")
    min_improvement: float = _opt(0.01, check=_nonneg, expect="a number >= 0 (relative)")
    action: str = _opt("stop", choices=("stop", "reseed"))


@dataclass(frozen=True)
class ConcurrencyConfig:
    """How much work is in flight at once."""

    # proposals in flight plus children waiting for an evaluator (a short line keeps the
    # search steady-state: each child is bred from the population as it is then)
    max_proposals: int = _opt(2, check=_pos, expect="a positive integer")
    max_evaluations: int = _opt(1, check=_pos, expect="a positive integer")


@dataclass(frozen=True)
class TuneConfig:
    """Optuna tuning of the top runtimes at the end (evolve.tune.tune_runtime)."""

    top_k: int = _opt(0, check=_nonneg, expect="an integer >= 0 (0: off)")
    trials: int = _opt(10, check=_pos, expect="a positive integer")
    workload: str | None = None


@dataclass(frozen=True)
class SearchConfig:
    """How children are bred: evolution (selection, bandit over operators) or random sampling."""

    # evolve: parents by selection; random: every child a mutation of the seed (the baseline a
    # search must beat at an equal evaluation budget; no selection, no bandit)
    method: str = _opt("evolve", choices=("evolve", "random"))
    # choose each proposal's operator (and LLM model) by Thompson sampling over improvement
    # per unit cost (evolve/bandit.py), the operator weights as its prior; null: on for
    # evolve, off for random. False: operators drawn by their weights alone.
    bandit: bool | None = None
    # what one dollar of LLM calls counts for in the bandit's cost, in evaluation seconds
    # (1800: a GPU-hour at about $2 costs as much as $1 of tokens)
    seconds_per_usd: float = _opt(1800.0, check=_nonneg, expect="a number >= 0")
    # pseudo-proposals the operator weights are worth before any outcome is known
    prior_strength: float = _opt(2.0, check=_pos, expect="a positive number")

    def uses_bandit(self) -> bool:
        """Whether operators are chosen by the bandit (default: yes for evolve)."""
        return self.method == "evolve" if self.bandit is None else self.bandit


@dataclass(frozen=True)
class TargetConfig:
    """What evolves: slots, and the seed runtime every island starts from."""

    slots: list[str] = _opt(["scheduler"], check=lambda v: len(v) > 0 and all(  # noqa: RUF009
        s in SLOTS for s in v), expect=f"a non-empty list drawn from {list(SLOTS)}")
    runtime: dict[str, Any] | None = None  # a RuntimeSpec dict; None: the device's defaults


@dataclass(frozen=True)
class RunConfig:
    """A whole run config (see module docstring)."""

    name: str | None = None
    seed: int = _opt(0, check=_nonneg, expect="an integer >= 0")
    db: str | None = None
    target: TargetConfig = field(default_factory=TargetConfig)
    operators: dict[str, OperatorConfig] = field(default_factory=dict)
    llm: LLMConfig = field(default_factory=LLMConfig)
    islands: IslandsConfig = field(default_factory=IslandsConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    stagnation: StagnationConfig = field(default_factory=StagnationConfig)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    source: str = field(default="<dict>", compare=False)  # file it came from (not a YAML key)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)  # merged YAML, for the db

    def seed_spec(self, device: str) -> RuntimeSpec:
        """The seed runtime, missing slots filled with the device's defaults."""
        spec = RuntimeSpec.from_dict(self.target.runtime or {})
        return spec.resolved(device)

    def max_proposals(self) -> int:
        """Cap on proposals (rejected and duplicates included), so a run always ends."""
        return self.budget.max_proposals or 10 * self.budget.max_evaluations


_NOT_KEYS = {"source", "raw"}


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str, src: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are."""
    def bad(expect: str) -> ConfigError:
        return ConfigError(f"{src}: {where} must be {expect}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, src) if len(inner) == 1 else value
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(item, v, f"{where}.{k}", src) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, src)
    raise bad(_type_name(tp))


def _build(cls: type, data: Any, where: str, src: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and bad values."""
    label = where or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: {label} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"{src}: unknown key {key}; expected one of {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = f"{where}.{name}" if where else name
        value = data[name]
        if cls is RunConfig and name == "operators":
            value = _operators(value, path, src)
        else:
            value = _coerce(hints[name], value, path, src)
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{src}: {path} must be one of {list(meta['choices'])}, "
                              f"got {data[name]!r}")
        if meta.get("check") and value is not None and not meta["check"](value):
            raise ConfigError(f"{src}: {path} must be {meta['expect']}, got {data[name]!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _operators(value: Any, where: str, src: str) -> dict[str, OperatorConfig]:
    """`{name: weight}` or `{name: {weight: w, ...options}}`."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{src}: {where} must be a non-empty mapping of operator name to "
                          f"a weight or {{weight: w, ...options}}, got {value!r}")
    out = {}
    for name, v in value.items():
        path = f"{where}.{name}"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = {"weight": v}
        if not isinstance(v, dict):
            raise ConfigError(f"{src}: {path} must be a weight or a mapping, got {v!r}")
        opts = dict(v)
        weight = _coerce(float, opts.pop("weight", 1.0), f"{path}.weight", src)
        if weight < 0:
            raise ConfigError(f"{src}: {path}.weight must be a number >= 0, got {weight!r}")
        out[str(name)] = OperatorConfig(weight=weight, options=opts)
    if not any(o.weight > 0 for o in out.values()):
        raise ConfigError(f"{src}: {where} needs at least one operator with weight > 0")
    return out


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
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"{src}: override {item!r} has an empty key path")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: override {item!r}: value is not valid YAML: {e}") from None
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
    try:
        cfg = _build(RunConfig, raw, "", source)
        cfg = dataclasses.replace(cfg, source=source, raw=raw)
        _check_whole(cfg, source)
    except ConfigError as e:
        # Say where a bad value came from when an override set it.
        hits = [o for o in overrides if f" {o.split('=', 1)[0].strip()} " in f" {e} "
                or f"{o.split('=', 1)[0].strip()};" in str(e)]
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
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: not valid YAML: {e}") from None
    cfg = config_from_dict(raw or {}, name, overrides)
    return dataclasses.replace(cfg, source=str(path))
