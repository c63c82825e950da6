"""Hosts and their transitions: each host's state, the moves between states, their history.

A move is checked and written in the caller's transaction: the host claimed by this run, the
transition allowed, evidence for leaving a budget slot, a free slot for a removal intent.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.core.errors import StateError
from orchestrator.core.models import (
    SLOT_STATES,
    STEP_STARTS,
    HostFacts,
    HostRecord,
    HostState,
    StepSpan,
    Transition,
    new_record,
    transition_allowed,
)
from orchestrator.store import audit
from orchestrator.store.budget import Budgets
from orchestrator.store.errors import ProofRequired
from orchestrator.store.operators import Fence
from orchestrator.store.records import PROVEN, Move
from orchestrator.store.sqltypes import Cursor

# Compact JSON; keys in the order to_json() gives them, the same for every host.
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_STATES = {s.value: s for s in HostState}

_COLS = ("name, state, reason, strategy, wave, facts, updated_at, protection_stopped_at, "
         "replacement_verified_at, free_mb, protected_by, protected_at, replacement")


def _record(row: Sequence[Any], parsed: dict[str, HostFacts] | None = None) -> HostRecord:
    """A row as a record; `parsed` shares one HostFacts among hosts with the same facts."""
    (name, state, reason, strategy, wave, facts, updated, stopped, verified, free, by,
     at, replacement) = row
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
        None if replacement is None else str(replacement),
    )


def _assignments(move: Move, now: float) -> tuple[list[str], list[object]]:
    """The SET clauses (and their values) that record `move` on its host's row."""
    sets = ["state = ?", "reason = ?", "updated_at = ?"]
    args: list[object] = [move.to.value, move.reason, now]
    if move.facts is not None:
        # Free space apart: it differs on every host, the rest is shared by thousands, so
        # reading a large state parses each distinct rest once.
        full = move.facts.to_json()
        free = full.pop("free_mb")
        blob = _dumps(full)
        sets += ["facts = ?", "free_mb = ?", "facts_before = COALESCE(facts_before, ?)"]
        args += [blob, _dumps(free), blob]
    for column in ("strategy", "wave", "protection_stopped_at", "replacement_verified_at",
                   "replacement"):
        value = getattr(move, column)
        if value is not None:
            sets.append(f"{column} = ?")
            args.append(value)
    if move.to.holds_slot:  # its protection is in doubt from this commit on
        sets += ["protected_by = NULL", "protected_at = NULL"]
    elif move.proof is not None:
        sets += ["protected_by = ?", "protected_at = ?"]
        args += [move.proof or None, now if move.proof else None]
    return sets, args


