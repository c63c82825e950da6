"""Discover and migrate hosts wave by wave, committing every host's state before the next step.

Order per wave (make-before-break): preflight, install, verify, remove, final verify. The banned
product is never touched on a host whose replacement has not just been verified, and an intent
(INSTALLING, REMOVING) is committed before each step that changes a host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator import facts as factlib
from orchestrator.catalogue import Catalogue
from orchestrator.executor import Executor, StepRequest
from orchestrator.inventory import Inventory
from orchestrator.lab.repo import EICAR_B64
from orchestrator.models import HostRecord, HostState, Plan, StepOutcome, StepResult
from orchestrator.planner import strategy_for
from orchestrator.state import StateStore

Log = Callable[[str], None]

# States from which a run (re)starts a host's migration; others are settled or need a human.
ACTIONABLE = {
    HostState.PENDING, HostState.INSTALLING, HostState.INSTALL_FAILED, HostState.VERIFIED,
    HostState.REMOVING, HostState.REMOVE_FAILED,
}


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: per-state counts and the exit code the CLI returns."""

    counts: dict[str, int]
    exit_code: int
    stopped_early: str | None


def exit_code_for(records: list[HostRecord]) -> int:
    """0 all migrated or clean; 3 some not migrated (unreachable, blocked, pending);
    4 a step failed on some host; 5 some host is unprotected."""
    states = {r.state for r in records}
    if HostState.UNPROTECTED in states:
        return 5
    if states & {HostState.INSTALL_FAILED, HostState.REMOVE_FAILED}:
        return 4
    if any(not s.is_final_success for s in states):
        return 3
    return 0


