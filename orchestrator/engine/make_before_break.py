"""make-before-break, for products that coexist: install and verify the replacement, then, in
batches the protection budget allows, remove the banned product and verify once more."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from orchestrator.core.models import HostState, StepOutcome, Strategy
from orchestrator.core.protection import replacement_proof
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
        for n in names:
            engine.move(n, HostState.INSTALLING, f"installing {engine.replacement}", wave=wave,
                        strategy=Strategy.MAKE_BEFORE_BREAK)
        inst = engine.step("install", "install.yml", names)
        installed = []
        for n in names:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                installed.append(n)
            else:
                not_installed(engine, n, f"install {r.outcome.value}: {r.message}")
        engine.check_stop()
        verified = self._verify_installed("verify", installed)
        return Budget(engine).batches(
            verified, self._batch, self._fresh,
            lambda n: f"removing {', '.join(engine.banned_ids(n)) or 'leftovers'}")

    def _verify_installed(self, step: str, names: list[str]) -> list[str]:
        engine = self.engine
        results = engine.step(step, "verify.yml", [n for n in names if n not in engine.settled])
        verified = []
        for n in names:
            if n in engine.settled:
                continue
            problem = engine.proof_problem(results[n])
            if problem is None:
                engine.move(n, HostState.VERIFIED, replacement_proof(engine.replacement),
                            replacement_verified_at=time.time(),
                            proof=replacement_proof(engine.replacement))
                verified.append(n)
            else:
                not_installed(engine, n, f"verification failed: {problem}")
        return verified

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
        host_vars = {n: {"avmigrate_remove_ids": engine.banned_ids(n)} for n in batch}
        # From here the removal and its proof run to the end, even if a stop is requested.
        rem = engine.reach("remove", "remove.yml", batch, host_vars)
        lost = [n for n in batch if rem[n].outcome == StepOutcome.UNREACHABLE]
        final = engine.reach("final-verify", "verify.yml",
                             [n for n in batch if n not in lost and n not in engine.settled])
        for n in batch:
            if n in engine.settled:
                continue
            removal = rem[n]
            if n in lost or final[n].outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, final.get(n, removal))
                continue
            problem = engine.proof_problem(final[n])
            if problem is not None:
                engine.move(n, HostState.UNPROTECTED,
                            f"UNPROTECTED: replacement failed its final check ({problem}) "
                            f"after removal {removal.outcome.value}")
                engine.log(f"!!! {n} is UNPROTECTED: {problem}")
            elif removal.outcome != StepOutcome.OK:
                engine.move(n, HostState.REMOVE_FAILED,
                            f"removal {removal.outcome.value}: {removal.message}; replacement "
                            "verified after it and protecting",
                            proof=replacement_proof(engine.replacement))
            else:
                engine.move(n, HostState.MIGRATED,
                            "banned product removed; replacement verified",
                            proof=replacement_proof(engine.replacement))
