"""The state store: every host's state and history, written through on every transition.

SQLite now (one file, WAL, one transaction per transition); the `StateStore` protocol is what
the rest of the code uses, so a PostgreSQL store can stand behind the same interface later.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator import audit
from orchestrator.errors import StateError
from orchestrator.models import (
    HostFacts,
    HostRecord,
    HostState,
    StepResult,
    Transition,
    transition_allowed,
)
from orchestrator.procs import pid_alive


class StateStore(Protocol):
    """What the engine, reports and CLI need from a state backend."""

    def begin_run(self, command: str, operator: str, plan_digest: str | None) -> int: ...
    def finish_run(self, run_id: int, outcome: str) -> None: ...
    def ensure_hosts(self, names: list[str]) -> None: ...
    def get(self, name: str) -> HostRecord | None: ...
    def all(self) -> list[HostRecord]: ...
    def counts(self) -> dict[HostState, int]: ...
    def in_states(self, states: Iterable[HostState], limit: int | None = None
                  ) -> list[HostRecord]: ...
    def transition(
        self, name: str, to: HostState, reason: str, run_id: int | None, *,
        facts: HostFacts | None = None, strategy: str | None = None, wave: int | None = None,
        protection_stopped_at: float | None = None,
        replacement_verified_at: float | None = None,
    ) -> HostRecord: ...
    def apply(self, moves: Sequence[Move], run_id: int | None) -> None: ...
    def record_step(self, run_id: int, result: StepResult) -> None: ...
    def history(self, name: str | None = None) -> list[Transition]: ...
    def runs(self) -> list[dict[str, object]]: ...
    def acquire_lease(self, holder: LeaseHolder, ttl: float) -> int: ...
    def renew_lease(self, epoch: int, ttl: float) -> None: ...
    def release_lease(self, epoch: int) -> None: ...
    def lease(self) -> Lease | None: ...
    def add_approval(self, plan_hash: str, wave: int, operator: str,
                     plan_path: str = "") -> None: ...
    def approvals(self, plan_hash: str) -> dict[int, tuple[str, float]]: ...
    def all_approvals(self) -> list[dict[str, object]]: ...
    def facts_before(self) -> dict[str, HostFacts]: ...
    def audit_entries(self) -> list[audit.Entry]: ...
    def audit_verify(self) -> audit.Verdict: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Move:
    """One host's move to a new state, with what is recorded along with it."""

    name: str
    to: HostState
    reason: str = ""
    facts: HostFacts | None = None
    strategy: str | None = None
    wave: int | None = None
    protection_stopped_at: float | None = None
    replacement_verified_at: float | None = None


@dataclass(frozen=True)
class LeaseHolder:
    """Who wants to run: enough to name them to a second operator."""

    user: str
    hostname: str
    pid: int


@dataclass(frozen=True)
class Lease:
    """The one-operator lease on a state; the epoch fences a holder that lost it."""

    holder: LeaseHolder
    since: float
    expires: float
    epoch: int


class LeaseHeld(StateError):
    """Another run holds the state."""

    exit_code = 8


class Fenced(StateError):
    """This run lost its lease (it expired and another run took it); it must stop writing."""

    exit_code = 8


# Named, ordered schema migrations; each applied once, in its own transaction.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            operator TEXT NOT NULL,
            command TEXT NOT NULL,
            plan_digest TEXT,
            outcome TEXT
        );
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            strategy TEXT,
            wave INTEGER,
            facts TEXT,
            updated_at REAL NOT NULL,
            protection_stopped_at REAL,
            replacement_verified_at REAL
        );
        CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            host TEXT NOT NULL REFERENCES hosts(name),
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            at REAL NOT NULL,
            run_id INTEGER REFERENCES runs(id),
            reason TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX transitions_by_host ON transitions(host, id);
        CREATE TABLE step_results (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            host TEXT NOT NULL,
            step TEXT NOT NULL,
            outcome TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            at REAL NOT NULL
        );
    """),
    ("0002_lease_and_approvals", """
        CREATE TABLE lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            holder_user TEXT,
            holder_host TEXT,
            holder_pid INTEGER,
            since REAL,
            expires REAL,
            epoch INTEGER NOT NULL
        );
        INSERT INTO lease (id, epoch) VALUES (1, 0);
        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY,
            plan_hash TEXT NOT NULL,
            wave INTEGER NOT NULL,
            operator TEXT NOT NULL,
            at REAL NOT NULL
        );
    """),
    ("0003_audit_and_evidence", """
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            host TEXT,
            run_id INTEGER,
            ref INTEGER,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        ALTER TABLE hosts ADD COLUMN facts_before TEXT;
        ALTER TABLE approvals ADD COLUMN plan_path TEXT;
    """),
    ("0004_states_index", """
        CREATE INDEX hosts_by_state ON hosts(state, name);
    """),
]


def _statements(sql: str) -> Iterator[str]:
    """Split a migration into statements; a trigger's body keeps its own semicolons."""
    buf = ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf.strip()
            buf = ""


