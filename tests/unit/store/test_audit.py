"""The audit log: append-only, hash-chained, and checked against what it records."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from orchestrator.cli.main import cli
from orchestrator.core.models import HostState
from orchestrator.store.records import LeaseHolder
from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.sqlstore import SqlStore
from tests.conftest import Backend


# Every test here runs on SQLite and on PostgreSQL (the `backend` fixture, tests/conftest.py).
@pytest.fixture
def store(backend: Backend) -> SqlStore:
    s: SqlStore = backend.open()
    s.target = backend.target  # type: ignore[attr-defined]
    run = s.begin_run("run", "alice", "plan.json")
    s.ensure_hosts(["h1", "h2"])
    s.acquire_lease(LeaseHolder("alice", "box", 1), 30)
    for host in ("h1", "h2"):
        s.transition(host, HostState.INSTALLING, "installing", run)
        s.transition(host, HostState.VERIFIED, "verified", run, proof="clamav verified")
    s.add_approval("p" * 64, 1, "bob", "plan.json")
    s.transition("h1", HostState.REMOVING, "removing", run)
    s.transition("h1", HostState.MIGRATED, "migrated", run, proof="clamav verified")
    s.finish_run(run, "exit 0")
    return s


def tamper(store: SqlStore, *sql: str) -> None:
    """What someone with write access to the database would do: drop the guards, then edit."""
    if isinstance(store, SqliteStore):
        db = sqlite3.connect(str(store.path), isolation_level=None)
        db.execute("DROP TRIGGER IF EXISTS audit_append_only_update")
        db.execute("DROP TRIGGER IF EXISTS audit_append_only_delete")
        for statement in sql:
            db.execute(statement)
        db.close()
        return
    import psycopg  # noqa: PLC0415

    with psycopg.connect(store.target, autocommit=True) as pg:  # type: ignore[attr-defined]
        pg.execute("ALTER TABLE audit DISABLE TRIGGER USER")
        for statement in sql:
            pg.execute(statement)


def test_an_untouched_log_verifies(store: SqlStore) -> None:
    verdict = store.audit_verify()
    assert verdict.ok, verdict.problems
    kinds = [e.kind for e in store.audit_entries()]
    assert kinds[0] == "genesis"
    assert kinds.count("transition") == 6
    assert {"run-start", "run-end", "approval", "lease"} <= set(kinds)
    assert verdict.head == store.audit_entries()[-1].hash


def test_the_log_refuses_update_and_delete(store: SqlStore) -> None:
    with pytest.raises(Exception, match="append-only"):
        store.db.execute("UPDATE audit SET detail = '{}' WHERE seq = 2")
    with pytest.raises(Exception, match="append-only"):
        store.db.execute("DELETE FROM audit WHERE seq = 2")
    assert store.audit_verify().ok


def test_an_altered_entry_is_detected(store: SqlStore) -> None:
    tamper(store, "UPDATE audit SET detail = replace(detail, 'migrated', 'pending') "
                  "WHERE seq = (SELECT MAX(seq) FROM audit WHERE kind = 'transition')")
    problems = store.audit_verify().problems
    assert any("was altered" in p for p in problems), problems


def test_an_altered_transition_row_is_detected(store: SqlStore) -> None:
    tamper(store, "UPDATE transitions SET to_state = 'migrated' WHERE id = 2")
    problems = store.audit_verify().problems
    assert any("transition 2 (h1) differs from its audit entry" in p for p in problems)


@pytest.mark.parametrize("which", ["3", "(SELECT MAX(seq) FROM audit)", "1"])
def test_a_deleted_entry_is_detected(store: SqlStore, which: str) -> None:
    tamper(store, f"DELETE FROM audit WHERE seq = {which}")  # noqa: S608 - test data
    verdict = store.audit_verify()
    assert not verdict.ok
    assert any("removed" in p for p in verdict.problems), verdict.problems


def test_a_deleted_entry_with_renumbering_is_detected(store: SqlStore) -> None:
    tamper(store, "DELETE FROM audit WHERE seq = 4",
           "UPDATE audit SET seq = seq - 1 WHERE seq > 4")
    problems = store.audit_verify().problems
    assert any("does not follow the entry before it" in p for p in problems), problems


def test_reordered_entries_are_detected(store: SqlStore) -> None:
    tamper(store, "UPDATE audit SET seq = -5 WHERE seq = 5",
           "UPDATE audit SET seq = 5 WHERE seq = 6",
           "UPDATE audit SET seq = 6 WHERE seq = -5")
    problems = store.audit_verify().problems
    assert any("reordered" in p for p in problems), problems


def test_audit_verify_command_exit_codes(store: SqlStore) -> None:
    target = store.target  # type: ignore[attr-defined]
    ok = CliRunner().invoke(cli, ["--state", target, "audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "audit log intact" in ok.output
    tamper(store, "UPDATE audit SET at = at + 1 WHERE seq = 4")
    bad = CliRunner().invoke(cli, ["--state", target, "audit", "verify"])
    assert bad.exit_code == 9
    assert "entry 4" in bad.output
    shown = CliRunner().invoke(cli, ["--state", target, "audit", "show", "--json"])
    assert shown.exit_code == 0
    assert '"kind": "approval"' in shown.output
