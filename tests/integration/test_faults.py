"""Faults on real lab hosts: the orchestrator killed, hosts powered off, cut off, full.

After each: no more than K hosts were ever without protection (sampled on the hosts
themselves during the run: KESL running or clamd detecting EICAR), no committed state was
lost, the affected host is reported for what it is (checked by logging in), and the other
hosts finish. The orchestrator is killed alone, as the OOM killer would: the steps it started
must die with it.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import ssh
from orchestrator.lab.lab import Lab, LabHost, LabInfo
from orchestrator.models import HostState
from orchestrator.protection import EICAR_B64
from orchestrator.state import SqliteStore

from ..support.lab import Sampler, kill_orchestrator, start_run

pytestmark = pytest.mark.lab

# Two labs, so that `make test` can run the two halves of these tests side by side (xdist
# groups); a test's group names its lab.
FIRST, SECOND = pytest.mark.xdist_group("fault"), pytest.mark.xdist_group("cut")
HERE = Path(__file__).parent
K = 1


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


SAMPLERS: list[Sampler] = []


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh fault lab per test; every lab it brings up is sampled while the test runs."""
    group = request.node.get_closest_marker("xdist_group")
    the_lab = Lab(group.args[0] if group else "fault")
    yield the_lab
    for sampler in SAMPLERS:
        sampler.__exit__()
    seen = [(s.max_unprotected, s.seen) for s in SAMPLERS]
    SAMPLERS.clear()
    the_lab.down([])
    assert the_lab.leftovers() == []
    for peak, moments in seen:
        assert peak <= K, f"sampled more than {K} unprotected hosts at once: {moments}"


def up(lab: Lab, hosts: int, scenario: str = "fleet_kesl.yml") -> LabInfo:
    info = lab.up(hosts, HERE / scenario, [])
    SAMPLERS.append(Sampler(lab, info).__enter__())
    return info


def state_of(workdir: Path, host: str) -> str | None:
    db = workdir / "state.db"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT state FROM hosts WHERE name = ?", (host,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def wait_state(workdir: Path, host: str, states: set[str], proc: subprocess.Popen[str],
               timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = state_of(workdir, host)
        if s in states:
            return s
        if proc.poll() is not None:
            pytest.fail(f"run ended (exit {proc.returncode}) before {host} reached {states}; "
                        f"last state {s}; see {workdir / 'runs.log'}")
        time.sleep(0.2)
    pytest.fail(f"{host} did not reach {states} in {timeout}s")


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> int:
    return proc.wait(timeout=timeout)


def check_migrated(info: LabInfo, host: LabHost) -> None:
    target = info.target(host)
    _, out, _ = ssh.run(target, "dpkg-query -W -f '${Status}' kesl klnagent64")
    assert "install ok installed" not in out, host.name
    assert ssh.run(target, "pgrep -f /opt/kaspersky/")[0] == 1, host.name
    _, out, _ = ssh.run(target, f"echo {EICAR_B64} | base64 -d > /tmp/e.test; clamdscan "
                                "--fdpass --no-summary /tmp/e.test; echo rc=$?; rm -f /tmp/e.test")
    assert "FOUND" in out and "rc=1" in out, (host.name, out)


def check_record(workdir: Path) -> SqliteStore:
    """The state is whole, and its audit log vouches for every host's state."""
    store = SqliteStore(workdir / "state.db")
    assert store.integrity_ok()
    verdict = store.audit_verify()
    assert verdict.ok, verdict.problems
    return store


@SECOND
def test_swap_stays_within_the_protection_budget(lab: Lab, workdir: Path) -> None:
    info = up(lab, 3)
    sampler = SAMPLERS[-1]
    proc = start_run(workdir, info.inventory, "--strategy", "swap", "--max-unprotected", str(K))
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    assert sampler.samples > 20
    assert sampler.max_unprotected <= K, sampler.seen
    assert sampler.seen, "the sampler never saw a swap window: it proves nothing"
    store = check_record(workdir)
    for r in store.all():
        assert r.state == HostState.MIGRATED
        assert r.strategy == "swap"
        assert r.gap_seconds is not None and r.gap_seconds > 0
    for host in info.hosts:
        check_migrated(info, host)


