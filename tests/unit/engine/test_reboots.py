"""Removals that complete only at the next reboot (issue 16; KES on Windows: msiexec 3010).
The host is reboot_pending and holds its budget slot from the removal until it has rebooted
(in its maintenance window, or by its administrator) and its replacement is proven again.
The simulated hosts hold the truth (tests/support/sim.py): nothing protects a host whose
removal waits for its reboot."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.core.models import HostState
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs import policy as policy_mod
from orchestrator.inputs.windows import Slot, Window
from tests.support.sim import SimFleet, SimHost

from .test_replacements import mixed, run, steps_on


def _reboot_hosts() -> dict[str, SimHost]:
    return {"w1": SimHost(product="mde", reboot_removal=True),
            "w2": SimHost(reboot_removal=True), "s1": SimHost()}


def test_a_removal_that_asks_for_a_reboot_is_rebooted_then_proven(tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, _reboot_hosts())
    run(engine, store)
    for name in ("w1", "w2", "s1"):
        record = store.get(name)
        assert record is not None and record.state == HostState.MIGRATED, record
        host = fleet.hosts[name]
        assert host.protected and not host.reboot_pending and not host.kesl
    assert steps_on(fleet, "w1") == ["discover", "preflight", "install", "verify", "remove",
                                     "reboot", "activate", "final-verify", "evidence"]
    assert "reboot" not in steps_on(fleet, "s1")
    history = [t.to_state for t in store.history("w2")]
    assert history[-3:] == [HostState.REMOVING, HostState.REBOOT_PENDING, HostState.MIGRATED]
    # The slot was held through the reboot: the gap runs from the removal to the proof.
    w2 = store.get("w2")
    assert w2 is not None and w2.gap_seconds is not None and w2.gap_seconds >= 0


def _closed_window(now: datetime) -> policy_mod.Policy:
    """A window that is closed now (it opens tomorrow, for an hour)."""
    day = (now.weekday() + 1) % 7
    return policy_mod.Policy(windows=(Window("all", "UTC", (Slot((day,), now.time().replace(
        microsecond=0), now.time().replace(microsecond=0, hour=(now.hour + 1) % 24)),)),))


def test_outside_its_window_the_host_waits_holding_its_slot(tmp_path: Path) -> None:
    windows = _closed_window(datetime.now(UTC))
    policy = RunPolicy(max_failed_percent=100, max_unprotected=2, windows=windows)
    engine, fleet, store = mixed(tmp_path, {"w2": SimHost(reboot_removal=True)}, policy)
    # The wave itself runs now (its window is the policy's concern at wave start; here the
    # engine is asked directly), the reboot only inside the window.
    engine.migrate_wave(["w2"], 1)
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING, record
    assert "window" in record.reason and "is closed" in record.reason
    assert "reboot" not in steps_on(fleet, "w2")
    assert fleet.hosts["w2"].reboot_pending and not fleet.hosts["w2"].protected
    assert [r.name for r in store.slot_holders()] == ["w2"]  # its slot, until proven
    # The next run, with the window open (no windows now): discovery sees it not rebooted,
    # the run reboots it first, then proves it.
    engine.policy = dataclasses.replace(engine.policy, windows=None)
    engine.discover(["w2"])
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING, record
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.MIGRATED, record
    assert fleet.hosts["w2"].protected and store.slot_holders() == []


def test_reboot_never_leaves_it_to_the_administrator(tmp_path: Path) -> None:
    policy = RunPolicy(max_failed_percent=100, reboot="never")
    engine, fleet, store = mixed(tmp_path, {"w2": SimHost(reboot_removal=True)}, policy)
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING
    assert "reboot: never" in record.reason and "reboot" not in steps_on(fleet, "w2")
    # A later run before anyone rebooted: still waiting, nothing done to it.
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING
    # Its administrator reboots it; the next discovery proves it and it is migrated.
    host = fleet.hosts["w2"]
    host.reboot_pending, host.booted_at = False, time.time() + 1.0
    engine.discover(["w2"])
    record = store.get("w2")
    assert record is not None and record.state == HostState.MIGRATED, record
    assert host.protected


def test_a_failed_reboot_keeps_the_slot_and_the_next_run_finishes(tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, {"w2": SimHost(reboot_removal=True)},
                                 fail={"reboot": {"w2"}})
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING
    assert record.reason.startswith("reboot failed")
    fleet.fail.clear()
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.MIGRATED, record


def test_a_lost_removal_result_is_found_waiting_for_its_reboot(tmp_path: Path) -> None:
    """The execution node dies during the removal: the re-probe reads the pending boot
    renames and records reboot_pending, not migrated."""
    engine, fleet, store = mixed(tmp_path, {"w2": SimHost(reboot_removal=True)})
    fleet.lost = {"remove": {"w2"}}
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.REBOOT_PENDING, record
    assert "completes at the next reboot" in record.reason
    assert not fleet.hosts["w2"].protected
    fleet.lost = {}
    run(engine, store)
    record = store.get("w2")
    assert record is not None and record.state == HostState.MIGRATED, record
    assert isinstance(fleet, SimFleet) and fleet.hosts["w2"].protected
