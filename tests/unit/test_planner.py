from __future__ import annotations

import pytest

from orchestrator import catalogue, planner
from orchestrator.errors import CatalogueError
from orchestrator.inventory import Inventory, digest_of
from orchestrator.models import HostRecord, HostState, InventoryHost


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
