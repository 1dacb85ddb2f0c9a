"""Start-up time of the `sds` command, before and after a change, in one run.

Times four commands end to end in fresh processes (what a user waits for): `sds --help`, a
database verb (`sds runs` on a small database), a static rejection (`sds eval` of a module
calling os.fork, stopped by the AST check) and a contract rejection (`sds eval` of a
scheduler that starves a request, stopped by the contract stage in a sandboxed worker).
Each is run --repeats times per source tree; the median and the minimum are printed and
written as CSV. "before" is another checkout of the repository, e.g.

    git worktree add /tmp/before <commit>
    python scripts/bench_cli.py --before /tmp/before --repeats 5

Both trees run with the same Python (this one) and packages; each tree's own code is put
first on sys.path, so the figures differ only by the code.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys; from evolve.cli import main; sys.exit(main())"  # what `sds` runs
CANDIDATES = ROOT / "tests" / "candidates"


def commands(db: str) -> dict[str, list[str]]:
    """The timed command lines (arguments of `sds`)."""
    return {
        "sds --help": ["--help"],
        "sds runs (database verb)": ["runs", "--db", db],
        "sds eval, static rejection": ["eval", "--slot", "scheduler",
                                       str(CANDIDATES / "fork_bomb.py")],
        "sds eval, contract rejection": ["eval", "--slot", "scheduler",
                                         str(CANDIDATES / "starving_scheduler.py")],
    }


def run_once(tree: Path, argv: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and exit code of one `sds` process on the code of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", ENTRY, *argv], cwd=cwd, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, p.returncode


def check_tree(tree: Path, cwd: Path) -> None:
    """Fail loudly if `tree`'s code is not the code that runs."""
    out = subprocess.run([sys.executable, "-c", "import evolve.cli; print(evolve.cli.__file__)"],
                         cwd=cwd, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True,
                         text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"bench_cli: {tree} is not the code that runs ({out})")


def make_db(path: Path) -> str:
    """A small database (one run, one runtime) written by this tree's code."""
    sys.path.insert(0, str(ROOT))
    from population_db import Store

    url = f"sqlite:///{path}"
    st = Store.open(url)
    run, _ = st.get_or_create_run("bench-cli")
    st.add_runtime(run.id, {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}})
    st.close()
    return url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    ap.add_argument("--after", type=Path, default=ROOT, help="checkout of the new code (this)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per command and tree (5)")
    ap.add_argument("--csv", type=Path, default=ROOT / "results" / "bench_cli.csv")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sds-bench-cli-") as tmp:
        cwd = Path(tmp)
        trees = {"before": args.before, "after": args.after}
        for tree in trees.values():
            check_tree(tree, cwd)
        cmds = commands(make_db(cwd / "bench.db"))
        rows = []
        for label, argv in cmds.items():
            for which, tree in trees.items():
                times, codes = [], set()
                for _ in range(args.repeats):  # interleaving trees would share warm caches
                    t, code = run_once(tree, argv, cwd)
                    times.append(t)
                    codes.add(code)
                rows.append({"command": label, "tree": which, "median_s": statistics.median(times),
                             "min_s": min(times), "repeats": args.repeats,
                             "exit_codes": "/".join(str(c) for c in sorted(codes))})
                print(f"{label:32s} {which:6s} median {rows[-1]['median_s']:6.2f} s  "
                      f"min {rows[-1]['min_s']:6.2f} s  exit {rows[-1]['exit_codes']}",
                      flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
