"""The protection promise, case by case: each path a review found breaking it (issue 12).

Every test judges the outcome by the simulated hosts' truth (`SimHost.protected`: KESL runs,
or the replacement runs and detects EICAR), sampled at every step boundary, and by whether
each record says what is true on its host; never by the engine's own idea of its window.
Case 6 (the staged install re-proved) and case 13 (no step outlives its run) need a real apt
and real processes: they are in tests/integration and tests/unit/execute/test_stepguard.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core import names
from orchestrator.core.models import HostState
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs.policy import Policy
from orchestrator.store.errors import LeaseHeld, LeaseLost
from orchestrator.store.lease import LeaseKeeper
from orchestrator.store.records import LeaseHolder
from orchestrator.store.sqlite import SqliteStore
from tests.support.sim import Crash
from tests.support.world import World, untrue_records

SWAP1 = RunPolicy(strategy="swap", max_unprotected=1)
MBB1 = RunPolicy(strategy="make-before-break", max_unprotected=1)
SLOT_STATES = {HostState.REMOVING, HostState.SWAPPING, HostState.UNPROTECTED}


def holder(user: str, pid: int, **extra: object) -> LeaseHolder:
    """A lease holder; `extra` fields only where this version of LeaseHolder has them."""
    known = {f.name for f in dataclasses.fields(LeaseHolder)}
    return LeaseHolder(user, socket.gethostname(), pid,
                       **{k: v for k, v in extra.items() if k in known})  # type: ignore[arg-type]


# ---- 1. a node dies inside a swap window and the host stays unreachable ----------------------
def test_1_a_host_lost_in_its_swap_window_keeps_its_slot(tmp_path: Path) -> None:
    w = World(tmp_path, 3)

    def lose_h0() -> None:  # the node dies before the install from the stage reaches h0
        w.host("h0").reachable = False
        w.fleet.lost.setdefault("install_staged", set()).add("h0")

    w.when("install_staged", "before", None, lose_h0)
    w.run(w.engine(SWAP1))
    assert not w.host("h0").protected  # the truth: KESL gone, ClamAV never installed
    assert w.peak <= 1, w.moments  # h1 and h2 were not removed meanwhile
    assert w.host("h1").kesl_running and w.host("h2").kesl_running
    assert w.states()["h0"] == HostState.UNPROTECTED
    # Later runs, however many, never turn it into "unreachable" or "clean".
    for _ in range(2):
        w.run(w.engine(SWAP1))
        assert w.states()["h0"] == HostState.UNPROTECTED
    assert w.peak <= 1, w.moments
    assert not untrue_records(w)


# ---- 2. only a protecting product's running counts as protection ------------------------------
@pytest.mark.parametrize("variant", ["agent-only", "clamd-unverified"])
def test_2_a_reprobe_counts_only_evidence_of_protection(tmp_path: Path, variant: str) -> None:
    w = World(tmp_path, 2, agent=True, agent_running=True)
    if variant == "agent-only":
        # remove.yml stops kesl, then klnagent64: the orchestrator dies between the two.
        w.when("remove", "mid", "h0", lambda: (_ for _ in ()).throw(Crash()))
    else:
        # The install from the stage ran, clamd is up but detects nothing (stale signatures),
        # and the orchestrator dies before it records the proof the install ended with.
        w.host("h0").fragile = True
        w.when("install_staged", "after", None, lambda: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        w.run(w.engine(SWAP1, names=["h0"]))
    assert not w.host("h0").protected
    # The next run (another inventory: h1 only) must not start a removal meanwhile.
    w.run(w.engine(SWAP1, names=["h1"]))
    second = w.engine(SWAP1, names=["h0"])
    second.discover(["h0"])
    assert w.states()["h0"] in SLOT_STATES, w.record("h0")
    assert w.peak <= 1, w.moments
    assert w.host("h1").kesl_running, "h1 was removed while h0 had no protection"


# ---- 3. two operators on one state share one budget --------------------------------------------
def test_3_two_operators_never_exceed_the_fleet_budget(tmp_path: Path) -> None:
    w = World(tmp_path, 2)
    setup = w.store()
    setup.ensure_hosts(["h0", "h1"])
    setup.close()
    both_checked = threading.Barrier(2, timeout=10)

    def meet() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait()

    w.when("stage_check", "before", None, meet, times=2)
    # Whoever stops KESL first waits a moment inside its removal for the other to do the
    # same: if the budget let both in, both hosts are then without protection at once.
    inside = threading.Barrier(2, timeout=2)

    def linger() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait()

    w.when("remove", "mid", None, linger, times=2)
    errors: list[BaseException] = []

    def operator(name: str, pid: int) -> None:
        store = w.store()
        try:
            store.acquire_lease(holder(name, pid), ttl=60, hosts=[name.replace("op", "h")])
            engine = w.engine(SWAP1, names=[name.replace("op", "h")], store=store)
            w.run(engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    # Two live operator processes (their pids must be alive: a dead holder loses its lease).
    alive = [subprocess.Popen(["sleep", "600"]) for _ in (0, 1)]
    threads = [threading.Thread(target=operator, args=(f"op{i}", alive[i].pid)) for i in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for p in alive:
            p.kill()
            p.wait()
    assert not errors, errors
    assert w.peak <= 1, w.moments
    assert not untrue_records(w)


# ---- 4. remediation does not call a host migrated while KESL is still on ------------------------
def test_4_remediation_of_a_host_whose_kesl_still_runs_ends_verified(tmp_path: Path) -> None:
    w = World(tmp_path, 1)
    w.when("remove", "before", None, lambda: setattr(w.host("h0"), "reachable", False))
    w.run(w.engine(SWAP1))
    assert w.states()["h0"] == HostState.UNPROTECTED
    assert w.host("h0").kesl_running  # the removal never reached it
    w.host("h0").reachable = True
    engine = w.engine(SWAP1)
    engine.remediate(["h0"])
    record = w.record("h0")
    assert record.state == HostState.VERIFIED, record
    assert not untrue_records(w)


# ---- 5. make-before-break removals are bounded too ----------------------------------------------
def test_5_make_before_break_removals_take_budget_slots(tmp_path: Path) -> None:
    # A correlated failure: every host's replacement stops working once KESL is removed.
    w = World(tmp_path, 4, fragile=True)
    w.run(w.engine(MBB1))
    assert w.peak <= 1, w.moments
    assert sum(1 for h in w.fleet.hosts.values() if h.kesl) == 3  # the first failure stopped it
    assert list(w.states().values()).count(HostState.UNPROTECTED) == 1
    assert not untrue_records(w)


def test_5b_a_host_protected_by_its_replacement_alone_is_proven_again(tmp_path: Path) -> None:
    """h0's KESL was stopped by a removal whose purge failed: remove_failed, its replacement
    verified. Later its clamd stops detecting (a bad signature push) and a reinstall fails.
    The next run must find it unprotected (it holds a slot), and no removal may start
    elsewhere meanwhile."""
    w = World(tmp_path, 2)
    w.when("remove", "mid", "h0", lambda: setattr(w.host("h0"), "dpkg_broken", True))
    w.run(w.engine(MBB1, names=["h0"]))
    assert w.states()["h0"] == HostState.REMOVE_FAILED
    w.host("h0").clamav_works = False
    w.fleet.fail["install"] = {"h0"}
    w.run(w.engine(MBB1, names=["h0"]))
    assert w.states()["h0"] == HostState.UNPROTECTED, w.record("h0")
    w.run(w.engine(MBB1, names=["h1"]))
    assert w.host("h1").kesl_running, "h1 was removed while h0 had no protection"
    assert not untrue_records(w)


# ---- 7. Ctrl-C touches only the run's own hosts ------------------------------------------------
def test_7_ctrl_c_does_not_touch_hosts_another_run_holds(tmp_path: Path) -> None:
    w = World(tmp_path, 2)
    other = w.store()
    other.ensure_hosts(["h0", "h1"])
    other.acquire_lease(holder("bob", 5001), ttl=60, hosts=["h1"])
    other.transition("h1", HostState.INSTALLING, "bob installs", None)
    mine = w.store()
    mine.acquire_lease(holder("alice", 5002), ttl=60, hosts=["h0"])
    engine = w.engine(MBB1, names=["h0"], store=mine)
    engine.discover(["h0"])
    engine.stop.set()  # the first Ctrl-C, before anything started
    summary = engine.run(w.plan(engine))
    assert summary.stopped_early is not None and "stopped by the operator" in summary.stopped_early
    assert w.states()["h1"] == HostState.INSTALLING  # bob's host, left alone


# ---- 8. leases that cannot silently lapse -----------------------------------------------------
class _BrokenRenewals(SqliteStore):
    def renew_lease(self, epoch: int, ttl: float) -> None:  # noqa: ARG002
        raise sqlite3.OperationalError("disk I/O error")


def test_8a_a_renewal_failure_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.ensure_hosts(["h0"])
    keeper = LeaseKeeper(store, lambda: _BrokenRenewals(path), "alice", ttl=0.3, hosts=["h0"])
    with keeper:
        assert keeper.lost.wait(5), "the renewal thread died and nothing noticed"


class _HangingRenewals(SqliteStore):
    """A renewal that hangs (a lock held elsewhere, a database that stopped answering) until
    the test lets it go, so that no thread outlives the test."""

    release = threading.Event()

    def renew_lease(self, epoch: int, ttl: float) -> None:  # noqa: ARG002
        self.release.wait(60)


@pytest.fixture(autouse=True)
def _no_hang_left() -> Iterator[None]:
    _HangingRenewals.release.clear()
    yield
    _HangingRenewals.release.set()


def test_8a_a_renewal_that_hangs_is_noticed_too(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.ensure_hosts(["h0"])
    said: list[str] = []
    keeper = LeaseKeeper(store, lambda: _HangingRenewals(path), "alice", ttl=1.2,
                         hosts=["h0"], on_lost=said.append)
    with keeper:
        assert keeper.lost.wait(5), "a hanging renewal went unnoticed"
        assert said and "has not been renewed" in said[0]
        assert keeper.problem() is not None
        _HangingRenewals.release.set()


def test_8a_a_lost_lease_stops_the_run_before_its_next_step(tmp_path: Path) -> None:
    w = World(tmp_path, 2)
    trouble: list[str] = []
    engine = w.engine(MBB1, guard=lambda: trouble[0] if trouble else None)
    engine.discover(["h0", "h1"])
    w.when("install", "after", None, lambda: trouble.append("the lease renewal thread died"))
    steps = len(w.fleet.calls)
    with pytest.raises(LeaseLost, match="no further step was started"):
        engine.run(w.plan(engine))
    started = [s for s, _ in w.fleet.calls[steps:]]
    assert started[-1] == "install", started  # nothing after the step under way
    assert all(h.kesl_running for h in w.fleet.hosts.values())


def test_8a_the_cli_aborts_the_running_step_when_its_lease_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.api.workspace import Silent  # noqa: PLC0415
    from orchestrator.cli.base import Context  # noqa: PLC0415
    from orchestrator.engine.session import SessionSpec  # noqa: PLC0415
    from orchestrator.execute.executor import RunnerExecutor  # noqa: PLC0415
    from orchestrator.execute.step import ExecConfig  # noqa: PLC0415

    monkeypatch.setenv("AVMIGRATE_RUN_DIR", str(tmp_path / "run"))
    state = tmp_path / "s.db"
    SqliteStore(state).ensure_hosts(["h0"])
    ctx = Context(str(state), None, 0)
    w = World(tmp_path, 1)
    executor = RunnerExecutor(ExecConfig(artifacts_dir=tmp_path / "a"))
    session = ctx.session(w.inventory, executor, SessionSpec("run", hosts=["h0"]), Silent())
    keeper = session.keeper
    keeper.open_other = lambda: _HangingRenewals(state)
    keeper.ttl = 1.2
    with session:
        engine = session.engine(w.cat, "clamav", None, lambda _m: None)
        assert keeper.lost.wait(5)
        assert engine.stop.is_set() and engine.executor.cancel.is_set()
        assert engine.guard is not None and engine.guard() is not None
        _HangingRenewals.release.set()


def test_8b_lease_expiry_is_judged_by_the_database_clock(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    path = tmp_path / "s.db"
    alice, bob = SqliteStore(path), SqliteStore(path)
    alice.ensure_hosts(["h0"])
    alice.acquire_lease(holder("alice", 1, machine="box-a"), ttl=30, hosts=["h0"])
    # Bob's machine clock runs a minute ahead of everyone else's.
    real = time.time
    monkeypatch.setattr("orchestrator.store.operators.time.time", lambda: real() + 60)
    with pytest.raises(LeaseHeld, match="alice"):
        bob.acquire_lease(holder("bob", 2, machine="box-b"), ttl=30, hosts=["h0"])


def test_8c_a_live_holder_in_another_container_with_our_host_name_keeps_its_lease(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    alice, bob = SqliteStore(path), SqliteStore(path)
    alice.ensure_hosts(["h0"])
    # Alice runs in another container of the same name: her pid means nothing here.
    alice.acquire_lease(holder("alice", 4_000_000, machine="container-a"), ttl=30,
                        hosts=["h0"])
    with pytest.raises(LeaseHeld, match="alice"):
        bob.acquire_lease(holder("bob", 2), ttl=30, hosts=["h0"])


# ---- 9. host key checking cannot be turned off from the inventory ---------------------------
@pytest.mark.parametrize("value", [
    "-o StrictHostKeyChecking=false", "-o StrictHostKeyChecking=off", "-oStrictHostKeyChecking=no",
    "-o 'StrictHostKeyChecking ask'", "-o KnownHostsCommand=/bin/cat",
    "-o UserKnownHostsFile=/dev/null", "-o GlobalKnownHostsFile=/tmp/anyone-can-write",
    "-o stricthostkeychecking=accept-new",
    # As ssh's getopt reads them: clustered flags, the argument glued or in the next word.
    "-4o KnownHostsCommand=/bin/cat", "-vvo StrictHostKeyChecking=no",
    "-C -4oStrictHostKeyChecking=no",
    # A file anyone may create, in a world-writable directory.
    "-o UserKnownHostsFile=/tmp/avmigrate-test-missing-known-hosts",
])
def test_9_lax_host_key_options_are_refused(value: str) -> None:
    Path("/tmp/anyone-can-write").touch()
    Path("/tmp/anyone-can-write").chmod(0o666)
    Path("/tmp/avmigrate-test-missing-known-hosts").unlink(missing_ok=True)
    assert names.host_key_problem({"ansible_ssh_common_args": value}) is not None, value


@pytest.mark.parametrize("variables", [
    # Ansible puts the settings' words one after the other: an option left open takes the next.
    {"ansible_ssh_common_args": "-o", "ansible_ssh_extra_args": "KnownHostsCommand=/bin/cat"},
    {"ansible_ssh_args": "-C -o", "ansible_ssh_common_args": "StrictHostKeyChecking=no"},
    # Ansible strips each word and drops empty ones.
    {"ansible_ssh_common_args": "' -oKnownHostsCommand=/bin/cat'"},
    {"ansible_ssh_common_args": "-o '' KnownHostsCommand=/bin/cat"},
    # ssh ends a keyword at any white space, and takes it quoted.
    {"ansible_ssh_common_args": "-o 'KnownHostsCommand\t/bin/cat'"},
    {"ansible_ssh_common_args": "-o '\"StrictHostKeyChecking\" no'"},
    # ssh expands ${VAR} in known_hosts paths.
    {"ansible_ssh_common_args": "-o UserKnownHostsFile=${TMPDIR}/kh"},
])
def test_9_what_ansible_and_ssh_make_of_the_words_is_judged(variables: dict[str, str]) -> None:
    assert names.host_key_problem(variables) is not None, variables


def test_9_config_files_and_known_hosts_others_could_change_are_refused(tmp_path: Path
                                                                        ) -> None:
    tmp_path.chmod(0o755)
    quoted = tmp_path / "quoted.cfg"
    quoted.write_text('"KnownHostsCommand" /bin/cat\n')
    assert names.host_key_problem({"ansible_ssh_common_args": f"-F {quoted}"}) is not None
    lax = tmp_path / "lax.cfg"
    lax.write_text("ServerAliveInterval 5\n")
    assert names.host_key_problem({"ansible_ssh_common_args": f"-F {lax}"}) is None
    lax.chmod(0o666)  # fine today; anyone may turn checking off in it before the next step
    assert names.host_key_problem({"ansible_ssh_common_args": f"-F {lax}"}) is not None
    # A known_hosts file of ours, two levels below a directory anyone may write (not sticky):
    # they could rename the directory in between and put their own file there.
    open_dir = tmp_path / "open"
    (open_dir / "mine").mkdir(parents=True)
    open_dir.chmod(0o777)
    (open_dir / "mine").chmod(0o700)
    known = open_dir / "mine" / "known_hosts"
    known.write_text("")
    problem = names.host_key_problem({"ansible_ssh_common_args":
                                      f"-o UserKnownHostsFile={known}"})
    assert problem is not None and "directory above it" in problem


def test_9_an_ssh_config_file_is_judged_with_what_it_includes(tmp_path: Path) -> None:
    (tmp_path / "evil.conf").write_text("KnownHostsCommand /bin/cat\n")
    for body in (f"Include {tmp_path}/evil.conf\n", "Match exec true\n  StrictHostKeyChecking no\n",
                 "Host jump\n  StrictHostKeyChecking accept-new\n"):
        (tmp_path / "ssh.cfg").write_text(body)
        problem = names.host_key_problem({"ansible_ssh_common_args": f"-F {tmp_path}/ssh.cfg"})
        assert problem is not None and "ssh.cfg:" in problem, body


def test_9_strict_settings_of_a_real_estate_are_accepted(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    known = tmp_path / "known_hosts"
    known.write_text("")
    (tmp_path / "ssh.cfg").write_text(f"Host jump\n  UserKnownHostsFile {known}\n"
                                      "  StrictHostKeyChecking yes\n")
    for args in (f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes",
                 f"-F {tmp_path}/ssh.cfg -o ControlMaster=auto -o ControlPersist=60s",
                 "-C -4 -o ServerAliveInterval=5", "-o 'ProxyJump admin@jump'"):
        assert names.host_key_problem({"ansible_ssh_common_args": args}) is None, args


# ---- 10. the audit log vouches for every host's current state ---------------------------------
def test_10_a_state_changed_behind_the_log_fails_audit_verify(tmp_path: Path) -> None:
    w = World(tmp_path, 1)
    w.when("install_staged", "before", None, lambda: w.fleet.fail.setdefault(
        "install_staged", set()).add("h0"))
    w.run(w.engine(SWAP1))
    store = w.store()
    assert store.get("h0").state == HostState.UNPROTECTED  # type: ignore[union-attr]
    assert store.audit_verify().ok
    store.db.execute("UPDATE hosts SET state = 'migrated' WHERE name = 'h0'")
    verdict = store.audit_verify()
    assert not verdict.ok
    assert any("h0" in p for p in verdict.problems), verdict.problems


# ---- 11. records of touched hosts stay true ---------------------------------------------------
def test_11a_a_removal_cut_off_by_a_crash_is_finished_by_a_verification(tmp_path: Path) -> None:
    w = World(tmp_path, 1)

    def die() -> None:
        w.host("h0").reachable = False
        raise Crash

    w.when("remove", "after", None, die)  # KESL purged; the orchestrator dies; h0 goes dark
    with pytest.raises(Crash):
        w.run(w.engine(MBB1))
    w.run(w.engine(MBB1))
    assert w.states()["h0"] == HostState.UNPROTECTED  # unreachable: protection unknown
    w.host("h0").reachable = True
    calls = len(w.fleet.calls)
    w.run(w.engine(MBB1))
    assert w.states()["h0"] == HostState.MIGRATED
    assert any(step.startswith(("verify", "final-verify", "remediate-verify", "reprobe-verify"))
               for step, _ in w.fleet.calls[calls:]), w.fleet.calls[calls:]
    assert not untrue_records(w)


def test_11b_a_touched_host_with_a_broken_dpkg_is_not_called_untouched(tmp_path: Path) -> None:
    w = World(tmp_path, 1)

    def break_dpkg() -> None:
        w.host("h0").dpkg_broken = True

    w.when("remove", "mid", "h0", break_dpkg)  # KESL stopped, then the purge fails
    w.run(w.engine(MBB1))
    assert w.states()["h0"] == HostState.REMOVE_FAILED
    engine = w.engine(MBB1)
    engine.discover(["h0"])
    record = w.record("h0")
    assert record.state != HostState.BLOCKED, record
    assert not untrue_records(w)


# ---- 12. a host in its window that is only slow to answer is waited for ------------------------
def test_12_a_host_unreachable_for_a_while_is_retried_not_declared_unprotected(
        tmp_path: Path) -> None:
    w = World(tmp_path, 2)

    def slow_sshd() -> None:  # "Connection timed out during banner exchange", a few times
        w.host("h0").unreachable_for = 4

    w.when("install_staged", "before", None, slow_sshd)
    summary = w.run(w.engine(SWAP1))
    assert w.states()["h0"] == HostState.MIGRATED, w.record("h0")
    assert summary.exit_code == 0
    assert w.peak <= 1
    assert not untrue_records(w)


def test_12b_a_host_that_never_comes_back_is_unprotected_after_the_window(tmp_path: Path
                                                                        ) -> None:
    w = World(tmp_path, 2)
    w.when("install_staged", "before", None,
           lambda: setattr(w.host("h0"), "reachable", False))
    w.run(w.engine(SWAP1))
    assert w.states()["h0"] == HostState.UNPROTECTED
    assert w.host("h1").kesl_running  # no removal started while h0's fate was unknown
    assert sum(w.clock.slept) >= 590, w.clock.slept  # about the 10-minute window, waited


def test_policy_defaults_are_the_documented_ones() -> None:
    assert Policy().strategy == "auto"
