"""Schema migrations (Alembic): a database written by the previous release opens, upgraded,
with its data intact; the revisions build exactly the schema models.py declares; a database
from a newer sds is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from population_db import SchemaVersionError, Store, migrations
from population_db.models import Base

V1_DUMP = Path(__file__).parent / "data" / "sds_db_v1.sql"


def _restore(path: Path) -> str:
    """A SQLite file rebuilt from the v1 dump; its URL."""
    con = sqlite3.connect(path)
    con.executescript(V1_DUMP.read_text())
    con.close()
    return f"sqlite:///{path}"


def test_previous_release_database_is_upgraded_on_open(tmp_path) -> None:
    url = _restore(tmp_path / "old.db")
    store = Store.open(url, create=False)
    with store.engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.HEAD
    run = store.get_run("old-run")
    assert run.seed == 7 and run.config == {"budget": {"max_evaluations": 3}}
    board = store.leaderboard(run.id, metric="tok_s", limit=5)
    assert [b.score for b in board] == [125.0, 100.0]
    child = board[0].runtime
    assert [e.node.id for e in store.ancestors(child.id)][-1] == board[1].runtime.id
    # and it keeps working: new rows go in after the upgrade
    p = store.add_program("scheduler", "def f():\n    return 3\n", run_id=run.id)
    assert store.get_program(p.id).code.endswith("return 3\n")
    store.close()
    again = Store.open(url, create=False)  # a second open finds it current
    assert again.get_run("old-run").id == run.id
    again.close()


def test_optuna_studies_share_the_database(tmp_path) -> None:
    """Optuna keeps its own Alembic version table in the same database: both must work."""
    import optuna

    from evolve.tune import open_storage

    url = _restore(tmp_path / "old.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_s=None))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    store = Store.open(url, create=False)  # upgraded beside Optuna's tables
    assert store.get_run("old-run").seed == 7
    store.close()
    again = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=None))
    assert len(again.trials) == 2


def test_revisions_build_exactly_the_models_schema(tmp_path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.begin() as conn:
        migrations.upgrade_connection(conn)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_name": migrations.is_sds_table})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], ("models.py and the migrations disagree; add a revision under "
                        f"population_db/migrations/versions/: {diff}")


def test_head_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert script.get_current_head() == migrations.HEAD
    assert migrations.HEAD in migrations.known_revisions()


def test_database_from_a_newer_sds_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store.open(url).close()
    con = sqlite3.connect(tmp_path / "new.db")
    con.execute("UPDATE sds_alembic_version SET version_num = 'f00d'")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="f00d.*newer sds"):
        Store.open(url, create=False)


def test_new_database_is_stamped_at_head(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'n.db'}")
    with store.engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.HEAD
    store.close()
