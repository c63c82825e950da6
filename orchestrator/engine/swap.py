"""swap, for products that cannot coexist: stage the replacement, then, in batches the
protection budget allows, prove the stage again, remove the banned product, install from the
staged files and verify; once more if that fails, else the host is UNPROTECTED."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from orchestrator.core.facts import carries_proof
from orchestrator.core.models import UNTOUCHED, HostState, StepOutcome, StepResult, Strategy
from orchestrator.core.protection import replacement_proof
from orchestrator.engine.budget import Budget
from orchestrator.engine.failures import not_installed, unreachable_in_window

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine


class Swap:
    """Migrates hosts whose banned product must go before the replacement can be installed."""

    # What `plan --check` runs in check mode for these hosts before the removal.
    CHECK_STEP: ClassVar[tuple[str, str]] = ("check-stage", "stage.yml")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self, names: list[str], wave: int) -> str | None:
        """Stage, then swap under the budget; a reason when removals stopped."""
        engine = self.engine
        if not names:
            return None
        engine.check_stop()
        names = self._swappable(names)
        for n in names:
            rid = engine.pin(n)
            engine.move(n, HostState.STAGING, f"staging {rid}", wave=wave,
                        strategy=Strategy.SWAP, replacement=rid)
        stage = engine.step("stage", "stage.yml", names)
        queue = []
        for n in names:
            r = stage[n]
            if n in engine.settled:
                continue
            if r.outcome == StepOutcome.OK:
                engine.staged[n] = dict(r.data.get("staged", {}))
                engine.move(n, HostState.STAGED, "replacement staged and checked; banned "
                            "product still protecting")
                queue.append(n)
            else:
                not_installed(engine, n, f"staging {r.outcome.value}: {r.message}")
        return Budget(engine).batches(
            queue, self._batch, self._stage_proven,
            lambda n: f"swap: removing {', '.join(engine.banned_ids(n))}")

    def _swappable(self, names: list[str]) -> list[str]:
        """Hosts whose replacement can be staged; the others are left as they are, said why
        (a product whose role has no stage tasks coexists: make-before-break migrates it)."""
        engine = self.engine
        ok = []
        for n in names:
            rid, platform = engine.replacement_of(n), engine.platform(n)
            if engine.catalogue.supports(rid, Strategy.SWAP, platform):
                ok.append(n)
                continue
            prior = engine.record(n)
            to = HostState.BLOCKED if prior.state in UNTOUCHED else prior.state
            offers = engine.catalogue.entry("replacements", rid, platform)["strategies"]
            engine.move(n, to, f"{rid} cannot be swapped in (the catalogue offers "
                        f"{', '.join(offers)} only on {platform}); plan it with --strategy "
                        "auto or make-before-break")
        return ok

    def _stage_proven(self, candidates: list[str], _free: int) -> list[str]:
        """Right before removal: the staged packages are still exactly those staged (SHA-256)
        and an install from them alone, of those very files, would still succeed (apt's
        simulation, no network). The others are stopped here, their banned product untouched."""
        engine = self.engine
        check = engine.step("stage-check", "stage_check.yml", candidates)
        good = []
        for n in candidates:
            if n in engine.settled:
                continue
            r = check[n]
            now = dict(r.data.get("staged", {})) if r.outcome == StepOutcome.OK else None
            then = engine.staged.get(n)
            if now is not None and then and now == then:
                good.append(n)
                continue
            if now is None:
                why = f"the install from the stage is no longer proven ({r.outcome.value}: " \
                      f"{r.message})"
            elif not then:
                why = "no record of what was staged in this run"
            else:
                changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
                why = f"staged packages changed since staging: {', '.join(changed)}"
            not_installed(engine, n, why)
        return good

    def _batch(self, batch: list[str]) -> None:
        # The batch runs to the end even if a stop is requested: it must not stay unprotected.
        rem, left = self._remove(batch)
        for attempt in (1, 2):
            failed = self._install_from_stage(attempt, left, rem)
            left = [n for n, _ in failed]
            if not left:
                return
            if attempt == 2:
                for n, problem in failed:
                    self.engine.move(
                        n, HostState.UNPROTECTED,
                        f"UNPROTECTED: replacement failed after removal, twice from the "
                        f"staged files ({problem}); run `avmigrate remediate`")
                    self.engine.log(f"!!! {n} is UNPROTECTED: {problem}")

    def _remove(self, batch: list[str]) -> tuple[dict[str, StepResult], list[str]]:
        """Remove the banned product; the removal results, and the hosts to install on."""
        engine = self.engine
        host_vars = {n: {"avmigrate_remove_ids": engine.banned_ids(n)} for n in batch}
        rem = engine.reach("remove", "remove.yml", batch, host_vars)
        left = []
        for n in batch:
            r = rem[n]
            if n in engine.settled:
                continue
            if r.outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, r)
                continue
            why = ("banned product removed" if r.outcome == StepOutcome.OK
                   else f"removal {r.outcome.value}: {r.message}")
            engine.move(n, HostState.SWAPPING, f"{why}; installing from the stage")
            left.append(n)
        return rem, left

    def _install_from_stage(self, attempt: int, left: list[str],
                            rem: dict[str, StepResult]) -> list[tuple[str, str]]:
        """One attempt at installing from the staged files and verifying; the hosts it
        failed on, each with its problem."""
        engine = self.engine
        inst = engine.reach(f"install-staged#{attempt}", "install_staged.yml", left)
        # Proven in the install's own run where the role can (ClamAV on Debian): the gap
        # ends with that proof; the others are verified by a step of their own.
        proof = {n: inst[n] for n in left if carries_proof(inst[n].data)}
        tried = [n for n in left if inst[n].outcome == StepOutcome.OK and n not in proof]
        proof.update(engine.reach(f"verify#{attempt}", "verify.yml", tried))
        failed = []
        for n in left:
            if n in engine.settled:
                continue
            result = proof.get(n, inst[n])
            if result.outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, result)
                continue
            if n in proof and engine.waits_for_reboot(n, proof[n]):
                continue
            problem = (engine.proof_problem(proof[n]) if n in proof
                       else f"{inst[n].outcome.value}: {inst[n].message}")
            if problem is None:
                self._swapped(n, rem[n])
            else:
                failed.append((n, problem))
        return failed

    def _swapped(self, n: str, removal: StepResult) -> None:
        proof = replacement_proof(self.engine.replacement_of(n))
        if removal.outcome == StepOutcome.OK:
            self.engine.move(n, HostState.MIGRATED, "swapped: banned product removed; "
                             "replacement verified", replacement_verified_at=time.time(),
                             proof=proof)
        else:
            self.engine.move(n, HostState.REMOVE_FAILED,
                             f"removal {removal.outcome.value}: {removal.message}; replacement "
                             "verified", replacement_verified_at=time.time(), proof=proof)
