"""Faults on real lab hosts: the orchestrator killed, a host powered off, its sshd killed,
Ctrl-C. (Network cuts and a full disk: test_cuts.py, on a lab of its own.)

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
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.core.models import HostState
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabInfo
from orchestrator.store.sqlite import SqliteStore

from ..support.faultlab import (
    SAMPLERS,
    K,
    check_migrated,
    check_record,
    finish,
    lab_fixture,
    state_of,
    up,
    wait_state,
)
from ..support.lab import kill_orchestrator, start_run

pytestmark = pytest.mark.lab

lab = lab_fixture("fault")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


WINDOW = {HostState.REMOVING.value, HostState.SWAPPING.value}


def _window_hosts(workdir: Path, info: LabInfo) -> list[str]:
    return [h.name for h in info.hosts if state_of(workdir, h.name) in WINDOW]


def _kill_moment(proc: subprocess.Popen[str], workdir: Path, info: LabInfo,
                 rng: random.Random, aimed: bool) -> bool:
    """Wait for the moment to kill `proc`; False if the run ended first. Half the kills are
    aimed: at a random instant of the first protection window the run opens (removal or swap
    under way), where a crash matters most; the others come at a random time of the run."""
    if not aimed:
        try:
            proc.wait(timeout=rng.uniform(2.0, 45.0))
        except subprocess.TimeoutExpired:
            return True
        return False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if _window_hosts(workdir, info):
            try:
                proc.wait(timeout=rng.uniform(0.0, 4.0))
            except subprocess.TimeoutExpired:
                return True
            return False
        time.sleep(0.1)
    return proc.poll() is None


def test_orchestrator_killed_at_random_moments_resumes(lab: Lab, workdir: Path) -> None:
    kills_wanted = int(os.environ.get("AVMIGRATE_KILLS", "10"))
    rng = random.Random(int(os.environ.get("AVMIGRATE_KILL_SEED", "20241")))
    kills = in_window = generations = 0
    info = up(lab, 3)
    while kills < kills_wanted:
        committed = ([dataclasses.asdict(t) for t in SqliteStore(workdir / "state.db").history()]
                     if (workdir / "state.db").exists() else [])
        strategy = rng.choice(["swap", "swap", "make-before-break"])
        proc = start_run(workdir, info.inventory, "--strategy", strategy,
                         "--max-unprotected", str(K))
        if _kill_moment(proc, workdir, info, rng, aimed=kills % 2 == 1):
            in_window += bool(_window_hosts(workdir, info))
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
            # Its sampler stops here: the next `up` tears these hosts down and boots new ones
            # with the same names, which it must not judge (it has its own sampler).
            SAMPLERS[-1].__exit__()
            for suffix in ("", "-wal", "-shm"):
                (workdir / f"state.db{suffix}").unlink(missing_ok=True)
            info = up(lab, 3)
    proc = start_run(workdir, info.inventory, "--max-unprotected", str(K))
    assert finish(proc) == 0, (workdir / "runs.log").read_text()[-3000:]
    for host in info.hosts:
        check_migrated(info, host)
    check_record(workdir)
    samples = sum(s.samples for s in SAMPLERS)
    bare = sum(len(s.seen) for s in SAMPLERS)
    peak = max(s.max_unprotected for s in SAMPLERS)
    print(f"{kills} kills ({in_window} inside a protection window) over {generations + 1} lab "
          f"generations; {samples} samples, {bare} moments with a host unprotected, "
          f"at most {peak} unprotected at once")
    assert peak <= K, [s.seen for s in SAMPLERS]
    if kills_wanted >= 2:
        assert in_window, "no kill landed inside a protection window"


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
        [sys.executable, "-m", "orchestrator.cli.cli", "status"], cwd=workdir, capture_output=True,
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
