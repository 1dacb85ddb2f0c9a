"""`sds export RUNTIME|RUN --out DIR`: a standalone, pip-installable runtime package."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from evolve.cli.common import UsageError, add_db, add_json, db_url, emit_json, open_db


def cmd_export(args: argparse.Namespace) -> int:
    from evolve.export import ExportError, export_runtime
    from runtime_modules.slots import SlotError

    parent = Path(args.out).expanduser().resolve().parent
    if not parent.is_dir() and parent.exists():
        raise UsageError(f"--out {args.out}: {parent} is not a folder")
    store = open_db(db_url(args), create=False)
    # r12 is runtime 12, as in every verb; anything else is a runtime id or a run name
    target = args.target[1:] if re.fullmatch(r"r\d+", args.target) else args.target
    try:
        out = export_runtime(store, target, args.out, name=args.name, wheel=args.wheel)
    except (ExportError, SlotError) as e:
        raise UsageError(str(e)) from None
    wheels = sorted(str(p) for p in (out / "dist").glob("*.whl")) if args.wheel else []
    if args.json:
        emit_json({"out": str(out), "wheels": wheels})
    else:
        print(f"exported to {out}")
        for w in wheels:
            print(f"wheel: {w}  (pip install {w})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a pip-installable package of a runtime or a run's best")
    p.add_argument("target", metavar="RUNTIME|RUN", help="runtime (r12 or 12), or a run name (its best runtime)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    p.add_argument("--name", default=None, metavar="PKG",
                   help="import name of the package (default sds_runtime_<id>)")
    p.add_argument("--wheel", action="store_true", help="also build the wheel into DIR/dist")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_export)
