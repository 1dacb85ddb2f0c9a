"""`sds eval`: one candidate module through the fitness stages, with the seed runtime around it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evolve.cli.common import (
    UsageError,
    add_db,
    add_json,
    db_url,
    emit_json,
    open_db,
    positive_seconds,
    resolve_device,
    table,
)
from fitness.result import STAGES

# As a run config's default (evolve/config.py): the engine stages; `sim` only when asked
# for, since it simulates the seed as a baseline first and a kernel's speed is invisible to it.
DEFAULT_STAGES = tuple(s for s in STAGES if s != "sim")


def evaluate_file(slot: str, path: str | Path, stages: tuple[str, ...] = DEFAULT_STAGES,
                  workload: str = "nanovllm-bench-cpu", db: str | None = None,
                  device: str = "auto", timeouts: dict[str, float] | None = None,
                  options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the module at `path` in `slot` (other slots: seeds); the report as a dict.

    Example: `evaluate_file("scheduler", "my_sched.py", stages=("static", "contract"))`.
    """
    from fitness.harness import Harness
    from runtime_modules.slots import SLOTS, RuntimeSpec

    if slot not in SLOTS:
        raise UsageError(f"--slot {slot!r} is not a slot; expected one of {', '.join(SLOTS)}")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"candidate file {str(path)!r} does not exist")
    try:
        code = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"candidate file {str(path)!r} is not UTF-8 text ({e.reason} at "
                         f"byte {e.start})") from None
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UsageError(f"--stages: unknown stage(s) {bad}; expected some of {', '.join(STAGES)}")
    _check_workload(workload)
    store = runtime_id = run_id = None
    if db:
        store = open_db(db, create=True)
        run, _ = store.get_or_create_run("sds-eval", {"purpose": "sds eval"})
        run_id = run.id
        prog = store.add_program(slot, code, operator="eval", name=p.name, run_id=run_id)
    harness = Harness(store=store, device=resolve_device(device), timeouts=timeouts,
                      options=options)
    spec = RuntimeSpec.default(harness.device).with_slot(slot, f"file:{p.resolve()}")
    if store is not None:
        stored = spec.with_slot(slot, prog.ref).to_dict()
        runtime_id = store.add_runtime(run_id, stored, operator="eval").id
    report = harness.evaluate(spec.to_dict(), stages=stages, workload=workload,
                              runtime_id=runtime_id, run_id=run_id, slots=[slot])
    out = report.to_dict()
    out.update(slot=slot, file=str(p), runtime_id=runtime_id)
    return out


def _check_workload(name: str) -> None:
    """A workload (or trace) that resolves, before anything is recorded or started."""
    from fitness.workloads import WORKLOADS, get_workload

    if name in WORKLOADS:  # built in: nothing to generate just to check the name
        return
    try:
        get_workload(name)
    except (KeyError, ValueError, TypeError, OSError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise UsageError(f"--workload: {' '.join(msg.split())}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    stages = (tuple(s.strip() for s in args.stages.split(",")) if args.stages
              else DEFAULT_STAGES)
    timeouts = None
    if args.timeout is not None:
        timeouts = {s: float(args.timeout) for s in STAGES}
    db = db_url(args) if args.db else None
    try:
        out = evaluate_file(args.slot, args.file, stages, args.workload, db, args.device,
                            timeouts)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        emit_json(out)
    else:
        rows = [{"stage": s["stage"], "status": s["status"], "time_s": s["duration_s"],
                 "metrics": _short(s["metrics"]), "error": (s["error"] or "")[:160]}
                for s in out["stages"]]
        print(table(rows, ["stage", "status", "time_s", "metrics", "error"]))
        print(f"\n{out['slot']} {out['file']}: {out['status']}"
              + (f" at {out['failed_stage']}" if out["failed_stage"] else ""))
    return 0 if out["status"] == "passed" else 1


def _short(metrics: dict[str, Any]) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    text = json.dumps(flat if flat else metrics, default=str)
    return text if len(text) <= 70 else text[:67] + "..."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="one candidate module through the fitness stages")
    p.add_argument("file", metavar="FILE.py", help="the candidate module")
    p.add_argument("--slot", required=True, help="the slot it implements")
    p.add_argument("--workload", default="nanovllm-bench-cpu", help="bench workload name")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated subset of {','.join(STAGES)} (default: "
                        f"{','.join(DEFAULT_STAGES)})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto, cpu or cuda")
    p.add_argument("--timeout", type=positive_seconds, default=None,
                   help="one wall-clock limit in seconds for every stage")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_eval)