@FIRST
def test_orchestrator_killed_at_random_moments_resumes(lab: Lab, workdir: Path) -> None:
    kills_wanted = int(os.environ.get("AVMIGRATE_KILLS", "10"))
    rng = random.Random(int(os.environ.get("AVMIGRATE_KILL_SEED", "20241")))
    kills = generations = 0
    info = up(lab, 3)
    while kills < kills_wanted:
        committed = ([dataclasses.asdict(t) for t in SqliteStore(workdir / "state.db").history()]
                     if (workdir / "state.db").exists() else [])
        strategy = rng.choice(["swap", "swap", "make-before-break"])
        proc = start_run(workdir, info.inventory, "--strategy", strategy,
                         "--max-unprotected", str(K))
        try:
            proc.wait(timeout=rng.uniform(2.0, 45.0))
        except subprocess.TimeoutExpired:
            left = kill_orchestrator(proc)  # the orchestrator alone
            assert not left, f"steps outlived the orchestrator: {left}"
            kills += 1
        store = check_record(workdir)
        after = [dataclasses.asdict(t) for t in store.history()]
        assert after[: len(committed)] == committed, "a committed transition was lost"
        store.close()
        if proc.returncode == 0:  # this generation is done: check it, start another
            generations += 1
            for host in info.hosts:
                check_migrated(info, host)
            for suffix in ("", "-wal", "-shm"):
                (workdir / f"state.db{suffix}").unlink(missing_ok=True)
            info = up(lab, 3)
    proc = start_run(workdir, info.inventory, "--max-unprotected", str(K))
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    for host in info.hosts:
        check_migrated(info, host)
    check_record(workdir)
    samples = sum(s.samples for s in SAMPLERS)
    peak = max(s.max_unprotected for s in SAMPLERS)
    assert peak <= K
    print(f"{kills} kills over {generations + 1} lab generations; "
          f"{samples} samples, at most {peak} unprotected at once")


@FIRST
def test_host_powered_off_mid_install(lab: Lab, workdir: Path) -> None:
    info = up(lab, 3)
    victim = info.hosts[1]
    proc = start_run(workdir, info.inventory)
    wait_state(workdir, victim.name, {"installing"}, proc)
    time.sleep(1.0)
    lab.power_off(victim)
    assert finish(proc) in (3, 4)
    store = check_record(workdir)
    rec = store.get(victim.name)
    assert rec is not None
    assert rec.state == HostState.INSTALL_FAILED, rec
    assert "unreachable" in rec.reason
    for host in (info.hosts[0], info.hosts[2]):
        r = store.get(host.name)
        assert r is not None and r.state == HostState.MIGRATED, r
        check_migrated(info, host)


@SECOND
def test_network_cut_mid_removal_is_waited_for_through_the_reconnect_window(
        lab: Lab, workdir: Path) -> None:
    """Make-before-break: the network of a host goes down right after its removal began. The
    host keeps its budget slot, the run retries it with backoff, and when the network is back
    within the window its final verification runs: migrated, proven, in the same run."""
    info = up(lab, 2)
    victim = info.hosts[1]
    proc = start_run(workdir, info.inventory, "--reconnect-window", "240")
    wait_state(workdir, victim.name, {"removing"}, proc)
    lab.cut_network(victim)
    time.sleep(20)
    assert proc.poll() is None, "the run gave up on a host in its window"
    assert state_of(workdir, victim.name) == "removing"  # it holds its slot meanwhile
    lab.restore_network(victim)
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    assert "in their protection window do not answer" in (workdir / "runs.log").read_text()
    store = check_record(workdir)
    rec = store.get(victim.name)
    assert rec is not None and rec.state == HostState.MIGRATED, rec
    for host in info.hosts:
        check_migrated(info, host)


@SECOND
def test_network_cut_past_the_reconnect_window_is_unprotected_then_restored(
        lab: Lab, workdir: Path) -> None:
    info = up(lab, 2)
    victim = info.hosts[1]
    proc = start_run(workdir, info.inventory, "--reconnect-window", "15")
    wait_state(workdir, victim.name, {"removing"}, proc)
    lab.cut_network(victim)
    assert finish(proc) == 5, (workdir / "runs.log").read_text()[-3000:]
    store = check_record(workdir)
    rec = store.get(victim.name)
    assert rec is not None
    # Unknown is unprotected: its final verification could not run (no longer remove_failed).
    assert rec.state == HostState.UNPROTECTED, rec
    assert "did not answer for 15s" in rec.reason
    store.close()
    lab.restore_network(victim)
    proc = start_run(workdir, info.inventory)
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    check_record(workdir)
    for host in info.hosts:
        check_migrated(info, host)


