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

This module holds the Engine: its state, the step plumbing every other module of the package
goes through (step, reach, move, record) and the stop, abort and lease checks. The rest:
  policy.py             RunPolicy (how a run may proceed), RunSummary (how it ended)
  discovery.py          probe hosts read-only and settle each one's state
  waves.py              the run over waves: approvals, windows, preflight, gates, soak, evidence
  strategies.py         Strategy -> its class; make_before_break.py and swap.py, one each
  budget.py             batches of removals under the fleet's protection budget
  failures.py           what a host becomes when a strategy's step fails on it
  checkmode.py          plan --check;  remediation.py: give unprotected hosts protection back
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator.core import facts as factlib
from orchestrator.core.catalogue import PLATFORMS, Catalogue, inventory_platform, platform_of
from orchestrator.core.errors import Aborted, UsageError
from orchestrator.core.models import (
    UNTOUCHED,
    HostRecord,
    HostState,
    Plan,
    StepOutcome,
    StepResult,
    Strategy,
)
from orchestrator.core.protection import EICAR_B64, protecting_products
from orchestrator.engine import checkmode, remediation
from orchestrator.engine.discovery import Discovery
from orchestrator.engine.policy import (
    RunPolicy,
    RunSummary,
    Stopped,
)
from orchestrator.engine.waves import Waves
from orchestrator.execute.step import Executor, StepRequest
from orchestrator.inputs.inventory import Inventory
from orchestrator.plan.planner import strategy_for
from orchestrator.store.errors import LeaseLost
from orchestrator.store.interface import StateStore

Log = Callable[[str], None]
Guard = Callable[[], str | None]


