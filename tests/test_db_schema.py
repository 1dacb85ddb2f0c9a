"""Opening databases: default URL, SQLite settings, schema versions, migrations, bad URLs."""



from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from test_db_fixtures import db_url  # noqa: F401  (fixture)

from population_db import SCHEMA_VERSION, SchemaVersionError, Store, StoreError
from population_db.engine import run_write
from population_db.migrate import migrate
from population_db.migrations import HEAD


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


def test_pre_alembic_databases_are_upgraded_or_refused(tmp_path) -> None:
    from pathlib import Path

    dump = (Path(__file__).parent / "data" / "sds_db_v1.sql").read_text()
    for name, version in (("v1.db", 1), ("v0.db", 0)):
        con = sqlite3.connect(tmp_path / name)
        con.executescript(dump)
        con.execute("UPDATE schema_version SET version = ?", (version,))
        con.commit()
        con.close()
    v1, v0 = f"sqlite:///{tmp_path / 'v1.db'}", f"sqlite:///{tmp_path / 'v0.db'}"
    assert migrate(v1) == ""  # made before Alembic (version 1): stamped 0001, upgraded
    assert migrate(v1) is None  # now current
    st = Store.open(v1)
    assert [e.data["to"] for e in st.events(None, kind="migration")] == [HEAD]
    st.close()
    with pytest.raises(SchemaVersionError, match="schema version 0, which no migration "
                                                 "starts from"):
        Store.open(v0)
    assert SCHEMA_VERSION == 1  # the pre-Alembic marker stays 1 for older sds versions


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
