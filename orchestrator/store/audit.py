"""The audit log: append-only and hash-chained, written in the same transaction as what it records.

Each entry's hash covers its content and the previous entry's hash, so altering an entry breaks
its own hash, and removing or reordering entries breaks the chain. Every entry also stands for a
row elsewhere (a run, a transition, an approval, a lease epoch): `verify` checks both ways, so
removing the last entry, or changing a transition without its entry, is found too; and every
host's current state must be where its last transition led. Triggers
refuse UPDATE and DELETE on the table; the chain is what catches someone who drops them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from orchestrator.store.sqltypes import Cursor, Db

GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    """One audit log entry."""

    seq: int
    at: float
    kind: str
    host: str | None
    run_id: int | None
    ref: int | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verdict:
    """What `audit verify` found."""

    entries: int
    head: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def entry_hash(seq: int, at: float, kind: str, host: str | None, run_id: int | None,  # noqa: PLR0913, PLR0917 - an entry's columns, in order
               ref: int | None, detail: str, prev_hash: str) -> str:
    blob = json.dumps([seq, repr(at), kind, host, run_id, ref, detail, prev_hash])
    return hashlib.sha256(blob.encode()).hexdigest()


def transition_detail(src: str, dst: str, reason: str) -> dict[str, Any]:
    return {"from": src, "to": dst, "reason": reason}


def append(cur: Cursor, at: float, kind: str, host: str | None, run_id: int | None,  # noqa: PLR0913, PLR0917 - an entry's columns, in order
           ref: int | None, detail: dict[str, Any]) -> None:
    """Add an entry inside the caller's transaction (BEGIN IMMEDIATE: no concurrent writer)."""
    row = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, str(row[1]))
    text = json.dumps(detail, sort_keys=True)
    digest = entry_hash(seq, at, kind, host, run_id, ref, text, prev)
    cur.execute("INSERT INTO audit (seq, at, kind, host, run_id, ref, detail, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, at, kind, host, run_id, ref, text, prev, digest))


def genesis(cur: Cursor) -> None:
    """First entry: what existed before the log began, so `verify` knows where to start."""
    def top(sql: str) -> int:
        return int(cur.execute(sql).fetchone()[0] or 0)

    import time  # noqa: PLC0415

    append(cur, time.time(), "genesis", None, None, None, {
        "runs": top("SELECT MAX(id) FROM runs"),
        "transitions": top("SELECT MAX(id) FROM transitions"),
        "approvals": top("SELECT MAX(id) FROM approvals"),
        "lease_epoch": top("SELECT epoch FROM lease WHERE id = 1"),
    })


def entries(db: Db) -> list[Entry]:
    rows = db.execute("SELECT seq, at, kind, host, run_id, ref, detail, prev_hash, hash "
                      "FROM audit ORDER BY seq")
    out = []
    for seq, at, kind, host, run_id, ref, detail, prev, digest in rows:
        try:
            body = json.loads(detail)
        except ValueError:
            body = {"unreadable": detail}
        out.append(Entry(int(seq), float(at), str(kind), host, run_id, ref, body, str(prev),
                         str(digest)))
    return out


def verify(db: Db) -> Verdict:
    problems: list[str] = []
    rows = db.execute("SELECT seq, at, kind, host, run_id, ref, detail, prev_hash, hash "
                      "FROM audit ORDER BY seq").fetchall()
    prev, expected_seq = GENESIS, 1
    for seq, at, kind, host, run_id, ref, detail, prev_hash, digest in rows:
        if seq != expected_seq:
            problems.append(f"entry {seq}: expected entry {expected_seq} here; entries were "
                            "removed or renumbered")
        if prev_hash != prev:
            problems.append(f"entry {seq} ({kind}): does not follow the entry before it; an "
                            "entry was removed, inserted or reordered")
        if entry_hash(seq, at, kind, host, run_id, ref, detail, prev_hash) != digest:
            problems.append(f"entry {seq} ({kind}): its content does not match its hash; it "
                            "was altered")
        prev, expected_seq = digest, seq + 1
    problems += _cross_check(db, rows)
    return Verdict(entries=len(rows), head=prev, problems=tuple(problems))


def _host_states(db: Db) -> list[str]:
    """Every host's current state is where its last transition (each one audited) led; a
    host never moved is still as discovery first inserted it (pending)."""
    problems = []
    for name, state, last in db.execute(
            "SELECT h.name, h.state, (SELECT t.to_state FROM transitions t WHERE t.host = h.name "
            "ORDER BY t.id DESC LIMIT 1) FROM hosts h ORDER BY h.name"):
        expected = "pending" if last is None else str(last)
        if str(state) != expected:
            problems.append(f"host {name} is recorded {state}, but its last transition (and "
                            f"audit entry) leads to {expected}: its state was changed behind "
                            "the log")
    return problems


def _transitions_logged(db: Db, base: dict[str, Any], logged: dict[tuple[str, int], str]
                        ) -> list[str]:
    """Every transition since the log began has its entry, saying what it says."""
    problems = []
    for tid, host, src, dst, reason in db.execute(
            "SELECT id, host, from_state, to_state, reason FROM transitions WHERE id > ? "
            "ORDER BY id", (base["transitions"],)):
        want = json.dumps(transition_detail(src, dst, reason), sort_keys=True)
        got = logged.pop(("transition", int(tid)), None)
        if got is None:
            problems.append(f"transition {tid} ({host}: {src} -> {dst}) has no audit entry; "
                            "its entry was removed")
        elif got != want:
            problems.append(f"transition {tid} ({host}) differs from its audit entry; one of "
                            "them was altered")
    return problems


def _others_logged(db: Db, base: dict[str, Any], logged: dict[tuple[str, int], str]
                   ) -> list[str]:
    """Every run's start and end, approval and lease epoch since the log began has its entry."""
    problems = []
    for rid, finished in db.execute("SELECT id, finished_at FROM runs WHERE id > ?",
                                    (base["runs"],)):
        if logged.pop(("run-start", int(rid)), None) is None:
            problems.append(f"run {rid} has no start entry; it was removed")
        if finished is not None and logged.pop(("run-end", int(rid)), None) is None:
            problems.append(f"run {rid} has no end entry; it was removed")
    for (aid,) in db.execute("SELECT id FROM approvals WHERE id > ?", (base["approvals"],)):
        if logged.pop(("approval", int(aid)), None) is None:
            problems.append(f"approval {aid} has no audit entry; it was removed")
    epoch = int(db.execute("SELECT epoch FROM lease WHERE id = 1").fetchone()[0])
    for e in range(int(base["lease_epoch"]) + 1, epoch + 1):
        if logged.pop(("lease", e), None) is None:
            problems.append(f"lease epoch {e} has no audit entry; it was removed")
    return problems


def _cross_check(db: Db, rows: list[tuple[Any, ...]]) -> list[str]:
    """Every recorded fact since the log began has its entry, and every entry its fact."""
    if not rows:
        return ["the audit log is empty: its first entries were removed"]
    first = rows[0]
    if first[2] != "genesis":
        return ["the audit log does not start with its genesis entry: entries were removed"]
    base = json.loads(first[6])
    # (kind, ref) -> detail; each check takes away the entries its records stand for
    logged: dict[tuple[str, int], str] = {
        (kind, int(ref)): detail
        for _seq, _at, kind, _host, _run, ref, detail, _p, _h in rows[1:] if ref is not None}
    problems = _transitions_logged(db, base, logged)
    problems += _host_states(db)
    problems += _others_logged(db, base, logged)
    problems += [f"audit entry for {kind} {ref} stands for nothing in the state; the "
                 "record it logged was removed" for kind, ref in sorted(logged)]
    return problems
