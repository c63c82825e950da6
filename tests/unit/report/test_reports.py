"""Plan and evidence renderings, from real records; the live progress display."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.cli.progress import RunProgress
from orchestrator.core.errors import PlanError
from orchestrator.core.models import (
    HostRecord,
    HostState,
    InventoryHost,
)
from orchestrator.inputs import catalogue
from orchestrator.inputs.inventory import Inventory, digest_of
from orchestrator.plan import planfile, planner
from orchestrator.report import csvout, evidence, render, timefmt, views
from orchestrator.store.sqlite import SqliteStore
from tests.support.records import facts, fleet


def test_plan_html_is_self_contained_and_shows_hosts_waves_risks() -> None:
    inv, records = fleet()
    cat = catalogue.load()
    plan = planner.make_plan(inv, cat, "clamav", records, now=1_790_000_000.0)
    view = views.plan_view(plan, records, inv, cat)
    html = render.render_plan(view, "html")
    # Nothing fetched: no external URL in any attribute, and a CSP that forbids fetching.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "default-src 'none'" in html
    assert html.count("<svg") == 1
    for host in ("h0", "h1"):
        assert f"<td>{host}</td>" in html
    risks = {(r["host"], r["kind"]) for r in view["risks"]}
    assert ("h2", "low disk") in risks
    assert ("h3", "unreachable") in risks
    assert view["summary"]["by_banned"] == [("kesl 12.1.0.1297", 3),
                                            ("klnagent64 12.1.0.1297", 1)]
    assert view["summary"]["by_signature_age"] == [("over a year", 3)]
    assert "default: no earlier run measured it" in html
    assert "make-before-break" in view["steps"] and "swap" in view["steps"]


def test_plan_html_escapes_what_hosts_report() -> None:
    inv, records = fleet()
    evil = facts("kesl")
    evil = dataclasses.replace(evil, distribution="<script>alert(1)</script>")
    records["h0"] = HostRecord("h0", HostState.PENDING, "", None, None, evil, 0.0, None, None)
    cat = catalogue.load()
    plan = planner.make_plan(inv, cat, "clamav", records, now=1_790_000_000.0)
    html = render.render_plan(views.plan_view(plan, records, inv, cat), "html")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_evidence_counts_identified_planned_removed_remaining(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    run = store.begin_run("run", "alice", None)
    store.ensure_hosts(["a", "b", "c"])
    store.transition("a", HostState.PENDING, "found", run, facts=facts("kesl"))
    store.transition("b", HostState.PENDING, "found", run, facts=facts("kesl"))
    store.transition("c", HostState.CLEAN, "nothing", run, facts=facts())
    store.transition("a", HostState.INSTALLING, "i", run, wave=0)
    store.transition("a", HostState.VERIFIED, "v", run, replacement_verified_at=10.0,
                     proof="clamav verified")
    store.transition("a", HostState.REMOVING, "r", run, protection_stopped_at=11.0)
    store.transition("a", HostState.MIGRATED, "m", run, facts=facts(), proof="clamav verified")
    store.finish_run(run, "exit 3")
    data = evidence.report_data(store.all(), store.history(), store.runs(),
                               store.all_approvals(), store.facts_before(),
                               store.audit_verify())
    assert data["bod_17_01"] == {"identified": 2, "planned": 1, "removed": 1, "remaining": 1}
    a = next(h for h in data["hosts"] if h["host"] == "a")
    assert a["before"]["banned"] == "kesl 12.1.0.1297"
    assert a["after"]["banned"] == "none"
    assert {t["operator"] for t in a["history"]} == {"alice"}
    assert data["audit"]["ok"] is True
    html = render.render_report(data, "html")
    assert "BOD 17-01" in html and "alice" in html


def test_progress_draws_a_bar_per_wave_and_counts_by_state() -> None:
    inv, records = fleet()
    plan = planner.make_plan(inv, catalogue.load(), "clamav", records, now=1.0)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    with RunProgress(console, plan, records) as bars:
        r = records["h0"]
        bars.update(HostRecord("h0", HostState.MIGRATED, "", None, 0, r.facts, 0.0, None, None))
        bars.update(HostRecord("h1", HostState.INSTALL_FAILED, "", None, 1, None, 0.0, None,
                               None))
        bars.log("wave 1: 1 host(s)")
    text = buf.getvalue()
    assert "canary" in text and "1/1" in text
    assert "wave 1" in text
    assert "1 failed" in text
    assert "1 migrated" in text and "1 install_failed" in text


def test_plan_pages_of_a_large_fleet_list_a_sample_and_the_csv_lists_every_host() -> None:
    hosts = tuple(InventoryHost(f"h{i:05d}", ("web",), {}) for i in range(3000))
    inv = Inventory("big", hosts, digest_of(hosts))
    records = {h.name: HostRecord(h.name, HostState.PENDING, "", None, None,
                                  facts("kesl", free=3 if i % 2 else 5000), 0.0, None, None)
               for i, h in enumerate(hosts)}
    cat = catalogue.load()
    plan = planner.make_plan(inv, cat, "clamav", records, now=1_790_000_000.0)
    view = views.plan_view(plan, records, inv, cat)
    html, md = render.render_plan(view, "html"), render.render_plan(view, "md")
    csv_rows = render.render_plan(view, "csv").splitlines()
    assert len(csv_rows) == 1 + 3000
    assert {row.split(",")[1] for row in csv_rows[1:]} == {h.name for h in hosts}
    listed = set(re.findall(r"<td>(h\d{5})</td>", html))
    assert 0 < len(listed) < 3000
    assert "more host(s) in this wave: every host is listed in plan.csv" in html
    assert "more host(s) in this wave: every host is listed in plan.csv" in md
    # 1500 hosts with too little disk: counted by kind, then a sample.
    assert "low disk: 1500 host(s)" in html
    assert "and 4300 more: every host's risks are in plan.csv" in html  # 3 paths each


def test_plan_csv_is_what_csv_writer_writes_with_awkward_values() -> None:
    """plan.csv is built from shared parts for speed: it must be byte for byte what the
    standard csv.writer makes of the same rows, quotes, commas and newlines included."""
    import csv  # noqa: PLC0415

    hosts = tuple(InventoryHost(f"h{i}" if i != 4 else 'h,"4"',
                                ('web,"edge"', "db") if i % 2 else ("web",), {})
                  for i in range(6))
    inv = Inventory("awkward", hosts, digest_of(hosts))
    odd = dataclasses.replace(facts("kesl"), distribution='Deb"ian, "x"',
                              package_manager_ok=False,
                              package_manager_problem="dpkg said:\r\n  half-configured")
    records = {h.name: HostRecord(h.name, HostState.PENDING, "", None, None,
                                  odd if i % 3 else facts("kesl", free=3), 0.0, None, None)
               for i, h in enumerate(hosts)}
    cat = catalogue.load()
    plan = planner.make_plan(inv, cat, "clamav", records, now=1_790_000_000.0,
                             choice={hosts[1].name: "mde"})
    view = views.plan_view(plan, records, inv, cat)
    assert [r["id"] for r in view["by_replacement"]] == ["clamav", "mde"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(csvout.PLAN_CSV_COLUMNS)
    for w in view["waves"]:
        for h in w["hosts"]:
            writer.writerow((w["number"], h.host, h.groups, w["window"], timefmt.ts(w["start"]),
                             timefmt.ts(w["end"]), h.os, h.banned, h.signatures,
                             h.signature_age_days, h.strategy, h.replacement, h.state,
                             h.risks))
    got = render.render_plan(view, "csv")
    assert got == buf.getvalue()
    assert '"Deb""ian, ""x"" 12"' in got and "\r\n  half-configured" in got
    assert '"h,""4"""' in got
    assert ",make-before-break,mde,pending," in got
    assert len(list(csv.reader(io.StringIO(got)))) == 1 + len(hosts)


def test_compact_plan_json_is_the_same_plan_and_passes_its_own_hash_check() -> None:
    inv, records = fleet()
    plan = planner.make_plan(inv, catalogue.load(), "clamav", records, now=1_790_000_000.0)
    compact, indented = planfile.plan_json_text(plan), planfile.plan_json_text(plan, indent=2)
    assert json.loads(compact) == json.loads(indented) == planfile.plan_to_json(plan)
    again = planfile.plan_from_json(json.loads(compact), "compact")
    assert again == plan and again.host_digests == plan.host_digests
    edited = compact.replace('"clamav"', '"clamav2"', 1)
    with pytest.raises(PlanError, match="edited after it was made"):
        planfile.plan_from_json(json.loads(edited), "edited")
