from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import StateError
from orchestrator.models import (
    ALLOWED_TRANSITIONS,
    HostFacts,
    HostState,
    StepOutcome,
    StepResult,
)
from orchestrator.state import MIGRATIONS, SqliteStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "state.db")
    s.ensure_hosts(["a", "b"])
    return s


def test_new_hosts_are_pending_and_migrations_recorded(store: SqliteStore) -> None:
    assert [r.state for r in store.all()] == [HostState.PENDING, HostState.PENDING]
    names = [r[0] for r in store.db.execute("SELECT name FROM schema_migrations")]
    assert names == [m[0] for m in MIGRATIONS]
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_transitions_are_committed_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    s.ensure_hosts(["a"])
    run = s.begin_run("run", "tester", None)
    s.transition("a", HostState.INSTALLING, "go", run, wave=0)
    s.transition("a", HostState.VERIFIED, "ok", run, replacement_verified_at=10.0)
    s.transition("a", HostState.REMOVING, "rm", run, protection_stopped_at=20.0)
    s.transition("a", HostState.MIGRATED, "done", run)
    # A second connection sees everything without the first being closed: each was committed.
    other = sqlite3.connect(str(path))
    rows = other.execute("SELECT to_state FROM transitions ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["installing", "verified", "removing", "migrated"]
    other.close()
    s.close()
    again = SqliteStore(path)
    rec = again.get("a")
    assert rec is not None
    assert rec.state == HostState.MIGRATED
    assert rec.wave == 0
    assert rec.gap_seconds == 0.0  # verified before the banned product was stopped
    assert [t.to_state for t in again.history("a")][-1] == HostState.MIGRATED
    assert again.integrity_ok()


def test_gap_is_time_from_stop_to_verified(store: SqliteStore) -> None:
    store.transition("a", HostState.INSTALLING, "", None)
    store.transition("a", HostState.VERIFIED, "", None, replacement_verified_at=100.0,
                     protection_stopped_at=40.0)
    rec = store.get("a")
    assert rec is not None
    assert rec.gap_seconds == 60.0


def test_forbidden_transition_is_refused_and_nothing_written(store: SqliteStore) -> None:
    with pytest.raises(StateError, match="refusing transition pending -> removing"):
        store.transition("a", HostState.REMOVING, "", None)
    rec = store.get("a")
    assert rec is not None
    assert rec.state == HostState.PENDING
    assert store.history("a") == []


def test_removal_needs_verified_replacement() -> None:
    # The safety rule as a property of the table: REMOVING is entered only from VERIFIED
    # (this run's proof), or from a removal that was itself entered that way.
    sources = {s for s, targets in ALLOWED_TRANSITIONS.items() if HostState.REMOVING in targets}
    assert sources == {HostState.VERIFIED, HostState.REMOVE_FAILED, HostState.MIGRATED}


def test_same_state_updates_facts_without_transition(store: SqliteStore) -> None:
    f = HostFacts("Debian", "Debian", "12", (), False, False)
    store.transition("a", HostState.CLEAN, "none", None)
    store.transition("a", HostState.CLEAN, "none", None, facts=f)
    rec = store.get("a")
    assert rec is not None
    assert rec.facts == f
    assert len(store.history("a")) == 1


def test_step_results_and_runs(store: SqliteStore) -> None:
    run = store.begin_run("run", "tester", "plan.json")
    store.record_step(run, StepResult("a", "install", StepOutcome.FAILED, "boom"))
    store.finish_run(run, "exit 4")
    runs = store.runs()
    assert runs[-1]["outcome"] == "exit 4"
    assert runs[-1]["operator"] == "tester"
    assert store.db.execute("SELECT message FROM step_results").fetchone()[0] == "boom"


def test_unknown_host_transition_is_an_error(store: SqliteStore) -> None:
    with pytest.raises(StateError, match="not in the state"):
        store.transition("zzz", HostState.CLEAN, "", None)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable SQLite database"):
        SqliteStore(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    db = sqlite3.connect(str(path))
    db.execute("INSERT INTO schema_migrations VALUES ('9999_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer avmigrate"):
        SqliteStore(path)


def test_missing_directory_and_postgres_url(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        open_store(str(tmp_path / "nope" / "s.db"))
    with pytest.raises(StateError, match="PostgreSQL"):
        open_store("postgresql://localhost/x")
