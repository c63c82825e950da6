"""Kaspersky Security Center's list of managed hosts, as last imported (audited)."""

from __future__ import annotations

import json

from orchestrator.core.ksc import KscHost
from orchestrator.store import audit
from orchestrator.store.database import Database


class KscList:
    """The hosts KSC lists, replaced whole by each import."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def replace(self, hosts: list[KscHost], source: str, operator: str) -> None:
        with self.database.tx() as cur:
            now = self.database.now(cur)
            cur.execute("DELETE FROM ksc_hosts")
            for host in hosts:
                cur.execute("INSERT INTO ksc_hosts (name, entry) VALUES (?, ?) "
                            "ON CONFLICT (name) DO UPDATE SET entry = excluded.entry",
                            (host.name, json.dumps(host.to_json(), sort_keys=True)))
            cur.execute("DELETE FROM ksc_import")
            cur.execute("INSERT INTO ksc_import (id, source, operator, at, hosts) "
                        "VALUES (1, ?, ?, ?, ?)", (source, operator, now, len(hosts)))
            audit.append(cur, now, "ksc import", None, None, None,
                         {"source": source, "operator": operator, "hosts": len(hosts),
                          "with_kaspersky": sum(1 for h in hosts if h.kaspersky)})

    def hosts(self) -> list[KscHost]:
        rows = self.database.db.execute("SELECT entry FROM ksc_hosts ORDER BY name")
        return [KscHost.from_json(json.loads(str(r[0]))) for r in rows]

    def source(self) -> tuple[str, str, float, int] | None:
        """(source, operator, when, hosts) of the last import, if any."""
        row = self.database.db.execute(
            "SELECT source, operator, at, hosts FROM ksc_import").fetchone()
        return None if row is None else (str(row[0]), str(row[1]), float(row[2]), int(row[3]))
