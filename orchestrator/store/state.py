"""The state store: every host's state and history, written through on every transition.

SQLite now (one file, WAL, one transaction per transition); the `StateStore` protocol is what
the rest of the code uses, so a PostgreSQL store can stand behind the same interface later.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.core import procs
from orchestrator.core.errors import ExitCode, StateError
from orchestrator.core.models import (
    SLOT_STATES,
    STEP_STARTS,
    HostFacts,
    HostRecord,
    HostState,
    StepResult,
    StepSpan,
    Transition,
    new_record,
    transition_allowed,
)
from orchestrator.core.protection import budget_problem, resolve_budget
from orchestrator.store import audit
from orchestrator.store.sqltypes import Cursor, Db


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
        replacement_verified_at: float | None = None, proof: str | None = None,
    ) -> HostRecord: ...
    def apply(self, moves: Sequence[Move], run_id: int | None) -> None: ...
    @property
    def run_budget(self) -> str: ...
    @run_budget.setter
    def run_budget(self, spec: str) -> None: ...
    def budget(self) -> Budget: ...
    def set_fleet_budget(self, spec: str, operator: str) -> None: ...
    def slot_holders(self) -> list[HostRecord]: ...
    def held_by_live_runs(self, names: Sequence[str]) -> set[str]: ...
    def record_step(self, run_id: int, result: StepResult) -> None: ...
    def history(self, name: str | None = None) -> list[Transition]: ...
    def step_spans(self) -> list[StepSpan]: ...
    def runs(self) -> list[dict[str, object]]: ...
    def acquire_lease(self, holder: LeaseHolder, ttl: float,
                      hosts: Sequence[str] | None = None) -> int: ...
    @property
    def claimed(self) -> frozenset[str] | None: ...
    @property
    def held_elsewhere(self) -> dict[str, str]: ...
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
    # The evidence of protection the move rests on ("kesl.service running", "clamav verified:
    # ..."): required to leave a slot of the budget; "" records that a probe found none;
    # None keeps what was recorded before.
    proof: str | None = None


@dataclass(frozen=True)
class LeaseHolder:
    """Who wants to run: enough to name them to a second operator, and for a later run on
    the same machine (same kernel boot and PID namespace) to tell whether they died."""

    user: str
    hostname: str
    pid: int
    # procs.machine_identity() of where it runs ("": unknown, judged by its lease's expiry)
    machine: str = ""
    started: int = 0  # the process's start time (clock ticks), against pid reuse

    @classmethod
    def here(cls, user: str) -> LeaseHolder:
        pid = os.getpid()
        return cls(user, socket.gethostname(), pid, procs.machine_identity(),
                   procs.start_ticks(pid))


@dataclass(frozen=True)
class Budget:
    """The fleet's protection budget as the state holds it, and how many slots are held."""

    fleet_spec: str | None  # set for the whole state (`avmigrate budget --set`), or None
    run_spec: str  # what this connection's run asked for
    limit: int  # the smaller of the two, for the fleet's size now
    held: int
    fleet_size: int
    set_by: str | None = None


@dataclass(frozen=True)
class Lease:
    """The one-operator lease on a state; the epoch fences a holder that lost it."""

    holder: LeaseHolder
    since: float
    expires: float
    epoch: int


class LeaseHeld(StateError):
    """Another run holds the state."""

    exit_code = ExitCode.LEASE


class Fenced(StateError):
    """This run lost its lease (it expired and another run took it); it must stop writing."""

    exit_code = ExitCode.LEASE


class LeaseLost(StateError):
    """This run's lease could not be kept: it stopped before another run could take its
    hosts."""

    exit_code = ExitCode.LEASE


class BudgetFull(StateError):
    """Every slot of the protection budget is held: no host's protection may be stopped now."""

    exit_code = ExitCode.HOSTS_LEFT

    def __init__(self, message: str, held: list[str]) -> None:
        super().__init__(message)
        self.held = held


class ProofRequired(StateError):
    """A host whose protection is unproven may leave its budget slot only with evidence."""


