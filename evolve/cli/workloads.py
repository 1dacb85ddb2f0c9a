"""`sds workloads`: every named workload and sample trace, its size, hash, and headroom.

The headroom column is what a search can gain there: every combination of the seed
schedulers and seed cache policies is simulated (the `sim` fidelity, fitness/sim.py) and
the spread is best / worst modeled tok/s (and worst / best p99 TTFT). A spread near 1.000
means no scheduling or eviction policy moves the workload (it measures kernels); a search
should select where the spread is large. A trace replayed at its own rate is bounded by
its arrivals, so only its latency moves; `?rate_scale=K` replays it K times as fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from evolve.cli.common import UsageError, add_json, emit_json, table

SAMPLE_TRACES = Path(__file__).resolve().parents[2] / "scripts" / "traces"
SEED_SCHEDULERS = ("fcfs", "chunked", "priority")
SEED_POLICIES = (("lru", {}), ("fifo", {}), ("scored", {"window": 64}))


def seed_runtimes() -> list[tuple[str, dict[str, Any]]]:
    """(label, spec) of every seed scheduler x seed cache policy."""
    out = []
    for s in SEED_SCHEDULERS:
        for p, params in SEED_POLICIES:
            policy = {"program": f"seed:cache_policy/{p}", "params": params}
            out.append((f"{s}+{p}", {"slots": {"scheduler": {"program": f"seed:scheduler/{s}"},
                                               "cache_policy": policy}}))
    return out


def workload_names() -> list[str]:
    """The built-in workloads, then the sample traces as `trace:` names."""
    from fitness.workloads import list_workloads
    traces = sorted(SAMPLE_TRACES.glob("*.jsonl")) if SAMPLE_TRACES.is_dir() else []
    return list_workloads() + [f"trace:scripts/traces/{p.name}" for p in traces]


def describe(name: str, spread: bool = True, device: str = "h100") -> dict[str, Any]:
    """One row: size, hash, and (with `spread`) the seed runtimes' best/worst in sim."""
    from fitness.sim import simulate
    from fitness.workloads import get_workload

    try:
        wl = get_workload(name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    row: dict[str, Any] = {"workload": name, "model": wl.model, "requests": len(wl.requests),
                           "prompt_tokens": wl.num_prompt_tokens,
                           "output_tokens": wl.num_output_tokens,
                           "arrivals": "yes" if wl.has_arrivals else "no",
                           "hash": wl.content_hash[:12]}
    if spread:
        sims = {label: simulate(spec, wl, device=device) for label, spec in seed_runtimes()}
        rates = {k: m["modeled_tok_s"] for k, m in sims.items()}
        ttft = [m["modeled_ttft_p99_s"] for m in sims.values()]
        best, worst = max(rates, key=rates.get), min(rates, key=rates.get)
        row.update({"sim_best": best, "sim_worst": worst,
                    "spread": round(rates[best] / rates[worst], 4),
                    # under arrivals tok/s is bounded by the trace: latency is what moves
                    "ttft_p99_spread": round(max(ttft) / min(ttft), 4)})
    return row


def cmd_workloads(args: argparse.Namespace) -> int:
    names = args.workload or workload_names()
    rows = [describe(n, spread=not args.no_spread, device=args.device) for n in names]
    emit_json(rows) if args.json else print(table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workloads", help="workloads and sample traces: size, hash, headroom")
    p.add_argument("workload", nargs="*", help="names (default: all built-in and sample "
                   "traces); trace:PATH[?options] loads a trace")
    p.add_argument("--no-spread", action="store_true",
                   help="skip simulating the seed runtimes (size and hash only)")
    p.add_argument("--device", default="h100", help="cost-model device for the spread")
    add_json(p)
    p.set_defaults(func=cmd_workloads)
