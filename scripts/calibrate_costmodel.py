"""Calibration: does the cost model rank runtimes the way the hardware does?

Runs N runtimes (the seed schedulers x cache policies, and a few deliberately different
policies) x workloads twice each: on the real engine (wall-clock tok/s of the drive, the
model really computing; sequences stop at the same lengths as in simulation) and in `sim`
(modeled tok/s of fitness/costmodel.py). Prints measured vs modeled tok/s per pair and the
Spearman rank correlation per workload, and writes results/calibration.csv.

On a GPU this is the check that the model ranks like the hardware (and the data to fit its
coefficients): `--device cuda --model qwen3-0.6b --workloads shared-prefix kv-pressure`.
On a CPU it runs the `tiny` model so the code path is exercised; CPU wall-clock tok/s of a
tiny model is not what the model prices (an H100 running Qwen3-0.6B), so a low correlation
there says nothing about the coefficients.

    .venv/bin/python scripts/calibrate_costmodel.py [--repeats 2] [--cost-device h100]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evolve.cli.workloads import seed_runtimes
from fitness.sim import simulate
from fitness.workloads import get_workload


def _variant(tmp: Path, seed: str, old: str, new: str, name: str) -> str:
    src = (ROOT / seed).read_text()
    if old not in src:
        raise SystemExit(f"{seed} no longer contains {old!r}: update this script")
    path = tmp / f"{name}.py"
    path.write_text(src.replace(old, new))
    return f"file:{path}"


def runtimes(tmp: Path) -> list[tuple[str, dict]]:
    """The seed combinations plus policies chosen to do worse (or different) work."""
    longest = _variant(tmp, "seeds/scheduler/priority.py",
                       "return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len",
                       "return prompt_len", "longest_first")
    mru = _variant(tmp, "seeds/cache_policy/scored.py",
                   "return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position",
                   "return idle", "mru")
    extra = [("longest_first_chunk64", {"slots": {"scheduler": {
                 "program": longest, "params": {"chunk_size": 64}}}}),
             ("fcfs+mru", {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"},
                                     "cache_policy": {"program": mru,
                                                      "params": {"window": 64}}}}),
             ("priority_chunk16", {"slots": {"scheduler": {
                 "program": "seed:scheduler/priority", "params": {"chunk_size": 16}}}})]
    return seed_runtimes() + extra


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["shared-prefix-cpu", "kv-pressure-cpu"])
    ap.add_argument("--device", default="cpu", help="where the real engine runs: cpu | cuda")
    ap.add_argument("--model", default=None, help="real model (default: the workload's)")
    ap.add_argument("--cost-device", default="h100", help="what the cost model prices")
    ap.add_argument("--repeats", type=int, default=2, help="real runs per pair (median)")
    ap.add_argument("--out", default=str(ROOT / "results" / "calibration.csv"))
    args = ap.parse_args()
    import torch
    if args.device == "cpu":
        torch.set_num_threads(1)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.machine()} {os.cpu_count()}-core CPU")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rts = runtimes(Path(tmp))
        for name in args.workloads:
            wl = get_workload(name)
            measured, modeled = [], []
            for label, spec in rts:
                sim = simulate(spec, wl, device=args.cost_device)
                walls = []
                for _ in range(args.repeats + 1):  # the first run warms caches (Triton, ...)
                    t: dict[str, float] = {}
                    simulate(spec, wl, device=args.cost_device, real=True, timing=t,
                             model=args.model, engine_params={"device": args.device})
                    walls.append(t["wall_s"])
                wall = statistics.median(walls[1:])
                tok_s = sim["output_tokens"] / wall
                measured.append(tok_s)
                modeled.append(sim["modeled_tok_s"])
                rows.append({"workload": name, "runtime": label, "measured_tok_s": round(tok_s, 2),
                             "modeled_tok_s": round(sim["modeled_tok_s"], 2),
                             "work_steps": sim["work_steps"],
                             "work_scheduled_tokens": sim["work_scheduled_tokens"],
                             "real_device": args.device, "machine": machine,
                             "cost_device": args.cost_device, "model": args.model or wl.model})
                print(f"{name:>20} {label:>24} measured {tok_s:10.1f} tok/s   "
                      f"modeled {sim['modeled_tok_s']:10.1f} tok/s", flush=True)
            rho = spearman(measured, modeled)
            print(f"{name}: Spearman rank correlation, measured vs modeled: {rho:.3f} "
                  f"over {len(rts)} runtimes ({machine})")
            for r in rows:
                if r["workload"] == name:
                    r["spearman_workload"] = round(rho, 4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
