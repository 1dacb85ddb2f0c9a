"""The search space of a runtime: engine parameters and every slot module's TUNABLES.

TUNABLES are read from the module's source with `ast`, never imported: candidate code only
ever runs inside the harness's sandbox.
"""

from __future__ import annotations

import ast
import contextlib
from dataclasses import dataclass
from typing import Any

import optuna

from runtime_modules.slots import RuntimeSpec, program_path, slot_info

# Engine parameters worth searching, with choices around the engine's defaults. Powers of
# two keep Triton tiles and block tables aligned; the runtime's own value is always added.
ENGINE_SPACE: dict[str, list[Any] | tuple[Any, Any]] = {
    "max_num_seqs": [8, 16, 32, 64, 128, 256, 512],
    "max_num_batched_tokens": [1024, 2048, 4096, 8192, 16384, 32768],
    "block_size": [8, 16, 32, 64],
    "enable_prefix_caching": [True, False],
}
CUDA_ENGINE_SPACE: dict[str, list[Any] | tuple[Any, Any]] = {
    "gpu_memory_utilization": (0.80, 0.95),
}
# The engine's documented defaults (docs/CONTRACTS.md), used when the spec sets none.
ENGINE_DEFAULTS: dict[str, Any] = {
    "max_num_seqs": 256, "max_num_batched_tokens": 16384, "block_size": 16,
    "enable_prefix_caching": True, "gpu_memory_utilization": 0.9,
}


class TuneError(ValueError):
    """Bad input to tuning: an unknown runtime, an unusable tunable, a bad trial count."""


@dataclass(frozen=True, slots=True)
class Param:
    """One searched parameter: where it goes (engine or a slot), its space and default."""

    name: str  # Optuna's name: "engine.<p>" or "<slot>.<p>"
    target: str  # "engine" or a slot name
    key: str
    space: list[Any] | tuple[Any, Any]
    default: Any = None  # None: no default known; Optuna samples it in the first trial


def _check_space(where: str, key: str, space: Any) -> list[Any] | tuple[Any, Any]:
    if isinstance(space, list) and space:
        bad = [c for c in space if not isinstance(c, (bool, int, float, str, type(None)))]
        if bad:
            raise TuneError(f"{where}: TUNABLES[{key!r}] choices must be bool/int/float/str "
                            f"for Optuna, got {bad!r}")
        return list(space)
    if (isinstance(space, tuple) and len(space) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space)
            and space[0] < space[1]):
        return space
    raise TuneError(f"{where}: TUNABLES[{key!r}] must be a non-empty list of choices or a "
                    f"(low, high) tuple with low < high, got {space!r}")


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
        ast.FloorDiv: lambda a, b: a // b, ast.LShift: lambda a, b: a << b,
        ast.Pow: lambda a, b: a ** b if abs(b) <= 64 else None}


def _const(node: ast.AST) -> Any:
    """A literal, allowing constant arithmetic (`1 << 20`, `2 ** 10`, `-1`); else ValueError."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        value = _OPS[type(node.op)](_const(node.left), _const(node.right))
        if value is None:
            raise ValueError("exponent too large")
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _const(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.List):
        return [_const(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_const(e) for e in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_const(k): _const(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


def read_tunables(slot: str, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A module's TUNABLES and its symbol's keyword defaults, read from source, not imported.

    Candidate code only ever runs inside the harness's sandbox, so the tuner parses it.
    """
    path = program_path(slot, ref)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tunables: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    symbol = slot_info(slot).symbol
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            else getattr(node, "target", None) if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "TUNABLES" and node.value is not None:
            try:
                tunables = _const(node.value)
            except (ValueError, TypeError, ArithmeticError):
                raise TuneError(f"slot {slot} ({ref}): TUNABLES must be a literal dict to be "
                                "tuned") from None
        fn = None
        if isinstance(node, ast.ClassDef) and node.name == symbol:
            fn = next((b for b in node.body if isinstance(b, ast.FunctionDef)
                       and b.name == "__init__"), None)
        elif isinstance(node, ast.FunctionDef) and node.name == symbol:
            fn = node
        if fn is not None:
            a = fn.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, d in pairs:
                with contextlib.suppress(ValueError, TypeError, ArithmeticError):
                    defaults[arg.arg] = _const(d)
    if not isinstance(tunables, dict):
        raise TuneError(f"slot {slot} ({ref}): TUNABLES must be a dict, got {tunables!r}")
    return tunables, defaults


def search_space(spec: RuntimeSpec, device: str = "cpu",
                 fixed: frozenset[str] | set[str] = frozenset()) -> list[Param]:
    """The tunables of a runtime: engine parameters, then each slot module's TUNABLES.

    Every slot program must be loadable (`sha256:` refs materialized first). The runtime's
    own value of each parameter is its default and is always inside the space. Engine
    parameters in `fixed` (those a workload sets itself) are left out.
    """
    params: list[Param] = []
    engine_space = dict(ENGINE_SPACE)
    if str(device).startswith("cuda"):
        engine_space.update(CUDA_ENGINE_SPACE)
    for key, space in engine_space.items():
        if key in fixed:
            continue
        default = spec.engine.get(key, ENGINE_DEFAULTS.get(key))
        params.append(Param(f"engine.{key}", "engine", key, _widen(space, default), default))
    for slot, choice in spec.resolved(device).slots.items():
        tunables, sig_defaults = read_tunables(slot, choice.program)
        for key, space in sorted(tunables.items()):
            space = _check_space(f"slot {slot} ({choice.program})", key, space)
            default = choice.params.get(key, sig_defaults.get(key))
            params.append(Param(f"{slot}.{key}", slot, key, _widen(space, default), default))
    return params


def _widen(space: list[Any] | tuple[Any, Any], default: Any) -> list[Any] | tuple[Any, Any]:
    """The space with the default inside it (choices gain it; ranges keep it if inside)."""
    if isinstance(space, list) and default is not None and default not in space:
        return [*space, default]
    return space


def suggest(trial: optuna.Trial, p: Param) -> Any:
    """Ask the trial for one parameter according to its space."""
    if isinstance(p.space, list):
        return trial.suggest_categorical(p.name, p.space)
    lo, hi = p.space
    if isinstance(lo, int) and isinstance(hi, int):
        return trial.suggest_int(p.name, lo, hi)
    return trial.suggest_float(p.name, float(lo), float(hi))


def apply_params(spec: RuntimeSpec, space: list[Param], values: dict[str, Any],
                 device: str = "cpu") -> RuntimeSpec:
    """`spec` with the named values set (engine keys and slot params), slots made explicit."""
    d = spec.resolved(device).to_dict() if any(p.target != "engine" for p in space) \
        else spec.to_dict()
    for p in space:
        if p.name not in values:
            continue
        if p.target == "engine":
            d["engine"][p.key] = values[p.name]
        else:
            d["slots"][p.target].setdefault("params", {})[p.key] = values[p.name]
    return RuntimeSpec.from_dict(d)
