"""`sds ui [--db URL] [--host H] [--port P]`: browse the database in a web browser."""

from __future__ import annotations

import argparse
import sys

from evolve.cli.common import UsageError, add_db, db_url


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from evolve.ui.server import is_loopback, serve
    except ModuleNotFoundError as e:
        raise UsageError(f"sds ui needs the ui extra ({e.name} is not installed): "
                         "pip install 'sds-evolve[ui]'") from None
    from population_db import StoreError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if not is_loopback(args.host):
        print(f"sds ui: warning: serving on {args.host}: anyone who can reach this address "
              "can read the whole database (runs, code, prompts)", file=sys.stderr)
    try:
        serve(db_url(args), args.host, args.port)
    except StoreError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="the database in a web browser (read-only)")
    add_db(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    p.set_defaults(func=cmd_ui)
