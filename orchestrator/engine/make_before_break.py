"""make-before-break, for products that coexist: install and verify the replacement, then, in
batches the protection budget allows, remove the banned product and verify once more.

A replacement proven beside the banned product by its health alone (catalogue
`verify_beside`: MDE, passive beside KESL; Falcon, whose on-access detection could be KESL's
own while KESL runs) is verified that way while the banned product, seen running in the same
step, protects; after the removal it is activated (passive products) and must then prove
protection, detection included, by its own evidence. From the removal to that proof the host
holds a slot of the protection budget like any other, and its gap runs to that proof. A
host with no banned product at all (policy `protect_unprotected`) is installed, verified and
done. A removal that completes only at the next reboot (msiexec 3010 on Windows) leaves the
host REBOOT_PENDING, holding its slot: it is rebooted in its maintenance window, then
activated and proven like the others (a later run finishes it when the window was closed)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from orchestrator.core.facts import carries_proof
from orchestrator.core.models import HostState, StepOutcome, StepResult, Strategy
from orchestrator.core.protection import beside_proof, replacement_proof
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
            rid = engine.pin(n)
            engine.move(n, HostState.INSTALLING, f"installing {rid}{how}", wave=wave,
                        strategy=Strategy.MAKE_BEFORE_BREAK, replacement=rid)
        # A role that can proves the replacement in its install's run (ClamAV on Debian):
        # beside the banned product where that is how it is proven.
        beside = {n for n in names if engine.proven_beside(n)}
        host_vars = engine.beside_vars(beside)
        inst = engine.step("install", "install.yml", names,
                           {n: {"avmigrate_passive": n in passive, **host_vars.get(n, {})}
                            for n in names})
        installed: list[str] = []
        proven: list[str] = []
        for n in names:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                (proven if carries_proof(r.data) else installed).append(n)
            elif carries_proof(r.data) or r.data.get("install"):
                not_installed(engine, n, f"verification failed: {r.message}")
            else:
                not_installed(engine, n, f"install {r.outcome.value}: {r.message}")
        engine.check_stop()
        verified = self._judge(proven, inst, beside)
        verified += self._verify_installed("verify", installed)
        verified = self._done_where_nothing_is_banned(verified)
        return Budget(engine).batches(
            verified, self._batch, self._fresh,
            lambda n: f"removing {', '.join(engine.banned_ids(n)) or 'leftovers'}")

    def _verify_installed(self, step: str, names: list[str]) -> list[str]:
        """Verify the installed replacement: its protection, or, beside the banned product
        (`verify_beside`), its health while the banned product is seen protecting."""
        engine = self.engine
        todo = [n for n in names if n not in engine.settled]
        beside = {n for n in todo if engine.proven_beside(n)}
        results = engine.step(step, "verify.yml", todo, engine.beside_vars(beside))
        return self._judge(names, results, beside)

    def _judge(self, names: list[str], results: dict[str, StepResult],
               beside: set[str]) -> list[str]:
        """Each host VERIFIED by its proof's evidence, or not installed: the verified."""
        engine = self.engine
        verified = []
        for n in names:
            if n in engine.settled:
                continue
            problem = engine.proof_problem(results[n], beside=n in beside)
            if problem is None:
                rid = engine.replacement_of(n)
                proof = (beside_proof(rid, engine.protecting_units(n), engine.passive_beside(n))
                         if n in beside else replacement_proof(rid))
                engine.move(n, HostState.VERIFIED, proof, replacement_verified_at=time.time(),
                            proof=proof)
                verified.append(n)
            else:
                not_installed(engine, n, f"its health beside the banned product: {problem}"
                              if n in beside else f"verification failed: {problem}")
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
        # Decided before the removal, from what discovery saw.
        passive = {n for n in batch if engine.passive_beside(n)}
        beside = {n for n in batch if engine.proven_beside(n)}
        host_vars = {n: {"avmigrate_remove_ids": engine.banned_ids(n)} for n in batch}
        # Linux hosts are activated (passive ones) and proven in the removal's own Ansible
        # run; a host whose removal fails goes no further in it (proven below, beside the
        # banned product where it still protects).
        linux = [n for n in batch if engine.platform(n) != "windows"]
        extra = {"avmigrate_activate_hosts": [n for n in linux if n in passive],
                 "avmigrate_final_hosts": linux}
        # From here the removal and its proof run to the end, even if a stop is requested.
        rem = engine.reach("remove", "remove.yml", batch, host_vars, extra)
        lost = {n for n in batch if rem[n].outcome == StepOutcome.UNREACHABLE}
        here = [n for n in linux if n not in lost and n not in engine.settled
                and rem[n].data.get("removed") is True]
        # Removed, but the run ended before the proof (an activation failed): proven by a
        # step of its own, as every host after its removal.
        unproven = [n for n in here if not carries_proof(rem[n].data)]
        final = engine.reach("final-verify", "verify.yml", unproven)
        for n in here:
            removed = StepResult(n, "remove", StepOutcome.OK, "", rem[n].data)
            if n in final and final[n].outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, final[n])
                continue
            activated = (rem[n] if n in final else StepResult(n, "activate", StepOutcome.OK, "")
                         if n in passive else None)
            self._conclude(n, removed, activated, final.get(n, rem[n]), False, n in beside)
            if n not in passive and isinstance(probe := rem[n].data.get("probe"), dict):
                engine.fresh_probe[n] = probe
        rest = [n for n in batch if n not in here]
        waiting = self._reboot_pending([n for n in rest if n not in lost
                                        and n not in engine.settled], rem)
        self._after_removal([n for n in rest if n not in waiting], rem, passive, beside, lost)

    def _reboot_pending(self, names: list[str], rem: dict[str, StepResult]) -> set[str]:
        """Hosts whose removal completes only at the next reboot (msiexec 3010): committed
        REBOOT_PENDING (the slot stays theirs), rebooted now where their window allows; the
        hosts still waiting for their reboot."""
        engine = self.engine
        pending = [n for n in names if rem[n].outcome == StepOutcome.OK
                   and rem[n].data.get("reboot_required") is True]
        for n in pending:
            engine.move(n, HostState.REBOOT_PENDING,
                        "banned product removed; the removal completes at the next reboot, "
                        "and the host keeps its slot until its replacement is proven after it")
        return set(pending) - set(self.reboot(pending))

    def reboot(self, names: list[str]) -> list[str]:
        """Reboot REBOOT_PENDING hosts whose maintenance window is open now (policy); the
        hosts rebooted. The others wait, holding their slot, for a later run."""
        engine = self.engine
        now = []
        for n in names:
            if (why := engine.reboot_blocked(n)) is None:
                now.append(n)
            else:
                engine.move(n, HostState.REBOOT_PENDING,
                            f"reboot pending, not done now: {why}; it keeps its slot")
        # One attempt: the reboot modules wait for the host to come back themselves, and a
        # retry could reboot it after its window has closed. A failure waits for a later run.
        done = engine.step("reboot", "reboot.yml", now)
        rebooted = []
        for n in now:
            if n in engine.settled:
                continue
            if done[n].outcome == StepOutcome.OK:
                rebooted.append(n)
            else:
                engine.move(n, HostState.REBOOT_PENDING,
                            f"reboot {done[n].outcome.value}: {done[n].message}; it keeps its "
                            "slot until a run sees it rebooted and its replacement proven")
                engine.log(f"!!! {n}: reboot {done[n].outcome.value}: {done[n].message}")
        return rebooted

    def finish_reboots(self, names: list[str]) -> None:
        """Hosts a previous run left REBOOT_PENDING: rebooted where their window is open now,
        then activated and proven like any host after its removal."""
        engine = self.engine
        rebooted = self.reboot(names)
        rem = {n: StepResult(host=n, step="remove", outcome=StepOutcome.OK,
                             message="removed by an earlier run") for n in rebooted}
        # The banned product is gone: a replacement that was passive beside it is activated.
        passive = {n for n in rebooted
                   if engine.catalogue.passive(engine.replacement_of(n))}
        beside = {n for n in rebooted if engine.proven_beside(n)}
        self._after_removal(rebooted, rem, passive, beside, set())

    def _after_removal(self, batch: list[str], rem: dict[str, StepResult], passive: set[str],
                       beside: set[str], lost: set[str]) -> None:
        """Activation where the replacement was passive, the final verification, and each
        host's state from its evidence."""
        engine = self.engine
        # A passive replacement is switched to active protection only where the banned
        # product is gone: active beside it is what the vendor forbids.
        to_activate = [n for n in batch if n in passive and n not in lost
                       and n not in engine.settled and rem[n].outcome == StepOutcome.OK]
        act = engine.reach("activate", "activate.yml", to_activate)
        lost |= {n for n in to_activate if act[n].outcome == StepOutcome.UNREACHABLE}
        # Where the removal failed, the banned product may still run: only its protection and
        # the replacement's health beside it can be proven.
        still_beside = {n for n in beside
                        if n not in to_activate and rem[n].outcome != StepOutcome.OK}
        final = engine.reach("final-verify", "verify.yml",
                             [n for n in batch if n not in lost and n not in engine.settled],
                             engine.beside_vars(still_beside))
        for n in batch:
            if n in engine.settled:
                continue
            removal = rem[n]
            if n in lost or final[n].outcome == StepOutcome.UNREACHABLE:
                unreachable_in_window(engine, n, final.get(n, act.get(n, removal)))
                continue
            self._conclude(n, removal, act.get(n), final[n], n in still_beside, n in beside)

    def _conclude(self, n: str, removal: StepResult, activation: StepResult | None,  # noqa: PLR0913, PLR0917 - a host's results, in step order
                  final: StepResult, still_beside: bool, was_beside: bool) -> None:
        """A host's state after its removal, from the final verification's evidence."""
        engine = self.engine
        rid = engine.replacement_of(n)
        problem = engine.proof_problem(final, beside=still_beside)
        if problem is not None and not still_beside and engine.waits_for_reboot(n, final):
            return
        if problem is not None:
            why = (f"activation {activation.outcome.value}: {activation.message}; "
                   if activation is not None and activation.outcome != StepOutcome.OK else "")
            engine.move(n, HostState.UNPROTECTED,
                        f"UNPROTECTED: {why}replacement failed its final check ({problem}) "
                        f"after removal {removal.outcome.value}")
            engine.log(f"!!! {n} is UNPROTECTED: {why}{problem}")
        elif still_beside:
            proof = beside_proof(rid, engine.protecting_units(n), engine.passive_beside(n))
            engine.move(n, HostState.REMOVE_FAILED,
                        f"removal {removal.outcome.value}: {removal.message}; the banned "
                        f"product still protects, {rid} stays beside it", proof=proof)
        elif removal.outcome != StepOutcome.OK:
            engine.move(n, HostState.REMOVE_FAILED,
                        f"removal {removal.outcome.value}: {removal.message}; replacement "
                        "verified after it and protecting", proof=replacement_proof(rid))
        elif was_beside:
            # Proven only beside the banned product until now: its protection is proven by
            # this proof (the gap ends here).
            done = "activated and verified" if activation is not None else "verified"
            engine.move(n, HostState.MIGRATED, f"banned product removed; replacement {done}",
                        proof=replacement_proof(rid), replacement_verified_at=time.time())
        else:
            engine.move(n, HostState.MIGRATED, "banned product removed; replacement verified",
                        proof=replacement_proof(rid))
