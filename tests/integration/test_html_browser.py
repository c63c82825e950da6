"""The plan and evidence pages in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.core.models import HostState
from orchestrator.inputs import catalogue
from orchestrator.plan import planner
from orchestrator.report import evidence, render, views
from orchestrator.store.sqlite import SqliteStore
from tests import browser
from tests.support.pages import check_page
from tests.support.records import facts, fleet

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="chromium is not installed (make deps installs it)")


def test_plan_page_renders_without_errors(tmp_path: Path) -> None:
    inv, records = fleet()
    cat = catalogue.load()
    plan = planner.make_plan(inv, cat, "clamav", records, now=1_790_000_000.0)
    page = tmp_path / "plan-unit.html"
    page.write_text(render.render_plan(views.plan_view(plan, records, inv, cat), "html"))
    check_page(page, ["Migration plan", "Canary wave", "h0", "h1", "low disk",
                      "What a wave does to each host"])


def test_report_page_renders_without_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    run = store.begin_run("run", "alice", None)
    store.ensure_hosts(["web-1", "web-2"])
    store.transition("web-1", HostState.PENDING, "found", run, facts=facts("kesl"))
    store.transition("web-2", HostState.UNREACHABLE, "ssh refused", run)
    store.finish_run(run, "exit 3")
    data = evidence.report_data(store.all(), store.history(), store.runs(),
                               store.all_approvals(), store.facts_before(),
                               store.audit_verify())
    page = tmp_path / "report-unit.html"
    page.write_text(render.render_report(data, "html"))
    check_page(page, ["Migration evidence", "BOD 17-01", "web-1", "web-2", "alice"])


def test_a_page_that_fetches_or_errs_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: a fetching image and a script error trip both (the
    image is asked of this machine's discard port, so nothing leaves the machine)."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p>x</p><img src="http://127.0.0.1:9/x.png">'
                    "<script>undefinedFunction()</script></body></html>")
    seen = browser.render(page, tmp_path / "bad.png")
    assert seen.console_errors
    assert any(u.startswith("http://127.0.0.1:9/") for u in
               browser.external_requests(seen, page))
