"""Discovery: probe hosts read-only and settle each one's state from what it really has now."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from orchestrator.core import classify
from orchestrator.core import facts as factlib
from orchestrator.core.models import (
    UNTOUCHED,
    HostFacts,
    HostRecord,
    HostState,
    StepOutcome,
    StepResult,
)
from orchestrator.core.protection import proof_of, protecting_products
from orchestrator.plan.planner import strategy_for

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


class Discovery:
    """Probes hosts through the engine's steps and commits the state each one is found in."""

    def __init__(self, engine: Engine, why: dict[str, str] | None = None) -> None:
        self.engine = engine
        # Per host, what led to the probe (kept at the head of the reason).
        self.why = why or {}

    def discover(self, names: list[str]) -> dict[str, HostRecord]:
        """Read-only probe of hosts; settle each from what it really has now.

        A host in doubt (classify.in_doubt: caught mid-step, or touched and protected by its
        replacement alone) whose probe shows no protecting product running but the replacement
        installed is verified as well (EICAR through its daemon): only that proof, or a
        protecting product running, lets it out of doubt.
        """
        engine = self.engine
        engine.store.ensure_hosts(names)
        out: dict[str, HostRecord] = {}
        deferred: list[tuple[StepResult, HostFacts, list[str]]] = []

        def probed(result: StepResult) -> None:
            prior = engine.record(result.host)
            if result.outcome != StepOutcome.OK:
                out[result.host] = self._settle(prior, result, None, [], False)
                return
            rid = engine.replacement_of(result.host)
            if isinstance(seen := result.data.get("preflight"), dict):
                engine.preflight_seen[result.host] = (engine.monotonic(), seen)
            facts = factlib.parse_discovery(result.data, engine.catalogue, rid)
            problems = factlib.preflight_problems(facts, engine.catalogue, rid)
            banned_protects = bool(protecting_products(facts, engine.catalogue))
            if classify.in_doubt(prior.state, banned_protects) and not banned_protects and (
                    facts.replacement_installed or facts.replacement_active):
                deferred.append((result, facts, problems))
                return
            out[result.host] = self._settle(prior, result, facts, problems, False)

        # A run's discovery reads the preflight checks of the hosts it may migrate (those
        # untouched so far), sparing their first wave a second probe.
        ask = None
        if engine.preflight_in_discovery:
            untouched = {r.name for r in engine.store.in_states(UNTOUCHED)}
            ask = {n: {"avmigrate_discover_preflight": True} for n in names if n in untouched}
        engine.step("discover", "discover.yml", names, ask, on_result=probed)
        if deferred:
            proofs = engine.step("reprobe-verify", "verify.yml", [r.host for r, _, _ in deferred])
            for result, facts, problems in deferred:
                verified = engine.proof_problem(proofs[result.host]) is None
                out[result.host] = self._settle(engine.record(result.host), result, facts,
                                                problems, verified)
        return out

    def _settle(self, prior: HostRecord, result: StepResult, facts: HostFacts | None,
                problems: list[str], verified: bool) -> HostRecord:
        engine = self.engine
        rid = engine.replacement_of(result.host)
        proof = None if facts is None else proof_of(facts, engine.catalogue, rid, verified)
        found = classify.settle(prior, result.outcome, result.message, facts, problems,
                                proof, verified)
        extra: dict[str, Any] = {"proof": found.proof}
        if facts is not None:
            extra["facts"] = facts
            # The recommendation, for hosts not under way: a host mid-migration keeps the
            # strategy it is being migrated with.
            if facts.banned and found.state in (HostState.PENDING, HostState.BLOCKED):
                extra["strategy"] = strategy_for(facts, engine.catalogue, rid)
        if verified and found.state in (HostState.VERIFIED, HostState.MIGRATED):
            extra["replacement_verified_at"] = time.time()
        reason = found.reason
        if result.host in self.why and found.state != prior.state:
            reason = f"{self.why[result.host]}; {reason}"
        return engine.move(result.host, found.state, reason, **extra)
