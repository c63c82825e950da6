"""Discover and migrate hosts wave by wave, committing every host's state before the next step.

make-before-break (products coexist): preflight, install, verify, remove, final verify; the
banned product is touched only on a host whose replacement was verified in this run.
swap (they cannot): preflight, stage, then in batches no larger than the protection budget:
remove, install from the staged files, verify, once more if needed, else UNPROTECTED.
An intent (INSTALLING, STAGING, REMOVING, SWAPPING) is committed before each step that changes
a host; a later run re-probes such hosts read-only before doing anything to them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator import classify
from orchestrator import facts as factlib
from orchestrator.catalogue import Catalogue
from orchestrator.classify import MAKE_BEFORE_BREAK, SWAP
from orchestrator.errors import UsageError
from orchestrator.executor import Executor, StepRequest
from orchestrator.inventory import Inventory
from orchestrator.lab.repo import EICAR_B64
from orchestrator.models import (
    DISCOVERY_RESULTS,
    RESTARTABLE,
    HostRecord,
    HostState,
    Plan,
    StepOutcome,
    StepResult,
    Wave,
    exit_code_for_states,
)
from orchestrator.planner import strategy_for
from orchestrator.policy import Policy
from orchestrator.state import StateStore

Log = Callable[[str], None]
STRATEGIES = ("auto", MAKE_BEFORE_BREAK, SWAP)


@dataclass(frozen=True)
class RunPolicy:
    """How a run may proceed: strategy, protection budget and wave gates."""

    strategy: str = "auto"
    max_unprotected: int = 1
    max_failed_percent: float = 0.0
    soak_seconds: float = 0.0
    require_approval: bool = False
    plan_key: str = ""
    # Maintenance windows and blackout dates: a wave starts only while its window is open.
    windows: Policy | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}")
        if self.max_unprotected < 1:
            raise UsageError("--max-unprotected must be at least 1: a swap needs one host "
                             "without protection for the length of its install")
        if not 0 <= self.max_failed_percent <= 100:
            raise UsageError("--max-failed-percent must be between 0 and 100")


@dataclass(frozen=True)
class RunSummary:
    """How a run ended: per-state counts and the exit code the CLI returns."""

    counts: dict[str, int]
    exit_code: int
    stopped_early: str | None


class _Stopped(Exception):
    """The operator asked to stop: no new step starts."""


def exit_code_for(records: list[HostRecord]) -> int:
    """0 all migrated or clean; 3 some not migrated (unreachable, blocked, pending);
    4 a step failed on some host; 5 some host is unprotected."""
    return exit_code_for_states({r.state for r in records})


class Engine:
    """Drives steps through an Executor and writes every outcome to a StateStore."""

    def __init__(self, store: StateStore, executor: Executor, catalogue: Catalogue,
                 inventory: Inventory, replacement: str, log: Log,
                 policy: RunPolicy | None = None) -> None:
        self.store = store
        self.executor = executor
        self.catalogue = catalogue
        self.inventory = inventory
        self.replacement = replacement
        self.log = log
        self.policy = policy or RunPolicy()
        self.run_id: int | None = None
        self.stop = threading.Event()  # set by the first Ctrl-C
        self.on_change: Callable[[HostRecord], None] | None = None  # live progress
        self.clock: Callable[[], float] = time.time
        self.touched: set[str] = set()  # hosts this engine changed, re-probed for the evidence
        self.staged: dict[str, dict[str, str]] = {}  # host -> staged file -> SHA-256
        # Hosts re-probed after their execution node died mid-step: not moved again this wave.
        self.settled: set[str] = set()

    # ---- plumbing ----------------------------------------------------------------------
    def _extravars(self) -> dict[str, Any]:
        return {
            "avmigrate_banned": self.catalogue.banned,
            "avmigrate_replacement": self.catalogue.replacement(self.replacement),
            "avmigrate_eicar_b64": EICAR_B64,
        }

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def _step(self, step: str, playbook: str, names: list[str],
              host_vars: dict[str, dict[str, Any]] | None = None,
              on_result: Callable[[StepResult], None] | None = None,
              check: bool = False) -> dict[str, StepResult]:
        if not names:
            return {}
        request = StepRequest(
            step=step, playbook=playbook,
            hosts=tuple(self.inventory.get(n) for n in names),
            extravars=self._extravars(), host_vars=host_vars or {}, check=check,
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
        unknown = sorted(n for n, r in results.items() if r.outcome == StepOutcome.UNKNOWN
                         and n not in self.settled)
        if unknown:
            self._settle_unknown(unknown, results)
        return results

    def _settle_unknown(self, names: list[str], results: dict[str, StepResult]) -> None:
        """Hosts whose execution node died mid-step: committed as interrupted, re-probed at
        once (through the nodes left), and left alone for the rest of this wave."""
        for n in names:
            self._move(n, HostState.INTERRUPTED, f"unknown: {results[n].message}; re-probed")
        self.log(f"  {len(names)} host(s) in an unknown state: re-probing {', '.join(names)}")
        self.discover(names)
        self.settled.update(names)

    def _move(self, name: str, to: HostState, reason: str, **fields: Any) -> HostRecord:
        if name in self.settled:
            # Re-probed after its node died: what the step's caller would record is moot.
            return self._record(name)
        record = self.store.transition(name, to, reason, self.run_id, **fields)
        if to not in DISCOVERY_RESULTS:
            self.touched.add(name)
        if self.on_change is not None:
            self.on_change(record)
        return record

    def _record(self, name: str) -> HostRecord:
        record = self.store.get(name)
        if record is None:  # pragma: no cover - every host is ensured at discovery
            raise UsageError(f"host {name} is not in the state; run discover")
        return record

    def strategy_of(self, record: HostRecord) -> str:
        if self.policy.strategy != "auto":
            return self.policy.strategy
        if record.facts is None:
            return MAKE_BEFORE_BREAK
        return strategy_for(record.facts, self.catalogue, self.replacement)

    def window_count(self) -> int:
        return sum(1 for r in self.store.all() if classify.in_window(r))

    def unprotected(self) -> list[str]:
        return [r.name for r in self.store.all() if r.state == HostState.UNPROTECTED]

    # ---- discovery ---------------------------------------------------------------------
    def discover(self, names: list[str]) -> dict[str, HostRecord]:
        """Read-only probe of hosts; settle each from what it really has now."""
        self.store.ensure_hosts(names)
        out: dict[str, HostRecord] = {}

        def settle(result: StepResult) -> None:
            prior = self._record(result.host)
            facts = problems = None
            if result.outcome == StepOutcome.OK:
                facts = factlib.parse_discovery(result.data, self.catalogue, self.replacement)
                problems = factlib.preflight_problems(facts, self.catalogue, self.replacement)
            to, why = classify.settle(prior, result.outcome, result.message, facts,
                                      problems or [])
            extra: dict[str, Any] = {}
            if facts is not None:
                extra["facts"] = facts
                # The recommendation, for hosts not under way: a host mid-migration keeps the
                # strategy it is being migrated with (its protection window depends on it).
                if facts.banned and to in (HostState.PENDING, HostState.BLOCKED):
                    extra["strategy"] = strategy_for(facts, self.catalogue, self.replacement)
            out[result.host] = self._move(result.host, to, why, **extra)

        self._step("discover", "discover.yml", names, on_result=settle)
        return out

    # ---- migration ---------------------------------------------------------------------
    def run(self, plan: Plan) -> RunSummary:
        stopped: str | None = None
        approvals = (self.store.approvals(self.policy.plan_key)
                     if self.policy.require_approval else {})
        try:
            self._restore_protection()
            for index, wave in enumerate(plan.waves):
                label = "canary wave" if wave.is_canary else f"wave {wave.number}"
                self._check_stop()
                if self.policy.require_approval and not wave.is_canary and (
                        wave.number not in approvals):
                    stopped = (f"{label} needs approval: `avmigrate approve --wave "
                               f"{wave.number} --plan PLAN`, then run again")
                    break
                if (bad := self.unprotected()):
                    stopped = (f"UNPROTECTED hosts: {', '.join(bad)}; no further removals "
                               "start. Run `avmigrate remediate`, then run again")
                    break
                todo = [n for n in wave.hosts if self._record(n).state in RESTARTABLE]
                if todo and (closed := self._window_closed(wave)):
                    stopped = (f"{label} may start only in its maintenance window: {closed}; "
                               "run again then")
                    break
                if todo:
                    self.log(f"{label}: {len(todo)} host(s): {', '.join(todo)}")
                    self.settled.clear()
                    self.migrate_wave(todo, wave.number)
                    self.settled.clear()
                stopped = self._gate(label, wave.hosts)
                if stopped:
                    break
                if self.policy.soak_seconds > 0 and index < len(plan.waves) - 1:
                    self._soak(label, list(wave.hosts))
                    stopped = self._gate(label, wave.hosts)
                    if stopped:
                        break
        except _Stopped:
            stopped = ("stopped by the operator: no new step was started; "
                       "run again to resume")
            for r in self.store.all():
                if r.state in (HostState.INSTALLING, HostState.STAGING):
                    self._move(r.name, HostState.INTERRUPTED,
                               f"stopped by the operator during {r.state.value}; "
                               "banned product untouched")
        if stopped:
            self.log(stopped)
        self._evidence_probe()
        records = [rec for n in self.inventory.names() if (rec := self.store.get(n)) is not None]
        counts: dict[str, int] = {}
        for rec in records:
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return RunSummary(counts=counts, exit_code=exit_code_for(records), stopped_early=stopped)

    def _evidence_probe(self) -> None:
        """Read again, read-only, every host this run changed: the report's "after"."""
        names = sorted(self.touched)
        if not names:
            return
        self.log(f"probing {len(names)} changed host(s) for the evidence")

        def refresh(result: StepResult) -> None:
            # Facts only: the state and its reason stay what this run concluded.
            if result.outcome == StepOutcome.OK:
                rec = self._record(result.host)
                facts = factlib.parse_discovery(result.data, self.catalogue, self.replacement)
                self.store.transition(result.host, rec.state, rec.reason, self.run_id,
                                      facts=facts)

        self._step("evidence", "discover.yml", names, on_result=refresh)
        self.touched.clear()

    def _restore_protection(self) -> None:
        """Before anything else, give unprotected hosts their replacement back.

        A host is unprotected after a failed swap, or when a run died inside its swap window.
        Installing and verifying the replacement is always safe, so a run tries that first;
        hosts it cannot fix keep every further removal from starting.
        """
        names = [n for n in self.inventory.names()
                 if self._record(n).state == HostState.UNPROTECTED]
        if names:
            self.log(f"restoring protection first: {', '.join(names)}")
            self.remediate(names)

    def _window_closed(self, wave: Wave) -> str | None:
        policy = self.policy.windows
        if policy is None:
            return None
        now = datetime.fromtimestamp(self.clock(), UTC)
        return policy.closed_reason(policy.window_named(wave.window), now)

    def _gate(self, label: str, hosts: tuple[str, ...]) -> str | None:
        states = {n: self._record(n).state for n in hosts}
        return classify.wave_gate(label, states, self.policy.max_failed_percent)

    def _soak(self, label: str, hosts: list[str]) -> None:
        self.log(f"{label}: soaking {self.policy.soak_seconds:.0f}s before the next wave")
        if self.stop.wait(self.policy.soak_seconds):
            raise _Stopped
        migrated = [n for n in hosts if self._record(n).state == HostState.MIGRATED]
        results = self._step("soak-verify", "verify.yml", migrated)
        for n in migrated:
            problem = self._proof_problem(results[n])
            if problem is not None:
                self._move(n, HostState.UNPROTECTED,
                           f"UNPROTECTED: replacement failed its check after the soak ({problem})")

    def migrate_wave(self, names: list[str], wave: int) -> None:
        self._check_stop()
        # Preflight, read-only: a refused host stays exactly as it was.
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
        mbb = [n for n in ready if self.strategy_of(self._record(n)) == MAKE_BEFORE_BREAK]
        swap = [n for n in ready if n not in mbb]
        self._make_before_break(mbb, wave)
        self._swap(swap, wave)

    # ---- make-before-break ---------------------------------------------------------------
    def _make_before_break(self, names: list[str], wave: int) -> None:
        if not names:
            return
        self._check_stop()
        for n in names:
            self._move(n, HostState.INSTALLING, f"installing {self.replacement}", wave=wave,
                       strategy=MAKE_BEFORE_BREAK)
        inst = self._step("install", "install.yml", names)
        installed = []
        for n in names:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                installed.append(n)
            else:
                self._move(n, HostState.INSTALL_FAILED,
                           f"install {r.outcome.value}: {r.message}; banned product untouched")
        self._check_stop()
        results = self._step("verify", "verify.yml", installed)
        verified = []
        for n in installed:
            problem = self._proof_problem(results[n])
            if problem is None:
                self._move(n, HostState.VERIFIED, "replacement verified: daemon answers, "
                           "EICAR detected", replacement_verified_at=time.time())
                verified.append(n)
            else:
                self._move(n, HostState.INSTALL_FAILED,
                           f"verification failed: {problem}; banned product untouched")
        self._check_stop()
        now = time.time()
        host_vars = {}
        for n in verified:
            ids = self._banned_ids(n)
            host_vars[n] = {"avmigrate_remove_ids": ids}
            self._move(n, HostState.REMOVING, f"removing {', '.join(ids) or 'leftovers'}",
                       protection_stopped_at=now)
        # From here the removal and its proof run to the end, even if a stop is requested.
        rem = self._step("remove", "remove.yml", verified, host_vars)
        final = self._step("final-verify", "verify.yml", verified)
        for n in verified:
            removal, proof = rem[n], final[n]
            problem = self._proof_problem(proof)
            if proof.outcome == StepOutcome.UNREACHABLE:
                # Its replacement was verified just before removal began; what happened since
                # is unknown, so the next run re-probes it before anything else.
                self._move(n, HostState.REMOVE_FAILED,
                           f"unreachable during removal ({proof.message}); replacement was "
                           "verified before removal began")
            elif problem is not None:
                self._move(n, HostState.UNPROTECTED,
                           f"UNPROTECTED: replacement failed its final check ({problem}) "
                           f"after removal {removal.outcome.value}")
            elif removal.outcome != StepOutcome.OK:
                self._move(n, HostState.REMOVE_FAILED,
                           f"removal {removal.outcome.value}: {removal.message}; "
                           "replacement verified and protecting")
            else:
                self._move(n, HostState.MIGRATED, "banned product removed; replacement verified")

    # ---- swap ----------------------------------------------------------------------------
    def _swap(self, names: list[str], wave: int) -> None:
        if not names:
            return
        self._check_stop()
        for n in names:
            self._move(n, HostState.STAGING, f"staging {self.replacement}", wave=wave,
                       strategy=SWAP)
        stage = self._step("stage", "stage.yml", names)
        queue = []
        for n in names:
            r = stage[n]
            if r.outcome == StepOutcome.OK:
                self.staged[n] = dict(r.data.get("staged", {}))
                self._move(n, HostState.STAGED, "replacement staged and checked; banned "
                           "product still protecting")
                queue.append(n)
            else:
                self._move(n, HostState.INSTALL_FAILED,
                           f"staging {r.outcome.value}: {r.message}; banned product untouched")
        while queue:
            self._check_stop()
            if (bad := self.unprotected()):
                self.log(f"UNPROTECTED: {', '.join(bad)}; no further removals start")
                return
            slots = self.policy.max_unprotected - self.window_count()
            if slots <= 0:
                self.log("protection budget used up by hosts from an earlier run; "
                         "no further removals start")
                return
            batch, queue = queue[:slots], queue[slots:]
            self._swap_batch(batch)

    def _staged_unchanged(self, batch: list[str]) -> list[str]:
        """Hosts whose staged packages are still exactly those staged (SHA-256); the others
        are stopped here, before their banned product is touched."""
        check = self._step("stage-check", "stage_check.yml", batch)
        good = []
        for n in batch:
            r = check[n]
            now = dict(r.data.get("staged", {})) if r.outcome == StepOutcome.OK else None
            then = self.staged.get(n)
            if now is not None and then and now == then:
                good.append(n)
                continue
            if now is None:
                why = f"staged packages could not be checked ({r.outcome.value}: {r.message})"
            elif not then:
                why = "no record of what was staged in this run"
            else:
                changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
                why = f"staged packages changed since staging: {', '.join(changed)}"
            self._move(n, HostState.INSTALL_FAILED, f"{why}; banned product untouched")
        return good

    def _swap_batch(self, batch: list[str]) -> None:
        batch = self._staged_unchanged(batch)
        if not batch:
            return
        now = time.time()
        host_vars = {}
        for n in batch:
            ids = self._banned_ids(n)
            host_vars[n] = {"avmigrate_remove_ids": ids}
            self._move(n, HostState.REMOVING, f"swap: removing {', '.join(ids)}",
                       protection_stopped_at=now)
        # The batch runs to the end even if a stop is requested: it must not stay unprotected.
        rem = self._step("remove", "remove.yml", batch, host_vars)
        for n in batch:
            r = rem[n]
            why = ("banned product removed" if r.outcome == StepOutcome.OK
                   else f"removal {r.outcome.value}: {r.message}")
            self._move(n, HostState.SWAPPING, f"{why}; installing from the stage")
        left = batch
        for attempt in (1, 2):
            inst = self._step(f"install-staged#{attempt}", "install_staged.yml", left)
            tried = [n for n in left if inst[n].outcome == StepOutcome.OK]
            proof = self._step(f"verify#{attempt}", "verify.yml", tried)
            failed = []
            for n in left:
                problem = (self._proof_problem(proof[n]) if n in proof
                           else f"{inst[n].outcome.value}: {inst[n].message}")
                if problem is None:
                    if rem[n].outcome == StepOutcome.OK:
                        self._move(n, HostState.MIGRATED, "swapped: banned product removed; "
                                   "replacement verified", replacement_verified_at=time.time())
                    else:
                        self._move(n, HostState.REMOVE_FAILED,
                                   f"removal {rem[n].outcome.value}: {rem[n].message}; "
                                   "replacement verified", replacement_verified_at=time.time())
                else:
                    failed.append((n, problem))
            left = [n for n, _ in failed]
            if not left:
                return
            if attempt == 2:
                for n, problem in failed:
                    self._move(n, HostState.UNPROTECTED,
                               f"UNPROTECTED: replacement failed after removal, twice from the "
                               f"staged files ({problem}); run `avmigrate remediate`")
                    self.log(f"!!! {n} is UNPROTECTED: {problem}")

    # ---- plan --check ---------------------------------------------------------------------
    def check(self, names: list[str]) -> dict[str, Any]:
        """Preflight, then each host's steps in Ansible's check mode: what would change.

        Changes nothing on any host and no host's state: only the findings are returned.
        """
        found: dict[str, dict[str, Any]] = {n: {"problems": [], "would_change": []}
                                            for n in names}
        pre = self._step("check-preflight", "preflight.yml", names)
        ready = []
        for n in names:
            if pre[n].outcome == StepOutcome.OK:
                ready.append(n)
            else:
                found[n]["problems"].append(f"preflight {pre[n].outcome.value}: "
                                            f"{pre[n].message}")
        mbb = [n for n in ready if self.strategy_of(self._record(n)) == MAKE_BEFORE_BREAK]
        swap = [n for n in ready if n not in mbb]
        results = {**self._step("check-install", "install.yml", mbb, check=True),
                   **self._step("check-stage", "stage.yml", swap, check=True)}
        removable = []
        for n in ready:
            r = results[n]
            if r.outcome == StepOutcome.OK:
                found[n]["would_change"] += r.data.get("would_change", [])
                removable.append(n)
            else:
                found[n]["problems"].append(f"{r.step} {r.outcome.value}: {r.message}")
        host_vars = {n: {"avmigrate_remove_ids": self._banned_ids(n)} for n in removable}
        for n, r in self._step("check-remove", "remove.yml", removable, host_vars,
                               check=True).items():
            if r.outcome == StepOutcome.OK:
                found[n]["would_change"] += r.data.get("would_change", [])
            else:
                found[n]["problems"].append(f"{r.step} {r.outcome.value}: {r.message}")
        bad = sum(1 for f in found.values() if f["problems"])
        return {"hosts": found,
                "summary": f"{len(names) - bad} of {len(names)} host(s) passed; "
                           f"{bad} with problems"}

    # ---- remediation ---------------------------------------------------------------------
    def remediate(self, names: list[str]) -> None:
        """Unprotected hosts: install the replacement (stage first, else the repository)."""
        for n in names:
            self._move(n, HostState.SWAPPING, "remediating: installing the replacement")
        inst = self._step("remediate-install", "install.yml", names)
        ok = [n for n in names if inst[n].outcome == StepOutcome.OK]
        proof = self._step("remediate-verify", "verify.yml", ok)
        for n in names:
            problem = (self._proof_problem(proof[n]) if n in proof
                       else f"{inst[n].outcome.value}: {inst[n].message}")
            if problem is None:
                self._move(n, HostState.MIGRATED, "remediated: replacement verified",
                           replacement_verified_at=time.time())
            else:
                self._move(n, HostState.UNPROTECTED, f"UNPROTECTED: remediation failed "
                           f"({problem})")

    # ---- helpers -------------------------------------------------------------------------
    def _banned_ids(self, name: str) -> list[str]:
        record = self._record(name)
        if record.facts is not None and record.facts.banned:
            return [b.product for b in record.facts.banned]
        return list(self.catalogue.banned)

    def _proof_problem(self, result: StepResult) -> str | None:
        if result.outcome != StepOutcome.OK:
            return f"{result.outcome.value}: {result.message}"
        return factlib.verification_problem(result.data, self.catalogue, self.replacement,
                                            datetime.now(UTC))
