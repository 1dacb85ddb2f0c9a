"""The `sds` command: one verb per module in this package, each a thin wrapper.

Each verb module defines `register(subparsers)`; handlers take the parsed arguments and
return an exit code (0 ok, 1 a failed check or run, 2 bad input with one line saying why).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from evolve.cli.common import CheckFailed, UsageError

VERB_MODULES = ("db", "eval", "bench", "run", "tune", "export", "compare", "seeds",
                "workloads", "ui")


def build_parser(verbs: tuple[str, ...] = VERB_MODULES) -> argparse.ArgumentParser:
    """The argument parser with every verb module of `verbs` that is present registered."""
    parser = argparse.ArgumentParser(prog="sds", description="Evolve LLM inference runtimes.")
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


def main(argv: list[str] | None = None, verbs: tuple[str, ...] = VERB_MODULES) -> int:
    """Entry point of the `sds` console script (`verbs`: only these, e.g. on a machine
    without the database's packages)."""
    parser = build_parser(verbs)
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
