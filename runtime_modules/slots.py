"""Slots: the named points where a runtime module's code can be swapped.

Each slot has a contract (the docstrings below are the whole specification an evolved
module must meet), a program reference scheme (`seed:`, `sha256:`, `file:`), and a loader
that imports a program from a real file (never `exec` of a bare string: Triton's JIT reads
source through `inspect`, and tracebacks need file names). `RuntimeSpec` is the individual
that evolution breeds: one program per slot plus parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Protocol

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"
EVOLVE_START = "# EVOLVE-BLOCK-START"
EVOLVE_END = "# EVOLVE-BLOCK-END"


class SlotError(ValueError):
    """A slot, program reference, module or parameter is not what the contract asks for."""

    def __init__(self, slot: str, problem: str):
        super().__init__(f"slot {slot!r}: {problem}")
        self.slot = slot
        self.problem = problem


# ----------------------------------------------------------------------------- contracts


class Scheduler(Protocol):
    """Decides which sequences run in the next engine step and how many tokens each brings.

    `__init__(config: SchedulerConfig, block_manager: BlockManager, **tunables)`.
    `add(seq)`: a new request arrives (status WAITING, no blocks).
    `schedule() -> list[tuple[Sequence, int]]`: the next batch as (sequence, n new tokens).
    Rules: each sequence at most once; 1 <= n <= seq.num_uncomputed_tokens;
    `block_manager.allocate(seq, n)` must have returned True for it during this call (for a
    sequence without blocks, call `block_manager.num_cached_prefix_tokens(seq)` first: the
    allocation takes those prefix-cache hits and raises seq.num_computed_tokens);
    set seq.status = RUNNING; len(batch) <= config.max_num_seqs;
    sum(n) <= config.max_num_batched_tokens; never let a sequence's KV exceed
    config.max_model_len. When blocks run out, `block_manager.preempt(seq)` frees a running
    sequence (its KV is recomputed later); the scheduler keeps it and schedules it again.
    The engine samples a token for every sequence whose num_computed_tokens reaches
    num_tokens in the step, then calls `finish(seq)` for those that ended (status FINISHED,
    blocks already freed): drop them from your queues.
    `has_unfinished() -> bool`: any sequence still waiting or running.
    """

    def __init__(self, config: Any, block_manager: Any, **tunables: Any) -> None: ...
    def add(self, seq: Any) -> None: ...
    def schedule(self) -> list[tuple[Any, int]]: ...
    def finish(self, seq: Any) -> None: ...
    def has_unfinished(self) -> bool: ...


class CachePolicy(Protocol):
    """Chooses which free KV block to overwrite next (prefix-cache eviction).

    `__init__(num_blocks: int, **tunables)`. At start the engine `add`s every block, unhashed.
    `add(block: BlockInfo)`: the block became free. If `block.hashed`, it still holds a
    reusable prefix (a later prefix hit may take it back through `remove`); fields:
    block_id, hashed, position (block index within its sequence), num_hits (prefix reuses so
    far), allocated_at, freed_at, now (engine step counters).
    `remove(block_id)`: a free cached block was taken by a prefix-cache hit; forget it.
    `evict() -> int`: pick one currently free block to overwrite, forget it, return its id.
    Called only when at least one block is free. Keep every operation O(1) or O(log n):
    it runs once per allocated block.
    """

    def __init__(self, num_blocks: int, **tunables: Any) -> None: ...
    def add(self, block: Any) -> None: ...
    def remove(self, block_id: int) -> None: ...
    def evict(self) -> int: ...


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Paged attention for one new query token per sequence.

    q: [B, Hq, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D];
    block_tables: [B, max_blocks] int32 (block ids of each sequence's KV, in order);
    context_lens: [B] int32, number of KV tokens of each sequence including the current one.
    Query head h attends to KV head h // (Hq // Hkv) over positions 0..context_len-1.
    Returns a fresh [B, Hq, D] tensor in q.dtype: softmax(q.k * scale) @ v, fp32 accumulation.
    Rows with context_len 0 are padding: any output, but no out-of-bounds access.
    Must be CUDA-graph safe: no host synchronization and no shapes that depend on values.
    """


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q):
    """Causal paged attention for several new tokens per sequence (prefill, chunks, mixed).

    q: [T, Hq, D], the new tokens of B sequences packed; cu_seqlens_q: [B+1] int32 offsets
    into q; context_lens: [B] int32, the KV length of each sequence after this step (its new
    K/V are already written into the cache); block_tables: [B, max_blocks] int32;
    max_seqlen_q: the largest q length (a host int). Query j of sequence b sits at position
    context_lens[b] - q_len_b + j and attends to KV positions 0..that position (GQA as in
    decode_attention). Returns a fresh [T, Hq, D] tensor in q.dtype.
    """


