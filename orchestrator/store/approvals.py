"""Operators' approvals of a plan's waves, each one audited."""

from __future__ import annotations

from orchestrator.store import audit
from orchestrator.store.database import Database


class Approvals:
    """Which operator approved which wave of which plan (audited)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def add(self, plan_hash: str, wave: int, operator: str, plan_path: str = "") -> None:
        with self.database.tx() as cur:
            now = self.database.now(cur)
            aid = int(cur.execute(
                "INSERT INTO approvals (plan_hash, wave, operator, at, plan_path) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (plan_hash, wave, operator, now, plan_path)).fetchone()[0])
            audit.append(cur, now, "approval", None, None, aid,
                         {"plan": plan_hash, "wave": wave, "operator": operator})

    def of_plan(self, plan_hash: str) -> dict[int, tuple[str, float]]:
        rows = self.database.db.execute("SELECT wave, operator, at FROM approvals "
                                        "WHERE plan_hash = ? ORDER BY id", (plan_hash,))
        return {int(w): (str(o), float(a)) for w, o, a in rows}

    def all(self) -> list[dict[str, object]]:
        rows = self.database.db.execute("SELECT plan_hash, wave, operator, at, plan_path "
                                        "FROM approvals ORDER BY id")
        keys = ("plan", "wave", "operator", "at", "plan_path")
        return [dict(zip(keys, r, strict=True)) for r in rows]
