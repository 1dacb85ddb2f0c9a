"""A run's best runtime against its seed: on the run's own workloads and on held-out ones.

The best is the run's top runtime by its objective among those confirmed on the real
engine (`sds leaderboard`); the seed is the run's seed runtime. Each held-out workload is
simulated for both in the sandboxed harness (`sim` stage, the seed as baseline), so the
ratio is the same `modeled_ratio` the run selected on, on traffic it never saw.

    .venv/bin/python scripts/heldout.py RUN [--workload W ...] [--db URL] [--json]

Default held-out workload: the sample agent trace, replayed as the quickstart replays the
chat trace (100x its rate, 768 KV blocks, 16 sequences).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT = "trace:scripts/traces/agent.jsonl?rate_scale=100&num_kv_blocks=768&max_num_seqs=16"


def heldout(run: str, workloads: list[str], db: str) -> dict:
    """The best's ratio to the seed on the run's workloads (recorded) and held-out ones."""
    from evolve.cli.db import run_objective
    from fitness import Harness
    from population_db import Store

    store = Store.open(db, create=False)
    metric, higher = run_objective(store, run)
    best = store.best_runtime(run, metric=metric, higher_is_better=higher)
    if best is None:
        raise SystemExit(f"run {run!r} has no runtime confirmed on the real engine yet")
    seed = next(r for r in store.list_runtimes(run) if r.operator == "seed")
    m = best.metrics or {}
    out = {"run": run, "best": f"r{best.runtime.id}", "seed": f"r{seed.id}", "metric": metric,
           "own": {"geomean": m.get(metric)}, "held_out": {}}
    for wl, per in (m.get("workloads") or {}).items():
        out["own"][wl] = per.get(metric)
    harness = Harness(store=store, device="cpu")
    for wl in workloads:
        rep = harness.evaluate(best.runtime.spec, stages=("sim",), workload=wl,
                               baseline=seed.spec, runtime_id=best.runtime.id,
                               run_id=seed.run_id)
        out["held_out"][wl] = rep.metrics.get("modeled_ratio") if rep.status == "passed" \
            else f"{rep.status}: {rep.error}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--workload", action="append", help=f"held-out workload (default {HELD_OUT})")
    ap.add_argument("--db", default="sqlite:///results/sds.db")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = heldout(args.run, args.workload or [HELD_OUT], args.db)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.run}: best {out['best']} vs seed {out['seed']}, {out['metric']} in sim")
    for wl, v in out["own"].items():
        print(f"  {'its workloads (geomean)' if wl == 'geomean' else wl}: "
              f"{v:.3f}x" if isinstance(v, float) else f"  {wl}: {v}")
    for wl, v in out["held_out"].items():
        good = isinstance(v, float) and math.isfinite(v)
        print(f"  held out {wl}: {v:.3f}x" if good else f"  held out {wl}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