@FIRST
def test_sshd_killed_mid_swap_is_unprotected_stops_removals_then_recovers(
        lab: Lab, workdir: Path) -> None:
    info = up(lab, 3)
    victim = info.hosts[1]  # wave 1, first of its batch with a budget of 1
    proc = start_run(workdir, info.inventory, "--strategy", "swap", "--max-unprotected", "1",
                     "--reconnect-window", "20")
    wait_state(workdir, victim.name, {"swapping"}, proc)
    lab.kill_sshd(victim)
    assert finish(proc) == 5  # an unprotected host: the loudest exit code
    store = check_record(workdir)
    rec = store.get(victim.name)
    assert rec is not None
    assert rec.state == HostState.UNPROTECTED, rec
    other = store.get(info.hosts[2].name)
    assert other is not None
    assert other.state in (HostState.STAGED, HostState.PENDING), other  # no removal started
    assert lab.protection(info.hosts[2], ("kesl.service",))["kesl.service"]
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status"], cwd=workdir, capture_output=True,
        text=True, env=dict(os.environ, AVMIGRATE_STATE="state.db"), check=False)
    assert status.returncode == 5
    assert "unprotected" in status.stdout
    # sshd back: the next run restores protection first, then finishes the fleet.
    lab.exec(victim, ["systemctl", "unmask", "--runtime", "ssh.service"])
    lab.exec(victim, ["systemctl", "start", "ssh.service"])
    proc = start_run(workdir, info.inventory, "--strategy", "swap", "--max-unprotected", "1")
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    check_record(workdir)
    for host in info.hosts:
        check_migrated(info, host)


@SECOND
def test_disk_filled_mid_install_leaves_kaspersky_running(lab: Lab, workdir: Path) -> None:
    info = up(lab, 2, "fleet_small_disk.yml")
    victim = info.hosts[1]
    proc = start_run(workdir, info.inventory)
    wait_state(workdir, victim.name, {"installing"}, proc)
    lab.exec(victim, ["dd", "if=/dev/zero", "of=/var/cache/apt/archives/filler", "bs=1M",
                      "count=64"], check=False)
    assert finish(proc) == 4
    store = check_record(workdir)
    rec = store.get(victim.name)
    assert rec is not None
    assert rec.state == HostState.INSTALL_FAILED, rec
    assert "banned product untouched" in rec.reason
    assert lab.protection(victim, ("kesl.service",))["kesl.service"]
    first = store.get(info.hosts[0].name)
    assert first is not None and first.state == HostState.MIGRATED


@FIRST
def test_ctrl_c_once_finishes_the_step_twice_aborts_and_both_resume(lab: Lab,
                                                                     workdir: Path) -> None:
    info = up(lab, 3)
    first = info.hosts[0]
    # Once: the install under way ends and is recorded; no further step starts.
    proc = start_run(workdir, info.inventory)
    wait_state(workdir, first.name, {"installing"}, proc)
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == 3
    store = check_record(workdir)
    rec = store.get(first.name)
    assert rec is not None
    assert rec.state == HostState.INTERRUPTED, rec
    assert "stopped by the operator" in rec.reason
    assert lab.protection(first, ("kesl.service",))["kesl.service"]  # never touched
    store.close()
    # Twice: the running step is aborted; its hosts keep their intent for the next run.
    proc = start_run(workdir, info.inventory)
    wait_state(workdir, first.name, {"installing"}, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == 130
    store = check_record(workdir)
    rec = store.get(first.name)
    assert rec is not None
    assert rec.state == HostState.INSTALLING, rec
    store.close()
    proc = start_run(workdir, info.inventory)
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    history = [t.to_state for t in SqliteStore(workdir / "state.db").history(first.name)]
    assert HostState.INTERRUPTED in history
    for host in info.hosts:
        check_migrated(info, host)
