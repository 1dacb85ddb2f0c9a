"""Programs: content-addressed module files, references to them, and their loading.

Code is always imported from a real file (never `exec` of a bare string): Triton's JIT
reads function source through `inspect`, and tracebacks need file names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from runtime_modules.contracts import SlotError, slot_info

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"

def code_hash(code: str) -> str:
    """Hex sha256 of a program's UTF-8 text: its identity everywhere in sds."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def program_dir() -> Path:
    """Where content-addressed program files live ($SDS_PROGRAM_DIR or ~/.cache/sds/programs)."""
    return Path(os.environ.get("SDS_PROGRAM_DIR") or Path.home() / ".cache" / "sds" / "programs")


def materialize(code: str, directory: Path | None = None) -> Path:
    """Write `code` to `<program dir>/<sha256>.py` (once) and return the path."""
    d = Path(directory) if directory else program_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{code_hash(code)}.py"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(code, encoding="utf-8")
        os.replace(tmp, path)
    return path


_REF = re.compile(r"^(seed:[a-z_]+/[A-Za-z0-9_]+|sha256:[0-9a-f]{64}|file:.+)$")


def parse_ref(slot: str, ref: str) -> tuple[str, str]:
    """Split a program reference into (scheme, rest), checking its form."""
    if not isinstance(ref, str) or not _REF.match(ref):
        raise SlotError(slot, f"bad program reference {ref!r}; expected 'seed:<slot>/<name>', "
                              "'sha256:<64 hex>' or 'file:<path>'")
    scheme, rest = ref.split(":", 1)
    return scheme, rest


def program_path(slot: str, ref: str) -> Path:
    """The file a program reference points to (which must exist)."""
    scheme, rest = parse_ref(slot, ref)
    if scheme == "seed":
        seed_slot, name = rest.split("/", 1)
        path = SEEDS_DIR / seed_slot / f"{name}.py"
    elif scheme == "sha256":
        path = program_dir() / f"{rest}.py"
    else:
        path = Path(rest)
    if not path.is_file():
        hint = " (resolve it through population_db first)" if scheme == "sha256" else ""
        raise SlotError(slot, f"program {ref!r} not found at {path}{hint}")
    return path


def seed_names(slot: str) -> list[str]:
    """The seed programs available for a slot, as `seed:` references."""
    slot_info(slot)
    d = SEEDS_DIR / slot
    return sorted(f"seed:{slot}/{p.stem}" for p in d.glob("*.py") if not p.stem.startswith("_"))


@dataclass(frozen=True, slots=True)
class LoadedSlot:
    """A slot implementation as the engine really loaded it."""

    slot: str
    name: str
    code_hash: str
    path: str
    obj: Any
    params: MappingProxyType
    module: ModuleType

    def info(self) -> dict[str, Any]:
        """Plain-data description: name, code hash, path, params."""
        return {"name": self.name, "code_hash": self.code_hash, "path": self.path,
                "params": dict(self.params)}


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a source file under `module_name` (registered in sys.modules)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def check_params(slot: str, module: ModuleType, params: dict[str, Any]) -> dict[str, Any]:
    """Validate `params` against the module's TUNABLES; return them."""
    tunables = getattr(module, "TUNABLES", {}) or {}
    for key, value in params.items():
        if key not in tunables:
            raise SlotError(slot, f"parameter {key!r} is not a declared tunable "
                                  f"(TUNABLES: {sorted(tunables) or 'none'})")
        space = tunables[key]
        if isinstance(space, tuple) and len(space) == 2:
            lo, hi = space
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise SlotError(slot, f"parameter {key}={value!r} outside its range [{lo}, {hi}]")
        elif isinstance(space, list):
            if value not in space:
                raise SlotError(slot, f"parameter {key}={value!r} not among its choices {space}")
        else:
            raise SlotError(slot, f"TUNABLES[{key!r}] must be a list of choices or a "
                                  f"(low, high) tuple, got {space!r}")
    return dict(params)


def check_symbol(slot: str, module: ModuleType) -> Any:
    """The slot's symbol in `module`, checked for kind and signature."""
    info = slot_info(slot)
    obj = getattr(module, info.symbol, None)
    if obj is None:
        raise SlotError(slot, f"module {module.__name__} does not define {info.symbol!r}")
    if info.kind == "class":
        if not inspect.isclass(obj):
            raise SlotError(slot, f"{info.symbol} must be a class, got {type(obj).__name__}")
        missing = [m for m in ("schedule", "add", "finish", "has_unfinished")
                   if slot == "scheduler" and not callable(getattr(obj, m, None))]
        missing += [m for m in ("add", "remove", "evict")
                    if slot == "cache_policy" and not callable(getattr(obj, m, None))]
        if missing:
            raise SlotError(slot, f"class {info.symbol} lacks method(s) {missing}")
        target = obj.__init__
        skip = 1  # self
    else:
        if not callable(obj):
            raise SlotError(slot, f"{info.symbol} must be a function")
        target = getattr(obj, "fn", obj)  # a triton JITFunction wraps .fn
        skip = 0
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return obj
    names = [p.name for p in list(sig.parameters.values())[skip:]
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if tuple(names[: len(info.params)]) != info.params:
        raise SlotError(slot, f"{info.symbol} has signature {sig}; expected leading parameters "
                              f"({', '.join(info.params)})")
    return obj


def load_slot(slot: str, ref: str, params: dict[str, Any] | None = None) -> LoadedSlot:
    """Load a slot's program from its reference, checking the contract and params."""
    info = slot_info(slot)
    path = program_path(slot, ref)
    code = path.read_text(encoding="utf-8")
    digest = code_hash(code)
    name = ref.split("/", 1)[1] if ref.startswith("seed:") else ref.split(":", 1)[0] + ":" + digest[:12]
    try:
        module = import_file(path, f"sds_prog_{slot}_{digest[:16]}")
    except SyntaxError as e:
        raise SlotError(slot, f"{path}: syntax error at line {e.lineno}: {e.msg}") from e
    except Exception as e:
        raise SlotError(slot, f"{path}: import failed: {type(e).__name__}: {e}") from e
    obj = check_symbol(slot, module)
    checked = check_params(slot, module, dict(params or {}))
    del info
    return LoadedSlot(slot, name, digest, str(path), obj, MappingProxyType(checked), module)

