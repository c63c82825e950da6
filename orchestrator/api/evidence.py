"""Operations that give evidence and change nothing: the report and the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.api.workspace import Workspace
from orchestrator.core.lazy import lazy
from orchestrator.store.audit import Entry, Verdict

if TYPE_CHECKING:
    from orchestrator.plan import planfile
    from orchestrator.report import evidence, render
else:
    # Imported when first used: `avmigrate status` needs none of them (nor jinja2).
    evidence = lazy("orchestrator.report.evidence")
    planfile = lazy("orchestrator.plan.planfile")
    render = lazy("orchestrator.report.render")

REPORT_FORMATS = ("html", "md", "csv", "json")


@dataclass(frozen=True)
class Report:
    """The evidence report rendered in one of REPORT_FORMATS."""

    fmt: str
    text: str

    def write(self, path: Path) -> None:
        """Write it atomically: a reader sees the old file or the new one, never half."""
        planfile.write_atomic(path, self.text)


def report(ws: Workspace, fmt: str) -> Report:
    """Every host's before and after, its transitions with times and operators, its gap, the
    approvals, a BOD 17-01 summary and the audit log's verdict and head."""
    store = ws.existing_store()
    data = evidence.report_data(store.all(), store.history(), store.runs(),
                                store.all_approvals(), store.facts_before(),
                                store.audit_verify(), store.ksc_hosts())
    return Report(fmt, render.render_report(data, fmt))


def audit_verify(ws: Workspace) -> Verdict:
    """The audit log's chain checked, and that every recorded fact has its entry."""
    return ws.existing_store().audit_verify()


def audit_entries(ws: Workspace) -> tuple[Entry, ...]:
    """The audit log's entries, in the order of the chain."""
    return tuple(ws.existing_store().audit_entries())
