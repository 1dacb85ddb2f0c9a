"""Benchmark `sds ui`'s lineage page: time to first render at 1,000 and 10,000 runtimes, and
the database query behind it, on SQLite (and PostgreSQL when a URL is given).

For each size, a synthetic run (evolve/ui/sample.py: the rows a real run writes, several
evaluation rows per runtime) goes into a fresh database; then, with the UI served on
loopback by Waitress and opened in headless Chromium (Selenium):

  query_ms        the one lineage SQL statement, executed and fetched (median of --repeat)
  json_ms         the JSON route's whole server side (query, shaping) (median)
  http_ms         GET of the JSON route over HTTP, body included (median)
  first_render_cold_ms  from the page's navigation start to the end of the tree's first
                  draw (HTML, scripts, JSON fetch, layout, draw), the first load of the run
  first_render_ms the same, median of --repeat further loads (the server has the JSON
                  cached while the run does not change)
  layout_ms, draw_ms  the browser's share of it
  run_api_ms      a run page's data (summary, curves, operators, islands), first request

    python scripts/bench_ui.py                        # SQLite, 1,000 and 10,000 runtimes
    python scripts/bench_ui.py --pg "$(bash scripts/start_postgres.sh)"
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evolve.ui.db import open_readonly
from evolve.ui.lineage import runtime_lineage, runtime_query
from evolve.ui.sample import make_run
from evolve.ui.server import make_server
from population_db import Store
from population_db.engine import scratch_schema

FIELDS = ["backend", "runtimes", "evaluations", "json_kb", "query_ms", "json_ms", "http_ms",
          "first_render_cold_ms", "first_render_ms", "fetch_ms", "layout_ms", "draw_ms", "run_api_ms", "populate_s"]


def _median_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _pg_schema(url: str) -> tuple[str, Any]:
    return scratch_schema(url, "bench_ui")


def _browser() -> Any:
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("SDS_CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    service = webdriver.ChromeService(
        executable_path=os.environ.get("SDS_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def _render(drv: Any, base: str, run_id: int, n: int) -> list[float]:
    """Open the lineage page; [first render, fetch, layout, draw] in ms, from the page."""
    from selenium.webdriver.support.ui import WebDriverWait

    drv.get(f"{base}/run/{run_id}/lineage")
    WebDriverWait(drv, 120).until(lambda d: d.execute_script(
        "return window.sdsLineage && window.sdsLineage.rendered"))
    got = drv.execute_script("const a = window.sdsLineage; return [a.renderedAt, a.fetchMs,"
                             " a.layoutMs, a.drawMs, a.count]")
    assert got[4] == n, got
    return got[:4]


def measure(url: str, backend: str, n: int, repeat: int, drv: Any,
            shots: Path | None = None) -> dict[str, Any]:
    """Populate a run of `n` runtimes at `url` and time the lineage page on it."""
    store = Store.open(url)
    t = time.perf_counter()
    run_id = make_run(store, f"bench-{n}", runtimes=n, seed=n)
    populate = time.perf_counter() - t
    n_evals = sum(store.counts(run_id).values())
    store.close()
    ro = open_readonly(url)

    def query() -> None:
        with Session(ro.engine) as s:
            s.execute(runtime_query(run_id, "modeled_ratio")).all()

    query()  # warm the connection pool and caches alike for every figure
    row: dict[str, Any] = {"backend": backend, "runtimes": n, "evaluations": n_evals,
                           "populate_s": round(populate, 2),
                           "query_ms": _median_ms(query, repeat),
                           "json_ms": _median_ms(lambda: runtime_lineage(ro, run_id), repeat)}
    server = make_server(url, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        row["first_render_cold_ms"] = _render(drv, base, run_id, n)[0]  # nothing cached yet
        t = time.perf_counter()  # the run page's data, built once (then cached till it changes)
        urllib.request.urlopen(f"{base}/api/run/{run_id}").read()
        row["run_api_ms"] = (time.perf_counter() - t) * 1000
        body = urllib.request.urlopen(f"{base}/api/run/{run_id}/lineage").read()
        row["json_kb"] = len(body) / 1024
        row["http_ms"] = _median_ms(
            lambda: urllib.request.urlopen(f"{base}/api/run/{run_id}/lineage").read(), repeat)
        runs = [_render(drv, base, run_id, n) for _ in range(repeat)]
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            drv.save_screenshot(str(shots / f"lineage_{n}_{backend}.png"))
        for k, name in enumerate(("first_render_ms", "fetch_ms", "layout_ms", "draw_ms")):
            row[name] = statistics.median(r[k] for r in runs)
    finally:
        server.task_dispatcher.shutdown()
        server.close()
        ro.close()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="runtimes per run (1000,10000)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per figure (median)")
    ap.add_argument("--pg", default=os.environ.get("SDS_TEST_PG_URL"),
                    help="PostgreSQL URL (default $SDS_TEST_PG_URL); SQLite only without")
    ap.add_argument("--csv", default=str(ROOT / "results" / "bench_ui.csv"))
    ap.add_argument("--shots", default=str(ROOT / "results" / "ui"),
                    help="folder for a screenshot of each SQLite lineage page ('' for none)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    drv = _browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                rows.append(measure(f"sqlite:///{tmp}/ui-{n}.db", "sqlite", n, args.repeat, drv,
                                    Path(args.shots) if args.shots else None))
                print(_line(rows[-1]), flush=True)
        if not args.pg:
            print("PostgreSQL: skipped (no --pg URL and no $SDS_TEST_PG_URL)")
        for n in sizes if args.pg else []:
            url, drop = _pg_schema(args.pg)
            try:
                rows.append(measure(url, "postgresql", n, args.repeat, drv))
                print(_line(rows[-1]), flush=True)
            finally:
                drop()
    finally:
        drv.quit()
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{r[k]:.1f}" if isinstance(r[k], float) else r[k] for k in FIELDS})
    print(f"wrote {args.csv}")
    return 0


def _line(r: dict[str, Any]) -> str:
    return (f"{r['backend']:10s} {r['runtimes']:6d} runtimes ({r['evaluations']} evaluations): "
            f"query {r['query_ms']:.0f} ms, JSON route {r['json_ms']:.0f} ms, HTTP "
            f"{r['http_ms']:.0f} ms ({r['json_kb']:.0f} KiB), first render "
            f"{r['first_render_cold_ms']:.0f} ms cold, {r['first_render_ms']:.0f} ms warm (layout {r['layout_ms']:.0f}, draw "
            f"{r['draw_ms']:.0f}); run page data {r['run_api_ms']:.0f} ms; populated in "
            f"{r['populate_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
