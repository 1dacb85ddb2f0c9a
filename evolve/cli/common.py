"""Shared pieces of the `sds` verbs: options, ids, the one database opener, one-line errors.

Every verb reports bad input the same way: `UsageError` (or an `OSError`, a database error,
a bad URL) becomes one line on stderr and exit code 2 (evolve/cli/__init__.py). Nothing here
imports a heavy package at module level: `sds --help` must not pay for torch or SQLAlchemy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from population_db import Store

DEFAULT_DB = "sqlite:///results/sds.db"
ID_HELP = "r<N> (runtime), p<N> or a code-hash prefix of >= 6 hex digits (program)"
_ID = re.compile(r"^(?:(?P<kind>[rpe])(?P<num>\d+)|(?:sha256:)?(?P<hash>[0-9a-fA-F]{6,64}))$")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class CheckFailed(Exception):
    """A check or run that failed: printed as one line, exit code 1."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `sds VERB: error: ...`, exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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


def open_db(url: str, create: bool = False) -> Store:
    """The one way a verb opens the database at `url`.

    Verbs that only read pass create=False: a mistyped path is refused, naming it, instead
    of becoming an empty database. Any failure (bad URL, missing file, unreachable server,
    foreign or newer schema, unwritable folder) is a UsageError naming the URL.
    """
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from population_db import Store, StoreError

    try:
        return Store.open(url, create=create)
    except StoreError as e:
        raise UsageError(str(e)) from None
    except (ArgumentError, DBAPIError, OSError, ValueError) as e:
        raise UsageError(f"cannot open database {url}: {one_line(e)}") from None


def parse_id(text: str, kinds: str = "rp") -> tuple[str, int | str]:
    """('r', 12) for r12, ('p', 7) for p7, ('p', hex) for a hash prefix, ('e', 5) for e5.

    The same grammar in every verb; `kinds` says which kinds this verb takes.
    """
    m = _ID.match(str(text).strip())
    kind = (m.group("kind") or "p") if m else None
    if m is None or kind not in kinds:
        forms = {"r": "r<N> (runtime)", "p": "p<N> or a code-hash prefix of >= 6 hex digits "
                 "(program)", "e": "e<N> (evaluation)"}
        hint = ""
        if str(text).strip().isdigit():  # ids carry their kind: r12 is never p12
            n = str(text).strip()
            hint = f"; a bare number is ambiguous: write r{n}" + (f" or p{n}" if "p" in kinds
                                                                 else "")
        raise UsageError(f"bad id {text!r}: expected "
                         f"{', or '.join(forms[k] for k in kinds)}{hint}")
    return kind, int(m.group("num")) if m.group("num") else m.group("hash").lower()


def runtime_id(text: str) -> int:
    """A runtime id from `r12`; a bare `12` is accepted too where only runtimes make sense."""
    t = str(text).strip()
    if t.isdigit():
        return int(t)
    return int(parse_id(t, kinds="r")[1])


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (0 and negatives are bad input)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


# Where these exist a GPU driver is installed; elsewhere torch cannot see a GPU either.
_GPU_NODES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; on a machine without a GPU driver
    the answer is known without importing torch (seconds on a small CPU)."""
    if requested != "auto":
        return requested
    if not any(os.path.exists(p) for p in _GPU_NODES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def one_line(e: BaseException) -> str:
    """An exception's message on one line (drivers' and parsers' messages span lines)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    orig = getattr(e, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else e) or type(e).__name__
    return " ".join(text.split())


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
