"""The engine's decisions (budget, gates, approvals, unprotected hosts) against a simulated
fleet. Ansible is not involved here: the lab tests run the same engine on real hosts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.models import HostState, InventoryHost
from orchestrator.engine.engine import Engine
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs import catalogue
from orchestrator.inputs import policy as policy_mod
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.inputs.policy import Policy
from orchestrator.plan import planner
from orchestrator.store.sqlite import SqliteStore
from tests.support.sim import SimFleet, SimHost


def setup(tmp_path: Path, n: int, policy: RunPolicy, fail: dict[str, set[str]] | None = None,
          clock: Callable[[], float] = time.time
          ) -> tuple[Engine, SimFleet, SqliteStore, Inventory]:
    hosts = tuple(InventoryHost(f"h{i}", ("all",), {}) for i in range(n))
    inv = Inventory("sim", hosts, digest_of(hosts))
    fleet = SimFleet({h.name: SimHost() for h in hosts}, fail or {})
    store = SqliteStore(tmp_path / "s.db")
    engine = Engine(store, fleet, catalogue.load(), inv, "clamav", log=lambda _m: None,
                    policy=policy, clock=clock)
    engine.discover(list(inv.names()))
    return engine, fleet, store, inv


def plan_for(engine: Engine, store: SqliteStore, inv: Inventory, growth: float = 2.0
             ) -> Any:
    return planner.make_plan(inv, engine.catalogue, "clamav", {r.name: r for r in store.all()},
                             Policy(growth=growth))


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_swap_batches_never_exceed_the_budget(tmp_path: Path, budget: int) -> None:
    engine, fleet, store, inv = setup(tmp_path, 7, RunPolicy(strategy="swap",
                                                             max_unprotected=budget))
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.exit_code == 0
    assert all(r.state == HostState.MIGRATED for r in store.all())
    removals = [names for step, names in fleet.calls if step == "remove"]
    assert removals
    assert max(len(b) for b in removals) <= budget
    assert all(not h.kesl and h.clamav for h in fleet.hosts.values())


def test_make_before_break_removes_only_after_verification(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 3, RunPolicy(), fail={"verify": {"h1"}})
    engine.run(plan_for(engine, store, inv, growth=10))
    h1 = store.get("h1")
    assert h1 is not None
    assert h1.state == HostState.INSTALL_FAILED
    assert fleet.hosts["h1"].kesl  # never touched
    assert all("h1" not in names for step, names in fleet.calls if step == "remove")


def test_failed_swap_install_is_unprotected_and_stops_removals(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 4, RunPolicy(strategy="swap"),
                                      fail={"install-staged": {"h0"}})
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.exit_code == 5
    h0 = store.get("h0")
    assert h0 is not None and h0.state == HostState.UNPROTECTED
    attempts = [names for step, names in fleet.calls if step.startswith("install-staged")]
    assert attempts == [("h0",), ("h0",)]  # retried once from the stage
    assert [names for step, names in fleet.calls if step == "remove"] == [("h0",)]
    assert all(fleet.hosts[h].kesl for h in ("h1", "h2", "h3"))


def test_next_run_restores_protection_first(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 3, RunPolicy(strategy="swap"),
                                      fail={"install-staged": {"h0"}})
    engine.run(plan_for(engine, store, inv))
    fleet.fail.clear()
    engine.discover(list(inv.names()))
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.exit_code == 0
    assert any(step == "remediate-install" for step, _ in fleet.calls)
    assert all(r.state == HostState.MIGRATED for r in store.all())


def test_gate_stops_the_next_wave(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 7, RunPolicy(max_failed_percent=0),
                                      fail={"install": {"h0"}})
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.stopped_early is not None
    assert "canary wave had 1 of 1 hosts fail" in summary.stopped_early
    assert {names for step, names in fleet.calls if step == "preflight"} == {("h0",)}


def test_unapproved_wave_does_not_start(tmp_path: Path) -> None:
    engine, _, store, inv = setup(tmp_path, 3, RunPolicy(require_approval=True,
                                                             plan_key="k"))
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.stopped_early is not None
    assert "wave 1 needs approval" in summary.stopped_early
    assert [r.state for r in store.all()].count(HostState.MIGRATED) == 1  # the canary only
    store.add_approval("k", 1, "carol")
    engine.policy = RunPolicy(require_approval=True, plan_key="k")
    assert engine.run(plan_for(engine, store, inv)).exit_code == 0


def test_soak_reverifies_and_catches_a_replacement_that_stopped(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 3, RunPolicy(soak_seconds=0.01))
    fleet.fail = {"soak-verify": {"h0"}}
    summary = engine.run(plan_for(engine, store, inv))
    assert summary.exit_code == 5
    h0 = store.get("h0")
    assert h0 is not None and h0.state == HostState.UNPROTECTED
    assert "after the soak" in h0.reason
    assert summary.stopped_early is not None  # the gate stopped the next wave


def test_a_wave_starts_only_in_its_window_and_never_on_a_blackout_day(tmp_path: Path) -> None:
    pol = policy_mod.parse({
        "timezone": "UTC",
        "windows": {"all": {"slots": [{"days": ["sat"], "start": "22:00", "end": "04:00"}]}},
        "blackout": ["2026-12-12"],
    }, "policy.yml")
    now = [0.0]  # the wall clock the engine reads, set below
    engine, fleet, store, inv = setup(tmp_path, 3, RunPolicy(windows=pol),
                                      clock=lambda: now[0])
    plan = planner.make_plan(inv, engine.catalogue, "clamav", {r.name: r for r in store.all()},
                             pol)
    assert {w.window for w in plan.waves} == {"all"}

    now[0] = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()  # Wednesday
    summary = engine.run(plan)
    assert summary.stopped_early is not None
    assert "the all window (sat 22:00-04:00 (UTC)) is closed; it opens 2026-12-05 22:00" in (
        summary.stopped_early)
    assert not [c for c in fleet.calls if c[0] != "discover"]  # nothing started

    now[0] = datetime(2026, 12, 12, 23, 0, tzinfo=UTC).timestamp()  # blackout
    summary = engine.run(plan)
    assert summary.stopped_early is not None
    assert "2026-12-12 is a blackout date" in summary.stopped_early
    assert not [c for c in fleet.calls if c[0] != "discover"]

    now[0] = datetime(2026, 12, 6, 3, 0, tzinfo=UTC).timestamp()  # Sat night
    summary = engine.run(plan)
    assert summary.stopped_early is None
    assert all(r.state == HostState.MIGRATED for r in store.all())


def test_a_staged_package_changed_before_removal_stops_that_host(tmp_path: Path) -> None:
    engine, fleet, store, inv = setup(tmp_path, 3, RunPolicy(strategy="swap"))
    fleet.hosts["h1"].tampered = True
    summary = engine.run(plan_for(engine, store, inv, growth=10))
    h1 = store.get("h1")
    assert h1 is not None and h1.state == HostState.INSTALL_FAILED
    assert "staged packages changed since staging: clamav-daemon.deb" in h1.reason
    assert fleet.hosts["h1"].kesl  # never touched
    assert all("h1" not in names for step, names in fleet.calls if step == "remove")
    assert summary.exit_code == 4
    assert {r.name: r.state for r in store.all() if r.name != "h1"} == {
        "h0": HostState.MIGRATED, "h2": HostState.MIGRATED}


def test_hosts_of_a_lost_execution_node_are_reprobed_before_anything_else(tmp_path: Path
                                                                          ) -> None:
    engine, fleet, store, inv = setup(tmp_path, 4, RunPolicy(strategy="make-before-break"))
    fleet.lost = {"install": {"h2", "h3"}}
    one_wave = planner.make_plan(inv, engine.catalogue, "clamav",
                                 {r.name: r for r in store.all()}, Policy(canary=4))
    summary = engine.run(one_wave)
    assert summary.exit_code == 3  # the wave's gate: interrupted hosts count as failed
    after_install = fleet.calls[[s for s, _ in fleet.calls].index("install") + 1]
    assert after_install == ("discover", ("h2", "h3"))  # re-probed first
    for name in ("h2", "h3"):
        states = [t.to_state for t in store.history(name)]
        assert HostState.INTERRUPTED in states
        after = states[states.index(HostState.INTERRUPTED):]
        assert HostState.REMOVING not in after and HostState.VERIFIED not in after
        assert fleet.hosts[name].kesl  # the banned product was not touched
        assert "unknown: execution node n2" in store.history(name)[
            [t.to_state for t in store.history(name)].index(HostState.INTERRUPTED)].reason
    assert {r.name: r.state for r in store.all()}["h0"] == HostState.MIGRATED
    fleet.lost = {}
    engine.discover(list(inv.names()))
    assert engine.run(one_wave).exit_code == 0
    assert all(r.state == HostState.MIGRATED for r in store.all())


def test_a_run_s_discovery_stands_for_a_fresh_preflight_and_nothing_older(
        tmp_path: Path) -> None:
    """`run` asks its discovery for the Debian preflight checks: the first wave takes them
    instead of probing again (a broken host is refused all the same); later than
    PREFLIGHT_FRESH_S, or after the host was touched, a preflight step runs."""
    from orchestrator.engine import waves  # noqa: PLC0415

    engine, fleet, store, _inv = setup(tmp_path, 3, RunPolicy())
    fleet.hosts["h2"].dpkg_broken = True
    engine.preflight_in_discovery = True
    engine.discover(["h0", "h1", "h2"])
    asked = [c for c in fleet.calls if c[0] == "discover"][-1]
    assert asked == ("discover", ("h0", "h1", "h2"))
    assert set(engine.preflight_seen) == {"h0", "h1", "h2"}
    engine.migrate_wave(["h0", "h2"], 0)
    assert not [c for c in fleet.calls if c[0] == "preflight"]
    h2 = store.get("h2")
    assert h2 is not None and h2.state == HostState.BLOCKED
    assert "dpkg was interrupted" in h2.reason
    h0 = store.get("h0")
    assert h0 is not None and h0.state == HostState.MIGRATED
    # h1's reading ages past the limit: its wave probes it again.
    when, seen = engine.preflight_seen["h1"]
    engine.preflight_seen["h1"] = (when - waves.PREFLIGHT_FRESH_S - 1, seen)
    engine.migrate_wave(["h1"], 1)
    assert ("preflight", ("h1",)) in fleet.calls


def test_a_removal_whose_own_proof_fails_leaves_the_host_unprotected(tmp_path: Path) -> None:
    """The removal's Ansible run proves protection after it (its module's own proof): a
    failed proof there is judged from its readings, not retried by another step."""
    engine, fleet, store, inv = setup(tmp_path, 1, RunPolicy())
    seen: list[str] = []

    def fail_the_removals_proof(step: str, point: str, host: str | None, book: str) -> None:
        # The install proved ClamAV already; only the proof after the removal fails.
        if step == "remove" and point == "before":
            fleet.fail_next["h0"] = {"verify"}
        seen.append(step)

    fleet.hook = fail_the_removals_proof
    engine.run(plan_for(engine, store, inv))
    record = store.get("h0")
    assert record is not None and record.state == HostState.UNPROTECTED, record
    assert "removed, but protection is not proven" in record.reason
    assert "remove" in seen and "final-verify" not in seen
    assert not fleet.hosts["h0"].kesl
