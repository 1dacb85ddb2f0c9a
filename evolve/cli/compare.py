"""`sds compare RUN...`: runs side by side, as a table, a CSV and a best-so-far plot."""

from __future__ import annotations

import argparse

from evolve.cli.common import UsageError, add_db, add_json, db_url, emit_json, open_db, table


def cmd_compare(args: argparse.Namespace) -> int:
    from evolve.compare import (
        SHOWN,
        CompareError,
        check_new_path,
        compare_runs,
        config_differences,
        plot_runs,
        write_csv,
    )

    try:
        csv_path = check_new_path(args.csv, args.force)
        plot_path = check_new_path(args.plot, args.force)
        store = open_db(db_url(args), create=False)
        rows, curves = compare_runs(store, args.runs)
    except CompareError as e:
        raise UsageError(str(e)) from None
    if csv_path:
        write_csv(rows, csv_path)
    if plot_path:
        plot_runs(curves, plot_path)
    if args.json:
        emit_json({"runs": rows, "differences": config_differences(rows),
                   "csv": str(csv_path) if csv_path else None,
                   "plot": str(plot_path) if plot_path else None})
        return 0
    cols = ["tags.run", "tags.status", *config_differences(rows), *SHOWN]
    shown = [{c.split(".", 1)[1]: r.get(c) for c in cols} for r in rows]
    print(table(shown))
    for label, p in (("csv", csv_path), ("plot", plot_path)):
        if p:
            print(f"{label}: {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="runs side by side (table, CSV, best-so-far plot)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run names or ids")
    p.add_argument("--csv", default=None, metavar="PATH", help="write the rows as CSV")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a PNG of best-so-far")
    p.add_argument("--force", action="store_true", help="overwrite existing --csv/--plot files")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_compare)
