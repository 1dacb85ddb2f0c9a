"""Slots: the named points where a runtime module's code can be swapped.

This module is the one import point for everything about slots; the pieces live in
`contracts` (what each slot's module must define and do), `spec` (RuntimeSpec, the
individual evolution breeds), `programs` (program references, content-addressed files,
loading and checking a module) and `evolve_blocks` (which regions edits may touch).
"""

from runtime_modules.contracts import (
    SLOTS,
    CachePolicy,
    Scheduler,
    SlotError,
    SlotInfo,
    decode_attention,
    prefill_attention,
    rmsnorm,
    slot_info,
    store_kvcache,
)
from runtime_modules.evolve_blocks import (
    EVOLVE_END,
    EVOLVE_START,
    check_evolve_blocks,
    evolve_blocks,
)
from runtime_modules.programs import (
    SEEDS_DIR,
    LoadedSlot,
    check_params,
    check_symbol,
    code_hash,
    import_file,
    load_slot,
    materialize,
    parse_ref,
    program_dir,
    program_path,
    seed_names,
)
from runtime_modules.spec import RuntimeSpec, SlotChoice

__all__ = [
    "EVOLVE_END",
    "EVOLVE_START",
    "SEEDS_DIR",
    "SLOTS",
    "CachePolicy",
    "LoadedSlot",
    "RuntimeSpec",
    "Scheduler",
    "SlotChoice",
    "SlotError",
    "SlotInfo",
    "check_evolve_blocks",
    "check_params",
    "check_symbol",
    "code_hash",
    "decode_attention",
    "evolve_blocks",
    "import_file",
    "load_slot",
    "materialize",
    "parse_ref",
    "prefill_attention",
    "program_dir",
    "program_path",
    "rmsnorm",
    "seed_names",
    "slot_info",
    "store_kvcache",
]
