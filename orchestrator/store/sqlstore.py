"""The StateStore on a SQL database, put together from one focused part per concern.

Hosts and transitions, runs, approvals, the budget and the operators' leases each keep their
own tables; they share one Database (the connection and its write transaction) and one Fence
(the lease this connection writes under). The backends (sqlite.py, postgres.py) give the
connection and the dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from orchestrator.core import procs
from orchestrator.core.ksc import KscHost
from orchestrator.core.models import (
    HostFacts,
    HostRecord,
    HostState,
    StepResult,
    StepSpan,
    Transition,
)
from orchestrator.store import audit
from orchestrator.store.approvals import Approvals
from orchestrator.store.budget import Budgets
from orchestrator.store.database import Database, Dialect
from orchestrator.store.hosts import Hosts
from orchestrator.store.ksc import KscList
from orchestrator.store.operators import Fence, Leases
from orchestrator.store.records import Budget, Lease, LeaseHolder, Move
from orchestrator.store.runs import Runs
from orchestrator.store.sqltypes import Db


class SqlStore:
    """The StateStore on a SQL database; each call goes to the part that keeps its tables."""

    def __init__(self, db: Db, dialect: Dialect, label: str,
                 alive: Callable[[int, int], bool] = procs.alive) -> None:
        self.label = label
        self._database = Database(db, dialect, label)
        self._fence = Fence(self._database)
        self._budgets = Budgets(self._database)
        self._hosts = Hosts(self._fence, self._budgets)
        self._runs = Runs(self._fence)
        self._approvals = Approvals(self._database)
        self._ksc = KscList(self._database)
        self._leases = Leases(self._database, self._fence, alive)
        self._database.migrate()

    @property
    def db(self) -> Db:
        """The connection every part reads and writes through."""
        return self._database.db

    @db.setter
    def db(self, db: Db) -> None:
        # Tests give a connection of their own (one shared by threads); every part follows.
        self._database.db = db

    # ---- this connection's run: its lease and its budget -----------------------------------
    @property
    def fence_epoch(self) -> int | None:
        """The epoch of the lease this connection writes under (None: unfenced)."""
        return self._fence.epoch

    @property
    def claimed(self) -> frozenset[str] | None:
        """Hosts this store's lease holds; None: the whole state (or no lease)."""
        return self._fence.claimed

    @property
    def held_elsewhere(self) -> dict[str, str]:
        """Hosts asked for but held by another live operator, with who holds them."""
        return dict(self._fence.held_elsewhere)

    @property
    def alive(self) -> Callable[[int, int], bool]:
        """Whether a lease holder on this machine still runs (tests give a simulated one)."""
        return self._leases.alive

    @alive.setter
    def alive(self, alive: Callable[[int, int], bool]) -> None:
        self._leases.alive = alive

    @property
    def run_budget(self) -> str:
        return self._budgets.run_spec

    @run_budget.setter
    def run_budget(self, spec: str) -> None:
        self._budgets.run_spec = spec

    # ---- runs ------------------------------------------------------------------------------
    def begin_run(self, command: str, operator: str, plan_digest: str | None) -> int:
        return self._runs.begin(command, operator, plan_digest)

    def finish_run(self, run_id: int, outcome: str) -> None:
        self._runs.finish(run_id, outcome)

    def record_step(self, run_id: int, result: StepResult) -> None:
        self._runs.record_step(run_id, result)

    def runs(self) -> list[dict[str, object]]:
        return self._runs.all()

    # ---- hosts and transitions -------------------------------------------------------------
    def ensure_hosts(self, names: list[str]) -> None:
        self._hosts.ensure(names)

    def get(self, name: str) -> HostRecord | None:
        return self._hosts.get(name)

    def all(self) -> list[HostRecord]:
        return self._hosts.all()

    def counts(self) -> dict[HostState, int]:
        return self._hosts.counts()

    def in_states(self, states: Iterable[HostState], limit: int | None = None
                  ) -> list[HostRecord]:
        return self._hosts.in_states(states, limit)

    def slot_holders(self) -> list[HostRecord]:
        return self._hosts.slot_holders()

    def transition(  # noqa: PLR0913 - the StateStore's signature: a Move's fields by keyword
        self, name: str, to: HostState, reason: str, run_id: int | None, *,
        facts: HostFacts | None = None, strategy: str | None = None, wave: int | None = None,
        protection_stopped_at: float | None = None,
        replacement_verified_at: float | None = None, proof: str | None = None,
        replacement: str | None = None,
    ) -> HostRecord:
        return self._hosts.transition(
            Move(name, to, reason, facts=facts, strategy=strategy, wave=wave,
                 protection_stopped_at=protection_stopped_at,
                 replacement_verified_at=replacement_verified_at, proof=proof,
                 replacement=replacement), run_id)

    def apply(self, moves: Sequence[Move], run_id: int | None) -> None:
        self._hosts.apply(moves, run_id)

    def history(self, name: str | None = None) -> list[Transition]:
        return self._hosts.history(name)

    def step_spans(self) -> list[StepSpan]:
        return self._hosts.step_spans()

    def facts_before(self) -> dict[str, HostFacts]:
        return self._hosts.facts_before()

    # ---- the fleet's protection budget -----------------------------------------------------
    def budget(self) -> Budget:
        return self._budgets.now()

    def set_fleet_budget(self, spec: str, operator: str) -> None:
        self._budgets.set_fleet(spec, operator)

    # ---- operators: leases on the whole state or on hosts ----------------------------------
    def acquire_lease(self, holder: LeaseHolder, ttl: float,
                      hosts: Sequence[str] | None = None) -> int:
        return self._leases.acquire(holder, ttl, hosts)

    def renew_lease(self, epoch: int, ttl: float) -> None:
        self._leases.renew(epoch, ttl)

    def release_lease(self, epoch: int) -> None:
        self._leases.release(epoch)

    def lease(self) -> Lease | None:
        return self._leases.lease()

    def held_by_live_runs(self, names: Sequence[str]) -> set[str]:
        return self._leases.held_by_live_runs(names)

    # ---- approvals and the audit log -------------------------------------------------------
    def add_approval(self, plan_hash: str, wave: int, operator: str,
                     plan_path: str = "") -> None:
        self._approvals.add(plan_hash, wave, operator, plan_path)

    def approvals(self, plan_hash: str) -> dict[int, tuple[str, float]]:
        return self._approvals.of_plan(plan_hash)

    def all_approvals(self) -> list[dict[str, object]]:
        return self._approvals.all()

    # ---- Kaspersky Security Center's list ----------------------------------------------------
    def replace_ksc_hosts(self, hosts: list[KscHost], source: str, operator: str) -> None:
        self._ksc.replace(hosts, source, operator)

    def ksc_hosts(self) -> list[KscHost]:
        return self._ksc.hosts()

    def ksc_import(self) -> tuple[str, str, float, int] | None:
        return self._ksc.source()

    def audit_entries(self) -> list[audit.Entry]:
        return audit.entries(self.db)

    def audit_verify(self) -> audit.Verdict:
        return audit.verify(self.db)

    def close(self) -> None:
        self.db.close()