# States that say the replacement was verified: entered only with that evidence.
PROVEN = frozenset({HostState.VERIFIED, HostState.MIGRATED, HostState.REMOVE_FAILED})

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
    ("0005_operators_and_claims", """
        CREATE TABLE operators (
            epoch INTEGER PRIMARY KEY,
            holder_user TEXT NOT NULL,
            holder_host TEXT NOT NULL,
            holder_pid INTEGER NOT NULL,
            since REAL NOT NULL,
            expires REAL NOT NULL,
            released REAL,
            whole INTEGER NOT NULL
        );
        CREATE TABLE claims (
            host TEXT PRIMARY KEY,
            operator INTEGER NOT NULL REFERENCES operators(epoch),
            at REAL NOT NULL
        );
        CREATE INDEX claims_by_operator ON claims(operator);
    """),
    ("0006_free_space_apart", """
        ALTER TABLE hosts ADD COLUMN free_mb TEXT;
    """),
    ("0007_evidence_budget_machines", """
        ALTER TABLE hosts ADD COLUMN protected_by TEXT;
        ALTER TABLE hosts ADD COLUMN protected_at REAL;
        ALTER TABLE operators ADD COLUMN holder_machine TEXT;
        ALTER TABLE operators ADD COLUMN holder_started INTEGER;
        CREATE TABLE fleet (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            budget TEXT,
            budget_set_by TEXT,
            budget_set_at REAL
        );
        INSERT INTO fleet (id) VALUES (1);
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


# Compact JSON; keys in the order to_json() gives them, the same for every host.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


_STATES = {s.value: s for s in HostState}


class SqlStore:
    """The StateStore on a SQL database; subclasses give the connection and the dialect.

    Every write is one transaction that first takes the database's writer lock (SQLite's
    BEGIN IMMEDIATE, a PostgreSQL advisory lock), so the audit chain and the claims are
    written by one operator at a time however many run at once.
    """

    migrations: list[tuple[str, str]] = MIGRATIONS
    label = "state"

    def __init__(self, db: Db) -> None:
        self.db = db
        self.fence_epoch: int | None = None
        self._claimed: frozenset[str] | None = None
        self._held_elsewhere: dict[str, str] = {}
        # The budget this connection's run asks for (count or share); the fleet's own, if
        # set, also applies: the smaller wins.
        self._run_budget = "1"
        # Whether a lease holder on this machine still runs (tests give a simulated one).
        self.alive: Callable[[int, int], bool] = procs.alive

    @property
    def run_budget(self) -> str:
        return self._run_budget

    @run_budget.setter
    def run_budget(self, spec: str) -> None:
        problem = budget_problem(spec)
        if problem is not None:
            raise StateError(f"protection budget {spec!r}: {problem}")
        self._run_budget = str(spec).strip()

    # ---- dialect ---------------------------------------------------------------------------
    def _now(self, cur: Cursor) -> float:
        """The database's clock: one clock for every operator, whatever their machines say."""
        return float(cur.execute(
            "SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()[0])

    def _begin(self, cur: Cursor) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _apply_migration(self, cur: Cursor, sql: str) -> None:
        for statement in _statements(sql):
            cur.execute(statement)

    # ---- schema ----------------------------------------------------------------------------
    def _has_migrations_table(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'schema_migrations'").fetchone() is not None

    def _migrate(self) -> None:
        """Apply what is missing. A state already current is only read (no write lock), so
        `status` and reports never wait for a running operator's transaction."""
        if not self._has_migrations_table():
            with self._tx(fenced=False) as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                            "(name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in self.db.execute("SELECT name FROM schema_migrations").fetchall()}
        known = {name for name, _ in self.migrations}
        unknown = done - known
        if unknown:
            raise StateError(f"{self.label} was written by a newer avmigrate "
                             f"(migrations {sorted(unknown)}); upgrade avmigrate")
        for name, sql in self.migrations:
            if name in done:
                continue
            with self._tx(fenced=False) as cur:
                if cur.execute("SELECT 1 FROM schema_migrations WHERE name = ?",
                               (name,)).fetchone():
                    continue  # another process applied it while we waited for the lock
                self._apply_migration(cur, sql)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
                if name == "0003_audit_and_evidence":
                    audit.genesis(cur)

    @contextmanager
    def _tx(self, fenced: bool = True) -> Iterator[Cursor]:
        cur = self.db.cursor()
        self._begin(cur)
        try:
            if fenced:
                self._check_fence(cur)
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    # ---- runs and hosts --------------------------------------------------------------------
    def begin_run(self, command: str, operator: str, plan_digest: str | None) -> int:
        with self._tx() as cur:
            now = self._now(cur)
            run_id = int(cur.execute(
                "INSERT INTO runs (started_at, operator, command, plan_digest) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (now, operator, command, plan_digest)).fetchone()[0])
            audit.append(cur, now, "run-start", None, run_id, run_id,
                         {"operator": operator, "command": command, "plan": plan_digest})
            return run_id

    def finish_run(self, run_id: int, outcome: str) -> None:
        with self._tx() as cur:
            now = self._now(cur)
            cur.execute("UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?",
                        (now, outcome, run_id))
            audit.append(cur, now, "run-end", None, run_id, run_id, {"outcome": outcome})

    def ensure_hosts(self, names: list[str]) -> None:
        with self._tx() as cur:
            now = self._now(cur)
            cur.executemany(
                "INSERT INTO hosts (name, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                [(n, HostState.PENDING.value, now) for n in names])

    @staticmethod
    def _record(row: Sequence[Any], parsed: dict[str, HostFacts] | None = None) -> HostRecord:
        """A row as a record; `parsed` shares one HostFacts among hosts with the same facts."""
        (name, state, reason, strategy, wave, facts, updated, stopped, verified, free, by,
         at) = row
        host_facts = None
        if facts:
            blob = str(facts)
            host_facts = parsed.get(blob) if parsed is not None else None
            if host_facts is None:
                host_facts = HostFacts.from_json(json.loads(blob))
                if parsed is not None:
                    parsed[blob] = host_facts
            if free:
                # Written by this store from a dict[str, int]: json gives it back as it was.
                host_facts = host_facts.with_free_mb(json.loads(str(free)))
        return new_record(
            str(name), _STATES[state], str(reason),
            None if strategy is None else str(strategy),
            None if wave is None else int(wave),
            host_facts, float(updated),
            None if stopped is None else float(stopped),
            None if verified is None else float(verified),
            None if by is None else str(by), None if at is None else float(at),
        )

    _COLS = ("name, state, reason, strategy, wave, facts, updated_at, protection_stopped_at, "
             "replacement_verified_at, free_mb, protected_by, protected_at")

    def get(self, name: str) -> HostRecord | None:
        row = self.db.execute(f"SELECT {self._COLS} FROM hosts WHERE name = ?",  # noqa: S608
                              (name,)).fetchone()
        return None if row is None else self._record(row)

    def all(self) -> list[HostRecord]:
        rows = self.db.execute(f"SELECT {self._COLS} FROM hosts ORDER BY name")  # noqa: S608
        parsed: dict[str, HostFacts] = {}
        gc_was = gc.isenabled()
        gc.disable()  # many acyclic records at once: see inventory.bulk
        try:
            return [self._record(r, parsed) for r in rows]
        finally:
            if gc_was:
                gc.enable()

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
        replacement_verified_at: float | None = None, proof: str | None = None,
    ) -> HostRecord:
        move = Move(name, to, reason, facts=facts, strategy=strategy, wave=wave,
                    protection_stopped_at=protection_stopped_at,
                    replacement_verified_at=replacement_verified_at, proof=proof)
        with self._tx() as cur:
            self._move(cur, move, run_id, self._now(cur))
        record = self.get(name)
        assert record is not None  # noqa: S101 - just written in this process
        return record

    def apply(self, moves: Sequence[Move], run_id: int | None) -> None:
        """Several hosts' moves in one transaction: all committed, or none (read-only steps)."""
        with self._tx() as cur:
            now = self._now(cur)
            for move in moves:
                self._move(cur, move, run_id, now)

    def _move(self, cur: Cursor, move: Move, run_id: int | None, now: float) -> None:
        name, to, reason = move.name, move.to, move.reason
        self._check_claim(cur, name)
        row = cur.execute("SELECT state FROM hosts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StateError(f"host {name!r} is not in the state; run discover first")
        src = HostState(row[0])
        if src != to and not transition_allowed(src, to):
            raise StateError(f"{name}: refusing transition {src.value} -> {to.value}")
        if (to in PROVEN and move.proof == "") or (src != to and not move.proof and (
                (src.holds_slot and not to.holds_slot) or to in PROVEN)):
            raise ProofRequired(f"{name}: refusing {src.value} -> {to.value} without evidence "
                                "of protection (a protecting product running or the "
                                "replacement verified)")
        if to == HostState.REMOVING and not src.holds_slot:
            self._take_slot(cur, name)
        sets = ["state = ?", "reason = ?", "updated_at = ?"]
        args: list[object] = [to.value, reason, now]
        if move.facts is not None:
            # Free space apart: it differs on every host, the rest is shared by thousands, so
            # reading a large state parses each distinct rest once.
            full = move.facts.to_json()
            free = full.pop("free_mb")
            blob = _dumps(full)
            sets += ["facts = ?", "free_mb = ?", "facts_before = COALESCE(facts_before, ?)"]
            args += [blob, _dumps(free), blob]
        for column in ("strategy", "wave", "protection_stopped_at", "replacement_verified_at"):
            value = getattr(move, column)
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if to.holds_slot:  # its protection is in doubt from this commit on
            sets += ["protected_by = NULL", "protected_at = NULL"]
        elif move.proof is not None:
            sets += ["protected_by = ?", "protected_at = ?"]
            args += [move.proof or None, now if move.proof else None]
        cur.execute(f"UPDATE hosts SET {', '.join(sets)} WHERE name = ?",  # noqa: S608
                    [*args, name])
        if src != to:
            tid = int(cur.execute(
                "INSERT INTO transitions (host, from_state, to_state, at, run_id, reason) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (name, src.value, to.value, now, run_id, reason)).fetchone()[0])
            audit.append(cur, now, "transition", name, run_id, tid,
                         audit.transition_detail(src.value, to.value, reason))

    # ---- the fleet's protection budget -------------------------------------------------------
    _SLOTS = ", ".join(f"'{s.value}'" for s in sorted(SLOT_STATES))

    def _budget(self, cur: Cursor) -> Budget:
        fleet_spec, set_by = cur.execute(
            "SELECT budget, budget_set_by FROM fleet WHERE id = 1").fetchone()
        size = int(cur.execute("SELECT COUNT(*) FROM hosts").fetchone()[0])
        held = int(cur.execute(f"SELECT COUNT(*) FROM hosts WHERE state IN "  # noqa: S608
                               f"({self._SLOTS})").fetchone()[0])
        limit = resolve_budget(self._run_budget, size)
        if fleet_spec is not None:
            limit = min(limit, resolve_budget(str(fleet_spec), size))
        return Budget(None if fleet_spec is None else str(fleet_spec), self._run_budget,
                      limit, held, size, None if set_by is None else str(set_by))

    def _take_slot(self, cur: Cursor, name: str) -> None:
        """Inside the transaction that commits `name`'s removal intent: refuse it when every
        slot of the budget is held, by any operator (the writer lock orders all of them)."""
        budget = self._budget(cur)
        if budget.held >= budget.limit:
            holders = [str(r[0]) for r in cur.execute(
                f"SELECT name FROM hosts WHERE state IN ({self._SLOTS}) "  # noqa: S608
                "ORDER BY name LIMIT 20")]
            raise BudgetFull(f"the protection budget ({budget.limit} host(s) at once) is held "
                             f"by {', '.join(holders)}; {name} waits", holders)

    def budget(self) -> Budget:
        """The fleet's budget, this run's, and how many slots are held now."""
        cur = self.db.cursor()
        return self._budget(cur)

    def set_fleet_budget(self, spec: str, operator: str) -> None:
        """Set the budget every run on this state keeps to (audited)."""
        problem = budget_problem(spec)
        if problem is not None:
            raise StateError(f"protection budget {spec!r}: {problem}")
        with self._tx(fenced=False) as cur:
            now = self._now(cur)
            old = cur.execute("SELECT budget FROM fleet WHERE id = 1").fetchone()[0]
            cur.execute("UPDATE fleet SET budget = ?, budget_set_by = ?, budget_set_at = ? "
                        "WHERE id = 1", (str(spec).strip(), operator, now))
            audit.append(cur, now, "budget", None, None, None,
                         {"from": old, "to": str(spec).strip(), "operator": operator})

    def slot_holders(self) -> list[HostRecord]:
        """Hosts whose protection is unproven now: they hold the budget's slots."""
        return self.in_states(SLOT_STATES)

    def held_by_live_runs(self, names: Sequence[str]) -> set[str]:
        """Those of `names` that a live run holds now (its lease not released or expired)."""
        cur = self.db.cursor()
        now = self._now(cur)
        whole = cur.execute("SELECT 1 FROM operators WHERE released IS NULL AND expires > ? "
                            "AND whole = 1", (now,)).fetchone()
        if whole is not None:
            return set(names)
        wanted = set(names)
        return {str(h) for (h,) in cur.execute(
            "SELECT c.host FROM claims c JOIN operators o ON o.epoch = c.operator "
            "WHERE o.released IS NULL AND o.expires > ?", (now,)).fetchall() if h in wanted}

    def record_step(self, run_id: int, result: StepResult) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO step_results (run_id, host, step, outcome, message, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, result.host, result.step, result.outcome.value,
                         result.message[:2000], self._now(cur)))

    def history(self, name: str | None = None) -> list[Transition]:
        sql = "SELECT host, from_state, to_state, at, run_id, reason FROM transitions"
        rows = (self.db.execute(sql + " WHERE host = ? ORDER BY id", (name,)) if name
                else self.db.execute(sql + " ORDER BY id"))
        return [Transition(host=r[0], from_state=HostState(r[1]), to_state=HostState(r[2]),
                           at=float(r[3]), run_id=r[4], reason=r[5]) for r in rows]

    def step_spans(self) -> list[StepSpan]:
        """Every step a host entered and what followed it, for the planner's estimates: one
        query over the transitions (half a million after a large migration), not a Python
        object per transition."""
        starts = ", ".join(f"'{s}'" for s in STEP_STARTS)
        rows = self.db.execute(
            "SELECT a_to, a_from, b_to, b_at - a_at, c_to, c_at - a_at FROM ("  # noqa: S608 - fixed state names
            " SELECT from_state AS a_from, to_state AS a_to, at AS a_at,"
            "  LEAD(to_state) OVER w AS b_to, LEAD(at) OVER w AS b_at,"
            "  LEAD(to_state, 2) OVER w AS c_to, LEAD(at, 2) OVER w AS c_at"
            " FROM transitions WINDOW w AS (PARTITION BY host ORDER BY id)) AS steps"
            f" WHERE a_to IN ({starts}) ORDER BY a_at")
        return [(str(a), str(f), None if b is None else str(b),
                 None if d is None else float(d), None if c is None else str(c),
                 None if e is None else float(e)) for a, f, b, d, c, e in rows]

    def runs(self) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT id, started_at, finished_at, operator, command, "
                               "plan_digest, outcome FROM runs ORDER BY id")
        keys = ("id", "started_at", "finished_at", "operator", "command", "plan_digest",
                "outcome")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ---- operators: leases on the whole state or on hosts, with fencing -------------------
    @property
    def claimed(self) -> frozenset[str] | None:
        """Hosts this store's lease holds; None: the whole state (or no lease)."""
        return self._claimed

    @property
    def held_elsewhere(self) -> dict[str, str]:
        """Hosts asked for but held by another live operator, with who holds them."""
        return dict(self._held_elsewhere)

    def _check_fence(self, cur: Cursor) -> None:
        """Inside a write transaction: refuse the write if this run no longer holds its lease."""
        if self.fence_epoch is None:
            return
        row = cur.execute("SELECT released FROM operators WHERE epoch = ?",
                          (self.fence_epoch,)).fetchone()
        if row is None or row[0] is not None:
            raise Fenced("this run lost its lease to another run; it stopped writing. "
                         "See `avmigrate status`")

    def _check_claim(self, cur: Cursor, host: str) -> None:
        """A fenced run writes only hosts it claimed (a whole-state lease claims them all)."""
        if self.fence_epoch is None or self._claimed is None:
            return
        row = cur.execute("SELECT operator FROM claims WHERE host = ?", (host,)).fetchone()
        if row is None or int(row[0]) != self.fence_epoch:
            raise Fenced(f"host {host} is not claimed by this run; it was not written")

    @staticmethod
    def _describe(user: str, host: str, pid: int, since: float, expires: float,
                  now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
        return (f"{user} on {host}, pid {pid}, since {started} (lease expires in "
                f"{expires - now:.0f}s)")

    def _live_operators(self, cur: Cursor, holder: LeaseHolder, now: float
                        ) -> dict[int, tuple[str, bool]]:
        """Other operators still holding leases: epoch -> (description, whole state).

        A lease is ended here once it has expired by the database's clock, or at once when
        its holder ran where we can see its pid (same kernel boot and PID namespace) and that
        process is gone (a killed run cannot renew it anyway). A host name proves nothing:
        two containers may share one.
        """
        live: dict[int, tuple[str, bool]] = {}
        here = procs.machine_identity()
        for epoch, user, host, pid, since, expires, whole, machine, started in cur.execute(
                "SELECT epoch, holder_user, holder_host, holder_pid, since, expires, whole, "
                "holder_machine, holder_started FROM operators WHERE released IS NULL "
                "ORDER BY epoch").fetchall():
            mine = bool(machine) and machine == holder.machine and int(pid) == holder.pid
            dead_here = (machine is not None and machine == here
                         and not self.alive(int(pid), int(started or 0)))
            if mine or dead_here or float(expires) <= now:
                cur.execute("UPDATE operators SET released = ? WHERE epoch = ?", (now, epoch))
                cur.execute("DELETE FROM claims WHERE operator = ?", (epoch,))
                continue
            live[int(epoch)] = (self._describe(str(user), str(host), int(pid), float(since),
                                               float(expires), now), bool(whole))
        return live

    def lease(self) -> Lease | None:
        """The newest live lease, if any."""
        row = self.db.execute("SELECT holder_user, holder_host, holder_pid, since, expires, "
                              "epoch FROM operators WHERE released IS NULL "
                              "ORDER BY epoch DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Lease(LeaseHolder(str(row[0]), str(row[1]), int(row[2])), float(row[3]),
                     float(row[4]), int(row[5]))

    def acquire_lease(self, holder: LeaseHolder, ttl: float,
                      hosts: Sequence[str] | None = None) -> int:
        """Take a lease on the whole state (hosts=None) or on those of `hosts` no other live
        operator holds; raise LeaseHeld naming the holder when nothing can be taken.
        Returns the lease's epoch; `claimed` and `held_elsewhere` say what was taken."""
        held: dict[str, str] = {}
        with self._tx(fenced=False) as cur:
            now = self._now(cur)
            live = self._live_operators(cur, holder, now)
            whole = [d for d, w in live.values() if w]
            if whole or (hosts is None and live):
                first = (whole or [d for d, _ in live.values()])[0]
                raise LeaseHeld(f"another run holds this state: {first}; wait for it to "
                                "finish or stop it")
            if hosts is not None:
                taken = {str(h): int(op) for h, op in cur.execute(
                    "SELECT host, operator FROM claims").fetchall() if int(op) in live}
                held = {h: live[taken[h]][0] for h in hosts if h in taken}
                if hosts and len(held) == len(set(hosts)):
                    raise LeaseHeld(f"another run holds these hosts: "
                                    f"{next(iter(held.values()))}; wait for it to finish or "
                                    "stop it")
            epoch = int(cur.execute("UPDATE lease SET epoch = epoch + 1, holder_user = ?, "
                                    "holder_host = ?, holder_pid = ?, since = ?, expires = ? "
                                    "WHERE id = 1 RETURNING epoch",
                                    (holder.user, holder.hostname, holder.pid, now,
                                     now + ttl)).fetchone()[0])
            cur.execute("INSERT INTO operators (epoch, holder_user, holder_host, holder_pid, "
                        "since, expires, whole, holder_machine, holder_started) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (epoch, holder.user, holder.hostname, holder.pid, now, now + ttl,
                         int(hosts is None), holder.machine or None, holder.started))
            claimed = None
            if hosts is not None:
                claimed = frozenset(h for h in hosts if h not in held)
                cur.executemany("INSERT INTO claims (host, operator, at) VALUES (?, ?, ?) "
                                "ON CONFLICT (host) DO UPDATE SET operator = excluded.operator, "
                                "at = excluded.at", [(h, epoch, now) for h in sorted(claimed)])
            audit.append(cur, now, "lease", None, None, epoch,
                         {"user": holder.user, "host": holder.hostname, "pid": holder.pid,
                          "hosts": "all" if claimed is None else len(claimed)})
        self.fence_epoch = epoch
        self._claimed = claimed
        self._held_elsewhere = held
        return epoch

    def renew_lease(self, epoch: int, ttl: float) -> None:
        with self._tx(fenced=False) as cur:
            updated = cur.execute("UPDATE operators SET expires = ? WHERE epoch = ? "
                                  "AND released IS NULL", (self._now(cur) + ttl, epoch)
                                  ).rowcount
            if updated != 1:
                raise Fenced("this run lost its lease to another run; it stopped writing")

    def release_lease(self, epoch: int) -> None:
        with self._tx(fenced=False) as cur:
            cur.execute("UPDATE operators SET released = ? WHERE epoch = ? AND released IS NULL",
                        (self._now(cur), epoch))
            cur.execute("DELETE FROM claims WHERE operator = ?", (epoch,))
        self.fence_epoch = None
        self._claimed = None
        self._held_elsewhere = {}

    # ---- approvals -------------------------------------------------------------------------
    def add_approval(self, plan_hash: str, wave: int, operator: str,
                     plan_path: str = "") -> None:
        with self._tx(fenced=False) as cur:
            now = self._now(cur)
            aid = int(cur.execute(
                "INSERT INTO approvals (plan_hash, wave, operator, at, plan_path) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (plan_hash, wave, operator, now, plan_path)).fetchone()[0])
            audit.append(cur, now, "approval", None, None, aid,
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

    def close(self) -> None:
        self.db.close()


class SqliteStore(SqlStore):
    """StateStore on one SQLite file (WAL, synchronous=FULL: a commit is on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = f"state file {path}"
        if path.exists() and not path.is_file():
            raise StateError(f"state path {path} is not a file; pass --state FILE")
        if not path.parent.exists():
            raise StateError(f"directory {path.parent} of state file {path} does not exist")
        try:
            db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
            super().__init__(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {path} is not a usable SQLite database ({exc}); "
                             "pass another --state or move it aside") from exc

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


def open_store(url: str) -> SqlStore:
    """Open the state named by --state / AVMIGRATE_STATE: a SQLite file, or postgresql://."""
    if url.startswith(("postgresql://", "postgres://")):
        from orchestrator.store.postgres import PostgresStore  # noqa: PLC0415 - only when asked for
        return PostgresStore(url)
    return SqliteStore(Path(url))
