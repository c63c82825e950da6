"""Reports and plan files: Markdown from jinja2 templates in templates/, JSON and CSV from data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.errors import PlanError
from orchestrator.models import HostRecord, Plan, Transition, Wave

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
PLAN_FORMAT = 1


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,  # noqa: S701 - Markdown output; HTML templates get their own env
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ts"] = lambda t: ("" if t is None else
                                   datetime.fromtimestamp(float(t), UTC).strftime(
                                       "%Y-%m-%d %H:%M:%S UTC"))
    env.filters["gap"] = lambda g: "-" if g is None else f"{g:.0f}s"
    return env


def host_row(r: HostRecord) -> dict[str, Any]:
    banned = ", ".join(
        f"{b.product} {b.version or ''}".strip() for b in (r.facts.banned if r.facts else ()))
    sig = ", ".join(b.signatures_date for b in (r.facts.banned if r.facts else ())
                    if b.signatures_date)
    return {
        "host": r.name,
        "state": r.state.value,
        "strategy": r.strategy or "",
        "wave": "" if r.wave is None else r.wave,
        "banned_found": banned,
        "banned_signatures": sig,
        "gap_seconds": None if r.gap_seconds is None else round(r.gap_seconds, 3),
        "protection_stopped_at": r.protection_stopped_at,
        "replacement_verified_at": r.replacement_verified_at,
        "reason": r.reason,
        "updated_at": r.updated_at,
    }


def report_data(records: list[HostRecord], history: list[Transition],
                runs: list[dict[str, object]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    by_host: dict[str, list[dict[str, Any]]] = {}
    for t in history:
        by_host.setdefault(t.host, []).append({"from": t.from_state.value, "to": t.to_state.value,
                                               "at": t.at, "run": t.run_id, "reason": t.reason})
    gaps = [r.gap_seconds for r in records if r.gap_seconds is not None]
    return {
        "generated_at": datetime.now(UTC).timestamp(),
        "counts": dict(sorted(counts.items())),
        "hosts": [host_row(r) | {"history": by_host.get(r.name, [])} for r in records],
        "runs": runs,
        "max_gap_seconds": max(gaps) if gaps else None,
    }


def render_report(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        cols = ["host", "state", "strategy", "wave", "banned_found", "banned_signatures",
                "gap_seconds", "reason"]
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in data["hosts"]:
            writer.writerow(row)
        return buf.getvalue()
    return _env().get_template("report.md.j2").render(**data)


# ---- plan files ---------------------------------------------------------------------------
def plan_to_json(plan: Plan) -> dict[str, Any]:
    body = {
        "format": PLAN_FORMAT,
        "created_at": plan.created_at,
        "inventory_digest": plan.inventory_digest,
        "catalogue_digest": plan.catalogue_digest,
        "replacement": plan.replacement,
        "strategy": plan.strategy,
        "waves": [{"number": w.number, "hosts": list(w.hosts)} for w in plan.waves],
        "skipped": plan.skipped,
    }
    body["content_hash"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def plan_from_json(data: Any, source: str) -> Plan:
    try:
        body = {k: v for k, v in data.items() if k != "content_hash"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if data.get("content_hash") != digest:
            raise PlanError(f"plan {source} was edited after it was made (hash mismatch); "
                            "make a new one with `avmigrate plan`")
        if body["format"] != PLAN_FORMAT:
            raise PlanError(f"plan {source} has format {body['format']}; expected {PLAN_FORMAT}")
        return Plan(
            created_at=float(body["created_at"]),
            inventory_digest=str(body["inventory_digest"]),
            catalogue_digest=str(body["catalogue_digest"]),
            replacement=str(body["replacement"]),
            strategy=str(body["strategy"]),
            waves=tuple(Wave(int(w["number"]), tuple(w["hosts"])) for w in body["waves"]),
            skipped=dict(body.get("skipped", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"plan {source} is malformed ({exc}); make a new one") from exc


def load_plan(path: Path) -> Plan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PlanError(f"plan {path} is not JSON ({exc}); make a new one") from exc
    return plan_from_json(data, str(path))


def render_plan_md(plan: Plan, records: dict[str, HostRecord]) -> str:
    return _env().get_template("plan.md.j2").render(
        plan=plan, records=records, rows={n: host_row(r) for n, r in records.items()})


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
