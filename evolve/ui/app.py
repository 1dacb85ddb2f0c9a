"""The `sds ui` web app: a small read-only Flask app over the population database.

Pages are rendered by Jinja with autoescaping; charts and the lineage tree are drawn in the
browser by this package's own scripts from JSON routes (no CDN: everything is served from
this package). Only GET routes exist. Static files come from a fixed table read at start-up,
so no part of a URL reaches the file system. Each response carries a Content-Security-Policy
that allows only this origin's scripts and styles (no inline script can run), and, when
bound to loopback, requests naming another host are refused (DNS rebinding).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from evolve.ui import lineage, nodes, runs
from population_db import NotFound, Store, StoreError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
LOOPBACK = ["localhost", "127.0.0.1", "::1", "[::1]"]
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_ID = re.compile(r"^\s*(?:(?P<kind>[rpe])(?P<num>\d+)|(?P<run>\S.*))\s*$")


def _static_table() -> dict[str, tuple[bytes, str]]:
    files = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix])
             for p in (HERE / "static").iterdir() if p.suffix in STATIC_TYPES}
    files["pygments.css"] = (nodes.pygments_css().encode(), "text/css")
    return files


def _pretty(value: Any, indent: int | None = 2) -> str:
    """JSON text for display (escaped by the template like any other string)."""
    return json.dumps(value, indent=indent or None, default=str, ensure_ascii=False,
                      sort_keys=True)


class PageCache:
    """Page data per run, reused while the run's fingerprint (runs.fingerprint: three index
    lookups) is unchanged: a finished 10,000-runtime run is summarised once, not on every
    poll. Thread-safe; the least recently used entries go first."""

    def __init__(self, store: Store, size: int = 64):
        self.store, self.size = store, size
        self._data: OrderedDict[tuple, tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, run_id: int, build: Callable[[], Any]) -> Any:
        """build()'s value for `key`, rebuilt when run `run_id` changed since."""
        fp = runs.fingerprint(self.store, run_id)  # before building: never newer than it
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and hit[0] == fp:
                self._data.move_to_end(key)
                return hit[1]
        value = build()
        with self._lock:
            self._data[key] = (fp, value)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_ids() -> list[int]:
    ids = [int(x) for x in request.args.getlist("run") if x.isdigit()]
    if len(ids) < 1:
        abort(400, "choose one or more runs to compare")
    return list(dict.fromkeys(ids))[:12]


def create_app(store: Store, loopback_only: bool = True) -> Flask:
    """The app serving `store` (opened read-only by the caller; see evolve.ui.db)."""
    app = Flask(__name__, static_folder=None, template_folder=str(HERE / "templates"))
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.jinja_env.filters["pretty"] = _pretty
    if loopback_only:
        app.config["TRUSTED_HOSTS"] = LOOPBACK
    cache = PageCache(store)
    _register_hooks(app, make_url(store.url).render_as_string(hide_password=True))
    _register_static(app, _static_table())
    _register_run_pages(app, store, cache)
    _register_node_pages(app, store)
    _register_compare(app, store, cache)
    _register_errors(app)
    return app


def _register_hooks(app: Flask, db_label: str) -> None:
    """Add the database label to every template and the security headers to every response."""

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"db_label": db_label}

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        if request.endpoint != "static_file":
            resp.headers["Cache-Control"] = "no-store"
        return resp


def _register_static(app: Flask, static: dict[str, tuple[bytes, str]]) -> None:
    """Serve the files of `static` (name -> body, content type), and nothing else."""

    @app.get("/static/<name>")
    def static_file(name: str) -> Response:
        if name not in static:
            abort(404)
        body, ctype = static[name]
        return Response(body, content_type=ctype)


