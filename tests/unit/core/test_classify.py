from __future__ import annotations

import dataclasses

import pytest

from orchestrator.core.classify import settle, wave_gate
from orchestrator.core.models import (
    ALLOWED_TRANSITIONS,
    SLOT_STATES,
    UNTOUCHED,
    BannedFinding,
    HostFacts,
    HostRecord,
    HostState,
    StepOutcome,
)
from orchestrator.core.protection import proof_of, protecting_products
from orchestrator.inputs import catalogue

KESL_ON = BannedFinding("kesl", "12.1", "2024-09-27", ("kesl",),
                        ("kesl.service", "kesl-supervisor.service"), 2)
KESL_OFF = BannedFinding("kesl", "12.1", "2024-09-27", ("kesl",), (), 0)
AGENT_ON = BannedFinding("klnagent64", "14.2", None, ("klnagent64",), ("klnagent64.service",), 1)
CAT = catalogue.load()


def rec(state: HostState, strategy: str | None = None) -> HostRecord:
    return HostRecord("h", state, "before", strategy, None, None, 0.0, None, None)


def facts(banned: tuple[BannedFinding, ...] = (), replacement: bool = False) -> HostFacts:
    return HostFacts("Debian", "Debian", "12", banned, replacement, replacement)


OK = StepOutcome.OK


def probe(prior: HostState, found: HostFacts, verified: bool = False,
          problems: tuple[str, ...] = ()) -> HostState:
    proof = proof_of(found, CAT, "clamav", verified)
    return settle(rec(prior), OK, "", found, list(problems), proof, verified).state


@pytest.mark.parametrize(
    ("prior", "found", "verified", "expected"),
    [
        # A run died mid-step: evidence of protection decides, nothing else.
        (HostState.INSTALLING, facts((KESL_ON,)), False, HostState.INTERRUPTED),
        (HostState.STAGING, facts((KESL_ON,)), False, HostState.INTERRUPTED),
        (HostState.SWAPPING, facts(()), False, HostState.UNPROTECTED),
        (HostState.REMOVING, facts((KESL_OFF,)), False, HostState.UNPROTECTED),
        # The Network Agent runs but protects nothing (case 2 of issue 12).
        (HostState.REMOVING, facts((KESL_OFF, AGENT_ON)), False, HostState.UNPROTECTED),
        # An active clamd that was never verified proves nothing.
        (HostState.REMOVING, facts((), replacement=True), False, HostState.UNPROTECTED),
        (HostState.REMOVING, facts((), replacement=True), True, HostState.MIGRATED),
        (HostState.SWAPPING, facts((AGENT_ON,), replacement=True), True, HostState.VERIFIED),
        (HostState.REMOVING, facts((KESL_ON,)), False, HostState.INTERRUPTED),
        # An alarm is cleared only by evidence.
        (HostState.UNPROTECTED, facts((), replacement=True), False, HostState.UNPROTECTED),
        (HostState.UNPROTECTED, facts((), replacement=True), True, HostState.MIGRATED),
        (HostState.UNPROTECTED, facts((KESL_ON,)), False, HostState.INTERRUPTED),
        # Settled states.
        (HostState.PENDING, facts(()), False, HostState.CLEAN),
        (HostState.PENDING, facts((KESL_ON,)), False, HostState.PENDING),
        (HostState.MIGRATED, facts((), replacement=True), False, HostState.MIGRATED),
        (HostState.MIGRATED, facts((KESL_ON,)), False, HostState.PENDING),
        (HostState.VERIFIED, facts((KESL_ON,), replacement=True), False, HostState.VERIFIED),
        (HostState.STAGED, facts((KESL_ON,)), False, HostState.STAGED),
        # Touched, KESL stopped: only the replacement's own verification is protection.
        (HostState.REMOVE_FAILED, facts((KESL_OFF,), replacement=True), False,
         HostState.UNPROTECTED),
        (HostState.REMOVE_FAILED, facts((KESL_OFF,), replacement=True), True,
         HostState.VERIFIED),
        (HostState.INSTALL_FAILED, facts((AGENT_ON,)), False, HostState.UNPROTECTED),
        # A migrated host keeps the proof of its migration.
        (HostState.MIGRATED, facts(()), False, HostState.MIGRATED),
    ],
)
def test_settle_after_probe(prior: HostState, found: HostFacts, verified: bool,
                            expected: HostState) -> None:
    assert probe(prior, found, verified) == expected


def test_only_a_product_the_catalogue_says_protects_is_evidence() -> None:
    assert protecting_products(facts((KESL_ON, AGENT_ON)), CAT) == ["kesl"]
    assert protecting_products(facts((KESL_OFF, AGENT_ON)), CAT) == []
    assert proof_of(facts((AGENT_ON,), replacement=True), CAT, "clamav", False) is None
    assert "verified" in str(proof_of(facts(), CAT, "clamav", True))


