"""Evolution against random sampling at an equal evaluation budget, paired by seed.

For each run seed 0..N-1, one run with `search.method: evolve` (selection, bandit) and one
with `search.method: random` (every child a mutation of the seed, same operators and
weights), both from the same config and overrides, both stopped by the same number of
evaluations only (no wall clock, no stagnation stop). Writes the best-so-far objective after
each evaluation to results/search_vs_random.csv (method, seed, evaluation, best), plots the
curves to results/search_vs_random.png (when matplotlib is installed), and prints the
median final best of each method and in how many paired seeds evolution beat random.

Runs are named `svr-evolve-S` / `svr-random-S` in their own database (default
results/search_vs_random.db): running the script again resumes unfinished runs by name;
`--fresh` starts over.

    .venv/bin/python scripts/search_vs_random.py [--config scripts/quickstart.yaml] \\
        [--evaluations 150] [--seeds 5] [--set KEY=VALUE ...] [--db URL] [--fresh]
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evolve.config import load_config
from evolve.population import FULL, run_evaluations

METHODS = ("evolve", "random")
log = logging.getLogger("search_vs_random")


def overrides(method: str, seed: int, evaluations: int, user: list[str]) -> list[str]:
    """The config overrides of one run: the user's, then what makes the pair comparable."""
    out = [*user, f"seed={seed}", f"search.method={method}",
           f"budget.max_evaluations={evaluations}", "budget.max_wall_seconds=null",
           "budget.max_gpu_seconds=null", "stagnation.window=null"]
    if method == "random":
        out.append("search.bandit=null")  # random sampling draws operators by weight
    return out


def best_so_far(store: Any, run_id: int, metric: str, sign: float) -> list[float | None]:
    """The best objective among the run's evaluations after each one, in finishing order."""
    rows = sorted((r for r in run_evaluations(store, run_id, FULL)
                   if r.status not in ("pending", "running")),
                  key=lambda r: (r.finished_at or r.created_at, r.id))
    best: float | None = None
    out: list[float | None] = []
    for r in rows:
        v = (r.metrics or {}).get(metric) if r.status == "passed" else None
        if isinstance(v, (int, float)) and (best is None or sign * v > sign * best):
            best = float(v)
        out.append(best)
    return out


def compare(finals: dict[tuple[str, int], float | None], sign: float) -> dict[str, Any]:
    """Median final best per method, and the paired seeds where evolution beat random."""
    med = {m: statistics.median(v for (mm, _), v in finals.items() if mm == m and v is not None)
           if any(mm == m and v is not None for (mm, _), v in finals.items()) else None
           for m in METHODS}
    seeds = sorted({s for _, s in finals})
    pairs = [(finals.get(("evolve", s)), finals.get(("random", s))) for s in seeds]
    pairs = [(e, r) for e, r in pairs if e is not None and r is not None]
    wins = sum(sign * e > sign * r for e, r in pairs)
    return {"median": med, "wins": wins, "pairs": len(pairs)}


def write_csv(path: Path, curves: dict[tuple[str, int], list[float | None]]) -> None:
    """One row per (method, seed, evaluation index from 1) with the best so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "evaluation", "best"])
        for (method, seed), curve in sorted(curves.items()):
            for i, v in enumerate(curve, 1):
                w.writerow([method, seed, i, "" if v is None else f"{v:.6g}"])


def plot(path: Path, curves: dict[tuple[str, int], list[float | None]], metric: str) -> bool:
    """Each run's curve (thin) and each method's median (thick); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, color in zip(METHODS, ("tab:blue", "tab:gray")):
        runs = [c for (m, _), c in curves.items() if m == method]
        for c in runs:
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.3, linewidth=0.8)
        n = min((len(c) for c in runs), default=0)
        med = [statistics.median([c[i] for c in runs if c[i] is not None] or [float("nan")])
               for i in range(n)]
        ax.plot(range(1, n + 1), med, color=color, linewidth=2.5,
                label=f"{method} (median of {len(runs)})")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title("evolution vs random sampling at equal budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "scripts" / "quickstart.yaml"))
    ap.add_argument("--evaluations", type=int, default=150, help="budget of each run")
    ap.add_argument("--seeds", type=int, default=5, help="run seeds 0..N-1 per method")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (repeatable)")
    ap.add_argument("--db", default=None, help="database URL (default: "
                                               "sqlite:///results/search_vs_random.db)")
    ap.add_argument("--fresh", action="store_true", help="delete the default database first")
    ap.add_argument("--out", default=str(ROOT / "results" / "search_vs_random"),
                    help="output path without extension (.csv and .png are written)")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the CSV, plot and summary from the runs the "
                         "database already has (finished or not)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from evolve.launch import launch
    from population_db import Store

    db = args.db
    if db is None:
        path = ROOT / "results" / "search_vs_random.db"
        if args.fresh and not args.report_only:
            for p in path.parent.glob(path.name + "*"):  # the file and its -wal / -shm
                p.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = f"sqlite:///{path}"
    curves: dict[tuple[str, int], list[float | None]] = {}
    metric, sign = "", 1.0
    store = Store.open(db)  # reads the curves; each run writes through its own
    there = {r.name for r in store.list_runs()}
    for seed in range(args.seeds):
        for method in METHODS:
            cfg = load_config(args.config, overrides(method, seed, args.evaluations, args.set))
            metric, sign = cfg.selection.parsed_objectives()[0]
            name = f"svr-{method}-{seed}"
            if args.report_only:
                if name in there:
                    curves[(method, seed)] = best_so_far(store, store.get_run(name).id, metric,
                                                         sign)
                continue
            outcome, _ = launch(cfg, name=name, db=db, runs_csv=None, progress=False)
            curves[(method, seed)] = best_so_far(store, outcome.run_id, metric, sign)
            log.info("%s: %s after %d evaluations (%s), best %s %s", name, outcome.status,
                     outcome.evaluations, outcome.reason, metric, curves[(method, seed)][-1])
    store.close()
    out = Path(args.out)
    write_csv(out.with_suffix(".csv"), curves)
    if not plot(out.with_suffix(".png"), curves, metric):
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    res = compare({k: c[-1] if c else None for k, c in curves.items()}, sign)
    for m in METHODS:
        print(f"median final best {metric}, {m}: {res['median'][m]}")
    print(f"evolution beat random in {res['wins']} of {res['pairs']} paired seeds")
    print(f"wrote {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
