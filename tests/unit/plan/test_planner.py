from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orchestrator.core.errors import CatalogueError
from orchestrator.core.models import HostRecord, HostState, InventoryHost, Plan, Transition
from orchestrator.inputs import catalogue, policy
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.plan import estimate, planner


def inv(n: int) -> Inventory:
    hosts = tuple(InventoryHost(f"h{i:03d}", ("all",), {}) for i in range(n))
    return Inventory("test", hosts, digest_of(hosts))


def rec(name: str, state: HostState) -> HostRecord:
    return HostRecord(name, state, "", None, None, None, 0.0, None, None)


@pytest.mark.parametrize(
    ("total", "canary", "growth", "expected"),
    [
        (0, 1, 2.0, []),
        (1, 1, 2.0, [1]),
        (11, 1, 2.0, [1, 2, 4, 4]),
        (12, 1, 2.0, [1, 2, 4, 5]),
        (100, 5, 2.0, [5, 10, 20, 40, 25]),
        (10, 20, 2.0, [10]),
        (7, 1, 1.1, [1, 2, 3, 1]),
    ],
)
def test_wave_sizes(total: int, canary: int, growth: float, expected: list[int]) -> None:
    sizes = planner.wave_sizes(total, canary, growth)
    assert sizes == expected
    assert sum(sizes) == total


def test_wave_sizes_respect_max_wave() -> None:
    sizes = planner.wave_sizes(5000, 1, 10.0, max_wave=500)
    assert max(sizes) == 500
    assert sum(sizes) == 5000


def test_plan_puts_every_host_in_exactly_one_wave_and_skips_clean() -> None:
    cat = catalogue.load()
    records = {"h000": rec("h000", HostState.CLEAN), "h001": rec("h001", HostState.MIGRATED),
               "h002": rec("h002", HostState.UNREACHABLE)}
    plan = planner.make_plan(inv(20), cat, "clamav", records, now=1.0)
    assert plan.waves[0].is_canary
    assert len(plan.waves[0].hosts) == 1
    assert sorted(plan.hosts) == sorted(f"h{i:03d}" for i in range(3, 20))
    assert len(set(plan.hosts)) == len(plan.hosts)
    assert plan.skipped == {"h000": "clean: no banned product found", "h001": "already migrated",
                            "h002": "held back: "}
    assert planner.plan_key(plan) == planner.plan_key(
        planner.make_plan(inv(20), cat, "clamav", records, now=2.0))
    assert plan.catalogue_digest == cat.digest


def test_plan_unknown_replacement_is_a_clear_error() -> None:
    with pytest.raises(CatalogueError, match="no replacement 'nope'"):
        planner.make_plan(inv(2), catalogue.load(), "nope", {})


# ---- policy: order, windows, blackouts, deadline ------------------------------------------
def fleet() -> Inventory:
    hosts = (
        [InventoryHost(f"srv{i}", ("servers",), {}) for i in range(4)]
        + [InventoryHost(f"ws{i:02d}", ("workstations",), {}) for i in range(12)]
        + [InventoryHost("dc1", ("servers", "critical"), {})]
        + [InventoryHost(f"lab{i}", ("lab",), {}) for i in range(3)]
    )
    t = tuple(hosts)
    return Inventory("fleet", t, digest_of(t))


POLICY = {
    "timezone": "America/New_York",
    "waves": {"canary": 1, "growth": 2},
    "order": {"first": ["workstations"], "last": ["servers", "critical"]},
    "windows": {
        "workstations": {"slots": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                    "start": "18:00", "end": "23:00"}]},
        "servers": {"timezone": "America/Chicago",
                    "slots": [{"days": ["sat"], "start": "22:00", "end": "04:00"}]},
    },
    "blackout": ["2026-12-01", {"from": "2026-12-05", "to": "2026-12-06"}],
}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()  # a Monday


