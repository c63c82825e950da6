"""The state store on one SQLite file (WAL, synchronous=FULL: a commit is on disk)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from orchestrator.core import procs
from orchestrator.core.errors import StateError
from orchestrator.store import schema
from orchestrator.store.schema import Migration
from orchestrator.store.sqlstore import SqlStore
from orchestrator.store.sqltypes import Cursor, Db


def _statements(sql: str) -> Iterator[str]:
    """Split a migration into statements; a trigger's body keeps its own semicolons."""
    buf = ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf.strip()
            buf = ""


class SqliteDialect:
    """SQLite: the writer lock is BEGIN IMMEDIATE; sqlite3 runs one statement at a time."""

    migrations: Sequence[Migration] = schema.migrations(schema.SQLITE)

    def now(self, cur: Cursor) -> float:
        return float(cur.execute(
            "SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()[0])

    def begin(self, cur: Cursor) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def apply_migration(self, cur: Cursor, sql: str) -> None:
        for statement in _statements(sql):
            cur.execute(statement)

    def has_migrations_table(self, db: Db) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'schema_migrations'").fetchone() is not None


class SqliteStore(SqlStore):
    """StateStore on one SQLite file."""

    def __init__(self, path: Path, alive: Callable[[int, int], bool] = procs.alive) -> None:
        self.path = path
        label = f"state file {path}"
        if path.exists() and not path.is_file():
            raise StateError(f"state path {path} is not a file; pass --state FILE")
        if not path.parent.exists():
            raise StateError(f"directory {path.parent} of state file {path} does not exist")
        try:
            db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            super().__init__(db, SqliteDialect(), label, alive)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {path} is not a usable SQLite database ({exc}); "
                             "pass another --state or move it aside") from exc

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
