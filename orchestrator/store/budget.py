"""The fleet's protection budget: how many hosts may be without proven protection at once."""

from __future__ import annotations

from orchestrator.core.errors import StateError
from orchestrator.core.models import SLOT_STATES
from orchestrator.core.protection import budget_problem, resolve_budget
from orchestrator.store import audit
from orchestrator.store.database import Database
from orchestrator.store.errors import BudgetFull
from orchestrator.store.records import Budget
from orchestrator.store.sqltypes import Cursor

_SLOTS = ", ".join(f"'{s.value}'" for s in sorted(SLOT_STATES))


def _checked(spec: str) -> str:
    problem = budget_problem(spec)
    if problem is not None:
        raise StateError(f"protection budget {spec!r}: {problem}")
    return str(spec).strip()


class Budgets:
    """The budget this connection's run asks for, and the fleet's own as the state holds it."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # A count or a share; the fleet's own, if set, also applies: the smaller wins.
        self._run_spec = "1"

    @property
    def run_spec(self) -> str:
        return self._run_spec

    @run_spec.setter
    def run_spec(self, spec: str) -> None:
        self._run_spec = _checked(spec)

    def read(self, cur: Cursor) -> Budget:
        fleet_spec, set_by = cur.execute(
            "SELECT budget, budget_set_by FROM fleet WHERE id = 1").fetchone()
        size = int(cur.execute("SELECT COUNT(*) FROM hosts").fetchone()[0])
        held = int(cur.execute(f"SELECT COUNT(*) FROM hosts WHERE state IN "  # noqa: S608
                               f"({_SLOTS})").fetchone()[0])
        limit = resolve_budget(self._run_spec, size)
        if fleet_spec is not None:
            limit = min(limit, resolve_budget(str(fleet_spec), size))
        return Budget(None if fleet_spec is None else str(fleet_spec), self._run_spec,
                      limit, held, size, None if set_by is None else str(set_by))

    def take_slot(self, cur: Cursor, name: str) -> None:
        """Inside the transaction that commits `name`'s removal intent: refuse it when every
        slot of the budget is held, by any operator (the writer lock orders all of them)."""
        budget = self.read(cur)
        if budget.held >= budget.limit:
            holders = [str(r[0]) for r in cur.execute(
                f"SELECT name FROM hosts WHERE state IN ({_SLOTS}) "  # noqa: S608
                "ORDER BY name LIMIT 20")]
            raise BudgetFull(f"the protection budget ({budget.limit} host(s) at once) is held "
                             f"by {', '.join(holders)}; {name} waits", holders)

    def now(self) -> Budget:
        """The fleet's budget, this run's, and how many slots are held now."""
        return self.read(self.database.cursor())

    def set_fleet(self, spec: str, operator: str) -> None:
        """Set the budget every run on this state keeps to (audited)."""
        spec = _checked(spec)
        with self.database.tx() as cur:
            now = self.database.now(cur)
            old = cur.execute("SELECT budget FROM fleet WHERE id = 1").fetchone()[0]
            cur.execute("UPDATE fleet SET budget = ?, budget_set_by = ?, budget_set_at = ? "
                        "WHERE id = 1", (spec, operator, now))
            audit.append(cur, now, "budget", None, None, None,
                         {"from": old, "to": spec, "operator": operator})
