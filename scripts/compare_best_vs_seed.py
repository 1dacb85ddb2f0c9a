"""Does a run's best runtime beat its seed runtime? Measured in one process, interleaved.

For each workload (the run's own, then held-out ones it never evolved on) both runtimes are
built once, warmed up, then run in alternating order (B S, S B, ...) for `--rounds` rounds,
so drift and background load hit both alike. Prints the median ratio of tok/s (best over
seed) with its range, and, from the cold first run of each fresh engine (its warm-up), the
deterministic modeled ratio (fitness/costmodel.py) with the engine's work counters (steps,
computed tokens, KV reads, preemptions, prefix hits) that explain it.

    .venv/bin/python scripts/compare_best_vs_seed.py --run quickstart \
        --heldout nanovllm-bench-cpu --rounds 7 [--db URL] [--runtime ID] [--threads N] [--json]

`--threads` (default 1) sets torch's intra-op threads: on a 2-core machine shared with other
work, the default of one per core made identical runs take 1 s to 23 s; one thread is steady.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COUNTERS = ("steps", "preemptions", "prefix_cache_hit_tokens", "scheduled_tokens")


def _specs(store: Any, run: str, runtime: int | None) -> tuple[dict, dict, int, int, dict]:
    """(best spec, seed spec, best id, seed id, run config) with sha256 programs on disk."""
    from evolve.population import run_runtimes
    from evolve.runs_csv import run_summary
    from runtime_modules.slots import materialize

    summary = run_summary(store, run)
    rts = {r.id: r for r in run_runtimes(store, summary["run_id"])}
    seed_id = next(i for i, r in rts.items() if r.operator == "seed")
    best_id = runtime or summary["best_runtime"]
    if best_id is None:
        raise SystemExit(f"run {run!r} has no passed runtime to compare")
    best = store.get_runtime(best_id)
    for spec in (best.spec, rts[seed_id].spec):
        for choice in spec["slots"].values():
            ref = choice["program"] if isinstance(choice, dict) else choice
            if ref.startswith("sha256:"):
                materialize(store.get_program(ref).code)
    return best.spec, rts[seed_id].spec, best_id, seed_id, store.get_run(run).config


def _run_once(llm: Any, wl: Any) -> tuple[float, dict[str, int]]:
    from fitness.bench import run_workload

    before = {k: llm.stats.get(k, 0) for k in COUNTERS}
    m = run_workload(llm, wl, warmup=False)
    return m["tok_s"], {k: llm.stats.get(k, 0) - before[k] for k in COUNTERS}


def compare(best: dict, seed: dict, workload: str, rounds: int, model: str) -> dict[str, Any]:
    """Interleaved rounds of best and seed on one workload; ratios and counters."""
    from fitness.bench import build_llm, run_workload
    from fitness.correctness import model_dir
    from fitness.costmodel import WORK_COUNTERS
    from fitness.workloads import get_workload

    wl = get_workload(workload)
    path = str(model_dir(model)) if model == "tiny" else model
    llms = {"best": build_llm(wl, model=path, runtime=best, device="cpu"),
            "seed": build_llm(wl, model=path, runtime=seed, device="cpu")}
    # the cold first run of each fresh engine: the deterministic modeled figure, and warm-up
    cold = {who: run_workload(llm, wl, warmup=False) for who, llm in llms.items()}
    tok: dict[str, list[float]] = {"best": [], "seed": []}
    counters: dict[str, dict[str, int]] = {}
    for r in range(rounds):
        for who in (("best", "seed") if r % 2 == 0 else ("seed", "best")):
            t, c = _run_once(llms[who], wl)
            tok[who].append(t)
            counters[who] = c
    ratios = [b / s for b, s in zip(tok["best"], tok["seed"])]
    work = {who: {k: (c["steps"] if k == "steps" else c.get(f"stats_{k}"))
                  for k in WORK_COUNTERS} for who, c in cold.items()}
    return {"workload": workload, "rounds": rounds,
            "modeled_ratio": cold["best"]["modeled_tok_s"] / cold["seed"]["modeled_tok_s"],
            "best_modeled_tok_s": cold["best"]["modeled_tok_s"],
            "seed_modeled_tok_s": cold["seed"]["modeled_tok_s"], "work": work,
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "best_tok_s": statistics.median(tok["best"]),
            "seed_tok_s": statistics.median(tok["seed"]),
            "wins": sum(1 for x in ratios if x > 1.0), "counters": counters}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default=os.environ.get("SDS_DB") or "sqlite:///results/sds.db")
    p.add_argument("--run", default="quickstart")
    p.add_argument("--runtime", type=int, default=None, help="compare this runtime (default: "
                                                               "the run's best)")
    p.add_argument("--heldout", default="nanovllm-bench-cpu",
                   help="comma-separated workloads the run did not evolve on")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: "
                                                           "torch's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 0:
        p.error(f"--rounds must be >= 1 and --threads >= 0, got {args.rounds} and "
                f"{args.threads}")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    os.environ.setdefault("SDS_PROGRAM_DIR", tempfile.mkdtemp(prefix="sds-compare-"))
    from population_db import Store

    store = Store.open(args.db, create=False)
    best, seed, best_id, seed_id, config = _specs(store, args.run, args.runtime)
    ev = config.get("evaluation") or {}
    own = list(ev.get("workloads") or [])
    held = [w for w in args.heldout.split(",") if w and w not in own]
    model = ev.get("model") or "tiny"
    results = []
    for wl in own + held:
        res = compare(best, seed, wl, args.rounds, model)
        res["kind"] = "evolved on" if wl in own else "held out"
        results.append(res)
    out = {"run": args.run, "best_runtime": best_id, "seed_runtime": seed_id,
           "threads": args.threads, "results": results}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"run {args.run}: best runtime r{best_id} vs seed runtime r{seed_id}, one process, "
          f"CPU, {args.threads or 'default'} thread(s): modeled ratio (cold run, deterministic) | wall-clock ratio, median "
          f"[min..max] of {args.rounds} interleaved rounds")
    for r in results:
        print(f"  {r['workload']:22s} ({r['kind']:10s}) modeled {r['modeled_ratio']:.4f} | "
              f"wall {r['ratio_median']:.3f} [{r['ratio_min']:.3f}..{r['ratio_max']:.3f}], "
              f"wins {r['wins']}/{r['rounds']}, tok/s {r['best_tok_s']:.1f} vs "
              f"{r['seed_tok_s']:.1f}")
        for who in ("best", "seed"):
            print(f"      {who} (cold run): " + ", ".join(
                f"{k} {v}" for k, v in r["work"][who].items() if v is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
