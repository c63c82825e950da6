"""Discover and migrate hosts wave by wave, committing every host's state before the next step.

make-before-break (products coexist): preflight, install, verify; then in batches that the
fleet's protection budget allows: remove, final verify.
swap (they cannot): preflight, stage; then in batches the budget allows: prove the install from
the stage again, remove, install from the staged files, verify, once more if needed, else
UNPROTECTED.

A host's removal intent (REMOVING) takes a slot of the budget in the same transaction (the
store refuses it when every slot is held, by any operator); the slot is given back only by
evidence of protection: a protecting banned product seen running, or the replacement verified.
A host in its window that does not answer is retried with backoff for the reconnect window
before it is declared UNPROTECTED. A later run re-probes hosts caught mid-step before doing
anything to them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.core import classify
from orchestrator.core import facts as factlib
from orchestrator.core.catalogue import Catalogue
from orchestrator.core.errors import Aborted, UsageError
from orchestrator.core.models import (
    RESTARTABLE,
    STRATEGY_NAMES,
    UNTOUCHED,
    HostFacts,
    HostRecord,
    HostState,
    Plan,
    StepOutcome,
    StepResult,
    Strategy,
    Wave,
    exit_code_for_states,
)
from orchestrator.core.protection import (
    EICAR_B64,
    budget_problem,
    proof_of,
    protecting_products,
    replacement_proof,
)
from orchestrator.execute.executor import Executor, StepRequest
from orchestrator.inputs.inventory import Inventory
from orchestrator.inputs.policy import Policy
from orchestrator.plan.planner import strategy_for
from orchestrator.store.state import BudgetFull, LeaseLost, StateStore

Log = Callable[[str], None]
Guard = Callable[[], str | None]
DEFAULT_RECONNECT_S = 600.0
SLOT_POLL_S = 5.0
# A make-before-break host waiting this long for a budget slot is verified again before its
# banned product is touched: the verification it had may no longer hold.
STALE_VERIFICATION_S = 600.0


@dataclass(frozen=True)
class RunPolicy:
    """How a run may proceed: strategy, protection budget, reconnect window and wave gates."""

    strategy: str = Strategy.AUTO
    # Hosts at once whose protection is unproven (removal to verification), fleet-wide: a
    # count (3) or a share of the fleet ("1%").
    max_unprotected: int | str = 1
    max_failed_percent: float = 0.0
    soak_seconds: float = 0.0
    require_approval: bool = False
    plan_key: str = ""
    # Maintenance windows and blackout dates: a wave starts only while its window is open.
    windows: Policy | None = None
    # How long a host in its protection window that does not answer is retried.
    reconnect_seconds: float = DEFAULT_RECONNECT_S

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGY_NAMES)}")
        if (problem := budget_problem(str(self.max_unprotected))) is not None:
            raise UsageError(f"--max-unprotected: {problem}")
        if not 0 <= self.max_failed_percent <= 100:
            raise UsageError("--max-failed-percent must be between 0 and 100")
        if self.reconnect_seconds < 0:
            raise UsageError("--reconnect-window must be 0 or more seconds")

    @property
    def budget_spec(self) -> str:
        return str(self.max_unprotected).strip()


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

    def __init__(  # noqa: PLR0913, PLR0917, RUF100 - collaborators passed in; old positions kept
            self, store: StateStore, executor: Executor, catalogue: Catalogue,
            inventory: Inventory, replacement: str, log: Log,
            policy: RunPolicy | None = None, guard: Guard | None = None, *,
            run_id: int | None = None, on_change: Callable[[HostRecord], None] | None = None,
            stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
            monotonic: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] | None = None) -> None:
        self.store = store
        self.executor = executor
        self.catalogue = catalogue
        self.inventory = inventory
        self.replacement = replacement
        self.log = log
        self.policy = policy or RunPolicy()
        self.store.run_budget = self.policy.budget_spec
        # Says why the run must start no further step (its lease could not be kept), or None.
        self.guard = guard
        self.run_id = run_id  # the run record every step is written under
        # Set by the first Ctrl-C, or by the lease keeper when the lease is lost.
        self.stop = stop if stop is not None else threading.Event()
        self.on_change = on_change  # told of every committed transition (live progress)
        # Time, injectable for tests: wall clock for windows, monotonic for waits.
        self.clock = clock
        self.monotonic = monotonic
        self.sleep: Callable[[float], None] = sleep if sleep is not None else self._pause
        self.touched: set[str] = set()  # hosts this engine changed, re-probed for the evidence
        self.staged: dict[str, dict[str, str]] = {}  # host -> staged file -> SHA-256
        # Hosts re-probed after their execution node died mid-step: not moved again this wave.
        self.settled: set[str] = set()
        self._reprobing: set[str] = set()
        # Touched hosts of this wave that preflight could not reach: they fail the gate.
        self.unreached: set[str] = set()

    # ---- plumbing ----------------------------------------------------------------------
    def _extravars(self) -> dict[str, Any]:
        return {
            "avmigrate_banned": self.catalogue.banned,
            "avmigrate_replacement": self.catalogue.replacement(self.replacement),
            "avmigrate_eicar_b64": EICAR_B64,
        }

    def _check_lease(self) -> None:
        if self.guard is not None and (why := self.guard()):
            raise LeaseLost(f"{why}; no further step was started. Hosts caught mid-step keep "
                            "their intent and are re-probed by the next run")

    def _check_abort(self) -> None:
        cancel = getattr(self.executor, "cancel", None)
        if isinstance(cancel, threading.Event) and cancel.is_set():
            raise Aborted("aborted; hosts caught mid-step keep their intent and are "
                          "re-probed by the next run")

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the operator aborts (a second Ctrl-C)."""
        cancel = getattr(self.executor, "cancel", None)
        if isinstance(cancel, threading.Event):
            cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def _check_stop(self) -> None:
        self._check_lease()
        if self.stop.is_set():
            raise _Stopped

    def _step(self, step: str, playbook: str, names: list[str],
              host_vars: dict[str, dict[str, Any]] | None = None,
              on_result: Callable[[StepResult], None] | None = None,
              check: bool = False) -> dict[str, StepResult]:
        if not names:
            return {}
        self._check_lease()
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
                         and n not in self.settled and n not in self._reprobing)
        if unknown:
            self._settle_unknown({n: results[n].message for n in unknown})
        return results

    def _reach(self, step: str, playbook: str, names: list[str],
               host_vars: dict[str, dict[str, Any]] | None = None) -> dict[str, StepResult]:
        """`_step` for hosts in their protection window: a host that does not answer is
        retried with backoff for the reconnect window (it keeps its slot meanwhile)."""
        results = self._step(step, playbook, names, host_vars)
        deadline = self.monotonic() + self.policy.reconnect_seconds
        delay = 5.0
        while True:
            away = [n for n in names if n not in self.settled
                    and results[n].outcome == StepOutcome.UNREACHABLE]
            left = deadline - self.monotonic()
            if not away or left <= 0:
                return results
            self._check_abort()
            wait = min(delay, left)
            self.log(f"  {len(away)} host(s) in their protection window do not answer "
                     f"({', '.join(away[:5])}{'...' if len(away) > 5 else ''}): {step} again "
                     f"in {wait:.0f}s, for up to {left:.0f}s more")
            self.sleep(wait)
            self._check_abort()
            delay = min(delay * 2, 60.0)
            results.update(self._step(step, playbook, away, host_vars))

    def _settle_unknown(self, why: dict[str, str]) -> None:
        """Hosts whose execution node died mid-step: re-probed at once (through the nodes
        left) from the intent they were caught in, and left alone for the rest of this wave."""
        names = sorted(why)
        self.log(f"  {len(names)} host(s) in an unknown state: re-probing {', '.join(names)}")
        self._reprobing.update(names)
        try:
            self.discover(names, {n: f"unknown: {m}" for n, m in why.items()})
        finally:
            self._reprobing.difference_update(names)
            self.settled.update(names)

    def _move(self, name: str, to: HostState, reason: str, **fields: Any) -> HostRecord:
        if name in self.settled:
            # Re-probed after its node died: what the step's caller would record is moot.
            return self._record(name)
        record = self.store.transition(name, to, reason, self.run_id, **fields)
        if to not in UNTOUCHED:
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
        if self.policy.strategy != Strategy.AUTO:
            return self.policy.strategy
        if record.facts is None:
            return Strategy.MAKE_BEFORE_BREAK
        return strategy_for(record.facts, self.catalogue, self.replacement)

    def unprotected(self) -> list[str]:
        return [r.name for r in self.store.in_states([HostState.UNPROTECTED])]

    # ---- discovery ---------------------------------------------------------------------
    def discover(self, names: list[str], why: dict[str, str] | None = None
                 ) -> dict[str, HostRecord]:
        """Read-only probe of hosts; settle each from what it really has now.

        A host in doubt (classify.in_doubt: caught mid-step, or touched and protected by its
        replacement alone) whose probe shows no protecting product running but the replacement
        installed is verified as well (EICAR through its daemon): only that proof, or a
        protecting product running, lets it out of doubt. `why` says, per host, what led
        to the probe (kept at the head of the reason).
        """
        why = why or {}
        self.store.ensure_hosts(names)
        out: dict[str, HostRecord] = {}
        deferred: list[tuple[StepResult, HostFacts, list[str]]] = []

        def probed(result: StepResult) -> None:
            prior = self._record(result.host)
            if result.outcome != StepOutcome.OK:
                out[result.host] = self._settle(prior, result, None, [], False, why)
                return
            facts = factlib.parse_discovery(result.data, self.catalogue, self.replacement)
            problems = factlib.preflight_problems(facts, self.catalogue, self.replacement)
            banned_protects = bool(protecting_products(facts, self.catalogue))
            if classify.in_doubt(prior.state, banned_protects) and not banned_protects and (
                    facts.replacement_installed or facts.replacement_active):
                deferred.append((result, facts, problems))
                return
            out[result.host] = self._settle(prior, result, facts, problems, False, why)

        self._step("discover", "discover.yml", names, on_result=probed)
        if deferred:
            proofs = self._step("reprobe-verify", "verify.yml", [r.host for r, _, _ in deferred])
            for result, facts, problems in deferred:
                verified = self._proof_problem(proofs[result.host]) is None
                out[result.host] = self._settle(self._record(result.host), result, facts,
                                                problems, verified, why)
        return out

    def _settle(self, prior: HostRecord, result: StepResult, facts: HostFacts | None,
                problems: list[str], verified: bool, why: dict[str, str]) -> HostRecord:
        proof = None if facts is None else proof_of(facts, self.catalogue, self.replacement,
                                                    verified)
        found = classify.settle(prior, result.outcome, result.message, facts, problems,
                                proof, verified)
        extra: dict[str, Any] = {"proof": found.proof}
        if facts is not None:
            extra["facts"] = facts
            # The recommendation, for hosts not under way: a host mid-migration keeps the
            # strategy it is being migrated with.
            if facts.banned and found.state in (HostState.PENDING, HostState.BLOCKED):
                extra["strategy"] = strategy_for(facts, self.catalogue, self.replacement)
        if verified and found.state in (HostState.VERIFIED, HostState.MIGRATED):
            extra["replacement_verified_at"] = time.time()
        reason = found.reason
        if result.host in why and found.state != prior.state:
            reason = f"{why[result.host]}; {reason}"
        return self._move(result.host, found.state, reason, **extra)

    # ---- migration ---------------------------------------------------------------------
    def run(self, plan: Plan) -> RunSummary:
        stopped: str | None = None
        approvals = (self.store.approvals(self.policy.plan_key)
                     if self.policy.require_approval else {})
        self._say_budget()
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
                    self.unreached.clear()
                    held = self.migrate_wave(todo, wave.number)
                    self.settled.clear()
                    if held:
                        stopped = held
                        break
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
            mine = set(self.inventory.names())
            for r in self.store.in_states([HostState.INSTALLING, HostState.STAGING]):
                if r.name not in mine:  # only this run's hosts: others belong to their runs
                    continue
                if r.protected_by:  # the evidence its last probe gave still stands
                    self._move(r.name, HostState.INTERRUPTED,
                               f"stopped by the operator during {r.state.value}; "
                               f"banned product untouched; {r.protected_by}")
                else:
                    self._move(r.name, HostState.UNPROTECTED,
                               f"stopped by the operator during {r.state.value}; no evidence "
                               "of protection (no protecting product ran at its last probe)")
        if stopped:
            self.log(stopped)
        self._evidence_probe()
        records = [rec for n in self.inventory.names() if (rec := self.store.get(n)) is not None]
        counts: dict[str, int] = {}
        for rec in records:
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return RunSummary(counts=counts, exit_code=exit_code_for(records), stopped_early=stopped)

    def _say_budget(self) -> None:
        budget = self.store.budget()
        if budget.fleet_spec is not None and budget.fleet_spec != budget.run_spec:
            self.log(f"protection budget: this run asked for {budget.run_spec}, the fleet's is "
                     f"{budget.fleet_spec} (set by {budget.set_by or 'an operator'}): the "
                     f"smaller applies, {budget.limit} host(s) at once")
        else:
            self.log(f"protection budget: {budget.limit} host(s) of {budget.fleet_size} at "
                     f"once ({budget.run_spec}); {budget.held} held now")

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

        Discovery has just re-probed them: those still unprotected get the replacement
        installed and verified (always safe); hosts it cannot fix keep every further removal
        from starting.
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
        for n in self.unreached & set(hosts):
            states[n] = HostState.UNREACHABLE  # touched, then lost from sight: a failure
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

    def migrate_wave(self, names: list[str], wave: int) -> str | None:
        """Migrate one wave's hosts; a reason when removals had to stop short."""
        self._check_stop()
        # Preflight, read-only: a refused host stays exactly as it was.
        pre = self._step("preflight", "preflight.yml", names)
        ready = []
        for n in names:
            r = pre[n]
            if n in self.settled:
                continue
            prior = self._record(n)
            if r.outcome == StepOutcome.OK:
                ready.append(n)
            elif prior.state in UNTOUCHED:
                to = (HostState.UNREACHABLE if r.outcome == StepOutcome.UNREACHABLE
                      else HostState.BLOCKED)
                self._move(n, to, f"{'unreachable at ' if to == HostState.UNREACHABLE else ''}"
                           f"preflight: {r.message}")
            else:
                # Something was done to it before: it keeps the state that says so.
                if r.outcome == StepOutcome.UNREACHABLE:
                    self.unreached.add(n)
                self._move(n, prior.state, f"preflight {r.outcome.value}: {r.message} (was: "
                           f"{prior.reason[:200]})")
        mbb = [n for n in ready if self.strategy_of(self._record(n)) == Strategy.MAKE_BEFORE_BREAK]
        swap = [n for n in ready if n not in mbb]
        return self._make_before_break(mbb, wave) or self._swap(swap, wave)

    # ---- the budget --------------------------------------------------------------------
    def _reserve(self, names: list[str], why: Callable[[str], str]) -> list[str]:
        """Commit the removal intent of as many of `names` as the budget allows, one
        transaction each (the store takes the slot in it, or refuses)."""
        taken = []
        now = time.time()
        for n in names:
            try:
                self._move(n, HostState.REMOVING, why(n), protection_stopped_at=now)
            except BudgetFull:
                break
            taken.append(n)
        return taken

    def _await_slot(self) -> str | None:
        """Wait while every slot is held by hosts other live runs are working on. A reason
        to stop when the slots will not come back by themselves (an alarm, a dead run)."""
        announced = False
        while True:
            self._check_stop()
            budget = self.store.budget()
            if budget.held < budget.limit:
                return None
            holders = self.store.slot_holders()
            alarms = [h.name for h in holders if h.state == HostState.UNPROTECTED]
            if alarms:
                return (f"UNPROTECTED hosts: {', '.join(alarms[:10])}; no further removals "
                        "start. Run `avmigrate remediate`, then run again")
            mine = set(self.inventory.names())
            worked = self.store.held_by_live_runs([h.name for h in holders])
            idle = [h.name for h in holders if h.name not in worked or h.name in mine]
            if idle:
                return (f"the protection budget ({budget.limit} host(s) at once) is held by "
                        f"{', '.join(idle[:10])}, which no live run is working on; run "
                        "avmigrate on their inventory to settle them, then run again")
            if not announced:
                self.log(f"  waiting for a slot of the protection budget ({budget.limit} at "
                         f"once), held by {', '.join(h.name for h in holders[:10])}")
                announced = True
            self.sleep(SLOT_POLL_S)

    def _batches(self, queue: list[str], run_batch: Callable[[list[str]], None],
                 pick: Callable[[list[str], int], list[str]],
                 why: Callable[[str], str]) -> str | None:
        """Run `run_batch` on reserved hosts of `queue` until it is empty. `pick` chooses the
        candidates for up to N free slots (and may drop hosts it stopped)."""
        while queue:
            self._check_stop()
            if (bad := self.unprotected()):
                return (f"UNPROTECTED hosts: {', '.join(bad[:10])}; no further removals "
                        "start. Run `avmigrate remediate`, then run again")
            if (held := self._await_slot()) is not None:
                return held
            budget = self.store.budget()
            free = max(1, budget.limit - budget.held)
            candidates = pick(queue[:free], free)
            queue = [n for n in queue if n not in queue[:free] or n in candidates]
            if not candidates:
                continue
            batch = self._reserve(candidates, why)
            if not batch:
                continue  # another operator took the slot meanwhile: wait for the next one
            queue = [n for n in queue if n not in batch]
            run_batch(batch)
        return None

    # ---- make-before-break ---------------------------------------------------------------
    def _make_before_break(self, names: list[str], wave: int) -> str | None:
        if not names:
            return None
        self._check_stop()
        for n in names:
            self._move(n, HostState.INSTALLING, f"installing {self.replacement}", wave=wave,
                       strategy=Strategy.MAKE_BEFORE_BREAK)
        inst = self._step("install", "install.yml", names)
        installed = []
        for n in names:
            r = inst[n]
            if r.outcome == StepOutcome.OK:
                installed.append(n)
            else:
                self._not_installed(n, f"install {r.outcome.value}: {r.message}")
        self._check_stop()
        verified = self._verify_installed("verify", installed)
        return self._batches(verified, self._mbb_batch, self._fresh,
                             lambda n: f"removing {', '.join(self._banned_ids(n)) or 'leftovers'}")

    def _verify_installed(self, step: str, names: list[str]) -> list[str]:
        results = self._step(step, "verify.yml", [n for n in names if n not in self.settled])
        verified = []
        for n in names:
            if n in self.settled:
                continue
            problem = self._proof_problem(results[n])
            if problem is None:
                self._move(n, HostState.VERIFIED, replacement_proof(self.replacement),
                           replacement_verified_at=time.time(),
                           proof=replacement_proof(self.replacement))
                verified.append(n)
            else:
                self._not_installed(n, f"verification failed: {problem}")
        return verified

    def _fresh(self, candidates: list[str], _free: int) -> list[str]:
        """Candidates whose verification is recent; those verified long ago (they waited for
        a slot) are verified again first, and dropped if that fails."""
        now = time.time()
        stale = [n for n in candidates
                 if now - (self._record(n).replacement_verified_at or 0) > STALE_VERIFICATION_S]
        if not stale:
            return candidates
        good = set(self._verify_installed("verify-again", stale))
        return [n for n in candidates if n not in stale or n in good]

    def _mbb_batch(self, batch: list[str]) -> None:
        host_vars = {n: {"avmigrate_remove_ids": self._banned_ids(n)} for n in batch}
        # From here the removal and its proof run to the end, even if a stop is requested.
        rem = self._reach("remove", "remove.yml", batch, host_vars)
        lost = [n for n in batch if rem[n].outcome == StepOutcome.UNREACHABLE]
        final = self._reach("final-verify", "verify.yml",
                            [n for n in batch if n not in lost and n not in self.settled])
        for n in batch:
            if n in self.settled:
                continue
            removal = rem[n]
            if n in lost or final[n].outcome == StepOutcome.UNREACHABLE:
                self._unreachable_in_window(n, final.get(n, removal))
                continue
            problem = self._proof_problem(final[n])
            if problem is not None:
                self._move(n, HostState.UNPROTECTED,
                           f"UNPROTECTED: replacement failed its final check ({problem}) "
                           f"after removal {removal.outcome.value}")
                self.log(f"!!! {n} is UNPROTECTED: {problem}")
            elif removal.outcome != StepOutcome.OK:
                self._move(n, HostState.REMOVE_FAILED,
                           f"removal {removal.outcome.value}: {removal.message}; replacement "
                           "verified after it and protecting",
                           proof=replacement_proof(self.replacement))
            else:
                self._move(n, HostState.MIGRATED, "banned product removed; replacement verified",
                           proof=replacement_proof(self.replacement))

    def _not_installed(self, name: str, why: str) -> None:
        """The replacement could not be installed, staged or verified on this host. Its banned
        product is untouched by this run; if none of its products protected it at its last
        probe (its KESL stopped earlier, or it only had the Network Agent), it has no
        protection at all: an alarm, not a failed install."""
        record = self._record(name)
        if record.facts is not None and not protecting_products(record.facts, self.catalogue):
            self._move(name, HostState.UNPROTECTED,
                       f"UNPROTECTED: {why}; no protecting product ran at its last probe and "
                       "its replacement is not verified")
            self.log(f"!!! {name} is UNPROTECTED: {why}")
        else:
            self._move(name, HostState.INSTALL_FAILED, f"{why}; banned product untouched")

    def _unreachable_in_window(self, name: str, result: StepResult) -> None:
        window = self.policy.reconnect_seconds
        self._move(name, HostState.UNPROTECTED,
                   f"UNPROTECTED: did not answer for {window:.0f}s after its banned product "
                   f"was stopped ({result.message}); its protection is unknown")
        self.log(f"!!! {name} is UNPROTECTED: unreachable inside its protection window")

    # ---- swap ----------------------------------------------------------------------------
    def _swap(self, names: list[str], wave: int) -> str | None:
        if not names:
            return None
        self._check_stop()
        for n in names:
            self._move(n, HostState.STAGING, f"staging {self.replacement}", wave=wave,
                       strategy=Strategy.SWAP)
        stage = self._step("stage", "stage.yml", names)
        queue = []
        for n in names:
            r = stage[n]
            if n in self.settled:
                continue
            if r.outcome == StepOutcome.OK:
                self.staged[n] = dict(r.data.get("staged", {}))
                self._move(n, HostState.STAGED, "replacement staged and checked; banned "
                           "product still protecting")
                queue.append(n)
            else:
                self._not_installed(n, f"staging {r.outcome.value}: {r.message}")
        return self._batches(queue, self._swap_batch, self._stage_proven,
                             lambda n: f"swap: removing {', '.join(self._banned_ids(n))}")

    def _stage_proven(self, candidates: list[str], _free: int) -> list[str]:
        """Right before removal: the staged packages are still exactly those staged (SHA-256)
        and an install from them alone, of those very files, would still succeed (apt's
        simulation, no network). The others are stopped here, their banned product untouched."""
        check = self._step("stage-check", "stage_check.yml", candidates)
        good = []
        for n in candidates:
            if n in self.settled:
                continue
            r = check[n]
            now = dict(r.data.get("staged", {})) if r.outcome == StepOutcome.OK else None
            then = self.staged.get(n)
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
            self._not_installed(n, why)
        return good

    def _swap_batch(self, batch: list[str]) -> None:
        host_vars = {n: {"avmigrate_remove_ids": self._banned_ids(n)} for n in batch}
        # The batch runs to the end even if a stop is requested: it must not stay unprotected.
        rem = self._reach("remove", "remove.yml", batch, host_vars)
        left = []
        for n in batch:
            r = rem[n]
            if n in self.settled:
                continue
            if r.outcome == StepOutcome.UNREACHABLE:
                self._unreachable_in_window(n, r)
                continue
            why = ("banned product removed" if r.outcome == StepOutcome.OK
                   else f"removal {r.outcome.value}: {r.message}")
            self._move(n, HostState.SWAPPING, f"{why}; installing from the stage")
            left.append(n)
        for attempt in (1, 2):
            inst = self._reach(f"install-staged#{attempt}", "install_staged.yml", left)
            tried = [n for n in left if inst[n].outcome == StepOutcome.OK]
            proof = self._reach(f"verify#{attempt}", "verify.yml", tried)
            failed = []
            for n in left:
                if n in self.settled:
                    continue
                result = proof.get(n, inst[n])
                if result.outcome == StepOutcome.UNREACHABLE:
                    self._unreachable_in_window(n, result)
                    continue
                problem = (self._proof_problem(proof[n]) if n in proof
                           else f"{inst[n].outcome.value}: {inst[n].message}")
                if problem is None:
                    self._swapped(n, rem[n])
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

    def _swapped(self, n: str, removal: StepResult) -> None:
        proof = replacement_proof(self.replacement)
        if removal.outcome == StepOutcome.OK:
            self._move(n, HostState.MIGRATED, "swapped: banned product removed; replacement "
                       "verified", replacement_verified_at=time.time(), proof=proof)
        else:
            self._move(n, HostState.REMOVE_FAILED,
                       f"removal {removal.outcome.value}: {removal.message}; replacement "
                       "verified", replacement_verified_at=time.time(), proof=proof)

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
        mbb = [n for n in ready if self.strategy_of(self._record(n)) == Strategy.MAKE_BEFORE_BREAK]
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
        """Unprotected hosts: install the replacement from the repository and verify it, then
        read whether a banned product is still there: migrated only if none is; else verified,
        and its removal continues under the budget. They keep their slot until verified."""
        for n in names:
            self._move(n, HostState.UNPROTECTED, "remediating: installing the replacement")
        inst = self._reach("remediate-install", "install.yml", names)
        ok = [n for n in names if inst[n].outcome == StepOutcome.OK and n not in self.settled]
        proof = self._reach("remediate-verify", "verify.yml", ok)
        verified = [n for n in ok if n not in self.settled
                    and self._proof_problem(proof[n]) is None]
        probe = self._step("remediate-probe", "discover.yml", verified)
        evidence = replacement_proof(self.replacement)
        for n in names:
            if n in self.settled:
                continue
            if n not in verified:
                problem = (self._proof_problem(proof[n]) if n in proof
                           else f"{inst[n].outcome.value}: {inst[n].message}")
                self._move(n, HostState.UNPROTECTED, f"UNPROTECTED: remediation failed "
                           f"({problem})")
                continue
            r = probe.get(n)
            facts = (factlib.parse_discovery(r.data, self.catalogue, self.replacement)
                     if r is not None and r.outcome == StepOutcome.OK else None)
            if facts is not None and not facts.banned:
                self._move(n, HostState.MIGRATED, f"remediated: no banned product left; "
                           f"{evidence}", replacement_verified_at=time.time(), proof=evidence,
                           facts=facts)
            else:
                left = (", ".join(b.product for b in facts.banned) if facts is not None
                        else "whether a banned product is left could not be read")
                self._move(n, HostState.VERIFIED, f"remediated: {evidence}; {left}: its "
                           "removal continues under the budget",
                           replacement_verified_at=time.time(), proof=evidence,
                           **({"facts": facts} if facts is not None else {}))

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
