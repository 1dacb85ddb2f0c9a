"""Benchmark the Ray executor against the local one: sim evaluations per minute, and the
overhead per evaluation that Ray adds.

The same N evaluations (distinct scheduler programs: the seed's code with a different
comment each, so nothing is cached between them; stages static + sim on one workload) run
on the local executor (threads calling the harness) and on a local Ray instance limited to
k CPUs, one task per evaluation, for each k in --workers. Each configuration first runs one
evaluation per worker untimed (worker start, imports and the seed's simulation per process,
which both executors pay once), then times the N. Each (k, executor) pair is measured
--repeats times, local and Ray alternating (which goes first alternates too), so load from
other processes falls on both alike; rows give the median, min and max. Overhead per
evaluation at equal k: (Ray's median wall time - the local executor's) / N.

Beside the sim evaluations, --noop N evaluations of a harness that does nothing measure
what Ray itself adds per task (scheduling, moving the job and result, the tracker call),
free of the evaluations' own noise: rows `local-noop` and `ray-noop`.

Ray runs its workers at niceness 15 by default (its `worker_niceness` setting); the Ray
instance sds starts itself, and this benchmark's, set RAY_worker_niceness=0 so evaluations
compete for the CPU like the local executor's (--ray-niceness 15 measures Ray's default).

    python scripts/bench_ray.py                         # 12 evaluations, 1, 2 and 4 workers
    python scripts/bench_ray.py --evaluations 24 --workers 1 2 --csv results/bench_ray.csv
    python scripts/bench_ray.py --no-sim --noop 400 --append      # only the no-op rows
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evolve.config import RunConfig, config_from_dict
from evolve.executors import EvalJob, Gate, LocalExecutor
from evolve.launch import make_harness
from runtime_modules.slots import RuntimeSpec, program_path

log = logging.getLogger("bench_ray")
FIELDS = ["executor", "workers", "evaluations", "repeats", "wall_s_median", "wall_s_min",
          "wall_s_max", "eval_per_min", "s_per_eval", "overhead_s_per_eval", "ray_start_s",
          "ray_niceness", "workload", "cpus", "loadavg_1min", "python", "note"]


def _jobs(cfg: RunConfig, n: int, first_id: int, folder: Path) -> list[EvalJob]:
    """`n` evaluations of distinct scheduler programs (the seed's code + a comment)."""
    seed = RuntimeSpec.default("cpu").to_dict()
    ref = seed["slots"]["scheduler"]["program"]
    code = program_path("scheduler", ref).read_text(encoding="utf-8")
    ev, out = cfg.evaluation, []
    for i in range(first_id, first_id + n):
        path = folder / f"variant_{i}.py"
        path.write_text(f"{code}\n# bench variant {i}\n", encoding="utf-8")
        spec = RuntimeSpec.default("cpu").to_dict()
        spec["slots"]["scheduler"] = {"program": f"file:{path}"}
        out.append(EvalJob(i, i, 0, spec, seed, tuple(ev.stages), tuple(ev.workloads),
                           ev.model, "cpu", None, tuple(ev.workloads),
                           Gate((("modeled_ratio", 1.0),), always=False)))
    return out


class NoopHarness:
    """A harness that evaluates nothing: every workload passes at once."""

    def evaluate(self, spec: dict[str, Any], stages: Any = (), workload: str = "",
                 **kw: Any) -> Any:
        return SimpleNamespace(status="passed", stages=[], metrics={"modeled_ratio": 1.0},
                               device="cpu")


def noop_factory(store: Any) -> NoopHarness:
    """The Ray side's harness factory for the no-op rows."""
    return NoopHarness()


def bench_noop(cfg: RunConfig, k: int, n: int, niceness: int) -> dict[str, float]:
    """Wall seconds of `n` no-op evaluations on each executor with `k` workers."""
    import ray

    from evolve.executors.ray_tasks import RayExecutor

    spec = RuntimeSpec.default("cpu").to_dict()
    jobs = [EvalJob(i, i, 0, spec, spec, ("static", "sim"), ("w",), "tiny", "cpu", None,
                    ("w",), Gate((("modeled_ratio", 1.0),), always=False))
            for i in range(n + k)]
    local = LocalExecutor(NoopHarness(), k)
    walls = {"local-noop": _timed(local, jobs[:k], jobs[k:])}
    local.close()
    os.environ["RAY_worker_niceness"] = str(niceness)
    ray.init(num_cpus=k, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ex = RayExecutor(cfg, None, "cpu", noop_factory)
        walls["ray-noop"] = _timed(ex, jobs[:k], jobs[k:])
        ex.close()
    finally:
        ray.shutdown()
    return walls


def _timed(executor: Any, warm: list[EvalJob], jobs: list[EvalJob]) -> float:
    """Run `warm` untimed, then `jobs`; wall seconds of `jobs`. Every one must pass."""
    for batch, timed in ((warm, False), (jobs, True)):
        t0 = time.perf_counter()
        futs = [executor.submit(j) for j in batch]
        wait(futs)
        wall = time.perf_counter() - t0
        bad = [f.result().result for f in futs if f.result().result.status != "passed"]
        if bad:
            raise SystemExit(f"bench_ray: an evaluation did not pass: {bad[0].error}")
    return wall if timed else 0.0


def bench_local(cfg: RunConfig, k: int, warm: list[EvalJob], jobs: list[EvalJob]) -> float:
    """Wall seconds of `jobs` on the local executor with `k` threads."""
    ex = LocalExecutor(make_harness(cfg, None, "cpu"), k)
    try:
        return _timed(ex, warm, jobs)
    finally:
        ex.close()
        ex.harness.close()


def bench_ray(cfg: RunConfig, k: int, warm: list[EvalJob], jobs: list[EvalJob],
              niceness: int) -> tuple[float, float]:
    """(wall seconds of `jobs`, seconds to start Ray) on a local Ray instance of `k` CPUs."""
    import ray

    from evolve.executors.ray_tasks import RayExecutor

    os.environ["RAY_worker_niceness"] = str(niceness)  # read by the raylet ray.init starts
    t0 = time.perf_counter()
    ray.init(num_cpus=k, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    start = time.perf_counter() - t0
    try:
        ex = RayExecutor(cfg, None, "cpu")
        try:
            return _timed(ex, warm, jobs), start
        finally:
            ex.close()
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=12, help="timed evaluations per config")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3, help="measurements per configuration")
    ap.add_argument("--ray-niceness", type=int, default=0, choices=range(20), metavar="N",
                    help="niceness of Ray's workers (0, as sds sets it; Ray's default is 15)")
    ap.add_argument("--workload", default="kv-pressure-cpu")
    ap.add_argument("--csv", default="results/bench_ray.csv")
    ap.add_argument("--note", default="", help="a note for every row (e.g. machine shared)")
    ap.add_argument("--noop", type=int, default=200, metavar="N",
                    help="no-op evaluations to time Ray's own cost per task (0: none)")
    ap.add_argument("--no-sim", action="store_true", help="skip the sim evaluations")
    ap.add_argument("--append", action="store_true", help="add rows to the CSV")
    a = ap.parse_args(argv)
    if a.evaluations < 1 or min(a.workers) < 1 or a.repeats < 1:
        ap.error("--evaluations, --workers and --repeats must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    cfg = config_from_dict({"evaluation": {"stages": ["static", "sim"], "device": "cpu",
                                           "workloads": [a.workload]},
                            "selection": {"objectives": ["modeled_ratio:max"]}}, "bench_ray")
    rows, n = [], a.evaluations
    with tempfile.TemporaryDirectory(prefix="sds-bench-ray-") as tmp:
        next_id = 1
        for k in [] if a.no_sim else a.workers:
            walls: dict[str, list[float]] = {"local": [], "ray": []}
            starts, loads = [], []
            for r in range(a.repeats):
                for kind in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                    warm = _jobs(cfg, k, next_id, Path(tmp))
                    jobs = _jobs(cfg, n, next_id + k, Path(tmp))
                    next_id += k + n
                    loads.append(os.getloadavg()[0])
                    if kind == "local":
                        wall = bench_local(cfg, k, warm, jobs)
                    else:
                        wall, start = bench_ray(cfg, k, warm, jobs, a.ray_niceness)
                        starts.append(start)
                    walls[kind].append(wall)
                    print(f"  {kind:5s} workers {k} repeat {r + 1}: {n} sim evaluations in "
                          f"{wall:6.1f} s ({60 * n / wall:5.1f} eval/min)", flush=True)
            local_med = statistics.median(walls["local"])
            for kind in ("local", "ray"):
                med = statistics.median(walls[kind])
                row = {"executor": kind, "workers": k, "evaluations": n, "repeats": a.repeats,
                       "wall_s_median": round(med, 2), "wall_s_min": round(min(walls[kind]), 2),
                       "wall_s_max": round(max(walls[kind]), 2),
                       "eval_per_min": round(60 * n / med, 1), "s_per_eval": round(med / n, 3),
                       "overhead_s_per_eval": (round((med - local_med) / n, 3)
                                               if kind == "ray" else ""),
                       "ray_start_s": (round(statistics.median(starts), 2)
                                       if kind == "ray" else ""),
                       "ray_niceness": a.ray_niceness if kind == "ray" else "",
                       "workload": a.workload, "cpus": os.cpu_count(),
                       "loadavg_1min": round(statistics.median(loads), 2),
                       "python": platform.python_version(), "note": a.note}
                rows.append(row)
                print(f"{kind:5s} workers {k}: median {med:6.1f} s for {n} = "
                      f"{row['eval_per_min']:5.1f} eval/min"
                      + (f", Ray overhead {row['overhead_s_per_eval']:+.3f} s/eval, Ray start "
                         f"{row['ray_start_s']:.1f} s" if kind == "ray" else ""), flush=True)
    if a.noop:
        k = max(a.workers)
        walls = bench_noop(cfg, k, a.noop, a.ray_niceness)
        for kind, wall in walls.items():
            extra = (wall - walls["local-noop"]) / a.noop if kind == "ray-noop" else None
            rows.append({"executor": kind, "workers": k, "evaluations": a.noop, "repeats": 1,
                         "wall_s_median": round(wall, 3), "wall_s_min": round(wall, 3),
                         "wall_s_max": round(wall, 3),
                         "eval_per_min": round(60 * a.noop / wall, 1),
                         "s_per_eval": round(wall / a.noop, 4),
                         "overhead_s_per_eval": "" if extra is None else round(extra, 4),
                         "ray_start_s": "", "ray_niceness": a.ray_niceness if extra else "",
                         "workload": "none (no-op harness)", "cpus": os.cpu_count(),
                         "loadavg_1min": round(os.getloadavg()[0], 2),
                         "python": platform.python_version(), "note": a.note})
            print(f"{kind:10s} workers {k}: {a.noop} no-op evaluations in {wall:6.2f} s"
                  + (f", Ray adds {1000 * extra:.1f} ms per evaluation" if extra else ""),
                  flush=True)
    out = Path(a.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = not (a.append and out.exists())
    with out.open("a" if a.append else "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if header:
            w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
