"""Shared pieces of the `sds` verbs: the --db and --json options, and one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_DB = "sqlite:///results/sds.db"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class CheckFailed(Exception):
    """A check or run that failed: printed as one line, exit code 1."""


def default_db() -> str:
    """$SDS_DB, else the embedded SQLite database under results/."""
    return os.environ.get("SDS_DB") or DEFAULT_DB


def add_db(p: argparse.ArgumentParser) -> None:
    """Add --db URL."""
    p.add_argument("--db", default=None, metavar="URL",
                   help=f"database URL (default: $SDS_DB or {DEFAULT_DB})")


def add_json(p: argparse.ArgumentParser) -> None:
    """Add --json."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def db_url(args: argparse.Namespace) -> str:
    """The database URL an invocation asked for."""
    return getattr(args, "db", None) or default_db()


def emit_json(obj: Any) -> None:
    """Print `obj` as indented JSON (dates and other objects as strings)."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain-text table of `rows` (dicts), columns in order."""
    if not rows:
        return "(none)"
    cols = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)
