"""Detect candidate code that patched the harness, the engine, torch or the clock in-process.

The worker imports everything its stages will judge with, then records the identity of
every function (and its code object) and every class attribute in the watched modules,
before any candidate code runs. A job of the scheduler's or cache policy's `contract`
alone judges with neither the engine nor torch, so it imports neither (see
`preimport_names`); the later stages run in another worker that imports them before it
loads the candidate again (fitness/harness.py, `_contract_first`). After each stage it
compares: a candidate that replaced `fitness.benchstage._timed`, `LLM.step`,
`torch.Tensor.tolist`, `time.monotonic_ns` or a baseline program's method is rejected,
naming what it changed. The clock the bench times with is `fitness.clock`, imported by the
worker before anything else, so it is the interpreter's own and is recorded here like the
rest. This is defence in depth next to `static` and the process boundary: code that
deliberately walks the interpreter (frames, gc) can still defeat any in-process check,
which is why `static` forbids that.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

WATCHED_ROOTS = frozenset({"fitness", "runtime_modules", "torch", "transformers", "time",
                           "os", "json", "builtins", "__main__", "safetensors", "triton",
                           "numpy", "random", "gc", "sys", "resource", "signal"})
PROGRAM_PREFIX = "sds_prog_"  # slot programs, imported by runtime_modules.programs
_FN = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
       types.WrapperDescriptorType, classmethod, staticmethod, property, type)


def _watched(name: str) -> bool:
    return name.split(".")[0] in WATCHED_ROOTS


def _keys_watched(cls: type) -> bool:
    root = str(getattr(cls, "__module__", "")).split(".")[0]
    return root in ("fitness", "runtime_modules", "__main__") or \
        cls.__name__ in ("Tensor", "TensorBase")


def _ident(obj: Any) -> tuple[int, int]:
    """Identity of a function-like object and of the code it runs."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    code = getattr(obj, "__code__", None) if isinstance(obj, types.FunctionType) else None
    return id(obj), id(code)


def _record(owner: Any, label: str, out: dict[str, tuple[Any, ...]], home: str | None) -> None:
    """Record the function-like attributes of `owner` (a module or class) under `label`."""
    try:
        ns = vars(owner)
    except TypeError:
        return
    for attr, val in list(ns.items()):
        if not isinstance(val, _FN):
            continue
        out[f"{label}.{attr}"] = (owner, attr, val) + _ident(val)  # `val` kept: ids stay unique
        if isinstance(val, type) and home is not None and val.__module__ == home:
            _record(val, f"{label}.{attr}", out, None)
    if isinstance(owner, type) and _keys_watched(owner):
        # a method added later would shadow an inherited one (libraries such as
        # transformers legitimately add helpers to torch classes, so not everywhere)
        out[f"{label}.<keys>"] = (owner, None, frozenset(ns))


class Snapshot:
    """The recorded identities; `extend` adds modules imported since, `changed` compares."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._modules: dict[str, types.ModuleType] = {}
        for cls in (dict, list, str, bytes, int, float, tuple, set):
            _record(cls, cls.__name__, self._seen, None)
        self.extend()

    def extend(self, programs: bool = False) -> None:
        """Record modules not yet recorded (watched ones; slot programs when `programs`)."""
        for name, mod in list(sys.modules.items()):
            if name in self._modules or not isinstance(mod, types.ModuleType):
                continue
            if not (_watched(name) or (programs and name.startswith(PROGRAM_PREFIX))):
                continue
            self._modules[name] = mod
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _record(mod, name, self._seen, getattr(mod, "__name__", name))

    def changed(self, limit: int = 10) -> list[str]:
        """Names whose object or code changed (or vanished) since they were recorded."""
        bad = [name for name, mod in self._modules.items() if sys.modules.get(name) is not mod
               and name != "__main__" and name in sys.modules]
        for key, (owner, attr, *ident) in self._seen.items():
            if len(bad) >= limit:
                break
            try:
                ns = vars(owner)
            except TypeError:
                continue
            if attr is None:
                bad += [f"{key[:-7]}.{k}" for k in set(ns) - ident[0] if isinstance(ns[k], _FN)]
                continue
            cur, oid, cid = ns.get(attr, _MISSING), ident[1], ident[2]
            if cur is _MISSING or _ident(cur) != (oid, cid):
                bad.append(key)
        return bad[:limit]


_MISSING = object()

CURRENT: Snapshot | None = None  # the worker's snapshot; benchstage extends it


# what a scheduler or cache-policy contract judges with: no torch (`sds eval` of a
# scheduler that the contract rejects starts in ~0.5 s instead of ~4 s)
_CONTRACT_MODULES = ["fitness.stages", "fitness.result", "fitness.contracts_sched",
                     "runtime_modules", "runtime_modules.slots", "runtime_modules.programs",
                     "runtime_modules.sched_config", "runtime_modules.block_manager",
                     "runtime_modules.sequence"]
_ENGINE_MODULES = ["fitness.contracts_kernels", "runtime_modules.engine", "runtime_modules.llm",
                   "runtime_modules.reference", "torch"]
_SCHED_SLOTS = frozenset({"scheduler", "cache_policy"})


def light_contract(slots: list[str] | tuple[str, ...] | None) -> bool:
    """Whether the contract of `slots` judges without the engine and torch (`None`: any)."""
    return slots is not None and set(slots) <= _SCHED_SLOTS


def preimport_names(stages: list[str], slots: list[str] | None = None) -> list[str]:
    """The modules the stages will judge with. Only `static`/`contract` on scheduler and
    cache-policy slots need neither the engine nor torch; `slots=None` means any slot."""
    names = list(_CONTRACT_MODULES)
    if not (set(stages) <= {"static", "contract"} and light_contract(slots)):
        names += _ENGINE_MODULES
    if "sim" in stages:
        names += ["fitness.sim", "fitness.costmodel", "fitness.workloads", "fitness.traces",
                  "fitness.correctness", "runtime_modules.models"]
    if {"correctness", "quick_bench", "bench"} & set(stages):
        names += ["fitness.correctness", "fitness.benchstage", "fitness.bench", "fitness.floor",
                  "fitness.workloads", "runtime_modules.models"]
    return names


def preimport(stages: list[str], slots: list[str] | None = None) -> None:
    """Import what the stages will judge with, so it is recorded before candidates run."""
    import importlib

    for name in preimport_names(stages, slots):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a missing optional module is the stage's error to report, not ours
