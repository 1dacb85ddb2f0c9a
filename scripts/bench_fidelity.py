"""Benchmark: seconds per evaluation of the real engine against the `sim` fidelity.

For each CPU workload and each seed runtime, the same requests on the same modeled clock
(fitness/sim.py) once with the `tiny` model running for real and once with the runner that
skips the forward pass; both counters must agree (the script says so if they do not).
Then every full-size workload in sim alone (the real full-size model does not fit a CPU
budget), and one whole `sim` stage through the sandboxed harness, worker start included.
Prints a table and writes results/bench_fidelity.csv; all figures from this one run.

    .venv/bin/python scripts/bench_fidelity.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evolve.cli.workloads import seed_runtimes
from fitness.sim import simulate
from fitness.workloads import get_workload

CPU = ["shared-prefix-cpu", "kv-pressure-cpu", "nanovllm-bench-cpu", "arrivals-cpu"]
FULL = ["shared-prefix", "kv-pressure", "nanovllm-bench", "arrivals",
        "trace:scripts/traces/chat.jsonl", "trace:scripts/traces/agent.jsonl"]


def _time(fn, repeats: int) -> tuple[float, dict]:
    times, out = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_fidelity.csv"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)  # one core, as the target states
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    rows = []
    specs = seed_runtimes()
    for name in CPU:
        wl = get_workload(name)
        for label, spec in specs[::4]:  # fcfs+lru, chunked+fifo, priority+scored
            real_s, real = _time(lambda s=spec, w=wl: simulate(s, w, real=True), args.repeats)
            sim_s, sim = _time(lambda s=spec, w=wl: simulate(s, w), args.repeats)
            same = all(sim[k] == real[k] for k in sim if k.startswith("work_"))
            rows.append({"workload": name, "runtime": label, "real_s": round(real_s, 4),
                         "sim_s": round(sim_s, 4), "speedup": round(real_s / sim_s, 1),
                         "counters_equal": same, "machine": machine})
    for name in FULL:
        wl = get_workload(name)
        for label, spec in specs[::4]:
            sim_s, _ = _time(lambda s=spec, w=wl: simulate(s, w), args.repeats)
            rows.append({"workload": name, "runtime": label, "real_s": "", "sim_s":
                         round(sim_s, 4), "speedup": "", "counters_equal": "",
                         "machine": machine})
    from fitness import Harness
    h = Harness(device="cpu")
    seed = dict(specs[0][1])
    h.evaluate(seed, stages=("sim",), workload="shared-prefix", baseline=seed)  # baseline
    t0 = time.perf_counter()
    rep = h.evaluate(specs[4][1], stages=("sim",), workload="shared-prefix", baseline=seed)
    stage_s = time.perf_counter() - t0
    rows.append({"workload": "shared-prefix", "runtime": f"{specs[4][0]} (harness sim stage)",
                 "real_s": "", "sim_s": round(stage_s, 4), "speedup": "",
                 "counters_equal": rep.status, "machine": machine})
    cols = list(rows[0])
    print("  ".join(f"{c:>22}" for c in cols[:-1]))
    for r in rows:
        print("  ".join(f"{r[c]!s:>22}" for c in cols[:-1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out} ({machine})")
    return 0 if all(r["counters_equal"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
