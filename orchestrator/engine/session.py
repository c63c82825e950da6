"""One command's hold on its hosts: the lease, the inventory narrowed to the hosts held, and
the run record every step is written under, taken and given back in one place."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import HostRecord
from orchestrator.engine.engine import Engine, Log
from orchestrator.engine.policy import RunPolicy
from orchestrator.execute.executor import RunnerExecutor
from orchestrator.execute.step import Executor
from orchestrator.inputs.inventory import Inventory
from orchestrator.plan.changes import few
from orchestrator.plan.choice import Choice
from orchestrator.store.interface import StateStore
from orchestrator.store.lease import LeaseKeeper


@dataclass(frozen=True)
class SessionSpec:
    """What a command records and holds: its name in the run records, the hosts it leases
    (None: the whole state), the plan it executes, and whether Ctrl-C stops it gracefully."""

    command: str
    hosts: Sequence[str] | None = None
    plan_source: str | None = None
    interrupts: bool = False


class Session:
    """Context manager around one command that changes hosts or their state.

    On entry: take the lease (or fail naming its holder), end the step processes a dead run
    of this state left on this machine, narrow the inventory to the hosts held, begin the
    run record. On a normal exit the run is finished with `outcome`; on every exit the lease
    is released. If the lease cannot be kept, the engine starts no further step and the
    running one is aborted before the lease could expire.
    """

    def __init__(  # noqa: PLR0913, PLR0917 - each a collaborator it hands on
            self, store: StateStore, open_other: Callable[[], StateStore], operator: str,
            executor: Executor, inventory: Inventory, spec: SessionSpec, log: Log) -> None:
        self.store = store
        self.executor = executor
        self.inventory = inventory
        self.spec = spec
        self.operator = operator
        self.log = log
        self.stop = threading.Event()  # the first Ctrl-C, or a lost lease
        self.run_id: int | None = None
        self.outcome = "done"  # what the run record says at the end; set by the command
        self.keeper = LeaseKeeper(store, open_other, operator, hosts=spec.hosts,
                                  on_lost=self._lost)
        self._handler_installed = False
        self._previous_handler: Any = None  # whatever SIGINT did before, restored on exit
        self._interrupts = 0

    # ---- the lease ---------------------------------------------------------------------
    def _lost(self, why: str) -> None:
        self.log(f"avmigrate: the lease is lost ({why}); aborting the running step")
        self.stop.set()
        if isinstance(self.executor, RunnerExecutor):
            self.executor.cancel.set()

    def _narrowed(self, inv: Inventory) -> Inventory:
        """The inventory's hosts this run holds; says which are left to another run."""
        claimed = self.keeper.claimed
        if claimed is None or len(claimed) == len(inv.hosts):
            return inv
        held = self.keeper.held_elsewhere
        holders = sorted(set(held.values()))
        if holders:  # else the command asked for fewer hosts than the inventory has
            self.log(f"{len(held)} host(s) are held by another run and left to it: "
                     f"{few(sorted(held))} (held by {holders[0]}"
                     + (f" and {len(holders) - 1} other run(s))" if len(holders) > 1 else ")"))
        return inv.only(claimed)

    # ---- Ctrl-C ------------------------------------------------------------------------
    def _on_interrupt(self, signum: int, frame: object) -> None:
        """First Ctrl-C: start no new step. Second: abort the running one."""
        del signum, frame
        self._interrupts += 1
        if self._interrupts == 1:
            self.stop.set()
            self.log("stopping: running steps finish and are recorded; Ctrl-C again to abort")
        else:
            if isinstance(self.executor, RunnerExecutor):
                self.executor.cancel.set()
            self.log("aborting the running step")

    # ---- the context -------------------------------------------------------------------
    def __enter__(self) -> Session:
        self.keeper.__enter__()
        try:
            if self.spec.interrupts:
                self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
                self._handler_installed = True
            # Before any host is probed: end the step processes a dead run of this state
            # left running on this machine (their guard could not).
            if isinstance(self.executor, RunnerExecutor):
                self.executor.end_orphans()
            self.inventory = self._narrowed(self.inventory)
            self.run_id = self.store.begin_run(self.spec.command, self.operator,
                                               self.spec.plan_source)
        except BaseException as exc:
            self._restore_handler()
            self.keeper.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            # As before the session was written once: a run that raised keeps no outcome.
            if exc_type is None and self.run_id is not None:
                self.store.finish_run(self.run_id, self.outcome)
        finally:
            if isinstance(self.executor, RunnerExecutor):
                self.executor.close()
            self._restore_handler()
            self.keeper.__exit__(exc_type, exc, tb)

    def _restore_handler(self) -> None:
        if self._handler_installed:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._handler_installed = False

    # ---- the engine --------------------------------------------------------------------
    def engine(self, catalogue: Catalogue, replacement: str | Choice,
               policy: RunPolicy | None, log: Log,
               on_change: Callable[[HostRecord], None] | None = None) -> Engine:
        """An engine on the hosts held, writing under this run, stopped by a lost lease;
        `replacement`: every host's, or the Choice of each host's."""
        choice = replacement if isinstance(replacement, Choice) else Choice(replacement)
        return Engine(self.store, self.executor, catalogue, self.inventory, choice.default,
                      log, policy, self.keeper.problem, run_id=self.run_id, stop=self.stop,
                      on_change=on_change, choice=choice.others)
