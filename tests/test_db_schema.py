"""Opening databases: default URL, SQLite settings, schema versions, migrations, bad URLs."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import OperationalError
from test_db_fixtures import db_url  # noqa: F401  (fixture)

from population_db import SCHEMA_VERSION, SchemaVersionError, Store, StoreError
from population_db.engine import run_write
from population_db.migrate import migrate
from population_db.models import SchemaVersion


def test_default_url_creates_results_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDS_DB", raising=False)
    st = Store.open()
    st.get_or_create_run("x")
    st.close()
    assert (tmp_path / "results" / "sds.db").is_file()
    monkeypatch.setenv("SDS_DB", f"sqlite:///{tmp_path}/elsewhere/e.db")
    Store.open().close()
    assert (tmp_path / "elsewhere" / "e.db").is_file()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path) -> None:
    st = Store.open(f"sqlite:///{tmp_path}/w.db")
    with st.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    st.get_or_create_run("fk")
    with pytest.raises(Exception, match="FOREIGN KEY"):  # an edge to a missing runtime
        def bad(s) -> None:
            s.execute(text("INSERT INTO runtime_parents (child_id, parent_id, role) "
                           "VALUES (4242, 4343, 'parent')"))
        run_write(st.engine, bad, retries=0)
    st.close()


def test_write_retries_when_locked(tmp_path) -> None:
    st = Store.open(f"sqlite:///{tmp_path}/r.db")
    calls = []

    def flaky(s) -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return len(calls)

    assert run_write(st.engine, flaky) == 3

    def broken(s) -> None:
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: nope"))

    with pytest.raises(OperationalError, match="no such table"):
        run_write(st.engine, broken)
    st.close()


def test_other_schema_version_is_refused(db_url: str) -> None:
    st = Store.open(db_url)
    run_write(st.engine, lambda s: s.execute(update(SchemaVersion).values(version=0)))
    st.close()
    with pytest.raises(SchemaVersionError, match=f"schema version 0, this sds needs "
                       f"{SCHEMA_VERSION}.*population_db.migrate"):
        Store.open(db_url)
    applied = []

    def step(conn) -> None:
        applied.append(conn.exec_driver_sql("SELECT count(*) FROM runs").scalar())

    with pytest.raises(SchemaVersionError, match="no migration step from schema version 0"):
        migrate(db_url)
    assert migrate(db_url, steps={0: step}) == 1 and applied == [0]
    st = Store.open(db_url)  # now current
    assert [e.data for e in st.events(None, kind="migration")] == [{"from": 0, "to": 1}]
    st.close()


def test_bad_urls_give_clear_errors(tmp_path) -> None:
    with pytest.raises(StoreError, match="unsupported database URL 'mysql://u@h/db'"):
        Store.open("mysql://u@h/db")
    with pytest.raises(StoreError, match="bad database URL"):
        Store.open("not a url")
    with pytest.raises(StoreError, match="no database at"):
        Store.open(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="cannot connect"):
        Store.open("postgresql+psycopg://u:secret@127.0.0.1:1/db")
