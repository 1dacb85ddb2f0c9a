"""Run configs: bad values, unknown keys and cross-field mistakes are errors that name the
file, the key path, the bad value and what was expected; --set overrides apply."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evolve.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("raw, needle", [
    ({"budget": {"max_evaluations": -3}},
     "q.yaml: budget.max_evaluations must be a positive integer, got -3"),
    ({"budget": {"max_evaluations": "ten"}}, "budget.max_evaluations must be a positive integer, got 'ten'"),
    ({"budget": {"max_evals": 3}}, "unknown key budget.max_evals"),
    ({"colour": "blue"}, "unknown key colour"),
    ({"selection": {"method": "roulette"}},
     "selection.method must be one of ['tournament', 'nsga2'], got 'roulette'"),
    ({"selection": {"objectives": ["tok_s:up"]}}, "selection.objectives must be a non-empty list"),
    ({"selection": {"objectives": ["tok_s:max", "peak_mem:min"]}},
     "tournament selection takes one (use method: nsga2)"),
    ({"target": {"slots": ["sheduler"]}}, "target.slots must be a non-empty list drawn from"),
    ({"target": {"runtime": {"slots": {"scheduler": "fcfs"}}}},
     "target.runtime is not a valid runtime spec"),
    ({"operators": {"gp": -1}}, "operators.gp.weight must be a number >= 0, got -1"),
    ({"operators": {"gp": 0}}, "needs at least one operator with weight > 0"),
    ({"operators": {"llm-diff": 1}}, "need llm.models"),
    ({"llm": {"prices": {"m": [1.0]}}}, "llm.prices.m must be [USD per 1M input tokens, USD per 1M output tokens]"),
    ({"evaluation": {"stages": ["static", "contract"]}}, "must include 'sim' or 'bench'"),
    ({"evaluation": {"timeouts": {"bnch": 5}}}, "evaluation.timeouts must be a mapping"),
    ({"stagnation": {"action": "panic"}}, "stagnation.action must be one of ['stop', 'reseed']"),
    ({"islands": {"count": 0}}, "islands.count must be a positive integer, got 0"),
    ({"islands": {"population_size": 2}, "selection": {"elitism": 3}},
     "selection.elitism must be <= islands.population_size (2), got 3"),
    ({"concurrency": {"max_evaluations": True}}, "concurrency.max_evaluations must be a positive integer, got True"),
    ({"budget": []}, "budget must be a mapping"),
])
def test_bad_config_is_an_error_naming_file_key_and_value(raw, needle):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, "q.yaml")
    assert needle in str(e.value)
    assert str(e.value).startswith("q.yaml")


def test_overrides_are_yaml_parsed_and_validated():
    n = random.randint(2, 50)
    cfg = config_from_dict({"operators": {"gp": 1}}, "q.yaml",
                           [f"budget.max_evaluations={n}", "islands.count=3",
                            "evaluation.workloads=[a, b]", "llm.base_url=http://x:1/v1"])
    assert cfg.budget.max_evaluations == n and cfg.islands.count == 3
    assert cfg.evaluation.workloads == ["a", "b"] and cfg.llm.base_url == "http://x:1/v1"
    with pytest.raises(ConfigError, match=r"got -2 \(from --set budget.max_evaluations=-2\)"):
        config_from_dict({}, "q.yaml", ["budget.max_evaluations=-2"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        config_from_dict({}, "q.yaml", ["budget.max_evaluations"])


def test_yaml_file_errors_name_the_file(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("budget:\n  max_evaluations: 0\n")
    with pytest.raises(ConfigError, match=r"^exp.yaml: budget.max_evaluations .* got 0"):
        load_config(p)
    p.write_text("budget: [unclosed\n")
    with pytest.raises(ConfigError, match="exp.yaml: not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    paths = [ROOT / "scripts" / "quickstart.yaml", *sorted((ROOT / "scripts" / "configs")
                                                          .glob("*.yaml"))]
    assert len(paths) >= 4
    for p in paths:
        cfg = load_config(p)
        assert cfg.budget.max_evaluations > 0 and cfg.operators
        cfg.seed_spec("cpu")  # the seed runtime is a valid spec
    qs = load_config(ROOT / "scripts" / "quickstart.yaml")
    assert set(qs.operators) <= {"gp", "literal", "assemble"}  # offline: no LLM
    assert qs.evaluation.model == "tiny" and qs.evaluation.device == "cpu"


def test_operator_errors_name_the_operator(monkeypatch):
    from evolve.bandit import build_operators

    cfg = config_from_dict({"operators": {"gp": 1, "literal": {"weight": 1, "sigmaa": 2}}},
                           "q.yaml")
    with pytest.raises(ConfigError, match=r"q.yaml: operators.literal: .*sigmaa"):
        build_operators(cfg)
    with pytest.raises(ConfigError, match=r"operators.gpp: unknown operator 'gpp'"):
        build_operators(config_from_dict({"operators": {"gpp": 1}}, "q.yaml"))
    monkeypatch.delenv("SDS_TEST_MISSING_KEY", raising=False)
    llm = {"models": {"m": 1}, "prices": {"m": [0, 0]}, "api_key_env": "SDS_TEST_MISSING_KEY"}
    with pytest.raises(ConfigError, match="operators.llm-diff: .*SDS_TEST_MISSING_KEY"):
        build_operators(config_from_dict({"operators": {"llm-diff": 1}, "llm": llm}, "q.yaml"))
    assert set(build_operators(load_config(ROOT / "scripts" / "quickstart.yaml"))) == \
        {"gp", "literal", "assemble"}
