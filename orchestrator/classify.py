"""What a read-only probe means for a host's state, given what the state said before. Pure."""

from __future__ import annotations

from orchestrator.models import INTENTS, HostFacts, HostRecord, HostState, StepOutcome

SWAP = "swap"
MAKE_BEFORE_BREAK = "make-before-break"

# States in which a host may be without protection: they count against the budget.
WINDOW_STATES = frozenset({HostState.SWAPPING, HostState.UNPROTECTED})


def in_window(record: HostRecord) -> bool:
    """Is this host between "banned product stopped" and "replacement verified"?"""
    if record.state in WINDOW_STATES:
        return True
    return record.state == HostState.REMOVING and record.strategy == SWAP


def settle(prior: HostRecord, outcome: StepOutcome, message: str, facts: HostFacts | None,
           problems: list[str]) -> tuple[HostState, str]:
    """The state discovery records for a host, and why."""
    if outcome != StepOutcome.OK or facts is None:
        if in_window(prior):
            return (HostState.UNPROTECTED,
                    f"cannot probe a host whose protection was down ({message}); "
                    "treated as unprotected until a run or remediate verifies it")
        if outcome == StepOutcome.UNKNOWN:
            return HostState.INTERRUPTED, f"unknown: {message}"
        if outcome == StepOutcome.UNREACHABLE:
            return HostState.UNREACHABLE, f"unreachable: {message}"
        return HostState.BLOCKED, f"discovery failed: {message}"
    banned_on = [b.product for b in facts.banned if b.services_active or b.processes]
    replacement_on = facts.replacement_active
    if prior.state in INTENTS or prior.state in (HostState.UNPROTECTED, HostState.INTERRUPTED):
        if not banned_on and not replacement_on:
            return (HostState.UNPROTECTED,
                    f"re-probed after {prior.state.value}: neither the banned product nor the "
                    "replacement is running")
        if prior.state == HostState.UNPROTECTED:
            return HostState.UNPROTECTED, (
                "was unprotected; " + ("replacement running again" if replacement_on else
                                       f"{', '.join(banned_on)} running") +
                ": a run or remediate must verify it")
        running = ", ".join([*banned_on, *(["replacement"] if replacement_on else [])])
        return HostState.INTERRUPTED, (f"re-probed after {prior.state.value}: {running} "
                                       "running; the next run resumes it")
    if not facts.banned:
        if prior.state in (HostState.PENDING, HostState.UNREACHABLE, HostState.BLOCKED,
                           HostState.CLEAN):
            return HostState.CLEAN, "no banned product found"
        return prior.state, prior.reason  # we were migrating it: the run finishes and proves it
    if problems:
        return HostState.BLOCKED, "; ".join(problems)
    if prior.state in (HostState.INSTALL_FAILED, HostState.VERIFIED, HostState.STAGED,
                       HostState.REMOVE_FAILED):
        return prior.state, prior.reason
    found = ", ".join(f"{b.product} {b.version or ''}".strip() for b in facts.banned)
    if prior.state == HostState.MIGRATED:
        return HostState.PENDING, f"banned product is back: {found}"
    return HostState.PENDING, f"found {found}"


# Host outcomes that count as a failure for a wave's gate. BLOCKED does not: preflight left
# such a host untouched and still protected by the banned product; it is reported as a risk.
GATE_FAILURES = frozenset({HostState.INSTALL_FAILED, HostState.REMOVE_FAILED,
                           HostState.UNPROTECTED, HostState.UNREACHABLE,
                           HostState.INTERRUPTED})


def wave_gate(label: str, states: dict[str, HostState], max_failed_percent: float
              ) -> str | None:
    """None if the wave may be followed by the next; else why the run must stop.

    The wave fails when failed hosts / wave hosts * 100 is strictly greater than the
    threshold: with 25 %, one failure in four hosts passes and two do not.
    """
    if not states:
        return None
    failed = sorted(h for h, s in states.items() if s in GATE_FAILURES)
    percent = 100.0 * len(failed) / len(states)
    if percent > max_failed_percent:
        return (f"gate: {label} had {len(failed)} of {len(states)} hosts fail ({percent:.0f}% > "
                f"{max_failed_percent:g}%): {', '.join(failed)}; later waves were not started")
    return None
