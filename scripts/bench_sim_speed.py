"""Benchmark: wall seconds of one `sim` simulation, this tree against an earlier commit.

What a search pays per evaluation in `sim` is mostly the engine's scheduler and cache-policy
calls on the CPU. Measured on the quickstart's seed runtime (scripts/quickstart.yaml) on its
two workloads, and on a child the `literal` operator makes from it often (the `defer` constant
flipped from -1.0 to a positive value: it admits one request while another runs, so it takes
many more engine steps with hundreds of requests waiting). That child is cut off as the
harness does (4x the seed's modeled time and engine steps, option `sim_max_slowdown`). Both
trees run in fresh processes (imports done first, as in a started worker), alternating, in
one run; the modeled results must agree
(the script says so if they do not). Medians of `--repeats` runs for the seed, one run for
the slow child. Writes results/bench_sim_speed.csv.

    .venv/bin/python scripts/bench_sim_speed.py --before <commit> [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = {"scheduler": {"program": "seed:scheduler/policy"},
        "cache_policy": {"program": "seed:cache_policy/aware", "params": {"window": 16}}}
WORKLOADS = ["shared-prefix",
             "trace:scripts/traces/chat.jsonl?rate_scale=100&num_kv_blocks=768&max_num_seqs=16"]
FACTOR = 4.0  # the harness's default sim_max_slowdown

_MEASURE = """
import json, sys, time
from fitness.sim import SimTooSlow, simulate
from fitness.workloads import get_workload
spec, wl, limits = json.loads(sys.argv[1]), get_workload(sys.argv[2]), json.loads(sys.argv[3])
simulate({"slots": spec}, get_workload("shared-prefix-cpu"))  # imports, as a started worker
t0 = time.perf_counter()
try:
    m = simulate({"slots": spec}, wl, **limits)
    out = {k: m[k] for k in ("modeled_time_s", "work_steps", "modeled_tok_s")}
except SimTooSlow as e:
    out = {"cut": str(e)}
out["wall_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _measure(tree: Path, spec: dict, wl: str, limits: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(spec), wl,
                        json.dumps(limits)], cwd=tree, env=env, capture_output=True,
                       text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _defer_flipped(tree: Path, tmp: Path) -> str:
    code = (tree / "seeds/scheduler/policy.py").read_text()
    old = "    # EVOLVE-BLOCK-START\n    return -1.0\n"
    if old not in code:
        raise SystemExit(f"{tree}: the policy seed's defer block is not `return -1.0`")
    path = tmp / f"defer_flipped_{tree.name}.py"
    path.write_text(code.replace(old, "    # EVOLVE-BLOCK-START\n    return 3.56\n"))
    return f"file:{path}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="commit to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results/bench_sim_speed.csv"))
    a = ap.parse_args()
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}"
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        before = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), a.before],
                       cwd=ROOT, check=True)
        try:
            trees = {"before": before, "after": ROOT}
            for wl in WORKLOADS:
                base = _measure(ROOT, SEED, wl, {})
                limits = {"max_modeled_s": FACTOR * base["modeled_time_s"],
                          "max_steps": int(FACTOR * base["work_steps"]) + 100}
                cases = {"seed": lambda t: (SEED, {}),
                         "defer_flipped": lambda t: (dict(SEED, scheduler={
                             "program": _defer_flipped(t, tmp)}), limits)}
                for case, make in cases.items():
                    walls: dict[str, list[float]] = {k: [] for k in trees}
                    outs: dict[str, dict] = {}
                    # the slow child once (minutes before), the seed `--repeats` times
                    for _ in range(a.repeats if case == "seed" else 1):
                        for name, tree in trees.items():
                            spec, lim = make(tree)
                            out = _measure(tree, spec, wl, lim)
                            walls[name].append(out.pop("wall_s"))
                            outs[name] = out
                    same = outs["before"] == outs["after"]
                    b, f = (statistics.median(walls[k]) for k in ("before", "after"))
                    rows.append({"workload": wl.split("?")[0], "runtime": case,
                                 "before_s": round(b, 3), "after_s": round(f, 3),
                                 "speedup": round(b / f, 2), "same_result": same,
                                 "result": outs["after"].get("cut") or
                                 f"{outs['after']['modeled_tok_s']:.1f} modeled tok/s",
                                 "before_commit": a.before, "machine": machine,
                                 "load_1m": round(os.getloadavg()[0], 2)})
                    print(rows[-1], flush=True)
                    if not same:
                        print(f"  results differ: {outs}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                           check=False)
    with open(a.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
