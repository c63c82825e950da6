from __future__ import annotations

import pytest

from orchestrator.classify import in_window, settle, wave_gate
from orchestrator.models import BannedFinding, HostFacts, HostRecord, HostState, StepOutcome

KESL_ON = BannedFinding("kesl", "12.1", "2024-09-27", ("kesl",), ("kesl.service",), 2)
KESL_OFF = BannedFinding("kesl", "12.1", "2024-09-27", ("kesl",), (), 0)


def rec(state: HostState, strategy: str | None = None) -> HostRecord:
    return HostRecord("h", state, "before", strategy, None, None, 0.0, None, None)


def facts(banned: tuple[BannedFinding, ...] = (), replacement: bool = False) -> HostFacts:
    return HostFacts("Debian", "Debian", "12", banned, replacement, replacement)


OK = StepOutcome.OK


@pytest.mark.parametrize(
    ("prior", "found", "expected"),
    [
        # A run died mid-step: what the probe reads decides.
        (HostState.INSTALLING, facts((KESL_ON,)), HostState.INTERRUPTED),
        (HostState.REMOVING, facts((), replacement=True), HostState.INTERRUPTED),
        (HostState.SWAPPING, facts(()), HostState.UNPROTECTED),
        (HostState.REMOVING, facts((KESL_OFF,)), HostState.UNPROTECTED),
        (HostState.STAGING, facts((KESL_ON,)), HostState.INTERRUPTED),
        # Settled states.
        (HostState.PENDING, facts(()), HostState.CLEAN),
        (HostState.PENDING, facts((KESL_ON,)), HostState.PENDING),
        (HostState.MIGRATED, facts((), replacement=True), HostState.MIGRATED),
        (HostState.MIGRATED, facts((KESL_ON,)), HostState.PENDING),
        (HostState.VERIFIED, facts((KESL_ON,), replacement=True), HostState.VERIFIED),
        (HostState.STAGED, facts((KESL_ON,)), HostState.STAGED),
        # Only a verification clears an alarm.
        (HostState.UNPROTECTED, facts((), replacement=True), HostState.UNPROTECTED),
    ],
)
def test_settle_after_probe(prior: HostState, found: HostFacts, expected: HostState) -> None:
    state, reason = settle(rec(prior), OK, "", found, [])
    assert state == expected, reason


def test_problems_block_a_host_with_a_banned_product() -> None:
    state, reason = settle(rec(HostState.PENDING), OK, "", facts((KESL_ON,)), ["low disk"])
    assert (state, reason) == (HostState.BLOCKED, "low disk")


@pytest.mark.parametrize(
    ("prior", "strategy", "expected"),
    [
        (HostState.PENDING, None, HostState.UNREACHABLE),
        (HostState.INSTALLING, "make-before-break", HostState.UNREACHABLE),
        (HostState.REMOVING, "make-before-break", HostState.UNREACHABLE),
        # Unreachable while its protection was down: assume the worst.
        (HostState.REMOVING, "swap", HostState.UNPROTECTED),
        (HostState.SWAPPING, "swap", HostState.UNPROTECTED),
        (HostState.UNPROTECTED, "swap", HostState.UNPROTECTED),
    ],
)
def test_settle_unreachable(prior: HostState, strategy: str | None,
                            expected: HostState) -> None:
    state, _ = settle(rec(prior, strategy), StepOutcome.UNREACHABLE, "refused", None, [])
    assert state == expected


def test_window_membership() -> None:
    assert in_window(rec(HostState.REMOVING, "swap"))
    assert not in_window(rec(HostState.REMOVING, "make-before-break"))
    assert in_window(rec(HostState.SWAPPING, "swap"))
    assert in_window(rec(HostState.UNPROTECTED))
    assert not in_window(rec(HostState.STAGED, "swap"))


def states(failed: int, ok: int, failure: HostState = HostState.INSTALL_FAILED
           ) -> dict[str, HostState]:
    out = {f"f{i}": failure for i in range(failed)}
    out.update({f"o{i}": HostState.MIGRATED for i in range(ok)})
    return out


def test_gate_boundary_both_sides() -> None:
    # 25 %: one failure in four hosts is exactly at the threshold and passes; two trip it.
    assert wave_gate("wave 1", states(1, 3), 25.0) is None
    verdict = wave_gate("wave 1", states(2, 2), 25.0)
    assert verdict is not None
    assert "2 of 4 hosts fail (50% > 25%)" in verdict


def test_gate_counts_unreachable_but_not_blocked() -> None:
    assert wave_gate("w", states(1, 1, HostState.UNREACHABLE), 0.0) is not None
    assert wave_gate("w", states(1, 1, HostState.BLOCKED), 0.0) is None
    assert wave_gate("w", {}, 0.0) is None
