"""What a run config's schema cannot see, checked before a run is created: the workloads
resolve (a trace file exists and parses), the seed runtime's programs exist, the model is a
preset or a model folder. A config that fails here never leaves a run behind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime_modules.slots import RuntimeSpec, SlotError

if TYPE_CHECKING:
    from evolve.config import RunConfig


class ConfigError(ValueError):
    """A run config that cannot be used; the message names file, key, value and expectation."""


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
