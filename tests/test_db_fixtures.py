"""Shared fixtures of the population_db tests: a fresh SQLite file or PostgreSQL schema.

PostgreSQL runs when SDS_TEST_PG_URL is set (.ci/run starts a server with
scripts/start_postgres.sh); every test gets its own schema, dropped afterwards, so reruns
and parallel runs never collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from population_db import Store
from population_db.engine import scratch_schema

PG_URL = os.environ.get("SDS_TEST_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="SDS_TEST_PG_URL not set "
                              "(scripts/start_postgres.sh starts a server)")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=[needs_pg, pytest.mark.postgres])]


def fresh_pg_url() -> tuple[str, Callable[[], None]]:
    """A URL whose connections live in a new empty schema, and a function that drops it."""
    assert PG_URL
    return scratch_schema(PG_URL, "t")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/sds.db"
        return
    url, drop = fresh_pg_url()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on a fresh database of each backend."""
    st = Store.open(db_url)
    try:
        yield st
    finally:
        st.close()
