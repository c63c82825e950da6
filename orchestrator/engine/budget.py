"""The protection budget: removals run in batches of hosts whose slot was taken with their
removal intent, in one transaction each."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.core.models import HostState
from orchestrator.store.errors import BudgetFull

if TYPE_CHECKING:
    from orchestrator.engine.engine import Engine

SLOT_POLL_S = 5.0


class Budget:
    """Takes slots of the fleet's protection budget for the engine's removals, or waits."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def say(self) -> None:
        """Log the budget this run works under."""
        budget = self.engine.store.budget()
        if budget.fleet_spec is not None and budget.fleet_spec != budget.run_spec:
            self.engine.log(
                f"protection budget: this run asked for {budget.run_spec}, the fleet's is "
                f"{budget.fleet_spec} (set by {budget.set_by or 'an operator'}): the "
                f"smaller applies, {budget.limit} host(s) at once")
        else:
            self.engine.log(f"protection budget: {budget.limit} host(s) of {budget.fleet_size} "
                            f"at once ({budget.run_spec}); {budget.held} held now")

    def batches(self, queue: list[str], run_batch: Callable[[list[str]], None],
                pick: Callable[[list[str], int], list[str]],
                why: Callable[[str], str]) -> str | None:
        """Run `run_batch` on reserved hosts of `queue` until it is empty. `pick` chooses the
        candidates for up to N free slots (and may drop hosts it stopped)."""
        engine = self.engine
        while queue:
            engine.check_stop()
            if (bad := engine.unprotected()):
                return (f"UNPROTECTED hosts: {', '.join(bad[:10])}; no further removals "
                        "start. Run `avmigrate remediate`, then run again")
            if (held := self._await_slot()) is not None:
                return held
            budget = engine.store.budget()
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

    def _reserve(self, names: list[str], why: Callable[[str], str]) -> list[str]:
        """Commit the removal intent of as many of `names` as the budget allows, one
        transaction each (the store takes the slot in it, or refuses)."""
        taken = []
        now = time.time()
        for n in names:
            try:
                self.engine.move(n, HostState.REMOVING, why(n), protection_stopped_at=now)
            except BudgetFull:
                break
            taken.append(n)
        return taken

    def _await_slot(self) -> str | None:
        """Wait while every slot is held by hosts other live runs are working on. A reason
        to stop when the slots will not come back by themselves (an alarm, a dead run)."""
        engine = self.engine
        announced = False
        while True:
            engine.check_stop()
            budget = engine.store.budget()
            if budget.held < budget.limit:
                return None
            holders = engine.store.slot_holders()
            alarms = [h.name for h in holders if h.state == HostState.UNPROTECTED]
            if alarms:
                return (f"UNPROTECTED hosts: {', '.join(alarms[:10])}; no further removals "
                        "start. Run `avmigrate remediate`, then run again")
            mine = set(engine.inventory.names())
            worked = engine.store.held_by_live_runs([h.name for h in holders])
            idle = [h.name for h in holders if h.name not in worked or h.name in mine]
            if idle:
                return (f"the protection budget ({budget.limit} host(s) at once) is held by "
                        f"{', '.join(idle[:10])}, which no live run is working on; run "
                        "avmigrate on their inventory to settle them, then run again")
            if not announced:
                engine.log(f"  waiting for a slot of the protection budget ({budget.limit} at "
                           f"once), held by {', '.join(h.name for h in holders[:10])}")
                announced = True
            engine.sleep(SLOT_POLL_S)
