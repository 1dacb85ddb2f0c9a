"""`sds run CONFIG.yaml` (launch, or resume the run of that name) and `sds status [RUN]`."""

from __future__ import annotations

import argparse
from typing import Any

from evolve.cli.common import (
    CheckFailed,
    UsageError,
    add_db,
    add_json,
    db_url,
    emit_json,
    open_db,
    table,
)


def cmd_run(args: argparse.Namespace) -> int:
    from evolve.config import ConfigError, check_resources, load_config
    from evolve.launch import launch

    try:
        cfg = load_config(args.config, overrides=args.set or [])
        check_resources(cfg)  # workloads, programs, models: before any run row exists
    except ConfigError as e:
        raise UsageError(str(e)) from None
    db = args.db or cfg.db or db_url(args)
    open_db(db, create=True).close()  # a bad URL or folder: one line, nothing recorded
    try:
        outcome, summary = launch(cfg, name=args.name, db=db,
                                  runs_csv=None if args.runs_csv == "-" else args.runs_csv,
                                  progress=not args.no_progress)
    except ConfigError as e:  # e.g. an operator's options or API key
        raise UsageError(str(e)) from None
    if args.json:
        emit_json(summary)
    else:
        print(summary_table(summary))
    if outcome.status == "failed":
        raise CheckFailed(f"run {outcome.name} failed: {outcome.detail or outcome.reason}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from evolve.bandit import stored_status
    from evolve.executors import node_counts
    from evolve.runs_csv import run_summary
    from population_db import NotFound

    store = open_db(db_url(args), create=False)
    run = args.run
    if run is None:
        runs = store.list_runs()
        if not runs:
            raise UsageError(f"no runs in {db_url(args)}; start one with `sds run CONFIG.yaml`")
        run = runs[-1].id
    try:
        summary = run_summary(store, run)
        summary["operator_choice"] = stored_status(store, run)
        summary["nodes"] = node_counts(store, summary["run_id"])  # where evaluations ran
    except NotFound as e:
        raise UsageError(str(e)) from None
    if args.json:
        emit_json(summary)
    else:
        print(summary_table(summary))
    return 0


def summary_table(s: dict[str, Any]) -> str:
    """A two-column text table of a run summary."""
    metric = s["metric"]
    rows = [("run", f"{s['run']} (id {s['run_id']})"), ("status", s["status"]),
            ("stop reason", s["stop_reason"]), ("config", s["config_file"]),
            ("target slots", ", ".join(s["target_slots"])),
            ("operators", ", ".join(s["operators"])),
            *_choice_rows(s.get("operator_choice")),
            ("evaluations", f"{s['evaluations']} / {s['budget']}"
                            + (f" (+{s['in_flight_or_queued']} queued)"
                               if s["in_flight_or_queued"] else "")),
            ("by status", ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items()))),
            ("failed at stage", ", ".join(f"{k} {v}" for k, v in
                                          sorted(s["failed_by_stage"].items())) or "-"),
            ("proposals rejected / duplicate", f"{s['proposals_rejected']} / {s['duplicates']}"),
            *[("  rejected: " + why, n) for why, n in (s.get("rejection_reasons") or {}).items()],
            ("objective (fidelity of the best)", f"{s['objective']} ({s['fidelity'] or '-'})"),
            (f"seed {metric}", s[f"seed_{metric}"]), (f"best {metric}", s[f"best_{metric}"]),
            ("gain by the objective", f"{s['gain']:.4f}x" if s.get("gain") else None),
            ("seed / best tok/s", f"{_f(s['seed_tok_s'])} / {_f(s['best_tok_s'])}"),
            ("best's interleaved ratio to seed", _f(s["best_ratio"])),
            ("best runtime", f"r{s['best_runtime']} ({s['best_operator']})"
                             if s["best_runtime"] else None),
            ("best / seed tok/s (separate runs)", f"{s['speedup']:.3f}x" if s["speedup"] else None),
            ("workload / device", f"{s['workload']} / {s['device']}"),
            ("LLM calls / tokens / $", (f"{s['llm_calls']} / {s['llm_tokens_in']}+"
                                       f"{s['llm_tokens_out']} / {s['llm_usd']:.4f}")),
            ("GPU s / eval s / wall s", (f"{s['gpu_s']:.1f} / {s['eval_s']:.1f} / "
                                        f"{s['wall_s']:.1f}")),
            ("events", ", ".join(f"{k} {v}" for k, v in s["events"].items())),
            *[(f"  node {n['node']}", (f"{n['done']} done ({n['failed']} failed), "
               f"{n['in_flight']} in flight")) for n in s.get("nodes") or []]]
    return table([{"": k, "value": v} for k, v in rows], ["", "value"])


def _choice_rows(c: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Per arm: pulls, improvements, mean reward and the chance it is chosen next."""
    if not c:
        return []
    how = "bandit (Thompson)" if c["bandit"] else "by weight"
    rows: list[tuple[str, Any]] = [("search / operator choice", f"{c['method']} / {how}")]
    for a in [*c["arms"], *(c.get("variations") or [])]:  # then how gp changes an expression
        text = (f"{a['pulls']} pulls, {a['improved']} improved, mean reward "
                f"{a['mean_reward']:.3g}/s, p(next) {a['probability']:.2f} "
                f"(prior {a['prior']:.2f})")
        rows.append((f"  {a['arm']}", text))
    return rows


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="launch a run from a config, or resume the run of that name")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--name", default=None, help="run name (default: the config's name, "
                                                "else the file's stem); an existing run resumes")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, value parsed as YAML (repeatable), "
                        "e.g. --set budget.max_evaluations=8")
    p.add_argument("--runs-csv", default="results/runs.csv", metavar="PATH",
                   help="append the run's row here at the end ('-': do not)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="a run's progress, best runtime and budgets used")
    s.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help="run name or id (default: the latest run)")
    add_db(s)
    add_json(s)
    s.set_defaults(func=cmd_status)