def test_problems_block_only_an_untouched_host() -> None:
    assert probe(HostState.PENDING, facts((KESL_ON,)), problems=("low disk",)) == (
        HostState.BLOCKED)
    # Case 11 of issue 12: a touched host is never called blocked ("untouched"). With KESL
    # still running it keeps its state; with KESL stopped its protection rests on the
    # replacement alone: verified by the probe, or unprotected.
    for touched in (HostState.REMOVE_FAILED, HostState.INSTALL_FAILED, HostState.VERIFIED,
                    HostState.STAGED):
        broken = ("dpkg was interrupted",)
        assert probe(touched, facts((KESL_ON,)), problems=broken) == touched
        assert probe(touched, facts((KESL_OFF,), replacement=True), problems=broken) == (
            HostState.UNPROTECTED)
        assert probe(touched, facts((KESL_OFF,), replacement=True), verified=True,
                     problems=broken) == HostState.VERIFIED


@pytest.mark.parametrize(
    ("prior", "expected"),
    [
        (HostState.PENDING, HostState.UNREACHABLE),
        (HostState.UNREACHABLE, HostState.UNREACHABLE),
        # Caught mid-install: its banned product was not touched; the next run re-probes it.
        (HostState.INSTALLING, HostState.INTERRUPTED),
        # Unreachable while its protection was down or in doubt: assume the worst, keep the
        # slot (case 11 of issue 12: make-before-break removals too).
        (HostState.REMOVING, HostState.UNPROTECTED),
        (HostState.SWAPPING, HostState.UNPROTECTED),
        (HostState.UNPROTECTED, HostState.UNPROTECTED),
        # A touched host keeps the state that says so.
        (HostState.REMOVE_FAILED, HostState.REMOVE_FAILED),
        (HostState.MIGRATED, HostState.MIGRATED),
    ],
)
def test_settle_unreachable(prior: HostState, expected: HostState) -> None:
    found = settle(rec(prior), StepOutcome.UNREACHABLE, "refused", None, [], None)
    assert found.state == expected, found


def test_no_move_takes_a_touched_host_back_to_an_untouched_state() -> None:
    for src, allowed in ALLOWED_TRANSITIONS.items():
        if src in UNTOUCHED or src == HostState.MIGRATED:
            continue
        assert not (allowed & UNTOUCHED), (src, allowed & UNTOUCHED)
    # MIGRATED -> PENDING only: a banned product came back, a new migration begins.
    assert ALLOWED_TRANSITIONS[HostState.MIGRATED] & UNTOUCHED == {HostState.PENDING}


def test_removal_is_entered_only_after_verification_or_stage() -> None:
    entering = {src for src, allowed in ALLOWED_TRANSITIONS.items()
                if HostState.REMOVING in allowed and src not in SLOT_STATES}
    assert entering == {HostState.VERIFIED, HostState.STAGED}


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


def test_a_removal_waiting_for_its_reboot_is_proven_only_after_the_boot() -> None:
    """reboot_pending (issue 16): a host whose removal completes at the next boot keeps its
    slot until it has booted since its record changed, whatever else the probe shows."""
    prior = HostRecord("h", HostState.REBOOT_PENDING, "before", None, None, None, 1000.0,
                       None, None)
    verified = facts((), replacement=True)
    proof = proof_of(verified, CAT, "clamav", True)
    not_booted = dataclasses.replace(verified, booted_at=900.0)
    assert settle(prior, OK, "", not_booted, [], proof, True).state == HostState.REBOOT_PENDING
    unknown = dataclasses.replace(verified, booted_at=None)
    assert settle(prior, OK, "", unknown, [], proof, True).state == HostState.REBOOT_PENDING
    booted = dataclasses.replace(verified, booted_at=1100.0)
    assert settle(prior, OK, "", booted, [], proof, True).state == HostState.MIGRATED
    # Booted, but the replacement not proven: nothing is known to protect it.
    bare = dataclasses.replace(facts(()), booted_at=1100.0)
    assert settle(prior, OK, "", bare, [], "", False).state == HostState.UNPROTECTED
    # Not answering: perhaps rebooting; it keeps its slot.
    gone = settle(prior, StepOutcome.UNREACHABLE, "timed out", None, [], None)
    assert gone.state == HostState.REBOOT_PENDING and "keeps its slot" in gone.reason
    # A host in a slot state found with its removal waiting for the boot (a lost result).
    pending = dataclasses.replace(verified, reboot_pending=True, booted_at=1100.0)
    for state in (HostState.REMOVING, HostState.SWAPPING, HostState.UNPROTECTED):
        assert settle(rec(state), OK, "", pending, [], proof, True).state == (
            HostState.REBOOT_PENDING), state
    assert HostState.REBOOT_PENDING in SLOT_STATES