def plan_with(extra: dict[str, object] | None = None) -> Plan:
    pol = policy.parse(POLICY | (extra or {}), "policy.yml")
    return planner.make_plan(fleet(), catalogue.load(), "clamav", {}, pol, now=NOW)


def test_groups_go_first_and_last_and_a_wave_never_mixes_windows() -> None:
    plan = plan_with()
    order = list(plan.hosts)
    assert order[:12] == [f"ws{i:02d}" for i in range(12)]
    assert order[12:15] == ["lab0", "lab1", "lab2"]
    assert order[15:19] == [f"srv{i}" for i in range(4)]
    assert order[-1] == "dc1"  # critical and a server: last of all
    for w in plan.waves:
        groups = {fleet().get(h).groups for h in w.hosts}
        windows = {policy.parse(POLICY, "p").window_for(g) for g in groups}
        assert len({w.window}) == 1 and len(windows) == 1
    assert [len(w.hosts) for w in plan.waves][:4] == [1, 2, 4, 5]  # 12 workstations


def test_every_wave_is_scheduled_inside_its_window_and_off_blackout_days() -> None:
    plan = plan_with()
    pol = policy.from_json(plan.policy)
    rows = plan.estimate["waves"]
    assert len(rows) == len(plan.waves)
    for w, row in zip(plan.waves, rows, strict=True):
        start = datetime.fromtimestamp(row["start"], UTC)
        end = datetime.fromtimestamp(row["end"], UTC)
        assert start >= datetime.fromtimestamp(NOW, UTC)
        window = pol.window_named(w.window)
        openings = pol.open_intervals(window, start - timedelta(days=1), end + timedelta(days=1))
        assert any(a <= start and end <= b for a, b in openings), (w, start, end)
        for blackout in ("2026-12-01", "2026-12-05", "2026-12-06"):
            day = datetime.fromisoformat(blackout).date()
            local = [start.astimezone(ZoneInfo("America/New_York")).date(),
                     end.astimezone(ZoneInfo("America/New_York")).date()]
            assert day not in local, (w, start, end)
    # Workstation waves: 18:00-23:00 New York on weekdays, not on Dec 1 (blackout).
    first = datetime.fromtimestamp(rows[0]["start"], UTC).astimezone(ZoneInfo("America/New_York"))
    assert (first.date().isoformat(), first.hour) == ("2026-11-30", 18)
    second = datetime.fromtimestamp(rows[1]["start"], UTC)
    assert second.astimezone(ZoneInfo("America/New_York")).date().isoformat() != "2026-12-01"
    # Servers only on Saturday nights, and Dec 5 is a blackout: the first is Dec 12, 22:00 CST.
    srv = next(r for w, r in zip(plan.waves, rows, strict=True) if w.window == "servers")
    local = datetime.fromtimestamp(srv["start"], UTC).astimezone(ZoneInfo("America/Chicago"))
    assert (local.date().isoformat(), local.hour) == ("2026-12-12", 22)


def test_an_unreachable_deadline_is_flagged_and_a_reachable_one_is_not() -> None:
    late = plan_with({"deadline": "2026-12-03"}).estimate["deadline"]
    assert late["feasible"] is False
    assert late["text"].startswith("CANNOT BE MET")
    ok = plan_with({"deadline": "2027-03-31"}).estimate["deadline"]
    assert ok["feasible"] is True
    assert "can be met" in ok["text"]


def test_a_wave_longer_than_any_opening_is_flagged() -> None:
    tight = POLICY | {"windows": {"workstations": {"slots": [
        {"days": ["mon"], "start": "18:00", "end": "18:01"}]}}, "deadline": "2027-12-31"}
    pol = policy.parse(tight, "policy.yml")
    plan = planner.make_plan(fleet(), catalogue.load(), "clamav", {}, pol, now=NOW)
    verdict = plan.estimate["deadline"]
    assert verdict["feasible"] is False
    assert "fits in no opening" in verdict["text"]


