"""Plan pages and evidence reports as HTML and Markdown, from the jinja2 templates in templates/."""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2
from markupsafe import Markup

from orchestrator.core.assets import TEMPLATE_DIR
from orchestrator.report.csvout import plan_csv, report_csv
from orchestrator.report.timefmt import duration, ts

# Host rows a plan page lists (per wave, and of risks and held-back hosts) before it says
# "and N more": a page of 100,000 rows helps nobody and takes seconds to write; plan.csv and
# plan.json always carry every host.
PAGE_ROWS = 200
PAGE_WAVE_ROWS = 2000  # over all waves together


@functools.lru_cache(maxsize=2)
def _env(html: bool = False) -> jinja2.Environment:
    """Markdown templates are not escaped; HTML templates are, every value we put in them."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=html,  # noqa: S701 - Markdown is not HTML; the HTML templates are escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ts"] = ts
    env.filters["gap"] = lambda g: "-" if g is None else f"{g:.0f}s"
    env.filters["duration"] = duration
    env.filters["md"] = lambda v: str(v).replace("|", "/").replace("\n", " ")
    return env


def render_report(data: dict[str, Any], fmt: str) -> str:
    """The evidence report (`report_data`) as json, csv, html or Markdown (anything else)."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        return report_csv(data)
    if fmt == "html":
        return _env(html=True).get_template("report.html.j2").render(**data)
    return _env().get_template("report.md.j2").render(**data)


def _row_limits(view: dict[str, Any]) -> dict[str, int]:
    per_wave = max(10, min(PAGE_ROWS, PAGE_WAVE_ROWS // max(1, len(view["waves"]))))
    return {"row_limit": PAGE_ROWS, "wave_row_limit": per_wave}


def compile_plan_templates() -> None:
    """Compile the plan page templates now (a plan does it while the inventory loads)."""
    _env(html=True).get_template("plan.html.j2")
    _env().get_template("plan.md.j2")


def render_plan(view: dict[str, Any], fmt: str) -> str:
    """The plan view (`plan_view`) as csv, html or Markdown (anything else)."""
    if fmt == "csv":
        return plan_csv(view)
    if fmt == "html":
        return _env(html=True).get_template("plan.html.j2").render(
            **view, **_row_limits(view), timeline=Markup(view["timeline_svg"]))  # noqa: S704 - built by timeline.py, values escaped there
    return _env().get_template("plan.md.j2").render(**view, **_row_limits(view))
