"""The library behind the avmigrate command: discover, plan, migrate, remediate and read the
state from a script, without click. Options and results are frozen dataclasses."""

from __future__ import annotations

from orchestrator.api.evidence import (
    REPORT_FORMATS,
    Report,
    audit_entries,
    audit_verify,
    report,
)
from orchestrator.api.hosts import (
    ATTENTION,
    STATUS_TABLE_MAX,
    BudgetView,
    Discovered,
    StatusView,
    Swept,
    Target,
    budget,
    discover,
    status,
    sweep,
)
from orchestrator.api.ksc import KscImported, KscOptions, ksc_import
from orchestrator.api.plans import (
    Approval,
    Planned,
    PlanOptions,
    approve,
    load_policy,
    make_plan,
    run_policy,
    with_waves,
    write_plan_files,
)
from orchestrator.api.runs import Migrated, Overrides, Remediated, RunOptions, migrate, remediate
from orchestrator.api.workspace import Observer, Settings, Silent, Workspace
from orchestrator.inputs.sources import Sources

# A script needs only this module: a Workspace (from Settings), the options, an Observer
# (Silent by default), the operations and their results. The operations live in
# api/hosts.py (discover, sweep, status, budget), api/plans.py (make_plan, approve),
# api/runs.py (migrate, remediate) and api/evidence.py (report, audit).
__all__ = [
    "ATTENTION", "REPORT_FORMATS", "STATUS_TABLE_MAX", "Approval", "BudgetView", "Discovered",
    "KscImported", "KscOptions", "Migrated", "Observer", "Overrides", "PlanOptions", "Planned",
    "Remediated", "Report",
    "RunOptions", "Settings", "Silent", "Sources", "StatusView", "Swept", "Target", "Workspace",
    "approve", "audit_entries", "audit_verify", "budget", "discover", "ksc_import",
    "load_policy",
    "make_plan", "migrate", "remediate", "report", "run_policy", "status", "sweep",
    "with_waves", "write_plan_files",
]
