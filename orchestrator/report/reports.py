"""Where the CLI and tests find the report layer's names: each lives in its own module.

views (plan pages' data), evidence (the evidence report's data), render (HTML/Markdown),
csvout (CSV), timefmt (times); the plan file itself is orchestrator.plan.planfile.
"""

from __future__ import annotations

from orchestrator.plan.planfile import (
    PLAN_FORMAT,
    load_plan,
    plan_from_json,
    plan_json_text,
    plan_to_json,
    policy_from_plan,
    write_atomic,
)
from orchestrator.report.csvout import PLAN_CSV_COLUMNS, csv_field, plan_csv_chunks
from orchestrator.report.evidence import host_row, protection_text, report_data
from orchestrator.report.render import (
    PAGE_ROWS,
    PAGE_WAVE_ROWS,
    TEMPLATE_DIR,
    compile_plan_templates,
    render_plan,
    render_report,
)
from orchestrator.report.steps import strategy_steps
from orchestrator.report.timefmt import ts
from orchestrator.report.views import HostLine, HostLines, PlanRow, host_lines, plan_view

__all__ = [
    "PAGE_ROWS",
    "PAGE_WAVE_ROWS",
    "PLAN_CSV_COLUMNS",
    "PLAN_FORMAT",
    "TEMPLATE_DIR",
    "HostLine",
    "HostLines",
    "PlanRow",
    "compile_plan_templates",
    "csv_field",
    "host_lines",
    "host_row",
    "load_plan",
    "plan_csv_chunks",
    "plan_from_json",
    "plan_json_text",
    "plan_to_json",
    "plan_view",
    "policy_from_plan",
    "protection_text",
    "render_plan",
    "render_report",
    "report_data",
    "strategy_steps",
    "ts",
    "write_atomic",
]