class Engine:
    """Drives steps through an Executor and writes every outcome to a StateStore."""

    def __init__(  # noqa: PLR0913, PLR0917 - collaborators passed in; old positions kept
            self, store: StateStore, executor: Executor, catalogue: Catalogue,
            inventory: Inventory, replacement: str, log: Log,
            policy: RunPolicy | None = None, guard: Guard | None = None, *,
            run_id: int | None = None, on_change: Callable[[HostRecord], None] | None = None,
            stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
            monotonic: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] | None = None,
            choice: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.executor = executor
        self.catalogue = catalogue
        self.inventory = inventory
        self.replacement = replacement  # the default replacement
        # Hosts whose replacement is not the default (policy by group, inventory variable).
        self.choice: Mapping[str, str] = choice or {}
        # Hosts whose migration began: the replacement recorded then (read once, kept here as
        # this run records more; a host is held by one run at a time).
        self._pinned: dict[str, str] | None = None
        self._catalogue_vars: dict[str, Any] | None = None
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
        # A run's discovery reads the preflight checks too (Debian hosts): host -> (when,
        # its preflight report), which spares a wave starting soon after a preflight step.
        self.preflight_in_discovery = False
        self.preflight_seen: dict[str, tuple[float, dict[str, Any]]] = {}
        # Hosts probed at the end of their last step (the removal's own probe): the evidence
        # takes that report instead of probing them again.
        self.fresh_probe: dict[str, dict[str, Any]] = {}

    # ---- what a run does (each in its own module) ---------------------------------------
    def discover(self, names: list[str], why: dict[str, str] | None = None
                 ) -> dict[str, HostRecord]:
        """Read-only probe of hosts; settle each from what it really has now (discovery.py)."""
        return Discovery(self, why).discover(names)

    def run(self, plan: Plan) -> RunSummary:
        """Migrate the plan's waves in order, stopping at a gate that fails (waves.py)."""
        return Waves(self).run(plan)

    def migrate_wave(self, names: list[str], wave: int) -> str | None:
        """Migrate one wave's hosts; a reason when removals had to stop short (waves.py)."""
        return Waves(self).migrate_wave(names, wave)

    def check(self, names: list[str]) -> dict[str, Any]:
        """What each host's steps would change, in Ansible's check mode (checkmode.py)."""
        return checkmode.check(self, names)

    def remediate(self, names: list[str]) -> None:
        """Install and verify the replacement on unprotected hosts (remediation.py)."""
        remediation.remediate(self, names)

    def replacement_of(self, name: str) -> str:
        """The replacement host `name` is migrated to: the one recorded when its migration
        began (a resumed run, remediate and a re-probe verify and repair that product), else
        the choice (inventory variable, policy group, default)."""
        if self._pinned is None:
            self._pinned = {r.name: r.replacement for r in self.store.all() if r.replacement}
            mine = set(self.inventory.names())
            for name_, rid in sorted(self._pinned.items()):
                chosen = self.choice.get(name_, self.replacement)
                if rid != chosen and name_ in mine:
                    self.log(f"  {name_}: its migration to {rid} began before; it keeps {rid} "
                             f"(now chosen: {chosen})")
        return self._pinned.get(name) or self.choice.get(name, self.replacement)

    def pin(self, name: str) -> str:
        """The replacement to record as `name`'s when its migration begins."""
        rid = self.replacement_of(name)
        assert self._pinned is not None  # noqa: S101 - read by replacement_of
        self._pinned[name] = rid
        return rid

    def passive_beside(self, name: str) -> bool:
        """Must the host's replacement run passive: it may run beside a banned product found
        running there only in passive mode (unknown facts: assume so)?"""
        rid = self.replacement_of(name)
        if not self.catalogue.passive(rid):
            return False
        facts = self.record(name).facts
        if facts is None:
            return True
        # Running, not merely installed: passive beside a stopped KESL would leave the host
        # with nothing protecting it (and an active, verified replacement must not be turned
        # passive by a later run). A KESL stopped by avmigrate's removal is also disabled.
        running = [b.product for b in facts.banned if b.services_active or b.processes]
        return self.catalogue.passive_beside(rid, running)

    def proven_beside(self, name: str) -> bool:
        """Is the host's replacement proven only by its health for now (`verify_beside`),
        beside a protecting banned product: MDE passive beside KESL, or a product whose
        on-access detection could be KESL's own while KESL runs? Its detection is then
        proven once the banned product is gone."""
        rid = self.replacement_of(name)
        if not self.catalogue.proven_beside(rid, self.platform(name)):
            return False
        facts = self.record(name).facts
        return (facts is None or self.passive_beside(name)
                or bool(protecting_products(facts, self.catalogue)))

    def protecting_units(self, name: str) -> list[str]:
        """The services of the banned products on the host whose running is protection."""
        return [u for b in self.banned_ids(name) for u in self.catalogue.protection_services(b)]

    def strategy_of(self, record: HostRecord) -> str:
        if self.policy.strategy != Strategy.AUTO:
            return self.policy.strategy
        if record.facts is None:
            return Strategy.MAKE_BEFORE_BREAK
        return strategy_for(record.facts, self.catalogue, self.replacement_of(record.name))

    def unprotected(self) -> list[str]:
        return [r.name for r in self.store.in_states([HostState.UNPROTECTED])]

    # ---- stop, abort, lease --------------------------------------------------------------
    def check_lease(self) -> None:
        if self.guard is not None and (why := self.guard()):
            raise LeaseLost(f"{why}; no further step was started. Hosts caught mid-step keep "
                            "their intent and are re-probed by the next run")

    def check_abort(self) -> None:
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

    def check_stop(self) -> None:
        self.check_lease()
        if self.stop.is_set():
            raise Stopped

    # ---- step plumbing ---------------------------------------------------------------------
    def _extravars(self) -> dict[str, Any]:
        if self._catalogue_vars is None:
            # Per platform, its banned products and every replacement as they apply there;
            # each host's are picked by its avmigrate_platform and avmigrate_replacement_id.
            self._catalogue_vars = {p: self.catalogue.for_platform(p) for p in PLATFORMS}
        return {"avmigrate_catalogue": self._catalogue_vars, "avmigrate_eicar_b64": EICAR_B64}

    def _catalogue_for(self, playbook: str, platforms: dict[str, str],
                       chosen: dict[str, str]) -> dict[str, Any]:
        """The catalogue a step's hosts need: their platforms' banned products and their
        replacements only (Ansible merges the extra vars into every task of every host). A
        discovery takes it whole: the probe reads each host's platform itself."""
        whole = self._extravars()["avmigrate_catalogue"]
        if playbook == "discover.yml":
            return {}
        out: dict[str, Any] = {}
        for n, p in platforms.items():
            mine = out.setdefault(p, {"banned": whole[p]["banned"], "replacements": {}})
            if chosen[n] in whole[p]["replacements"]:
                mine["replacements"][chosen[n]] = whole[p]["replacements"][chosen[n]]
        return {"avmigrate_catalogue": out}

    def platform(self, name: str) -> str:
        """The catalogue platform of host `name`: what its probe read, else what its inventory
        says (Windows), else Debian's (a Linux probe reads its own family whatever it is
        told)."""
        record = self.store.get(name)
        if record is not None and record.facts is not None and (
                found := platform_of(record.facts.os_family)):
            return found
        return inventory_platform(self.inventory.get(name).vars) or "debian"

    def step(self, step: str, playbook: str, names: list[str],  # noqa: PLR0913, PLR0917 - a StepRequest's parts
             host_vars: dict[str, dict[str, Any]] | None = None,
             on_result: Callable[[StepResult], None] | None = None,
             check: bool = False, extravars: dict[str, Any] | None = None
             ) -> dict[str, StepResult]:
        """Run one playbook on `names`, recording each host's result as it comes; hosts whose
        execution node died mid-step are re-probed at once. The playbooks' plays take each
        platform's hosts from `avmigrate_<platform>_hosts` (and `avmigrate_linux_hosts`)."""
        if not names:
            return {}
        self.check_lease()
        platforms = {n: self.platform(n) for n in names}
        by_platform = {f"avmigrate_{p}_hosts": [n for n in names if platforms[n] == p]
                       for p in PLATFORMS}
        by_platform["avmigrate_linux_hosts"] = [n for n in names
                                                if platforms[n] != "windows"]
        chosen = {n: self.replacement_of(n) for n in names}
        request = StepRequest(
            step=step, playbook=playbook,
            hosts=tuple(self.inventory.get(n) for n in names),
            extravars={**self._extravars(), **self._catalogue_for(playbook, platforms, chosen),
                       **by_platform, **(extravars or {})}, check=check,
            host_vars={n: {"avmigrate_replacement_id": chosen[n],
                           "avmigrate_platform": platforms[n],
                           **(host_vars or {}).get(n, {})} for n in names},
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

    def reach(self, step: str, playbook: str, names: list[str],
              host_vars: dict[str, dict[str, Any]] | None = None,
              extravars: dict[str, Any] | None = None) -> dict[str, StepResult]:
        """`step` for hosts in their protection window: a host that does not answer is
        retried with backoff for the reconnect window (it keeps its slot meanwhile)."""
        results = self.step(step, playbook, names, host_vars, extravars=extravars)
        deadline = self.monotonic() + self.policy.reconnect_seconds
        delay = 5.0
        while True:
            away = [n for n in names if n not in self.settled
                    and results[n].outcome == StepOutcome.UNREACHABLE]
            left = deadline - self.monotonic()
            if not away or left <= 0:
                return results
            self.check_abort()
            wait = min(delay, left)
            self.log(f"  {len(away)} host(s) in their protection window do not answer "
                     f"({', '.join(away[:5])}{'...' if len(away) > 5 else ''}): {step} again "
                     f"in {wait:.0f}s, for up to {left:.0f}s more")
            self.sleep(wait)
            self.check_abort()
            delay = min(delay * 2, 60.0)
            results.update(self.step(step, playbook, away, host_vars, extravars=extravars))

    # ---- host state --------------------------------------------------------------------------
    def move(self, name: str, to: HostState, reason: str, **fields: Any) -> HostRecord:
        """Commit a host's new state (the store's transaction) before the next step."""
        if name in self.settled:
            # Re-probed after its node died: what the step's caller would record is moot.
            return self.record(name)
        record = self.store.transition(name, to, reason, self.run_id, **fields)
        self.fresh_probe.pop(name, None)  # what a probe read before this move may be stale
        if to not in UNTOUCHED:
            self.touched.add(name)
        if self.on_change is not None:
            self.on_change(record)
        return record

    def record(self, name: str) -> HostRecord:
        record = self.store.get(name)
        if record is None:  # pragma: no cover - every host is ensured at discovery
            raise UsageError(f"host {name} is not in the state; run discover")
        return record

    def banned_ids(self, name: str) -> list[str]:
        record = self.record(name)
        if record.facts is not None and record.facts.banned:
            return [b.product for b in record.facts.banned]
        return list(self.catalogue.banned_on(self.platform(name)))

    def proof_problem(self, result: StepResult, beside: bool = False) -> str | None:
        """Why a verification result does not prove the replacement protects (`beside`:
        that it is healthy beside the banned product seen protecting), or None."""
        if result.outcome != StepOutcome.OK:
            return f"{result.outcome.value}: {result.message}"
        return factlib.verification_problem(result.data, self.catalogue,
                                            self.replacement_of(result.host),
                                            datetime.now(UTC), beside,
                                            self.platform(result.host))

    def waits_for_reboot(self, name: str, result: StepResult) -> bool:
        """If a verification found the banned product's removal waiting for the next boot:
        commit REBOOT_PENDING (the slot stays the host's; the reboot, then the proof)."""
        if (result.outcome != StepOutcome.OK
                or result.data.get("removal_pending_reboot") is not True):
            return False
        self.move(name, HostState.REBOOT_PENDING,
                  "its banned product's removal completes at the next reboot; it keeps its "
                  "slot until it has rebooted and its replacement is proven")
        return True

    def reboot_blocked(self, name: str) -> str | None:
        """Why host `name` may not be rebooted now (the policy's `reboot`, its maintenance
        window, a blackout date), or None."""
        if self.policy.reboot == "never":
            return "the policy leaves reboots to the administrator (reboot: never)"
        windows = self.policy.windows
        if windows is None:
            return None
        return windows.closed_reason(windows.window_for(self.inventory.get(name).groups),
                                     datetime.fromtimestamp(self.clock(), UTC))

    def beside_vars(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The host vars of a verification beside the banned product."""
        return {n: {"avmigrate_verify_phase": "beside",
                    "avmigrate_protecting_units": self.protecting_units(n)} for n in names}
