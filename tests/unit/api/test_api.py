"""The library facade, used as a script would use it: no click, typed options and results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator import api
from orchestrator.core.errors import ExitCode
from orchestrator.core.models import HostState
from orchestrator.store.records import Move
from orchestrator.store.sqlite import SqliteStore
from tests.support.records import facts


def _seeded(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A state as a discovery of `n` KESL hosts leaves it, and their inventory."""
    state, inv = tmp_path / "s.db", tmp_path / "hosts.ini"
    names = [f"h{i:02d}" for i in range(n)]
    inv.write_text("[fleet]\n" + "".join(f"{h} ansible_host=10.0.0.{i + 1}\n"
                                         for i, h in enumerate(names)))
    store = SqliteStore(state)
    store.ensure_hosts(names)
    store.apply([Move(h, HostState.PENDING, "found kesl", facts=facts("kesl"),
                      proof="kesl.service running") for h in names], None)
    store.close()
    return state, inv


def test_a_script_plans_and_reads_the_state_without_click(tmp_path: Path) -> None:
    state, inv = _seeded(tmp_path, 6)
    ws = api.Workspace(api.Settings(state=str(state)))
    planned = api.make_plan(ws, api.PlanOptions(api.Target(inv), out_dir=tmp_path / "plan",
                                                canary=2, discover=False))
    assert set(planned.plan.hosts) == {f"h{i:02d}" for i in range(6)}
    assert len(planned.plan.waves[0].hosts) == 2  # the canary asked for
    assert {p.name for p in planned.files} == {"plan.json", "plan.html", "plan.md",
                                               "plan.csv"}
    on_disk = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert sorted(h for w in on_disk["waves"] for h in w["hosts"]) == sorted(planned.plan.hosts)
    seen = api.status(ws)
    assert seen.counts == {HostState.PENDING: 6}
    assert seen.exit_code == ExitCode.HOSTS_LEFT  # pending hosts: left as they were
    assert seen.records is not None and len(seen.records) == 6


def test_status_of_a_large_fleet_lists_only_the_hosts_that_need_attention(
        tmp_path: Path) -> None:
    state, _ = _seeded(tmp_path, api.STATUS_TABLE_MAX + 5)
    store = SqliteStore(state)
    store.transition("h03", HostState.INSTALLING, "install", None)
    store.close()
    seen = api.status(api.Workspace(api.Settings(state=str(state))))
    assert seen.records is None and seen.needing == 1
    assert [r.name for r in seen.attention] == ["h03"]


def test_the_library_does_not_need_click(tmp_path: Path) -> None:
    code = ("import sys; import orchestrator.api; "
            "print(sorted(m for m in sys.modules if m == 'click' or m.startswith('click.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout
