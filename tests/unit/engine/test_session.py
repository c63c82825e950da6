"""Session (engine/session.py) on each of its exit paths: the run record, the lease, the
inventory narrowed to the hosts held, and Ctrl-C, against a real SQLite state."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.core.models import InventoryHost
from orchestrator.engine.session import Session, SessionSpec
from orchestrator.execute.executor import RunnerExecutor
from orchestrator.execute.step import ExecConfig
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.store.errors import Fenced, LeaseHeld
from orchestrator.store.interface import StateStore
from orchestrator.store.records import LeaseHolder
from orchestrator.store.sqlite import SqliteStore

HOSTS = ["h0", "h1", "h2"]
# Another operator on another machine: only a release or an expiry frees what it holds (a
# holder in this process would be taken for this process's own stale lease and ended).
BOB = LeaseHolder("bob", "box-b", 4242, machine="machine-b")
CAROL = LeaseHolder("carol", "box-c", 4343, machine="machine-c")  # asks after the session


@dataclass
class Rig:
    path: Path
    store: SqliteStore
    executor: RunnerExecutor
    inventory: Inventory
    said: list[str] = field(default_factory=list)

    def session(self, spec: SessionSpec, store: StateStore | None = None,
                executor: RunnerExecutor | None = None,
                renewals: type[SqliteStore] = SqliteStore) -> Session:
        return Session(store or self.store, lambda: renewals(self.path), "alice",
                       executor or self.executor, self.inventory, spec, self.said.append)

    def free(self, hosts: Sequence[str] | None = HOSTS) -> bool:
        """Whether another operator can take `hosts` now (it gives them back at once)."""
        other = SqliteStore(self.path)
        try:
            other.release_lease(other.acquire_lease(CAROL, 30, hosts))
        except LeaseHeld:
            return False
        finally:
            other.close()
        return True


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(tmp_path / "run"))  # end_orphans looks here
    store = SqliteStore(tmp_path / "s.db")
    store.ensure_hosts(HOSTS)
    hosts = tuple(InventoryHost(n, ("all",), {}) for n in HOSTS)
    return Rig(tmp_path / "s.db", store,
               RunnerExecutor(ExecConfig(artifacts_dir=tmp_path / "a")),
               Inventory("test", hosts, digest_of(hosts)))


class Before:
    """A SIGINT handler of the test's own: "restored" means restored to it, and a SIGINT
    that reaches it does not stop pytest."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        del frame
        self.got.append(signum)


def _sigint() -> object:
    return signal.getsignal(signal.SIGINT)


@pytest.fixture
def before() -> Iterator[Before]:
    handler = Before()
    previous = signal.signal(signal.SIGINT, handler)
    yield handler
    signal.signal(signal.SIGINT, previous)


# ---- 1. a normal exit ----------------------------------------------------------------------
def test_a_normal_exit_finishes_the_run_with_its_outcome_and_releases_the_lease(
        rig: Rig) -> None:
    session = rig.session(SessionSpec("run", hosts=HOSTS, plan_source="plan.yml"))
    with session as entered:
        assert entered is session and session.run_id is not None
        assert not rig.free(), "the hosts are not held during the session"
        assert session.inventory.names() == tuple(HOSTS)  # all held: nothing left out
        session.outcome = "exit 3"
    [run] = rig.store.runs()
    assert run["id"] == session.run_id
    assert (run["command"], run["operator"], run["plan_digest"]) == ("run", "alice", "plan.yml")
    assert run["outcome"] == "exit 3" and run["finished_at"] is not None
    assert rig.free()


# ---- 2. an exception inside the session ----------------------------------------------------
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_run_that_raises_keeps_no_outcome_releases_its_lease_and_raises(
        rig: Rig, error: BaseException) -> None:
    session = rig.session(SessionSpec("run", hosts=HOSTS))
    with pytest.raises(type(error)), session:
        session.outcome = "exit 0"
        raise error
    [run] = rig.store.runs()
    assert run["id"] == session.run_id
    assert run["outcome"] is None and run["finished_at"] is None  # as before Session existed
    assert rig.free()


# ---- 3. a failure on the way in, once the lease is taken ------------------------------------
class _NoRunRecord(SqliteStore):
    def begin_run(self, command: str, operator: str, plan_digest: str | None) -> int:
        del command, operator, plan_digest
        raise sqlite3.OperationalError("database is locked")


class _OrphansUnended(RunnerExecutor):
    def end_orphans(self) -> list[str]:
        raise PermissionError("cannot end pid 1")


