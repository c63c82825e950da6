"""Runs of avmigrate commands and the steps they ran."""

from __future__ import annotations

from orchestrator.core.models import StepResult
from orchestrator.store import audit
from orchestrator.store.operators import Fence


class Runs:
    """The runs and step_results tables; a run's start and end are audited."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence  # a run that lost its lease records nothing further
        self.database = fence.database

    def begin(self, command: str, operator: str, plan_digest: str | None) -> int:
        with self.fence.tx() as cur:
            now = self.database.now(cur)
            run_id = int(cur.execute(
                "INSERT INTO runs (started_at, operator, command, plan_digest) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (now, operator, command, plan_digest)).fetchone()[0])
            audit.append(cur, now, "run-start", None, run_id, run_id,
                         {"operator": operator, "command": command, "plan": plan_digest})
            return run_id

    def finish(self, run_id: int, outcome: str) -> None:
        with self.fence.tx() as cur:
            now = self.database.now(cur)
            cur.execute("UPDATE runs SET finished_at = ?, outcome = ? WHERE id = ?",
                        (now, outcome, run_id))
            audit.append(cur, now, "run-end", None, run_id, run_id, {"outcome": outcome})

    def record_step(self, run_id: int, result: StepResult) -> None:
        with self.fence.tx() as cur:
            cur.execute("INSERT INTO step_results (run_id, host, step, outcome, message, at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, result.host, result.step, result.outcome.value,
                         result.message[:2000], self.database.now(cur)))

    def all(self) -> list[dict[str, object]]:
        rows = self.database.db.execute("SELECT id, started_at, finished_at, operator, command, "
                                        "plan_digest, outcome FROM runs ORDER BY id")
        keys = ("id", "started_at", "finished_at", "operator", "command", "plan_digest",
                "outcome")
        return [dict(zip(keys, r, strict=True)) for r in rows]