def store_kvcache(key, value, k_cache, v_cache, slot_mapping):
    """Write new keys and values into the paged cache, in place; returns None.

    key, value: [N, Hkv, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D];
    slot_mapping: [N] int32, slot = block_id * block_size + offset; a slot < 0 is padding
    and must be skipped.
    """


def rmsnorm(x, weight, eps, residual=None):
    """RMSNorm, optionally fused with a residual add.

    x: [T, H]; weight: [H]. y = x / sqrt(mean(x**2, -1) + eps) * weight, computed in fp32 and
    returned in x.dtype. With residual ([T, H]): h = x + residual, return (rmsnorm(h), h).
    Never modifies its inputs in place.
    """


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What a slot expects a module to define."""

    name: str
    symbol: str
    kind: str  # "class" | "function"
    params: tuple[str, ...]  # required leading parameters, in order
    contract: Any
    default_cpu: str
    default_cuda: str


SLOTS: dict[str, SlotInfo] = {
    s.name: s
    for s in (
        SlotInfo("scheduler", "Scheduler", "class", ("config", "block_manager"), Scheduler,
                 "seed:scheduler/fcfs", "seed:scheduler/fcfs"),
        SlotInfo("cache_policy", "CachePolicy", "class", ("num_blocks",), CachePolicy,
                 "seed:cache_policy/lru", "seed:cache_policy/lru"),
        SlotInfo("decode_attention", "decode_attention", "function",
                 ("q", "k_cache", "v_cache", "block_tables", "context_lens", "scale"),
                 decode_attention, "seed:decode_attention/torch_paged",
                 "seed:decode_attention/triton_split_kv"),
        SlotInfo("prefill_attention", "prefill_attention", "function",
                 ("q", "k_cache", "v_cache", "cu_seqlens_q", "context_lens", "block_tables",
                  "scale", "max_seqlen_q"),
                 prefill_attention, "seed:prefill_attention/torch_paged",
                 "seed:prefill_attention/triton_paged"),
        SlotInfo("store_kvcache", "store_kvcache", "function",
                 ("key", "value", "k_cache", "v_cache", "slot_mapping"), store_kvcache,
                 "seed:store_kvcache/torch_index", "seed:store_kvcache/triton_store"),
        SlotInfo("rmsnorm", "rmsnorm", "function", ("x", "weight", "eps", "residual"), rmsnorm,
                 "seed:rmsnorm/torch_rms", "seed:rmsnorm/triton_rms"),
    )
}


def slot_info(slot: str) -> SlotInfo:
    """The SlotInfo of `slot`, or a SlotError listing the known slots."""
    try:
        return SLOTS[slot]
    except KeyError:
        raise SlotError(slot, f"unknown slot; known slots: {', '.join(SLOTS)}") from None


# ----------------------------------------------------------------------------- RuntimeSpec


@dataclass(frozen=True, slots=True)
class SlotChoice:
    """One slot's program reference and the tunable values passed to it."""

    program: str
    params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"program": self.program}
        if self.params:
            d["params"] = dict(self.params)
        return d


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """A runtime: one program per slot plus slot parameters and engine parameters.

    Example: `RuntimeSpec.from_dict({"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}},
    "engine": {"max_num_seqs": 64}})`. Slots left out take the device's defaults when loaded.
    """

    slots: MappingProxyType
    engine: MappingProxyType

    @staticmethod
    def from_dict(d: dict[str, Any] | RuntimeSpec) -> RuntimeSpec:
        """Validate and build a spec from its JSON form."""
        if isinstance(d, RuntimeSpec):
            return d
        if not isinstance(d, dict):
            raise SlotError("*", f"a runtime spec must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"slots", "engine"}
        if unknown:
            raise SlotError("*", f"runtime spec has unknown keys {sorted(unknown)}; "
                                 "expected 'slots' and 'engine'")
        slots: dict[str, SlotChoice] = {}
        for name, choice in (d.get("slots") or {}).items():
            slot_info(name)
            if isinstance(choice, str):
                choice = {"program": choice}
            if not isinstance(choice, dict) or not isinstance(choice.get("program"), str):
                raise SlotError(name, f"expected {{'program': REF, 'params': {{...}}}}, got {choice!r}")
            params = choice.get("params") or {}
            if not isinstance(params, dict):
                raise SlotError(name, f"params must be an object, got {params!r}")
            parse_ref(name, choice["program"])
            slots[name] = SlotChoice(choice["program"], MappingProxyType(dict(params)))
        engine = d.get("engine") or {}
        if not isinstance(engine, dict):
            raise SlotError("engine", f"engine parameters must be an object, got {engine!r}")
        return RuntimeSpec(MappingProxyType(dict(sorted(slots.items()))),
                           MappingProxyType(dict(sorted(engine.items()))))

    @staticmethod
    def from_json(text: str) -> RuntimeSpec:
        """Parse the JSON form (see `to_json`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SlotError("*", f"runtime spec is not valid JSON: {e}") from None
        return RuntimeSpec.from_dict(data)

    @staticmethod
    def default(device: str = "cpu") -> RuntimeSpec:
        """The seed runtime: torch kernels on CPU, Triton kernels on CUDA."""
        attr = "default_cuda" if str(device).startswith("cuda") else "default_cpu"
        return RuntimeSpec.from_dict(
            {"slots": {n: {"program": getattr(s, attr)} for n, s in SLOTS.items()}})

    def resolved(self, device: str = "cpu") -> RuntimeSpec:
        """This spec with every missing slot filled with the device's default."""
        d = RuntimeSpec.default(device).to_dict()
        d["slots"].update(self.to_dict()["slots"])
        d["engine"] = dict(self.engine)
        return RuntimeSpec.from_dict(d)

    def with_slot(self, slot: str, program: str, params: dict[str, Any] | None = None) -> RuntimeSpec:
        """A copy with `slot` set to `program` (and `params`)."""
        d = self.to_dict()
        d["slots"][slot] = {"program": program, "params": dict(params or {})}
        return RuntimeSpec.from_dict(d)

    def with_engine(self, **params: Any) -> RuntimeSpec:
        """A copy with engine parameters updated."""
        d = self.to_dict()
        d["engine"].update(params)
        return RuntimeSpec.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: {"slots": {slot: {"program", "params"?}}, "engine": {...}}."""
        return {"slots": {k: v.to_dict() for k, v in self.slots.items()},
                "engine": dict(self.engine)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stable across processes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


# ----------------------------------------------------------------------------- programs


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


# ----------------------------------------------------------------------------- EVOLVE-BLOCKs


def evolve_blocks(code: str) -> list[tuple[int, int]]:
    """Line ranges (start, end), 0-based and exclusive of the marker lines, of EVOLVE-BLOCKs."""
    blocks, start = [], None
    for i, line in enumerate(code.splitlines()):
        s = line.strip()
        if s.startswith(EVOLVE_START):
            if start is not None:
                raise ValueError(f"line {i + 1}: nested {EVOLVE_START}")
            start = i + 1
        elif s.startswith(EVOLVE_END):
            if start is None:
                raise ValueError(f"line {i + 1}: {EVOLVE_END} without a start")
            blocks.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{EVOLVE_START} at line {start} is never closed")
    return blocks


def _frozen_parts(code: str) -> list[str]:
    lines = code.splitlines()
    parts, prev = [], 0
    for start, end in evolve_blocks(code):
        parts.append("\n".join(lines[prev:start]))
        prev = end
    parts.append("\n".join(lines[prev:]))
    return parts


def check_evolve_blocks(old_code: str, new_code: str) -> str | None:
    """None if `new_code` only changes `old_code` inside its EVOLVE-BLOCKs, else the reason.

    A module without markers may be changed anywhere.
    """
    try:
        old_blocks = evolve_blocks(old_code)
    except ValueError as e:
        return f"parent's EVOLVE-BLOCK markers are malformed: {e}"
    if not old_blocks:
        return None
    try:
        new_blocks = evolve_blocks(new_code)
    except ValueError as e:
        return f"EVOLVE-BLOCK markers are malformed: {e}"
    if len(new_blocks) != len(old_blocks):
        return (f"the edit changed the number of EVOLVE-BLOCKs ({len(old_blocks)} -> "
                f"{len(new_blocks)}); only code inside them may change")
    old_parts, new_parts = _frozen_parts(old_code), _frozen_parts(new_code)
    for i, (a, b) in enumerate(zip(old_parts, new_parts)):
        if a.rstrip() != b.rstrip():
            where = "before the first" if i == 0 else f"after EVOLVE-BLOCK {i}"
            return f"the edit changes code outside the EVOLVE-BLOCKs ({where} block)"
    return None