class Engine:
    """Drives steps through an Executor and writes every outcome to a StateStore."""

    def __init__(self, store: StateStore, executor: Executor, catalogue: Catalogue,
                 inventory: Inventory, replacement: str, log: Log) -> None:
        self.store = store
        self.executor = executor
        self.catalogue = catalogue
        self.inventory = inventory
        self.replacement = replacement
        self.log = log
        self.run_id: int | None = None

    # ---- plumbing ----------------------------------------------------------------------
    def _extravars(self) -> dict[str, Any]:
        return {
            "avmigrate_banned": self.catalogue.banned,
            "avmigrate_replacement": self.catalogue.replacement(self.replacement),
            "avmigrate_eicar_b64": EICAR_B64,
        }

    def _step(self, step: str, playbook: str, names: list[str],
              host_vars: dict[str, dict[str, Any]] | None = None,
              on_result: Callable[[StepResult], None] | None = None) -> dict[str, StepResult]:
        if not names:
            return {}
        request = StepRequest(
            step=step, playbook=playbook,
            hosts=tuple(self.inventory.get(n) for n in names),
            extravars=self._extravars(), host_vars=host_vars or {},
        )

        def record(result: StepResult) -> None:
            if self.run_id is not None:
                self.store.record_step(self.run_id, result)
            if on_result is not None:
                on_result(result)

        t0 = time.monotonic()
        results = self.executor.run_step(request, record)
        ok = sum(1 for r in results.values() if r.outcome == StepOutcome.OK)
        self.log(f"  {step}: {ok}/{len(names)} ok in {time.monotonic() - t0:.0f}s")
        return results

    def _move(self, name: str, to: HostState, reason: str, **fields: Any) -> HostRecord:
        return self.store.transition(name, to, reason, self.run_id, **fields)

    # ---- discovery ---------------------------------------------------------------------
    def discover(self, names: list[str]) -> dict[str, HostRecord]:
        """Read-only probe of hosts; classify each from what it really has now."""
        self.store.ensure_hosts(names)
        out: dict[str, HostRecord] = {}

        def classify(result: StepResult) -> None:
            prior = self.store.get(result.host)
            assert prior is not None  # noqa: S101 - ensure_hosts above
            if result.outcome == StepOutcome.UNREACHABLE:
                out[result.host] = self._move(result.host, HostState.UNREACHABLE,
                                              f"unreachable: {result.message}")
                return
            if result.outcome == StepOutcome.FAILED:
                out[result.host] = self._move(result.host, HostState.BLOCKED,
                                              f"discovery failed: {result.message}")
                return
            facts = factlib.parse_discovery(result.data, self.catalogue, self.replacement)
            strategy = strategy_for(facts, self.catalogue, self.replacement)
            if not facts.banned:
                if prior.state in (HostState.PENDING, HostState.UNREACHABLE, HostState.BLOCKED,
                                   HostState.CLEAN):
                    to, why = HostState.CLEAN, "no banned product found"
                else:  # we were migrating it: the run finishes and proves it
                    to, why = prior.state, prior.reason
                out[result.host] = self._move(result.host, to, why, facts=facts)
                return
            found = ", ".join(f"{b.product} {b.version or ''}".strip() for b in facts.banned)
            problems = factlib.preflight_problems(facts, self.catalogue, self.replacement)
            if problems:
                out[result.host] = self._move(result.host, HostState.BLOCKED,
                                              "; ".join(problems), facts=facts,
                                              strategy=strategy)
            elif prior.state.is_intent:  # a run died mid-step: what we just read is the truth
                settled = (HostState.INSTALL_FAILED if prior.state == HostState.INSTALLING
                           else HostState.REMOVE_FAILED)
                out[result.host] = self._move(
                    result.host, settled, f"interrupted while {prior.state.value}; re-probed: "
                    f"found {found}", facts=facts, strategy=strategy)
            elif prior.state in ACTIONABLE - {HostState.PENDING}:
                out[result.host] = self._move(result.host, prior.state, prior.reason,
                                              facts=facts, strategy=strategy)
            else:
                out[result.host] = self._move(result.host, HostState.PENDING, f"found {found}",
                                              facts=facts, strategy=strategy)

        self._step("discover", "discover.yml", names, on_result=classify)
        return out

    # ---- migration ---------------------------------------------------------------------
    def run(self, plan: Plan) -> RunSummary:
        stopped: str | None = None
        for wave in plan.waves:
            todo = [n for n in wave.hosts
                    if (r := self.store.get(n)) is not None and r.state in ACTIONABLE]
            if not todo:
                continue
            label = "canary wave" if wave.is_canary else f"wave {wave.number}"
            self.log(f"{label}: {len(todo)} host(s): {', '.join(todo)}")
            self.migrate_wave(todo, wave.number)
            failed = [n for n in todo if (r := self.store.get(n)) is not None
                      and r.state.is_failure]
            if failed:
                stopped = (f"{label} had {len(failed)} failed host(s) ({', '.join(failed)}); "
                           "later waves were not started. Fix them, then run again.")
                self.log(stopped)
                break
        records = [r for n in self.inventory.names() if (r := self.store.get(n)) is not None]
        counts: dict[str, int] = {}
        for r in records:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
        return RunSummary(counts=counts, exit_code=exit_code_for(records), stopped_early=stopped)

    def migrate_wave(self, names: list[str], wave: int) -> None:
        # 1. Preflight, read-only: a refused host stays exactly as it was.
        pre = self._step("preflight", "preflight.yml", names)
        ready = []
        for n in names:
            r = pre[n]
            if r.outcome == StepOutcome.UNREACHABLE:
                self._move(n, HostState.UNREACHABLE, f"unreachable at preflight: {r.message}")
            elif r.outcome == StepOutcome.FAILED:
                self._move(n, HostState.BLOCKED, f"preflight: {r.message}")
            else:
                ready.append(n)
        # 2. Install, with the intent committed first.
        for n in ready:
            self._move(n, HostState.INSTALLING, f"installing {self.replacement}", wave=wave)
        inst = self._step("install", "install.yml", ready)
        installed = []
        for n in ready:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                installed.append(n)
            else:
                self._move(n, HostState.INSTALL_FAILED,
                           f"install {r.outcome.value}: {r.message}; banned product untouched")
        # 3. Verify protection: daemon answers and detects EICAR.
        verified = self._verify(installed, HostState.INSTALL_FAILED, "verify")
        # 4. Remove the banned product, only where the replacement was just verified.
        host_vars = {}
        now = time.time()
        for n in verified:
            record = self.store.get(n)
            ids = [b.product for b in (record.facts.banned if record and record.facts else ())]
            host_vars[n] = {"avmigrate_remove_ids": ids}
            self._move(n, HostState.REMOVING, f"removing {', '.join(ids) or 'leftovers'}",
                       protection_stopped_at=now)
        rem = self._step("remove", "remove.yml", verified, host_vars)
        # 5. Final verify on every host whose banned product was touched.
        final = self._step("final-verify", "verify.yml", verified)
        for n in verified:
            removal, proof = rem[n], final[n]
            problem = self._proof_problem(proof)
            if problem is not None:
                self._move(n, HostState.UNPROTECTED,
                           f"UNPROTECTED: replacement failed its final check ({problem}) "
                           f"after removal {removal.outcome.value}")
            elif removal.outcome != StepOutcome.OK:
                self._move(n, HostState.REMOVE_FAILED,
                           f"removal {removal.outcome.value}: {removal.message}; "
                           "replacement verified and protecting")
            else:
                self._move(n, HostState.MIGRATED, "banned product removed; replacement verified")

    def _proof_problem(self, result: StepResult) -> str | None:
        if result.outcome != StepOutcome.OK:
            return f"{result.outcome.value}: {result.message}"
        return factlib.verification_problem(result.data, self.catalogue, self.replacement,
                                            datetime.now(UTC))

    def _verify(self, names: list[str], fail_state: HostState, step: str) -> list[str]:
        results = self._step(step, "verify.yml", names)
        ok = []
        for n in names:
            problem = self._proof_problem(results[n])
            if problem is None:
                self._move(n, HostState.VERIFIED, "replacement verified: daemon answers, "
                           "EICAR detected", replacement_verified_at=time.time())
                ok.append(n)
            else:
                self._move(n, fail_state, f"verification failed: {problem}; "
                           "banned product untouched")
        return ok