def test_canary_as_a_share_of_the_fleet() -> None:
    pol = policy.parse({"waves": {"canary": "10%"}}, "p.yml")
    plan = planner.make_plan(inv(40), catalogue.load(), "clamav", {}, pol, now=1.0)
    assert len(plan.waves[0].hosts) == 4


def test_durations_are_measured_from_earlier_runs_else_labelled_defaults() -> None:
    S = HostState
    history = [
        Transition("a", S.PENDING, S.INSTALLING, 100.0, 1, ""),
        Transition("a", S.INSTALLING, S.VERIFIED, 160.0, 1, ""),
        Transition("a", S.VERIFIED, S.REMOVING, 161.0, 1, ""),
        Transition("a", S.REMOVING, S.MIGRATED, 191.0, 1, ""),
        Transition("b", S.PENDING, S.STAGING, 100.0, 1, ""),
        Transition("b", S.STAGING, S.STAGED, 140.0, 1, ""),
        Transition("b", S.STAGED, S.REMOVING, 150.0, 1, ""),
        Transition("b", S.REMOVING, S.SWAPPING, 160.0, 1, ""),
        Transition("b", S.SWAPPING, S.MIGRATED, 185.0, 1, ""),
    ]
    est = estimate.measure(history)
    assert (est.install_verify, est.remove_verify, est.stage, est.swap_window) == (
        60.0, 30.0, 40.0, 35.0)
    described = est.describe()
    assert described["install_verify"]["source"].startswith("measured")
    assert described["preflight"]["source"].startswith("default")
    assert estimate.measure([]).describe()["install_verify"]["source"].startswith("default")


def test_the_planners_shortcut_knows_every_state_skip_reason_skips() -> None:
    """make_plan asks skip_reason only for states in _SKIPPED (100,000 calls saved)."""
    for state in HostState:
        record = HostRecord("h", state, "why", None, None, None, 0.0, None, None)
        assert (planner.skip_reason(record) is not None) == (state in planner._SKIPPED), state


def test_removals_of_both_strategies_run_in_rounds_of_the_budget() -> None:
    est = estimate.Estimates.defaults()
    # 40 make-before-break hosts, 10 forks: installs in 4 rounds; removals in rounds of K.
    one = estimate.wave_seconds(40, 0, est, 10, 1)
    ten = estimate.wave_seconds(40, 0, est, 10, 10)
    assert ten == est.preflight * 4 + est.install_verify * 4 + est.remove_verify * 4
    assert one == est.preflight * 4 + est.install_verify * 4 + est.remove_verify * 40
    # More slots than forks help no further: Ansible works on `forks` hosts at once.
    assert estimate.wave_seconds(40, 0, est, 10, 50) == ten
    assert estimate.wave_seconds(0, 6, est, 10, 2) == (
        est.preflight + est.stage + est.swap_window * 3)


def test_the_plan_says_what_the_budget_means_for_the_timeline() -> None:
    hosts = inv(200)
    records = {h.name: rec(h.name, HostState.PENDING) for h in hosts.hosts}
    small = planner.make_plan(hosts, catalogue.load(), "clamav", records,
                              policy.parse({"protection": {"max_unprotected": "1%"}}, "p.yml"),
                              now=1_790_000_000.0)
    large = planner.make_plan(hosts, catalogue.load(), "clamav", records,
                              policy.parse({"protection": {"max_unprotected": 10}}, "p.yml"),
                              now=1_790_000_000.0)
    effect = small.estimate["budget"]
    assert (effect["spec"], effect["hosts"], effect["fleet"]) == ("1%", 2, 200)
    assert "at most 2 host(s) of the 200 at once" in effect["text"]
    assert "With a budget of 4" in effect["text"]
    assert large.estimate["budget"]["hosts"] == 10
    assert small.estimate["deadline"]["finish"] > large.estimate["deadline"]["finish"]
    assert effect["removal_seconds"] > large.estimate["budget"]["removal_seconds"]
