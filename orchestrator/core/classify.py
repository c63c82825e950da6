"""What a read-only probe means for a host's state, given what the state said before. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.models import (
    INTENTS,
    SLOT_STATES,
    UNTOUCHED,
    HostFacts,
    HostRecord,
    HostState,
    StepOutcome,
)

_WHAT = {StepOutcome.UNREACHABLE: "unreachable", StepOutcome.UNKNOWN: "outcome unknown",
         StepOutcome.FAILED: "probe failed"}


@dataclass(frozen=True)
class Settled:
    """What a probe concludes: the state, why, and the evidence of protection to record
    (a text; "" when the probe found none; None to keep the evidence recorded before)."""

    state: HostState
    reason: str
    proof: str | None


def in_doubt(state: HostState, banned_protects: bool) -> bool:
    """Must a probe prove this host's protection before its record is believed?

    Yes for a host caught mid-step (an intent), holding a budget slot, or interrupted; and for
    any host a step has touched, short of migrated, on which no protecting banned product runs
    (its KESL was stopped, or never ran): its protection rests on the replacement alone, which
    only a verification proves.
    """
    if state in INTENTS or state in SLOT_STATES or state == HostState.INTERRUPTED:
        return True
    return state not in UNTOUCHED and state != HostState.MIGRATED and not banned_protects


def settle(  # noqa: PLR0913, PLR0917 - a probe's findings, as the engine and tests pass them
        prior: HostRecord, outcome: StepOutcome, message: str, facts: HostFacts | None,
        problems: list[str], proof: str | None, verified: bool = False) -> Settled:
    """The state a probe records for a host, given what the record said before.

    `proof` is the evidence of protection the probe gave (protection.proof_of), `verified`
    whether it is the replacement's own verification. A host in doubt (`in_doubt`) leaves it
    only with such evidence; a touched host never becomes "unreachable", "blocked" or "clean"
    (those say nothing was done to it).
    """
    if outcome != StepOutcome.OK or facts is None:
        return _unanswered(prior.state, outcome, message)
    if prior.state in SLOT_STATES and facts.reboot_pending and not (proof and not verified):
        return Settled(HostState.REBOOT_PENDING,
                       "its banned product's removal completes at the next reboot; it keeps "
                       "its slot until it has rebooted and its replacement is proven", None)
    if prior.state == HostState.REBOOT_PENDING and not rebooted_since(prior, facts):
        return Settled(HostState.REBOOT_PENDING,
                       "reboot pending: re-probed, not rebooted since its removal; it keeps "
                       "its slot until it has rebooted and its replacement is proven", None)
    if (prior.state == HostState.INSTALL_FAILED and not prior.protected_by and not facts.banned
            and not verified):
        # Never protected by evidence (it had no antivirus at all, protect_unprotected tried
        # and failed): not in doubt because of this migration, and no budget slot to take.
        return Settled(HostState.INSTALL_FAILED, prior.reason, proof or "")
    if in_doubt(prior.state, banned_protects=bool(proof) and not verified):
        return _reprobed(prior.state, facts, proof, verified)
    if prior.state in UNTOUCHED:
        return _first_look(facts, problems, proof)
    return _touched(prior, facts, problems, proof)


def rebooted_since(prior: HostRecord, facts: HostFacts) -> bool:
    """Has the host booted since its record last changed (its removal's reboot is done)?
    The host's boot time against the controller's clock: both kept by NTP; unknown: no."""
    return facts.booted_at is not None and facts.booted_at > prior.updated_at


def _unanswered(state: HostState, outcome: StepOutcome, message: str) -> Settled:
    """The probe got no facts: a host that held a slot or was mid-step stays in doubt."""
    what = _WHAT.get(outcome, outcome.value)
    if state == HostState.REBOOT_PENDING:  # perhaps rebooting now: the next run looks again
        return Settled(state, f"reboot pending; protection unknown ({what}: {message}); it "
                       "keeps its slot of the protection budget", None)
    if state in SLOT_STATES:
        return Settled(HostState.UNPROTECTED,
                       f"protection unknown ({what}: {message}); it keeps its slot of the "
                       "protection budget until a probe proves protection", None)
    if state in (HostState.INSTALLING, HostState.STAGING):
        return Settled(HostState.INTERRUPTED,
                       f"{what} at the re-probe after {state.value} ({message}); its banned "
                       "product was not touched; the next run re-probes it", None)
    if state not in UNTOUCHED:
        return Settled(state, f"{what} at the last probe ({message}); state as last known",
                       None)
    if outcome == StepOutcome.FAILED:
        return Settled(HostState.BLOCKED, f"discovery failed: {message}", "")
    return Settled(HostState.UNREACHABLE, f"{what}: {message}; nothing done to it", None)


def _reprobed(state: HostState, facts: HostFacts, proof: str | None, verified: bool
              ) -> Settled:
    """A host in doubt leaves it only with evidence of protection; without, it is unprotected."""
    after = f"re-probed after {state.value}"
    if verified and proof and not facts.banned:
        return Settled(HostState.MIGRATED, f"{after}: no banned product left; {proof}", proof)
    if verified and proof:
        return Settled(HostState.VERIFIED, f"{after}: {proof}; {_found(facts)} still on", proof)
    if proof:
        return Settled(HostState.INTERRUPTED, f"{after}: {proof}; the next run resumes it",
                       proof)
    return Settled(HostState.UNPROTECTED,
                   f"{after}: no protecting product runs and the replacement is not "
                   "verified; treated as unprotected until a run or remediate verifies it",
                   "")


def _first_look(facts: HostFacts, problems: list[str], proof: str | None) -> Settled:
    """A host nothing was done to: clean, blocked by what preflight found, or pending."""
    if not facts.banned:
        return Settled(HostState.CLEAN, "no banned product found", proof or "")
    if problems:
        return Settled(HostState.BLOCKED, "; ".join(problems), proof or "")
    return Settled(HostState.PENDING, f"found {_found(facts)}", proof or "")


def _touched(prior: HostRecord, facts: HostFacts, problems: list[str], proof: str | None
             ) -> Settled:
    """A host a step has changed keeps its state, unless a banned product is (back) on it."""
    state = prior.state
    if not facts.banned:
        return Settled(state, prior.reason, proof)  # we were migrating it: the run proves it
    if problems:
        return Settled(state, f"{'; '.join(problems)} (was {state.value}: nothing more is "
                       "done to it until that is fixed)", proof)
    if state in (HostState.INSTALL_FAILED, HostState.VERIFIED, HostState.STAGED,
                 HostState.REMOVE_FAILED):
        return Settled(state, prior.reason, proof)
    if state == HostState.MIGRATED:
        return Settled(HostState.PENDING, f"banned product is back: {_found(facts)}",
                       proof or "")
    return Settled(HostState.PENDING, f"found {_found(facts)}", proof or "")


def _found(facts: HostFacts) -> str:
    return ", ".join(f"{b.product} {b.version or ''}".strip() for b in facts.banned)


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
