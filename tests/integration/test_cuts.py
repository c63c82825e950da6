"""Faults on real lab hosts, second half: the swap budget, a network cut within and past
the reconnect window, a disk filled mid-install. Same checks as test_faults.py, on a lab of
its own so that both run side by side."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.core.models import HostState
from orchestrator.lab.lab import Lab

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
from ..support.lab import start_run

pytestmark = pytest.mark.lab

lab = lab_fixture("cut")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


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
