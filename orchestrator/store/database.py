"""One connection to a state database: its dialect, its clock, its write transaction, its schema.

Every write is one transaction that first takes the database's writer lock (SQLite's
BEGIN IMMEDIATE, a PostgreSQL advisory lock), so the audit chain and the claims are written by
one operator at a time however many run at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from orchestrator.core.errors import StateError
from orchestrator.store import audit
from orchestrator.store.schema import AUDIT_BEGINS, Migration
from orchestrator.store.sqltypes import Cursor, Db


class Dialect(Protocol):
    """What differs between SQLite and PostgreSQL once the connection is open."""

    @property
    def migrations(self) -> Sequence[Migration]: ...
    def now(self, cur: Cursor) -> float:
        """The database's clock: one clock for every operator, whatever their machines say."""
        ...
    def begin(self, cur: Cursor) -> None:
        """Open a write transaction holding the writer lock."""
        ...
    def apply_migration(self, cur: Cursor, sql: str) -> None: ...
    def has_migrations_table(self, db: Db) -> bool: ...


class Database:
    """A connection in autocommit mode and the dialect that speaks to it."""

    def __init__(self, db: Db, dialect: Dialect, label: str) -> None:
        self.db = db
        self.dialect = dialect
        self.label = label  # names the state in messages

    def now(self, cur: Cursor) -> float:
        return self.dialect.now(cur)

    def cursor(self) -> Cursor:
        cur: Cursor = self.db.cursor()
        return cur

    @contextmanager
    def tx(self) -> Iterator[Cursor]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        cur = self.cursor()
        self.dialect.begin(cur)
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def migrate(self) -> None:
        """Apply what is missing. A state already current is only read (no write lock), so
        `status` and reports never wait for a running operator's transaction."""
        if not self.dialect.has_migrations_table(self.db):
            with self.tx() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                            "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in self.db.execute("SELECT name FROM schema_migrations").fetchall()}
        unknown = done - {m.name for m in self.dialect.migrations}
        if unknown:
            raise StateError(f"{self.label} was written by a newer avmigrate "
                             f"(migrations {sorted(unknown)}); upgrade avmigrate")
        for name, sql in self.dialect.migrations:
            if name in done:
                continue
            with self.tx() as cur:
                if cur.execute("SELECT 1 FROM schema_migrations WHERE name = ?",
                               (name,)).fetchone():
                    continue  # another process applied it while we waited for the lock
                self.dialect.apply_migration(cur, sql)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
                if name == AUDIT_BEGINS:
                    audit.genesis(cur)

    def close(self) -> None:
        self.db.close()
