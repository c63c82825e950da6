"""Replacements per host (issue 15): a passive-mode product (MDE) installed passive beside
KESL, proved healthy, activated only after the removal; its failures; hosts with no antivirus
at all; the choice of replacement by policy group and inventory variable. The simulated
hosts hold the truth (tests/support/sim.py); the lab tests run the same engine on real hosts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.models import HostState, InventoryHost
from orchestrator.engine.engine import Engine
from orchestrator.engine.policy import RunPolicy
from orchestrator.inputs import catalogue
from orchestrator.inputs import policy as policy_mod
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.plan import choice as choice_mod
from orchestrator.plan import planner
from orchestrator.store.sqlite import SqliteStore
from tests.support.sim import SimFleet, SimHost


def mixed(tmp_path: Path, hosts: dict[str, SimHost], policy: RunPolicy | None = None,
          fail: dict[str, set[str]] | None = None) -> tuple[Engine, SimFleet, SqliteStore]:
    inv_hosts = tuple(InventoryHost(n, ("all",), {}) for n in hosts)
    inv = Inventory("sim", inv_hosts, digest_of(inv_hosts))
    fleet = SimFleet(hosts, fail or {})
    store = SqliteStore(tmp_path / "s.db")
    engine = Engine(store, fleet, catalogue.load(), inv, "clamav", log=lambda _m: None,
                    policy=policy or RunPolicy(max_failed_percent=100),
                    choice={n: h.product for n, h in hosts.items() if h.product != "clamav"})
    engine.discover(list(hosts))
    return engine, fleet, store


def run(engine: Engine, store: SqliteStore, protect: bool = False) -> None:
    records = {r.name: r for r in store.all()}
    plan = planner.make_plan(engine.inventory, engine.catalogue, "clamav", records,
                             policy_mod.Policy(growth=10, protect_unprotected=protect),
                             choice=engine.choice)
    engine.policy = dataclasses.replace(engine.policy, protect_unprotected=protect)
    engine.run(plan)


def steps_on(fleet: SimFleet, host: str) -> list[str]:
    return [step for step, names in fleet.calls if host in names]


def test_mde_is_installed_passive_proved_then_activated_only_after_the_removal(
        tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"), "s1": SimHost()})
    run(engine, store)
    for name in ("w1", "s1"):
        record = store.get(name)
        assert record is not None and record.state == HostState.MIGRATED, record
        assert fleet.hosts[name].protected and not fleet.hosts[name].kesl
    w1 = fleet.hosts["w1"]
    assert not w1.passive and not w1.conflicted  # never active beside a running KESL
    # Activated and proven in the removal's own Ansible run (remove.yml's later plays).
    assert steps_on(fleet, "w1") == ["discover", "preflight", "install", "verify", "remove",
                                     "evidence"]
    assert "activate" not in steps_on(fleet, "s1")  # ClamAV protects at once: nothing to do
    record = store.get("w1")
    assert record is not None and "activated and verified" in record.reason
    history = [t.to_state for t in store.history("w1")]
    assert history.index(HostState.VERIFIED) < history.index(HostState.REMOVING)
    # Passive is not protection: the gap runs from the removal to the active proof.
    assert record.gap_seconds is not None and record.gap_seconds > 0
    s1 = store.get("s1")
    assert s1 is not None and s1.gap_seconds == 0  # ClamAV protected throughout


def test_the_passive_stage_proves_the_banned_product_still_protects(tmp_path: Path) -> None:
    engine, _fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde")})
    run(engine, store)
    passive = [t for t in store.history("w1") if t.to_state == HostState.VERIFIED]
    assert passive and "kesl.service running" in passive[0].reason
    assert "passive mode" in passive[0].reason


def test_an_mde_that_is_not_healthy_stops_the_host_with_kesl_untouched(tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"), "w2": SimHost(
        product="mde")}, fail={"verify": {"w1"}})
    run(engine, store)
    record = store.get("w1")
    assert record is not None and record.state == HostState.INSTALL_FAILED
    assert "its health beside the banned product: failed" in record.reason
    assert fleet.hosts["w1"].kesl_running and fleet.hosts["w1"].kesl
    assert "remove" not in steps_on(fleet, "w1")
    other = store.get("w2")
    assert other is not None and other.state == HostState.MIGRATED


def test_a_failed_activation_after_removal_holds_the_slot_and_remediate_restores_it(
        tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"),
                                            "w2": SimHost(product="mde")})
    fleet.fail_next["w1"] = {"activate"}
    run(engine, store)
    record = store.get("w1")
    assert record is not None and record.state == HostState.UNPROTECTED
    assert "activation failed" in record.reason
    assert not fleet.hosts["w1"].protected  # truly bare: passive, KESL gone
    # No further removal starts while a host is unprotected: w2 waits with KESL running.
    assert fleet.hosts["w2"].kesl_running
    # `avmigrate remediate` without the policy: the engine's choice says clamav, but w1's
    # migration to mde began and is recorded: it is mde that is repaired.
    blind = Engine(store, fleet, engine.catalogue, engine.inventory, "clamav",
                   log=lambda _m: None, policy=RunPolicy())
    assert record.replacement == "mde" and blind.replacement_of("w1") == "mde"
    blind.remediate(["w1"])
    record = store.get("w1")
    assert record is not None and record.state == HostState.MIGRATED
    assert fleet.hosts["w1"].protected and not fleet.hosts["w1"].passive
    assert not fleet.hosts["w1"].wrong_product


def test_a_host_with_no_antivirus_is_a_risk_until_protect_unprotected(tmp_path: Path) -> None:
    bare = SimHost(kesl=False, kesl_running=False)
    engine, fleet, store = mixed(tmp_path, {"c1": bare, "k1": SimHost()})
    record = store.get("c1")
    assert record is not None and record.state == HostState.CLEAN
    run(engine, store)
    assert not fleet.hosts["c1"].clamav  # not asked: left alone
    run(engine, store, protect=True)
    record = store.get("c1")
    assert record is not None and record.state == HostState.MIGRATED
    assert fleet.hosts["c1"].protected and "remove" not in steps_on(fleet, "c1")


def inventory(*hosts: InventoryHost) -> Inventory:
    return Inventory("inv", hosts, digest_of(hosts))


def test_the_choice_inventory_variable_then_policy_group_then_default() -> None:
    cat = catalogue.load()
    inv = inventory(
        InventoryHost("ws1", ("workstations",), {}),
        InventoryHost("ws2", ("workstations",), {"avmigrate_replacement": "falcon"}),
        InventoryHost("db1", ("servers", "workstations"), {}),
        InventoryHost("x1", ("dmz",), {}, {"avmigrate_replacement": "mde"}),
        InventoryHost("o1", ("other",), {}),
    )
    pol = policy_mod.parse({"replacement": {"default": "clamav", "groups": {
        "servers": "clamav", "workstations": "mde"}}}, "policy.yml")
    got = choice_mod.choose(inv, pol, cat)
    assert [got.of(h) for h in inv.names()] == ["mde", "falcon", "clamav", "mde", "clamav"]
    assert got.others == {"ws1": "mde", "ws2": "falcon", "x1": "mde"}
    assert dict(got.counts(inv.names())) == {"clamav": 2, "mde": 2, "falcon": 1}
    # The command line's --replacement is the default; the policy's groups still apply.
    assert choice_mod.choose(inv, pol, cat, "falcon").of("o1") == "falcon"


@pytest.mark.parametrize(("policy", "own", "message"), [
    ({"replacement": "norton"}, {}, "replacement.default: no replacement 'norton'"),
    ({"replacement": {"groups": {"g": "sophos"}}}, {},
     "replacement.groups.g: no replacement 'sophos'"),
    ({}, {"avmigrate_replacement": "avast"},
     "host h1: inventory variable avmigrate_replacement='avast'"),
])
def test_an_unknown_replacement_is_one_clear_line(policy: dict[str, object],
                                                  own: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match="known: clamav, falcon, mde") as got:
        choice_mod.choose(inventory(InventoryHost("h1", ("g",), own)),
                          policy_mod.parse(policy, "policy.yml"), catalogue.load())
    assert message in str(got.value) and "\n" not in str(got.value)


def test_a_plan_names_a_host_whose_platform_its_replacement_does_not_support(
        tmp_path: Path) -> None:
    from orchestrator.report import views  # noqa: PLC0415

    engine, _fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"), "s1": SimHost()})
    cat = catalogue.load()
    cat.replacements["mde"]["platforms"] = ["rhel"]  # this host's Debian is not supported
    records = {r.name: r for r in store.all()}
    plan = planner.make_plan(engine.inventory, cat, "clamav", records,
                             choice={"w1": "mde"})
    view = views.plan_view(plan, records, engine.inventory, cat)
    assert view["rows"]["w1"].replacement == "mde"
    assert "no Microsoft Defender for Endpoint for platform Debian" in view["rows"]["w1"].risks
    assert view["rows"]["s1"].risks == ""
    assert {r["id"]: (r["hosts"], r["at_risk"]) for r in view["by_replacement"]} == {
        "clamav": (1, 0), "mde": (1, 1)}


def test_the_plan_file_carries_each_hosts_replacement_and_approvals_cover_it(
        tmp_path: Path) -> None:
    from orchestrator.plan import planfile  # noqa: PLC0415

    engine, _fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"), "s1": SimHost()})
    records = {r.name: r for r in store.all()}
    plan = planner.make_plan(engine.inventory, engine.catalogue, "clamav", records,
                             choice={"w1": "mde", "elsewhere": "falcon"})
    assert plan.replacements == {"w1": "mde"}  # hosts of this inventory only
    read = planfile.plan_from_json(planfile.plan_to_json(plan), "plan.json")
    assert read.replacements == {"w1": "mde"}
    other = dataclasses.replace(plan, replacements={"w1": "falcon"})
    assert planner.plan_key(other) != planner.plan_key(plan)


@pytest.mark.parametrize(("policy", "message"), [
    ({"replacement": 3}, "replacement: must be a mapping"),
    ({"replacement": {"default": "Not An Id"}}, "replacement.default: must be a replacement id"),
    ({"replacement": {"groups": ["mde"]}}, "replacement.groups: must map inventory groups"),
    ({"protect_unprotected": "yes"}, "protect_unprotected: must be true or false"),
])
def test_the_policy_replacement_section_is_checked(policy: dict[str, object],
                                                   message: str) -> None:
    from orchestrator.core.errors import PolicyError  # noqa: PLC0415

    with pytest.raises(PolicyError, match=message):
        policy_mod.parse({"version": 1, **policy}, "policy.yml")


def test_a_forced_swap_leaves_a_host_whose_replacement_cannot_be_staged(tmp_path: Path) -> None:
    engine, fleet, store = mixed(tmp_path, {"w1": SimHost(product="mde"), "s1": SimHost()},
                                 policy=RunPolicy(strategy="swap", max_failed_percent=100))
    run(engine, store)
    record = store.get("w1")
    assert record is not None and record.state == HostState.BLOCKED, record
    assert "mde cannot be swapped in" in record.reason
    assert fleet.hosts["w1"].kesl_running and not fleet.hosts["w1"].clamav
    s1 = store.get("s1")
    assert s1 is not None and s1.state == HostState.MIGRATED  # ClamAV swaps


def test_a_bare_host_whose_install_fails_stays_as_it_was_and_halts_nothing(
        tmp_path: Path) -> None:
    bare = SimHost(kesl=False, kesl_running=False)
    engine, _fleet, store = mixed(tmp_path, {"c1": bare, "k1": SimHost(), "k2": SimHost()},
                                 fail={"install": {"c1"}})
    run(engine, store, protect=True)
    record = store.get("c1")
    assert record is not None and record.state == HostState.INSTALL_FAILED, record
    assert "still has no antivirus at all" in record.reason
    for name in ("k1", "k2"):  # the fleet went on: no slot, no halt
        other = store.get(name)
        assert other is not None and other.state == HostState.MIGRATED, other
    engine.discover(["c1"])  # the next run's probe keeps it so
    record = store.get("c1")
    assert record is not None and record.state == HostState.INSTALL_FAILED


def test_protect_unprotected_under_a_forced_swap_installs_bare_hosts_directly(
        tmp_path: Path) -> None:
    bare = SimHost(kesl=False, kesl_running=False)
    engine, fleet, store = mixed(tmp_path, {"c1": bare, "k1": SimHost()},
                                 policy=RunPolicy(strategy="swap", max_failed_percent=100))
    run(engine, store, protect=True)
    for name in ("c1", "k1"):
        record = store.get(name)
        assert record is not None and record.state == HostState.MIGRATED, record
    assert "stage" not in steps_on(fleet, "c1") and "stage" in steps_on(fleet, "k1")
