"""`sds tune RUNTIME`: Optuna over a runtime's tunables; the best becomes a child runtime."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from population_db import Store

from evolve.cli.common import (
    CheckFailed,
    UsageError,
    add_db,
    add_json,
    db_url,
    emit_json,
    open_db,
    positive_int,
    positive_seconds,
    runtime_id,
    table,
)


def open_store(args: argparse.Namespace) -> Store:
    """The existing store at --db (tuning reads a runtime from it), or a UsageError."""
    return open_db(db_url(args), create=False)


def _stages(text: str | None) -> tuple[str, ...] | None:
    """--stages as a tuple: an engine study's must include bench, a sim study's sim."""
    from fitness import STAGES

    if not text:
        return None
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    if bad or ("bench" not in stages and "sim" not in stages):
        raise UsageError(f"--stages must be a comma list of {', '.join(STAGES)} including "
                         f"bench or sim (the score), got {text!r}")
    return stages


def _workload(flag: str, name: str | None) -> str | None:
    """A workload name checked before any trial runs."""
    from fitness.workloads import get_workload

    if name is not None:
        try:
            get_workload(name)
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise UsageError(f"{flag}: {e}") from None
    return name


def cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    from evolve.tune import DEFAULT_WORKLOAD, TuneError, parse_metric, tune_runtime
    from runtime_modules.slots import SlotError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rid = runtime_id(args.runtime)
    stages = _stages(args.stages)
    sim = "sim" in (stages or ())
    workload = _workload("--workload", args.workload) or DEFAULT_WORKLOAD
    confirm = _workload("--confirm-workload", args.confirm_workload)
    if confirm is not None and not sim:
        raise UsageError(f"--confirm-workload {confirm} needs sim among --stages "
                         "(an engine study's trials already run on the real engine)")
    try:
        metric, direction = parse_metric(args.metric) if args.metric else (None, "maximize")
    except TuneError as e:
        raise UsageError(f"--metric: {e}") from None
    store = open_store(args)
    try:
        res = tune_runtime(store, rid, trials=args.trials, workload=workload,
                           seed=args.seed, timeout_s=args.timeout, progress=not args.json,
                           stages=stages, metric=metric, direction=direction,
                           confirm_workload=confirm)
    except (TuneError, SlotError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        emit_json(dataclasses.asdict(res) | {"improved": res.improved})
    else:
        row = {"study": res.study_name, "parent": res.parent_id,
               "tuned_runtime": res.runtime_id, f"default_{res.metric}": res.default_value,
               f"best_{res.metric}": res.best_value, "ratio_vs_untuned": res.best_ratio}
        if res.fidelity == "sim":
            row |= {"confirm_workload": res.confirm_workload, "confirm_tok_s": res.confirm_tok_s,
                    "confirm_ratio": res.confirm_ratio}
        print(table([row | {"complete": res.n_complete, "failed": res.n_failed}]))
        for k, v in sorted(res.best_params.items()):
            print(f"  {k} = {v!r}")
    if res.confirm_error:
        raise CheckFailed(f"{res.study_name}: the best was not recorded: {res.confirm_error}")
    if res.runtime_id is None:
        raise CheckFailed(f"no trial of {res.study_name} passed ({res.n_failed} failed: "
                          f"{res.fail_reasons})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="Optuna over a runtime's tunables")
    p.add_argument("runtime", metavar="RUNTIME", help="runtime id: r12 (or 12)")
    p.add_argument("--trials", type=positive_int, default=20, help="total trials of the study (20)")
    p.add_argument("--workload", default=None, help="workload name (nanovllm-bench-cpu)")
    p.add_argument("--stages", default=None, metavar="A,B",
                   help="stages per trial (default static,contract,correctness,bench); "
                        "static,contract,sim tunes in simulation and confirms the best on "
                        "the real engine")
    p.add_argument("--metric", default=None, metavar="NAME[:max|:min]",
                   help="the trial score (modeled_tok_s in sim, tok_s otherwise; max)")
    p.add_argument("--confirm-workload", default=None, metavar="W",
                   help="sim: the real-engine workload confirming the best (the tuned "
                        "workload's -cpu variant on CPU, else nanovllm-bench-cpu)")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed (0)")
    p.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                   help="stop starting new trials after S seconds")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_tune)