class Hosts:
    """The hosts table and the transitions that moved them."""

    def __init__(self, fence: Fence, budgets: Budgets) -> None:
        self.fence = fence  # a run writes only hosts it claimed, while it holds its lease
        self.budgets = budgets  # a removal intent takes a slot of the budget
        self.database = fence.database

    def ensure(self, names: list[str]) -> None:
        with self.fence.tx() as cur:
            now = self.database.now(cur)
            cur.executemany(
                "INSERT INTO hosts (name, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                [(n, HostState.PENDING.value, now) for n in names])

    def get(self, name: str) -> HostRecord | None:
        row = self.database.db.execute(f"SELECT {_COLS} FROM hosts WHERE name = ?",  # noqa: S608
                                       (name,)).fetchone()
        return None if row is None else _record(row)

    def all(self) -> list[HostRecord]:
        rows = self.database.db.execute(f"SELECT {_COLS} FROM hosts ORDER BY name")  # noqa: S608
        parsed: dict[str, HostFacts] = {}
        gc_was = gc.isenabled()
        gc.disable()  # many acyclic records at once: see inventory.bulk
        try:
            return [_record(r, parsed) for r in rows]
        finally:
            if gc_was:
                gc.enable()

    def counts(self) -> dict[HostState, int]:
        """How many hosts are in each state (one indexed query, whatever the fleet's size)."""
        rows = self.database.db.execute("SELECT state, COUNT(*) FROM hosts GROUP BY state")
        return {HostState(str(s)): int(n) for s, n in rows}

    def in_states(self, states: Iterable[HostState], limit: int | None = None
                  ) -> list[HostRecord]:
        """Hosts in any of `states`, by name, at most `limit` of them."""
        wanted = [s.value for s in states]
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        sql = (f"SELECT {_COLS} FROM hosts WHERE state IN ({marks}) "  # noqa: S608
               "ORDER BY name" + ("" if limit is None else f" LIMIT {int(limit)}"))
        parsed: dict[str, HostFacts] = {}
        return [_record(r, parsed) for r in self.database.db.execute(sql, wanted)]

    def slot_holders(self) -> list[HostRecord]:
        """Hosts whose protection is unproven now: they hold the budget's slots."""
        return self.in_states(SLOT_STATES)

    def transition(self, move: Move, run_id: int | None) -> HostRecord:
        with self.fence.tx() as cur:
            self._move(cur, move, run_id, self.database.now(cur))
        record = self.get(move.name)
        assert record is not None  # noqa: S101 - just written in this process
        return record

    def apply(self, moves: Sequence[Move], run_id: int | None) -> None:
        """Several hosts' moves in one transaction: all committed, or none (read-only steps)."""
        with self.fence.tx() as cur:
            now = self.database.now(cur)
            for move in moves:
                self._move(cur, move, run_id, now)

    def _source(self, cur: Cursor, move: Move) -> HostState:
        """The state `move` leaves, once it is known the move may be written."""
        name, to = move.name, move.to
        self.fence.check_claim(cur, name)
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
            self.budgets.take_slot(cur, name)
        return src

    def _move(self, cur: Cursor, move: Move, run_id: int | None, now: float) -> None:
        src = self._source(cur, move)
        sets, args = _assignments(move, now)
        cur.execute(f"UPDATE hosts SET {', '.join(sets)} WHERE name = ?",  # noqa: S608
                    [*args, move.name])
        if src != move.to:
            tid = int(cur.execute(
                "INSERT INTO transitions (host, from_state, to_state, at, run_id, reason) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (move.name, src.value, move.to.value, now, run_id, move.reason)).fetchone()[0])
            audit.append(cur, now, "transition", move.name, run_id, tid,
                         audit.transition_detail(src.value, move.to.value, move.reason))

    def facts_before(self) -> dict[str, HostFacts]:
        rows = self.database.db.execute("SELECT name, facts_before FROM hosts "
                                        "WHERE facts_before IS NOT NULL")
        return {str(n): HostFacts.from_json(json.loads(str(f))) for n, f in rows}

    def history(self, name: str | None = None) -> list[Transition]:
        sql = "SELECT host, from_state, to_state, at, run_id, reason FROM transitions"
        db = self.database.db
        rows = (db.execute(sql + " WHERE host = ? ORDER BY id", (name,)) if name
                else db.execute(sql + " ORDER BY id"))
        return [Transition(host=r[0], from_state=HostState(r[1]), to_state=HostState(r[2]),
                           at=float(r[3]), run_id=r[4], reason=r[5]) for r in rows]

    def step_spans(self) -> list[StepSpan]:
        """Every step a host entered and what followed it, for the planner's estimates: one
        query over the transitions (half a million after a large migration), not a Python
        object per transition."""
        starts = ", ".join(f"'{s}'" for s in STEP_STARTS)
        rows = self.database.db.execute(
            "SELECT a_to, a_from, b_to, b_at - a_at, c_to, c_at - a_at FROM ("  # noqa: S608 - fixed state names
            " SELECT from_state AS a_from, to_state AS a_to, at AS a_at,"
            "  LEAD(to_state) OVER w AS b_to, LEAD(at) OVER w AS b_at,"
            "  LEAD(to_state, 2) OVER w AS c_to, LEAD(at, 2) OVER w AS c_at"
            " FROM transitions WINDOW w AS (PARTITION BY host ORDER BY id)) AS steps"
            f" WHERE a_to IN ({starts}) ORDER BY a_at")
        return [(str(a), str(f), None if b is None else str(b),
                 None if d is None else float(d), None if c is None else str(c),
                 None if e is None else float(e)) for a, f, b, d, c, e in rows]