class SqliteStore:
    """StateStore on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fence_epoch: int | None = None
        if path.exists() and not path.is_file():
            raise StateError(f"state path {path} is not a file; pass --state FILE")
        if not path.parent.exists():
            raise StateError(f"directory {path.parent} of state file {path} does not exist")
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {path} is not a usable SQLite database ({exc}); "
                             "pass another --state or move it aside") from exc

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in self.db.execute("SELECT name FROM schema_migrations")}
        known = {name for name, _ in MIGRATIONS}
        unknown = done - known
        if unknown:
            raise StateError(f"state file {self.path} was written by a newer avmigrate "
                             f"(migrations {sorted(unknown)}); upgrade avmigrate")
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self._tx() as cur:
                for statement in _statements(sql):
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
                if name == "0003_audit_and_evidence":
                    audit.genesis(cur)

    @contextmanager
    def _tx(self, fenced: bool = True) -> Iterator[sqlite3.Cursor]:
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if fenced:
                self._check_fence(cur)
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def begin_run(self, command: str, operator: str, plan_digest: str | None) -> int:
        with self._tx() as cur:
            now = time.time()
            cur.execute("INSERT INTO runs (started_at, operator, command, plan_digest) "
                        "VALUES (?, ?, ?, ?)", (now, operator, command, plan_digest))
            run_id = int(cur.lastrowid or 0)
            audit.append(cur, now, "run-start", None, run_id, run_id,
                         {"operator": operator, "command": command, "plan": plan_digest})
            return run_id

    def finish_run(self, run_id: int, outcome: str) -> None:
        with self._tx() as cur:
            now = time.time()
            cur.execute("UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?",
                        (now, outcome, run_id))
            audit.append(cur, now, "run-end", None, run_id, run_id, {"outcome": outcome})

    def ensure_hosts(self, names: list[str]) -> None:
        now = time.time()
        with self._tx() as cur:
            cur.executemany(
                "INSERT OR IGNORE INTO hosts (name, state, updated_at) VALUES (?, ?, ?)",
                [(n, HostState.PENDING.value, now) for n in names])

    @staticmethod
    def _record(row: sqlite3.Row | tuple[object, ...],
                parsed: dict[str, HostFacts] | None = None) -> HostRecord:
        """A row as a record; `parsed` shares one HostFacts among hosts with the same facts."""
        name, state, reason, strategy, wave, facts, updated, stopped, verified = row
        host_facts = None
        if facts:
            blob = str(facts)
            host_facts = parsed.get(blob) if parsed is not None else None
            if host_facts is None:
                host_facts = HostFacts.from_json(json.loads(blob))
                if parsed is not None:
                    parsed[blob] = host_facts
        return HostRecord(
            name=str(name), state=HostState(str(state)), reason=str(reason),
            strategy=None if strategy is None else str(strategy),
            wave=None if wave is None else int(str(wave)),
            facts=host_facts,
            updated_at=float(str(updated)),
            protection_stopped_at=None if stopped is None else float(str(stopped)),
            replacement_verified_at=None if verified is None else float(str(verified)),
        )

    _COLS = ("name, state, reason, strategy, wave, facts, updated_at, protection_stopped_at, "
             "replacement_verified_at")

    def get(self, name: str) -> HostRecord | None:
        row = self.db.execute(f"SELECT {self._COLS} FROM hosts WHERE name = ?",  # noqa: S608
                              (name,)).fetchone()
        return None if row is None else self._record(row)

    def all(self) -> list[HostRecord]:
        rows = self.db.execute(f"SELECT {self._COLS} FROM hosts ORDER BY name")  # noqa: S608
        parsed: dict[str, HostFacts] = {}
        return [self._record(r, parsed) for r in rows]

    def counts(self) -> dict[HostState, int]:
        """How many hosts are in each state (one indexed query, whatever the fleet's size)."""
        rows = self.db.execute("SELECT state, COUNT(*) FROM hosts GROUP BY state")
        return {HostState(str(s)): int(n) for s, n in rows}

    def in_states(self, states: Iterable[HostState], limit: int | None = None
                  ) -> list[HostRecord]:
        """Hosts in any of `states`, by name, at most `limit` of them."""
        wanted = [s.value for s in states]
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        sql = (f"SELECT {self._COLS} FROM hosts WHERE state IN ({marks}) "  # noqa: S608
               "ORDER BY name" + ("" if limit is None else f" LIMIT {int(limit)}"))
        parsed: dict[str, HostFacts] = {}
        return [self._record(r, parsed) for r in self.db.execute(sql, wanted)]

    def transition(
        self, name: str, to: HostState, reason: str, run_id: int | None, *,
        facts: HostFacts | None = None, strategy: str | None = None, wave: int | None = None,
        protection_stopped_at: float | None = None,
        replacement_verified_at: float | None = None,
    ) -> HostRecord:
        move = Move(name, to, reason, facts=facts, strategy=strategy, wave=wave,
                    protection_stopped_at=protection_stopped_at,
                    replacement_verified_at=replacement_verified_at)
        with self._tx() as cur:
            self._move(cur, move, run_id, time.time())
        record = self.get(name)
        assert record is not None  # noqa: S101 - just written in this process
        return record

    def apply(self, moves: Sequence[Move], run_id: int | None) -> None:
        """Several hosts' moves in one transaction: all committed, or none (read-only steps)."""
        with self._tx() as cur:
            now = time.time()
            for move in moves:
                self._move(cur, move, run_id, now)

    @staticmethod
    def _move(cur: sqlite3.Cursor, move: Move, run_id: int | None, now: float) -> None:
        name, to, reason = move.name, move.to, move.reason
        row = cur.execute("SELECT state FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StateError(f"host {name!r} is not in the state; run discover first")
        src = HostState(row[0])
        if src != to and not transition_allowed(src, to):
            raise StateError(f"{name}: refusing transition {src.value} -> {to.value}")
        sets = ["state = ?", "reason = ?", "updated_at = ?"]
        args: list[object] = [to.value, reason, now]
        if move.facts is not None:
            blob = json.dumps(move.facts.to_json(), sort_keys=True)
            sets += ["facts = ?", "facts_before = COALESCE(facts_before, ?)"]
            args += [blob, blob]
        for column in ("strategy", "wave", "protection_stopped_at", "replacement_verified_at"):
            value = getattr(move, column)
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        cur.execute(f"UPDATE hosts SET {', '.join(sets)} WHERE name = ?",  # noqa: S608
                    [*args, name])
        if src != to:
            cur.execute("INSERT INTO transitions (host, from_state, to_state, at, run_id, "
                        "reason) VALUES (?, ?, ?, ?, ?, ?)",
                        (name, src.value, to.value, now, run_id, reason))
            audit.append(cur, now, "transition", name, run_id, int(cur.lastrowid or 0),
                         audit.transition_detail(src.value, to.value, reason))

    def record_step(self, run_id: int, result: StepResult) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO step_results (run_id, host, step, outcome, message, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, result.host, result.step, result.outcome.value,
                         result.message[:2000], time.time()))

    def history(self, name: str | None = None) -> list[Transition]:
        sql = "SELECT host, from_state, to_state, at, run_id, reason FROM transitions"
        rows = (self.db.execute(sql + " WHERE host = ? ORDER BY id", (name,)) if name
                else self.db.execute(sql + " ORDER BY id"))
        return [Transition(host=r[0], from_state=HostState(r[1]), to_state=HostState(r[2]),
                           at=float(r[3]), run_id=r[4], reason=r[5]) for r in rows]

    def runs(self) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT id, started_at, finished_at, operator, command, "
                               "plan_digest, outcome FROM runs ORDER BY id")
        keys = ("id", "started_at", "finished_at", "operator", "command", "plan_digest",
                "outcome")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ---- one operator at a time ----------------------------------------------------------
    def _check_fence(self, cur: sqlite3.Cursor) -> None:
        """Inside a write transaction: refuse the write if this run no longer holds the lease."""
        if self.fence_epoch is None:
            return
        row = cur.execute("SELECT epoch FROM lease WHERE id = 1").fetchone()
        if row is None or int(row[0]) != self.fence_epoch:
            raise Fenced("this run lost its lease to another run; it stopped writing. "
                         "See `avmigrate status`")

    def lease(self) -> Lease | None:
        row = self.db.execute("SELECT holder_user, holder_host, holder_pid, since, expires, "
                              "epoch FROM lease WHERE id = 1").fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(LeaseHolder(str(row[0]), str(row[1]), int(row[2])), float(row[3]),
                     float(row[4]), int(row[5]))

    def acquire_lease(self, holder: LeaseHolder, ttl: float) -> int:
        """Take the lease or raise LeaseHeld naming its holder; returns the new epoch.

        A lease is taken over once it has expired, or at once when its holder ran on this
        machine and that process is gone (a killed run cannot renew it anyway).
        """
        now = time.time()
        with self._tx(fenced=False) as cur:
            row = cur.execute("SELECT holder_user, holder_host, holder_pid, since, expires, "
                              "epoch FROM lease WHERE id = 1").fetchone()
            user, host, pid, since, expires, epoch = row
            if user is not None and float(expires) > now:
                dead_here = host == socket.gethostname() and not pid_alive(int(pid))
                mine = host == holder.hostname and int(pid) == holder.pid
                if not (dead_here or mine):
                    started = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                            time.gmtime(float(since)))
                    raise LeaseHeld(
                        f"another run holds this state: {user} on {host}, pid {pid}, since "
                        f"{started} (lease expires in {float(expires) - now:.0f}s); wait for "
                        "it to finish or stop it")
            new_epoch = int(epoch) + 1
            cur.execute("UPDATE lease SET holder_user = ?, holder_host = ?, holder_pid = ?, "
                        "since = ?, expires = ?, epoch = ? WHERE id = 1",
                        (holder.user, holder.hostname, holder.pid, now, now + ttl, new_epoch))
            audit.append(cur, now, "lease", None, None, new_epoch,
                         {"user": holder.user, "host": holder.hostname, "pid": holder.pid,
                          "took_over": None if user is None else f"{user}@{host} pid {pid}"})
        self.fence_epoch = new_epoch
        return new_epoch

    def renew_lease(self, epoch: int, ttl: float) -> None:
        with self._tx(fenced=False) as cur:
            updated = cur.execute("UPDATE lease SET expires = ? WHERE id = 1 AND epoch = ?",
                                  (time.time() + ttl, epoch)).rowcount
            if updated != 1:
                raise Fenced("this run lost its lease to another run; it stopped writing")

    def release_lease(self, epoch: int) -> None:
        with self._tx(fenced=False) as cur:
            cur.execute("UPDATE lease SET holder_user = NULL, holder_host = NULL, "
                        "holder_pid = NULL, since = NULL, expires = NULL "
                        "WHERE id = 1 AND epoch = ?", (epoch,))
        self.fence_epoch = None

    # ---- approvals -------------------------------------------------------------------------
    def add_approval(self, plan_hash: str, wave: int, operator: str,
                     plan_path: str = "") -> None:
        with self._tx(fenced=False) as cur:
            now = time.time()
            cur.execute("INSERT INTO approvals (plan_hash, wave, operator, at, plan_path) "
                        "VALUES (?, ?, ?, ?, ?)", (plan_hash, wave, operator, now, plan_path))
            audit.append(cur, now, "approval", None, None, int(cur.lastrowid or 0),
                         {"plan": plan_hash, "wave": wave, "operator": operator})

    def approvals(self, plan_hash: str) -> dict[int, tuple[str, float]]:
        rows = self.db.execute("SELECT wave, operator, at FROM approvals WHERE plan_hash = ? "
                               "ORDER BY id", (plan_hash,))
        return {int(w): (str(o), float(a)) for w, o, a in rows}

    def all_approvals(self) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT plan_hash, wave, operator, at, plan_path FROM approvals "
                               "ORDER BY id")
        keys = ("plan", "wave", "operator", "at", "plan_path")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def facts_before(self) -> dict[str, HostFacts]:
        rows = self.db.execute("SELECT name, facts_before FROM hosts "
                               "WHERE facts_before IS NOT NULL")
        return {str(n): HostFacts.from_json(json.loads(str(f))) for n, f in rows}

    def audit_entries(self) -> list[audit.Entry]:
        return audit.entries(self.db)

    def audit_verify(self) -> audit.Verdict:
        return audit.verify(self.db)

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self) -> None:
        self.db.close()


def open_store(url: str) -> SqliteStore:
    """Open the state named by --state / AVMIGRATE_STATE (a SQLite file path for now)."""
    if url.startswith(("postgresql://", "postgres://")):
        raise StateError("PostgreSQL state is not available in this version; use a file path")
    return SqliteStore(Path(url))
