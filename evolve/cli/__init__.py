"""The `sds` command: one verb per module in this package, each a thin wrapper.

Each verb module defines `register(subparsers)`; handlers take the parsed arguments and
return an exit code: 0 ok, 1 a failed check or run, 2 bad input with one line saying what
and where. Verb modules import only the standard library at module level (heavy packages
inside their handlers), so `sds --help` and a static rejection start fast.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

from evolve.cli.common import CheckFailed, Parser, UsageError, one_line

VERB_MODULES = ("db", "eval", "bench", "run", "tune", "export", "compare", "seeds",
                "workloads", "ui")


def build_parser(verbs: tuple[str, ...] = VERB_MODULES) -> Parser:
    """The argument parser with every verb module of `verbs` that is present registered."""
    parser = Parser(prog="sds", description="Evolve LLM inference runtimes.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in verbs:
        try:
            module = importlib.import_module(f"evolve.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"evolve.cli.{name}":
                continue  # verb not built yet
            raise
        module.register(sub)
    return parser


def bad_input(e: BaseException) -> str | None:
    """One line for an error that is the user's input, not a bug; None for anything else.

    A file that cannot be read or written (OSError), a database that cannot be opened or used
    (StoreError, SQLAlchemy's bad-URL and driver errors). Classes are looked up only if their
    module is loaded: an error cannot come from a package nobody imported.
    """
    if isinstance(e, OSError):
        return one_line(e)
    engine = sys.modules.get("population_db.engine")
    if engine is not None and isinstance(e, engine.StoreError):
        return one_line(e)
    exc = sys.modules.get("sqlalchemy.exc")
    if exc is not None and isinstance(e, (exc.ArgumentError, exc.DBAPIError)):
        return f"database error: {one_line(e)}"
    return None


def main(argv: list[str] | None = None, verbs: tuple[str, ...] = VERB_MODULES) -> int:
    """Entry point of the `sds` console script (`verbs`: only these, e.g. on a machine
    without the database's packages)."""
    parser = build_parser(verbs)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line argparse error (2)
        return int(e.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"sds {args.verb}: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"sds {args.verb}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sds {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = bad_input(e)
        if line is None:
            raise
        if args.verbose:  # where it came from, for a report: -v shows the traceback too
            traceback.print_exc()
        print(f"sds {args.verb}: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