@pytest.mark.parametrize("failing", ["begin_run", "end_orphans"])
def test_a_failure_on_entry_releases_the_lease_and_restores_sigint(
        rig: Rig, before: Before, failing: str) -> None:
    spec = SessionSpec("run", hosts=HOSTS, interrupts=True)
    if failing == "begin_run":
        session = rig.session(spec, store=_NoRunRecord(rig.path))
        error: type[Exception] = sqlite3.OperationalError
    else:
        session = rig.session(spec, executor=_OrphansUnended(ExecConfig(
            artifacts_dir=rig.path.parent / "a")))
        error = PermissionError
    with pytest.raises(error), session:
        pytest.fail("the session was entered")
    assert _sigint() is before
    assert rig.free()
    assert rig.store.runs() == []


# ---- 4. Ctrl-C ---------------------------------------------------------------------------
def test_ctrl_c_once_stops_twice_aborts_the_step_and_the_handler_is_restored(
        rig: Rig, before: Before) -> None:
    session = rig.session(SessionSpec("run", hosts=HOSTS, interrupts=True))
    with session:
        assert _sigint() is not before
        signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns
        assert session.stop.is_set() and not rig.executor.cancel.is_set()
        signal.raise_signal(signal.SIGINT)
        assert rig.executor.cancel.is_set()
    assert _sigint() is before
    assert before.got == []  # neither Ctrl-C went past the session
    assert rig.said[0].startswith("stopping") and rig.said[1] == "aborting the running step"
    [run] = rig.store.runs()
    assert run["outcome"] == "done"  # a stopped run ends normally and is finished
    assert rig.free()


def test_without_interrupts_the_sigint_handler_is_left_alone(rig: Rig, before: Before) -> None:
    session = rig.session(SessionSpec("discover", hosts=HOSTS))
    with session:
        assert _sigint() is before
        signal.raise_signal(signal.SIGINT)
    assert before.got == [signal.SIGINT]
    assert not session.stop.is_set() and not rig.executor.cancel.is_set()
    assert _sigint() is before


# ---- 5. hosts another live run holds -----------------------------------------------------
def test_hosts_another_run_holds_are_left_to_it_and_its_holder_named(rig: Rig) -> None:
    other = SqliteStore(rig.path)
    other.acquire_lease(BOB, 30, ["h1"])
    session = rig.session(SessionSpec("run", hosts=HOSTS))
    with session:
        assert session.inventory.names() == ("h0", "h2")
    [notice] = rig.said
    assert notice.startswith("1 host(s) are held by another run and left to it: h1")
    assert "held by bob on box-b, pid 4242" in notice
    assert rig.free(["h0", "h2"])  # what this session held is given back; bob keeps h1
    assert not rig.free(["h1"])
    other.close()


@pytest.mark.parametrize(("bobs", "ours"), [(["h1"], None), (None, HOSTS)],
                         ids=["whole-state-while-a-host-is-held", "hosts-while-all-held"])
def test_a_session_that_can_take_nothing_fails_naming_the_holder(
        rig: Rig, before: Before, bobs: list[str] | None, ours: list[str] | None) -> None:
    other = SqliteStore(rig.path)
    other.acquire_lease(BOB, 30, bobs)
    session = rig.session(SessionSpec("run", hosts=ours, interrupts=True))
    with pytest.raises(LeaseHeld, match="bob on box-b"), session:
        pytest.fail("the session was entered")
    assert _sigint() is before
    assert rig.store.runs() == [] and session.run_id is None
    other.close()


def test_a_session_on_some_of_the_inventory_narrows_to_them(rig: Rig) -> None:
    # Found by these tests: the narrowing named "the other run" when there was none.
    session = rig.session(SessionSpec("run", hosts=["h0"]))
    with session:
        assert session.inventory.names() == ("h0",)


# ---- 6. a lost lease ---------------------------------------------------------------------
class _FencedOut(SqliteStore):
    """Renewals find the lease taken over, as renew_lease says once another run fenced this
    one out (its lease expired meanwhile)."""

    def renew_lease(self, epoch: int, ttl: float) -> None:
        del epoch, ttl
        raise Fenced("this run lost its lease to another run; it stopped writing")


def test_a_lost_lease_stops_the_run_and_aborts_the_running_step(rig: Rig) -> None:
    session = rig.session(SessionSpec("run", hosts=HOSTS), renewals=_FencedOut)
    # The keeper renews every ttl/3: with the session's 30 s lease the first renewal, and so
    # the loss, would come after 10 s. test_8a in test_promise.py shortens it the same way.
    session.keeper.ttl = 0.3
    with session:
        assert session.keeper.lost.wait(5), "the lost lease went unnoticed"
        assert session.stop.is_set() and rig.executor.cancel.is_set()
        assert session.keeper.problem() is not None
    assert any(m.startswith("avmigrate: the lease is lost (this run lost its lease")
               for m in rig.said), rig.said
    assert rig.free()
