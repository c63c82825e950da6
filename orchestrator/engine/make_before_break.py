"""make-before-break, for products that coexist: install and verify the replacement, then, in
batches the protection budget allows, remove the banned product and verify once more.

A replacement that may run beside a banned product only in passive mode (catalogue
`passive_beside`) is installed passive and proved healthy by its `verify_passive` evidence
while the banned product, still running, protects; after the removal it is activated and must
then prove protection by its own evidence. From the removal to that proof the host holds a
slot of the protection budget like any other. A host with no banned product at all (policy
`protect_unprotected`) is installed, verified and done."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from orchestrator.core.models import HostState, StepOutcome, StepResult, Strategy
from orchestrator.core.protection import passive_proof, replacement_proof
from orchestrator.engine.budget import Budget
from orchestrator.engine.failures import not_installed, unreachable_in_window

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine

# A make-before-break host waiting this long for a budget slot is verified again before its
# banned product is touched: the verification it had may no longer hold.
STALE_VERIFICATION_S = 600.0


class MakeBeforeBreak:
    """Migrates hosts whose banned product and replacement can run side by side."""

    # What `plan --check` runs in check mode for these hosts before the removal.
    CHECK_STEP: ClassVar[tuple[str, str]] = ("check-install", "install.yml")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self, names: list[str], wave: int) -> str | None:
        """Install, verify, then remove under the budget; a reason when removals stopped."""
        engine = self.engine
        if not names:
            return None
        engine.check_stop()
        passive = {n for n in names if engine.passive_beside(n)}
        for n in names:
            how = " in passive mode beside the banned product" if n in passive else ""
            engine.move(n, HostState.INSTALLING, f"installing {engine.replacement_of(n)}{how}",
                        wave=wave, strategy=Strategy.MAKE_BEFORE_BREAK)
        inst = engine.step("install", "install.yml", names,
                           {n: {"avmigrate_passive": n in passive} for n in names})
        installed = []
        for n in names:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                installed.append(n)
            else:
                not_installed(engine, n, f"install {r.outcome.value}: {r.message}")
        engine.check_stop()
        verified = self._verify_installed("verify", installed)
        verified = self._done_where_nothing_is_banned(verified)
        return Budget(engine).batches(
            verified, self._batch, self._fresh,
            lambda n: f"removing {', '.join(engine.banned_ids(n)) or 'leftovers'}")

    def _verify_installed(self, step: str, names: list[str]) -> list[str]:
        """Verify the installed replacement: its protection, or, where it runs passive, its
        health in passive mode while the banned product still protects."""
        engine = self.engine
        todo = [n for n in names if n not in engine.settled]
        passive = {n for n in todo if engine.passive_beside(n)}
        results = engine.step(step, "verify.yml", todo, {
            n: {"avmigrate_verify_phase": "passive",
                "avmigrate_protecting_units": engine.protecting_units(n)} for n in passive})
        verified = []
        for n in names:
            if n in engine.settled:
                continue
            problem = engine.proof_problem(results[n], passive=n in passive)
            if problem is None:
                rid = engine.replacement_of(n)
                proof = (passive_proof(rid, engine.protecting_units(n)) if n in passive
                         else replacement_proof(rid))
                engine.move(n, HostState.VERIFIED, proof, replacement_verified_at=time.time(),
                            proof=proof)
                verified.append(n)
            else:
                not_installed(engine, n, f"its health in passive mode: {problem}" if n in passive
                              else f"verification failed: {problem}")
        return verified

    def _done_where_nothing_is_banned(self, verified: list[str]) -> list[str]:
        """Hosts without any banned product (protect_unprotected) are done once verified;
        the others go on to removal."""
        engine = self.engine
        left = []
        for n in verified:
            facts = engine.record(n).facts
            if facts is not None and not facts.banned:
                engine.move(n, HostState.MIGRATED, "protected: no banned product was on it; "
                            f"{replacement_proof(engine.replacement_of(n))}",
                            proof=replacement_proof(engine.replacement_of(n)))
            else:
                left.append(n)
        return left

    def _fresh(self, candidates: list[str], _free: int) -> list[str]:
        """Candidates whose verification is recent; those verified long ago (they waited for
        a slot) are verified again first, and dropped if that fails."""
        now = time.time()
        stale = [n for n in candidates if now - (
            self.engine.record(n).replacement_verified_at or 0) > STALE_VERIFICATION_S]
        if not stale:
            return candidates
        good = set(self._verify_installed("verify-again", stale))
        return [n for n in candidates if n not in stale or n in good]

    def _batch(self, batch: list[str]) -> None:
        engine = self.engine
        # Decided before the removal, from what discovery saw running.
        passive = {n for n in batch if engine.passive_beside(n)}
        host_vars = {n: {"avmigrate_remove_ids": engine.banned_ids(n)} for n in batch}
        # From here the removal and its proof run to the end, even if a stop is requested.
        rem = engine.reach("remove", "remove.yml", batch, host_vars)
        lost = {n for n in batch if rem[n].outcome == StepOutcome.UNREACHABLE}
        # A passive replacement is switched to active protection only where the banned
        # product is gone: active beside it is what the vendor forbids.
        to_activate = [n for n in batch if n in passive and n not in lost
                       and n not in engine.settled and rem[n].outcome == StepOutcome.OK]
        act = engine.reach("activate", "activate.yml", to_activate)
        lost |= {n for n in to_activate if act[n].outcome == StepOutcome.UNREACHABLE}
        still_passive = {n for n in passive if n not in to_activate}
        final = engine.reach("final-verify", "verify.yml",
                             [n for n in batch if n not in lost and n not in engine.settled],
                             {n: {"avmigrate_verify_phase": "passive",
                                  "avmigrate_protecting_units": engine.protecting_units(n)}
                              for n in still_passive})
        for n in batch:
            if n in engine.settled:
                continue
            removal = rem[n]
            if n in lost or final[n].outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, final.get(n, act.get(n, removal)))
                continue
            self._conclude(n, removal, act.get(n), final[n], n in still_passive)

    def _conclude(self, n: str, removal: StepResult, activation: StepResult | None,
                  final: StepResult, still_passive: bool) -> None:
        """A host's state after its removal, from the final verification's evidence."""
        engine = self.engine
        rid = engine.replacement_of(n)
        problem = engine.proof_problem(final, passive=still_passive)
        if problem is not None:
            why = (f"activation {activation.outcome.value}: {activation.message}; "
                   if activation is not None and activation.outcome != StepOutcome.OK else "")
            engine.move(n, HostState.UNPROTECTED,
                        f"UNPROTECTED: {why}replacement failed its final check ({problem}) "
                        f"after removal {removal.outcome.value}")
            engine.log(f"!!! {n} is UNPROTECTED: {why}{problem}")
        elif still_passive:
            proof = passive_proof(rid, engine.protecting_units(n))
            engine.move(n, HostState.REMOVE_FAILED,
                        f"removal {removal.outcome.value}: {removal.message}; the banned "
                        f"product still protects, {rid} stays passive beside it", proof=proof)
        elif removal.outcome != StepOutcome.OK:
            engine.move(n, HostState.REMOVE_FAILED,
                        f"removal {removal.outcome.value}: {removal.message}; replacement "
                        "verified after it and protecting", proof=replacement_proof(rid))
        elif activation is not None:
            # Passive until now: its protection begins with this proof (the gap ends here).
            engine.move(n, HostState.MIGRATED, "banned product removed; replacement "
                        "activated and verified", proof=replacement_proof(rid),
                        replacement_verified_at=time.time())
        else:
            engine.move(n, HostState.MIGRATED, "banned product removed; replacement verified",
                        proof=replacement_proof(rid))