def _register_run_pages(app: Flask, store: Store, cache: PageCache) -> None:
    """The runs list, a run's page and lineage tree, and their JSON."""

    @app.get("/")
    def index() -> str:
        cards = [cache.get(("card", r.id), r.id, lambda r=r: runs.run_card(store, r))
                 for r in reversed(store.list_runs())]
        return render_template("runs.html", runs=cards)

    @app.get("/run/<int:run_id>")
    def run(run_id: int) -> str:
        run = store.get_run(run_id)
        card = cache.get(("card", run_id), run_id, lambda: runs.run_card(store, run))
        return render_template("run.html", card=card)

    @app.get("/api/run/<int:run_id>")
    def run_api(run_id: int) -> Response:
        data = cache.get(("run", run_id), run_id, lambda: runs.run_page(store, run_id))
        return jsonify({**data, "updated_at": _now()})

    @app.get("/run/<int:run_id>/lineage")
    def run_lineage(run_id: int) -> str:
        kind = request.args.get("kind", "runtimes")
        if kind not in ("runtimes", "programs"):
            abort(404)
        return render_template("lineage.html", run=store.get_run(run_id), kind=kind)

    @app.get("/api/run/<int:run_id>/lineage")
    def lineage_api(run_id: int) -> Response:
        kind = request.args.get("kind", "runtimes")
        fn = {"runtimes": lineage.runtime_lineage, "programs": lineage.program_lineage}.get(kind)
        if fn is None:
            abort(404)
        return jsonify(cache.get(("lineage", kind, run_id), run_id, lambda: fn(store, run_id)))


def _register_node_pages(app: Flask, store: Store) -> None:
    """The runtime, program and evaluation pages, and /go, which finds one by its id."""

    @app.get("/go")
    def go() -> Any:
        m = _ID.match(request.args.get("id", ""))
        if m is None:
            abort(404)
        if m.group("kind"):
            page = {"r": "runtime", "p": "program", "e": "evaluation"}[m.group("kind")]
            return redirect(url_for(page, ident=int(m.group("num"))))
        key = m.group("run").strip()
        try:
            return redirect(url_for("run", run_id=store.get_run(key).id))
        except NotFound:
            pass
        try:  # a code-hash prefix
            return redirect(url_for("program", ident=store.get_program(key).id))
        except NotFound:
            abort(404)

    @app.get("/runtime/<int:ident>")
    def runtime(ident: int) -> str:
        return render_template("runtime.html", **nodes.runtime_page(store, ident))

    @app.get("/program/<int:ident>")
    def program(ident: int) -> str:
        return render_template("program.html", **nodes.program_page(store, ident))

    @app.get("/evaluation/<int:ident>")
    def evaluation(ident: int) -> str:
        return render_template("evaluation.html", **nodes.evaluation_page(store, ident))


def _register_compare(app: Flask, store: Store, cache: PageCache) -> None:
    """The comparison of the runs named by `?run=` arguments: page, JSON and CSV."""

    def _compare() -> dict[str, Any]:
        return runs.compare([cache.get(("compare", i), i, lambda i=i: runs.compare_one(store, i))
                             for i in _run_ids()])

    @app.get("/compare")
    def compare() -> str:
        data = _compare()
        cols = ["tags.run", "tags.status", "metrics.evaluations", "metrics.evals_passed",
                "metrics.best_runtime", "metrics.llm_usd", "metrics.wall_s"]
        cols += [k for k in data["rows"][0] if k.startswith(("metrics.best_", "metrics.seed_"))
                 and k not in cols and k.count(".") == 1]
        return render_template("compare.html", data=data, cols=cols,
                               ids=[c["run_id"] for c in data["curves"]])

    @app.get("/api/compare")
    def compare_api() -> Response:
        return jsonify(_compare())

    @app.get("/compare.csv")
    def compare_csv() -> Response:
        rows = _compare()["rows"]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})
        return Response(buf.getvalue(), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=runs.csv"})


def _error(code: int, title: str, detail: str) -> tuple[Any, int]:
    """An error response: JSON under /api/, else the error page."""
    if request.path.startswith("/api/"):
        return jsonify({"error": title, "detail": detail}), code
    return render_template("error.html", code=code, title=title, detail=detail), code


def _register_errors(app: Flask) -> None:
    """Answer errors: 404 for a missing row, HTTP errors' codes, 503 (database), 500 (bug)."""

    @app.errorhandler(NotFound)
    def _not_found(e: NotFound) -> tuple[Any, int]:
        return _error(404, "Not found", str(e))

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> tuple[Any, int]:
        return _error(e.code or 500, e.name, e.description or "")

    @app.errorhandler(StoreError)
    @app.errorhandler(SQLAlchemyError)
    def _db(e: Exception) -> tuple[Any, int]:
        log.warning("database error on %s: %s", request.path, e)
        return _error(503, "Database unavailable", "the database could not be read; "
                      "try again in a moment (details in the server's log)")

    @app.errorhandler(Exception)
    def _bug(e: Exception) -> tuple[Any, int]:
        log.exception("error on %s", request.path)
        return _error(500, "Internal error", "this page could not be built; the server's "
                      "log has the details")
