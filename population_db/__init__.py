"""The population database: programs, runtimes, evaluations and lineage in SQL.

    >>> from population_db import Store
    >>> store = Store.open()          # $SDS_DB, else sqlite:///results/sds.db
    >>> run, created = store.get_or_create_run("demo", {"budget": 10})

See docs/DATABASE.md for the schema, the URL forms, the run lease and migrations.
"""

from population_db.engine import (
                                  DEFAULT_URL,
                                  LeaseLost,
                                  NotFound,
                                  SchemaVersionError,
                                  StoreError,
                                  resolve_url,
)
from population_db.lineage import GENETIC_ROLES
from population_db.models import FINAL_STATUSES, ROLES, RUN_STATUSES, SCHEMA_VERSION, STATUSES
from population_db.records import (
                                  EvaluationRecord,
                                  EventRecord,
                                  LineageEntry,
                                  LLMCallRow,
                                  ProgramRecord,
                                  Ranked,
                                  RunRecord,
                                  RuntimeRecord,
)
from population_db.store import Store, code_hash, spec_hash, unified_diff

__all__ = [
                                  "DEFAULT_URL",
                                  "FINAL_STATUSES",
                                  "GENETIC_ROLES",
                                  "ROLES",
                                  "RUN_STATUSES",
                                  "SCHEMA_VERSION",
                                  "STATUSES",
                                  "EvaluationRecord",
                                  "EventRecord",
                                  "LLMCallRow",
                                  "LeaseLost",
                                  "LineageEntry",
                                  "NotFound",
                                  "ProgramRecord",
                                  "Ranked",
                                  "RunRecord",
                                  "RuntimeRecord",
                                  "SchemaVersionError",
                                  "Store",
                                  "StoreError",
                                  "code_hash",
                                  "resolve_url",
                                  "spec_hash",
                                  "unified_diff",
]
