"""The state store: every host's state and history, written through on every transition.

`interface.StateStore` is what the rest of the code uses; `open_store` gives the one named by
--state: a SQLite file (sqlite.py) or a PostgreSQL database (postgres.py), both the SqlStore of
sqlstore.py on the schema of schema.py.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.sqlstore import SqlStore


def open_store(url: str) -> SqlStore:
    """Open the state named by --state / AVMIGRATE_STATE: a SQLite file, or postgresql://."""
    if url.startswith(("postgresql://", "postgres://")):
        from orchestrator.store.postgres import PostgresStore  # noqa: PLC0415 - only when asked for
        return PostgresStore(url)
    return SqliteStore(Path(url))
