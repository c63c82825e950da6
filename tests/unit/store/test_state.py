from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from orchestrator.core.errors import StateError
from orchestrator.core.models import (
    ALLOWED_TRANSITIONS,
    HostFacts,
    HostState,
    StepOutcome,
    StepResult,
)
from orchestrator.core.procs import machine_identity
from orchestrator.store import open_store
from orchestrator.store.errors import BudgetFull, Fenced, LeaseHeld, ProofRequired
from orchestrator.store.records import LeaseHolder, Move
from orchestrator.store.schema import SQLITE, migrations
from orchestrator.store.sqlite import SqliteStore
from orchestrator.store.sqlstore import SqlStore
from tests.conftest import Backend


# Every test taking `store` or `backend` runs on SQLite and on PostgreSQL (tests/conftest.py).
@pytest.fixture
def store(backend: Backend) -> SqlStore:
    s: SqlStore = backend.open()
    s.ensure_hosts(["a", "b"])
    return s


def test_new_hosts_are_pending_and_migrations_recorded(store: SqlStore) -> None:
    assert [r.state for r in store.all()] == [HostState.PENDING, HostState.PENDING]
    names = [r[0] for r in store.db.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [m[0] for m in migrations(SQLITE)]


def test_sqlite_state_is_write_ahead_logged(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_transitions_are_committed_and_survive_reopen(backend: Backend) -> None:
    s = backend.open()
    s.ensure_hosts(["a"])
    run = s.begin_run("run", "tester", None)
    s.transition("a", HostState.INSTALLING, "go", run, wave=0)
    s.transition("a", HostState.VERIFIED, "ok", run, replacement_verified_at=10.0,
                 proof=PROOF)
    s.transition("a", HostState.REMOVING, "rm", run, protection_stopped_at=20.0)
    s.transition("a", HostState.MIGRATED, "done", run, proof=PROOF)
    # A second connection sees everything without the first being closed: each was committed.
    other = backend.open()
    rows = other.db.execute("SELECT to_state FROM transitions ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["installing", "verified", "removing", "migrated"]
    other.close()
    s.close()
    again = backend.open()
    rec = again.get("a")
    assert rec is not None
    assert rec.state == HostState.MIGRATED
    assert rec.wave == 0
    assert rec.gap_seconds == 0.0  # verified before the banned product was stopped
    assert [t.to_state for t in again.history("a")][-1] == HostState.MIGRATED
    assert again.audit_verify().ok


def test_gap_is_time_from_stop_to_verified(store: SqlStore) -> None:
    store.transition("a", HostState.INSTALLING, "", None)
    store.transition("a", HostState.VERIFIED, "", None, replacement_verified_at=100.0,
                     protection_stopped_at=40.0, proof=PROOF)
    rec = store.get("a")
    assert rec is not None
    assert rec.gap_seconds == 60.0


def test_step_spans_from_one_query_match_the_history(store: SqlStore) -> None:
    """The planner's estimates read step rows with one windowed query (both backends): the
    same rows, and so the same medians, as derived from the transitions in Python."""
    from orchestrator.plan import estimate  # noqa: PLC0415

    s = HostState
    store.ensure_hosts(["c"])
    store.run_budget = "2"
    for state in (s.INSTALLING, s.VERIFIED, s.REMOVING, s.MIGRATED):  # make-before-break
        store.transition("a", state, "", None, proof=PROOF)
    for state in (s.STAGING, s.STAGED, s.REMOVING, s.SWAPPING, s.MIGRATED):  # swap
        store.transition("b", state, "", None, proof=PROOF)
    for state in (s.INSTALLING, s.INSTALL_FAILED, s.INSTALLING):  # failed, then retried
        store.transition("c", state, "", None)
    spans = store.step_spans()
    assert sorted(spans, key=repr) == sorted(estimate.spans_of(store.history()), key=repr)
    assert [r[0] for r in spans].count("installing") == 3 and len(spans) == 6
    assert ("installing", "pending", "verified") in {r[:3] for r in spans}
    assert ("installing", "install_failed", None) in {r[:3] for r in spans}
    assert estimate.estimates_from(spans) == estimate.measure(store.history())
    assert estimate.estimates_from(spans).measured == {
        "preflight": 0, "install_verify": 1, "remove_verify": 1, "stage": 1, "swap_window": 1}


PROOF = "clamav verified: its daemon answered and detected EICAR"


def test_forbidden_transition_is_refused_and_nothing_written(store: SqlStore) -> None:
    with pytest.raises(StateError, match="refusing transition pending -> removing"):
        store.transition("a", HostState.REMOVING, "", None)
    rec = store.get("a")
    assert rec is not None
    assert rec.state == HostState.PENDING
    assert store.history("a") == []


def test_removal_needs_verified_or_staged_replacement() -> None:
    # The safety rule as a property of the table: REMOVING is entered only from VERIFIED
    # (make-before-break) or STAGED (swap).
    sources = {s for s, targets in ALLOWED_TRANSITIONS.items() if HostState.REMOVING in targets}
    assert sources == {HostState.VERIFIED, HostState.STAGED}


def test_no_host_is_called_verified_or_migrated_without_evidence(store: SqlStore) -> None:
    # Only a step that proved it (EICAR detected by the running daemon) may say so.
    store.transition("a", HostState.INSTALLING, "", None)
    for claim in (HostState.VERIFIED, HostState.MIGRATED):
        with pytest.raises(ProofRequired):
            store.transition("a", claim, "trust me", None)
    store.transition("a", HostState.VERIFIED, "", None, proof=PROOF)
    store.transition("a", HostState.REMOVING, "", None)
    # Out of its budget slot only with evidence; into "unprotected" any time.
    for out in (HostState.MIGRATED, HostState.REMOVE_FAILED, HostState.INTERRUPTED):
        with pytest.raises(ProofRequired):
            store.transition("a", out, "it is probably fine", None)
    store.transition("a", HostState.UNPROTECTED, "unknown", None)
    store.transition("a", HostState.INTERRUPTED, "kesl back", None, proof="kesl.service running")
    rec = store.get("a")
    assert rec is not None and rec.protected_by == "kesl.service running"
    assert store.audit_verify().ok


def test_a_proven_state_cannot_be_stripped_of_its_evidence(store: SqlStore) -> None:
    # Found by the property test (CI of 2026-12-01): a move that stays in remove_failed with
    # proof "" (a probe found none) erased the evidence of a state that claims protection.
    store.transition("a", HostState.INSTALLING, "", None)
    store.transition("a", HostState.VERIFIED, "", None, proof=PROOF)
    with pytest.raises(ProofRequired):
        store.transition("a", HostState.VERIFIED, "probe found nothing", None, proof="")
    store.transition("a", HostState.VERIFIED, "same again", None)  # None keeps the proof
    rec = store.get("a")
    assert rec is not None and rec.protected_by == PROOF


def test_the_budget_is_taken_with_the_removal_intent(store: SqlStore) -> None:
    """K is checked and the slot taken in the transaction that commits REMOVING: a second
    removal is refused while the first host's protection is unproven, by any connection."""
    store.ensure_hosts(["c"])
    for h in ("a", "b", "c"):
        store.transition(h, HostState.INSTALLING, "", None)
        store.transition(h, HostState.VERIFIED, "", None, proof=PROOF)
    store.transition("a", HostState.REMOVING, "", None)
    with pytest.raises(BudgetFull, match="held by a"):
        store.transition("b", HostState.REMOVING, "", None)
    assert store.get("b").state == HostState.VERIFIED  # type: ignore[union-attr]
    store.run_budget = "2"
    store.transition("b", HostState.REMOVING, "", None)
    # The fleet's own budget applies to every run: the smaller wins.
    store.set_fleet_budget("1", "carol")
    budget = store.budget()
    assert (budget.limit, budget.held, budget.fleet_spec) == (1, 2, "1")
    with pytest.raises(BudgetFull):
        store.transition("c", HostState.REMOVING, "", None)
    store.transition("a", HostState.MIGRATED, "", None, proof=PROOF)
    store.transition("b", HostState.MIGRATED, "", None, proof=PROOF)
    store.transition("c", HostState.REMOVING, "", None)
    assert [r.name for r in store.slot_holders()] == ["c"]
    assert store.audit_verify().ok


@pytest.mark.parametrize(("spec", "fleet", "limit"), [
    ("1", 1000, 1), ("7", 3, 7), ("1%", 1000, 10), ("1%", 150, 1), ("1%", 10, 1),
    ("2.5%", 1000, 25), ("100%", 8, 8)])
def test_a_budget_is_a_count_or_a_share_of_the_fleet(spec: str, fleet: int, limit: int
                                                     ) -> None:
    from orchestrator.core.protection import budget_problem, resolve_budget  # noqa: PLC0415

    assert budget_problem(spec) is None
    assert resolve_budget(spec, fleet) == limit


@pytest.mark.parametrize("spec", ["0", "-1", "0%", "101%", "one", "", "1.5"])
def test_a_bad_budget_says_why(spec: str) -> None:
    from orchestrator.core.protection import budget_problem  # noqa: PLC0415

    assert budget_problem(spec) is not None


def test_same_state_updates_facts_without_transition(store: SqlStore) -> None:
    f = HostFacts("Debian", "Debian", "12", (), False, False)
    store.transition("a", HostState.CLEAN, "none", None)
    store.transition("a", HostState.CLEAN, "none", None, facts=f)
    rec = store.get("a")
    assert rec is not None
    assert rec.facts == f
    assert len(store.history("a")) == 1


def test_step_results_and_runs(store: SqlStore) -> None:
    run = store.begin_run("run", "tester", "plan.json")
    store.record_step(run, StepResult("a", "install", StepOutcome.FAILED, "boom"))
    store.finish_run(run, "exit 4")
    runs = store.runs()
    assert runs[-1]["outcome"] == "exit 4"
    assert runs[-1]["operator"] == "tester"
    assert store.db.execute("SELECT message FROM step_results").fetchone()[0] == "boom"


def test_unknown_host_transition_is_an_error(store: SqlStore) -> None:
    with pytest.raises(StateError, match="not in the state"):
        store.transition("zzz", HostState.CLEAN, "", None)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable SQLite database"):
        SqliteStore(bad)


def test_newer_schema_is_refused(backend: Backend) -> None:
    first = backend.open()
    first.db.execute("INSERT INTO schema_migrations VALUES ('9999_future', 0)")
    first.close()
    with pytest.raises(StateError, match="newer avmigrate"):
        backend.open()


def test_missing_directory_and_unreachable_server_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        open_store(str(tmp_path / "nope" / "s.db"))
    socket_dir = tmp_path / "no-server"
    socket_dir.mkdir()
    with pytest.raises(StateError, match="cannot connect to state database") as caught:
        open_store(f"postgresql://avm:s3cret@/x?host={socket_dir}")
    assert "s3cret" not in str(caught.value)  # the password is never repeated
    assert "\n" not in str(caught.value)


def test_lease_refuses_a_second_operator_and_names_the_holder(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    me = LeaseHolder("alice", socket.gethostname(), os.getpid())
    epoch = first.acquire_lease(me, ttl=60)
    other = LeaseHolder("bob", "elsewhere", 4242)
    with pytest.raises(LeaseHeld, match=rf"alice on {socket.gethostname()}, pid {os.getpid()}"):
        second.acquire_lease(other, ttl=60)
    first.release_lease(epoch)
    assert second.acquire_lease(other, ttl=60) == epoch + 1


def test_expired_lease_is_taken_over_and_the_stale_holder_is_fenced(backend: Backend) -> None:
    stale, fresh = backend.open(), backend.open()
    stale.ensure_hosts(["a"])
    stale.acquire_lease(LeaseHolder("alice", "host-a", 1), ttl=0.01)
    time.sleep(0.05)
    fresh.acquire_lease(LeaseHolder("bob", "host-b", 2), ttl=60)
    with pytest.raises(Fenced):
        stale.transition("a", HostState.CLEAN, "late write", None)
    with pytest.raises(Fenced):
        stale.renew_lease(1, ttl=60)
    rec = fresh.get("a")
    assert rec is not None
    assert rec.state == HostState.PENDING  # the fenced write left nothing behind
    fresh.transition("a", HostState.CLEAN, "ok", None)


def test_lease_of_a_dead_local_process_is_taken_at_once(backend: Backend) -> None:
    import subprocess  # noqa: PLC0415

    proc = subprocess.Popen(["true"])
    proc.wait()
    store = backend.open()
    here = machine_identity()
    store.acquire_lease(LeaseHolder("alice", socket.gethostname(), proc.pid, here), ttl=600)
    epoch = store.acquire_lease(LeaseHolder("bob", socket.gethostname(), os.getpid(), here),
                                ttl=60)
    lease = store.lease()
    assert lease is not None
    assert lease.holder.user == "bob"
    assert lease.epoch == epoch


def test_approvals_are_recorded_per_plan(store: SqlStore) -> None:
    store.add_approval("p1", 2, "carol")
    assert set(store.approvals("p1")) == {2}
    assert store.approvals("p1")[2][0] == "carol"
    assert store.approvals("p2") == {}


def test_moves_in_one_transaction_are_all_or_nothing(store: SqlStore) -> None:
    store.ensure_hosts(["c"])
    store.apply([Move("a", HostState.CLEAN, "none found"), Move("b", HostState.UNREACHABLE, "x")],
                None)
    assert {r.name: r.state for r in store.all()}["b"] == HostState.UNREACHABLE
    before = [(t.host, t.to_state) for t in store.history()]
    # b cannot go to migrated: the whole batch is refused, c's move included.
    with pytest.raises(StateError, match="refusing transition"):
        store.apply([Move("c", HostState.CLEAN, "ok"), Move("b", HostState.MIGRATED, "no")], None)
    assert store.get("c").state == HostState.PENDING  # type: ignore[union-attr]
    assert [(t.host, t.to_state) for t in store.history()] == before
    assert store.audit_verify().ok


def test_counts_and_hosts_in_states(store: SqlStore) -> None:
    store.ensure_hosts(["c", "d"])
    store.apply([Move("a", HostState.CLEAN), Move("c", HostState.UNREACHABLE),
                 Move("d", HostState.UNREACHABLE)], None)
    assert store.counts() == {HostState.CLEAN: 1, HostState.PENDING: 1,
                              HostState.UNREACHABLE: 2}
    assert [r.name for r in store.in_states([HostState.UNREACHABLE])] == ["c", "d"]
    assert [r.name for r in store.in_states([HostState.UNREACHABLE], limit=1)] == ["c"]
    assert store.in_states([]) == []
