"""The state store on PostgreSQL (`--state postgresql://...`), for several operators at once.

The same SqlStore logic as SQLite, through psycopg: '?' placeholders become '%s', every
write transaction first takes one advisory lock (the audit chain is one sequence, and a
claim must see the claims committed before it), and the schema is schema.py's in
PostgreSQL's types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from orchestrator.core import procs
from orchestrator.core.errors import StateError
from orchestrator.store import schema
from orchestrator.store.schema import Migration
from orchestrator.store.sqlstore import SqlStore
from orchestrator.store.sqltypes import Cursor, Db

# Any 64-bit number of our own: the advisory lock every avmigrate write transaction takes.
WRITER_LOCK = 0x61766D6967726174  # "avmigrat"

_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    """'?' placeholders to psycopg's '%s' (a literal '%' doubled, as psycopg then wants)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class _Cursor:
    """A psycopg cursor that takes the store's '?' SQL and chains like sqlite3's."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        if parameters:
            self._cur.execute(_pg(sql), tuple(parameters))
        else:
            self._cur.execute(sql)  # no parameters: psycopg sends it as written
        return self

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor:
        rows = [tuple(p) for p in parameters]
        if rows:
            self._cur.executemany(_pg(sql), rows)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur.fetchall() if self._cur.description else [])


class _Connection:
    """A psycopg connection in autocommit mode; the store begins transactions itself."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def cursor(self) -> _Cursor:
        return _Cursor(self.conn.cursor())

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        return self.cursor().execute(sql, parameters)

    def close(self) -> None:
        self.conn.close()


def _safe_url(url: str) -> str:
    """The URL without its password, to name it in messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresDialect:
    """PostgreSQL: the writer lock is an advisory lock; a migration runs as one script."""

    migrations: Sequence[Migration] = schema.migrations(schema.POSTGRESQL)

    def now(self, cur: Cursor) -> float:
        return float(cur.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    def begin(self, cur: Cursor) -> None:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))

    def apply_migration(self, cur: Cursor, sql: str) -> None:
        cur.execute(sql)

    def has_migrations_table(self, db: Db) -> bool:
        row = db.execute("SELECT to_regclass('schema_migrations')").fetchone()
        return row is not None and row[0] is not None


class PostgresStore(SqlStore):
    """StateStore on a PostgreSQL database shared by several operators."""

    def __init__(self, url: str, alive: Callable[[int, int], bool] = procs.alive) -> None:
        self.url = url
        label = f"state database {_safe_url(url)}"
        try:
            import psycopg  # noqa: PLC0415 - only PostgreSQL users need it
        except ImportError as exc:  # pragma: no cover - broken install
            raise StateError(f"psycopg is not importable ({exc}); run `make venv`") from exc
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                   application_name="avmigrate")
        except psycopg.Error as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateError(f"cannot connect to {label} ({why}); check the URL and "
                             "that the server runs") from exc
        try:
            super().__init__(_Connection(conn), PostgresDialect(), label, alive)
        except psycopg.Error as exc:
            raise StateError(f"{label} is not usable ({exc}); check its permissions "
                             "or pass another --state") from exc
