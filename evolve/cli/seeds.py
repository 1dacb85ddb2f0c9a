"""`sds seeds`: the slots and their seed programs."""

from __future__ import annotations

import argparse

from evolve.cli.common import add_json, emit_json, table
from runtime_modules.slots import SLOTS, code_hash, program_path, seed_names


def list_seeds() -> list[dict[str, str]]:
    """One row per seed program: slot, reference, code hash, CPU/CUDA default."""
    rows = []
    for slot, info in SLOTS.items():
        for ref in seed_names(slot):
            code = program_path(slot, ref).read_text()
            default = [d for d, r in (("cpu", info.default_cpu), ("cuda", info.default_cuda))
                       if r == ref]
            rows.append({"slot": slot, "program": ref, "code_hash": code_hash(code)[:12],
                         "default_on": ",".join(default)})
    return rows


def cmd_seeds(args: argparse.Namespace) -> int:
    rows = list_seeds()
    if args.json:
        emit_json(rows)
    else:
        print(table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seeds", help="the slots and their seed programs")
    add_json(p)
    p.set_defaults(func=cmd_seeds)
