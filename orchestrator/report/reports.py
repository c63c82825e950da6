"""Reports and plan files: Markdown from jinja2 templates in templates/, JSON and CSV from data."""

from __future__ import annotations

import collections
import csv
import functools
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from markupsafe import Markup

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.errors import PlanError
from orchestrator.core.facts import preflight_checker, signature_date
from orchestrator.core.models import (
    HostFacts,
    HostRecord,
    HostState,
    Plan,
    Strategy,
    Transition,
    Wave,
)
from orchestrator.inputs import policy as policy_mod
from orchestrator.inputs.inventory import Inventory
from orchestrator.inputs.policy import Policy
from orchestrator.plan import timeline
from orchestrator.store.audit import Verdict

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
PLAN_FORMAT = 2


def ts(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(float(seconds))))


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
    env.filters["duration"] = _duration
    env.filters["md"] = lambda v: str(v).replace("|", "/").replace("\n", " ")
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
        "protected_by": protection_text(r),
        "protected_at": r.protected_at,
        "protection_stopped_at": r.protection_stopped_at,
        "replacement_verified_at": r.replacement_verified_at,
        "reason": r.reason,
        "updated_at": r.updated_at,
    }


def protection_text(r: HostRecord) -> str:
    """What proves the host protected, as the record says: the evidence of the last probe
    that gave one; UNKNOWN while its protection is in doubt (it holds a budget slot)."""
    if r.state.holds_slot:
        return "UNKNOWN (counts as unprotected)"
    if r.protected_by:
        return r.protected_by
    return "none found" if r.facts is not None else "not probed yet"


def _facts_text(facts: HostFacts | None) -> dict[str, str]:
    if facts is None:
        return {"banned": "unknown", "signatures": "", "replacement": "unknown"}
    return {
        "banned": ", ".join(f"{b.product} {b.version or ''}".strip() for b in facts.banned)
        or "none",
        "signatures": ", ".join(b.signatures_date for b in facts.banned if b.signatures_date),
        "replacement": ("running" if facts.replacement_active else
                        "installed, not running" if facts.replacement_installed
                        else "not installed"),
    }


def report_data(records: list[HostRecord], history: list[Transition],
                runs: list[dict[str, object]], approvals: list[dict[str, object]] | None = None,
                before: dict[str, HostFacts] | None = None,
                audit_verdict: Verdict | None = None) -> dict[str, Any]:
    """The evidence: per host before and after, transitions with operator, BOD 17-01 counts."""
    approvals = approvals or []
    before = before or {}
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    operators = {run["id"]: run["operator"] for run in runs}
    by_host: dict[str, list[dict[str, Any]]] = {}
    for t in history:
        by_host.setdefault(t.host, []).append({
            "from": t.from_state.value, "to": t.to_state.value, "at": t.at, "run": t.run_id,
            "operator": operators.get(t.run_id, ""), "reason": t.reason})
    gaps = [r.gap_seconds for r in records if r.gap_seconds is not None]
    hosts = []
    identified = removed = planned = 0
    for r in records:
        first = before.get(r.name, r.facts)
        had = bool(first and first.banned)
        gone = had and (r.state == HostState.MIGRATED or bool(r.facts and not r.facts.banned))
        identified += had
        removed += gone
        planned += had and r.wave is not None
        hosts.append(host_row(r) | {
            "history": by_host.get(r.name, []),
            "before": _facts_text(first),
            "after": _facts_text(r.facts),
            "identified": had,
            "removed": gone,
        })
    head = audit_verdict.head if audit_verdict else ""
    return {
        "generated_at": datetime.now(UTC).timestamp(),
        "counts": dict(sorted(counts.items())),
        "bod_17_01": {"identified": identified, "planned": planned, "removed": removed,
                      "remaining": identified - removed},
        "hosts": hosts,
        "runs": runs,
        "approvals": approvals,
        "max_gap_seconds": max(gaps) if gaps else None,
        "unprotected": [r.name for r in records if r.state == HostState.UNPROTECTED],
        "audit": {"entries": audit_verdict.entries if audit_verdict else 0, "head": head,
                  "ok": audit_verdict.ok if audit_verdict else None,
                  "problems": list(audit_verdict.problems) if audit_verdict else []},
    }


def render_report(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        cols = ["host", "state", "protected_by", "strategy", "wave", "banned_found",
                "banned_signatures", "gap_seconds", "reason"]
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in data["hosts"]:
            writer.writerow(row)
        return buf.getvalue()
    if fmt == "html":
        return _env(html=True).get_template("report.html.j2").render(**data)
    return _env().get_template("report.md.j2").render(**data)


# ---- plan files ---------------------------------------------------------------------------
_PLAN_JSON: list[tuple[Plan, dict[str, Any], str]] = []


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan file's content, with its content hash (computed once per plan object)."""
    return _plan_json(plan)[0]


def plan_json_text(plan: Plan, indent: int | None = None) -> str:
    """plan.json's text. Compact, it reuses the serialisation the content hash was taken
    over (sorted keys; the hash appended last), so a 100k-host plan is serialised once."""
    body, hashed = _plan_json(plan)
    if indent is not None:
        return json.dumps(body, indent=indent) + "\n"
    return f'{hashed[:-1]}, "content_hash": "{body["content_hash"]}"}}\n'


def _plan_json(plan: Plan) -> tuple[dict[str, Any], str]:
    for known, body, hashed in _PLAN_JSON:
        if known is plan:
            return body, hashed
    body = _plan_body(plan)
    hashed = json.dumps(body, sort_keys=True)
    body["content_hash"] = hashlib.sha256(hashed.encode()).hexdigest()
    _PLAN_JSON[:] = [(plan, body, hashed)]
    return body, hashed


def _plan_body(plan: Plan) -> dict[str, Any]:
    return {
        "format": PLAN_FORMAT,
        "created_at": plan.created_at,
        "inventory_digest": plan.inventory_digest,
        "catalogue_digest": plan.catalogue_digest,
        "replacement": plan.replacement,
        "strategy": plan.strategy,
        "waves": [{"number": w.number, "hosts": list(w.hosts), "window": w.window}
                  for w in plan.waves],
        "skipped": plan.skipped,
        "policy": plan.policy,
        "host_digests": plan.host_digests,
        "catalogue_digests": plan.catalogue_digests,
        "estimate": plan.estimate,
        "checks": plan.checks,
    }


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
            waves=tuple(Wave(int(w["number"]), tuple(w["hosts"]), w.get("window"))
                        for w in body["waves"]),
            skipped=dict(body.get("skipped", {})),
            policy=dict(body.get("policy", {})),
            host_digests=dict(body.get("host_digests", {})),
            catalogue_digests=dict(body.get("catalogue_digests", {})),
            estimate=dict(body.get("estimate", {})),
            checks=dict(body.get("checks", {})),
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


def _count(items: Iterable[str] | collections.Counter[str]) -> list[tuple[str, int]]:
    counts = items if isinstance(items, collections.Counter) else collections.Counter(items)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _group_counts(inventory: Inventory) -> collections.Counter[str]:
    """Hosts per group, counted once per distinct group set."""
    sets = collections.Counter(h.groups for h in inventory.hosts)
    counts: collections.Counter[str] = collections.Counter()
    for groups, n in sets.items():
        for g in groups or ("ungrouped",):
            counts[g] += n
    return counts


def _age_bucket(days: float | None) -> str:
    if days is None:
        return "unknown"
    for limit, name in ((7, "under a week"), (30, "1 week to 1 month"),
                        (365, "1 month to 1 year")):
        if days < limit:
            return name
    return "over a year"


def strategy_steps(catalogue: Catalogue, replacement: str, policy: Policy
                   ) -> dict[str, list[str]]:
    """What a wave does to a host, step by step, in the words of the catalogue's data."""
    repl = catalogue.replacement(replacement)
    verify = repl["verify"]
    space = ", ".join(f"{mb} MiB at {path}" for path, mb in
                      repl.get("requirements", {}).get("free_mb", {}).items()) or "none"
    services = sorted({s for b in catalogue.banned.values() for s in b["remove"]["services"]})
    packages = sorted({p for b in catalogue.banned.values() for p in b["remove"]["packages"]})
    preflight = (f"Preflight, read-only: free space ({space}), a healthy package manager, the "
                 "internal repository and the signature source answer. A host that fails is "
                 "left exactly as it is.")
    proof = (f"Verify: {verify['service']} runs, `{' '.join(verify['daemon_command'])}` "
             "answers, and the running daemon detects the EICAR test file.")
    remove = (f"Remove the banned product: stop {', '.join(services)}; purge "
              f"{', '.join(packages)}; delete the leftovers the packages leave.")
    return {
        Strategy.MAKE_BEFORE_BREAK: [
            preflight,
            f"Record the intent, then install {repl['name']} ({', '.join(repl['packages'])}) "
            "from the internal repository, beside the banned product.",
            proof + " Recorded as verified. The banned product is still running.",
            f"At most {policy.max_unprotected} host(s) at a time, over the whole fleet (the "
            "protection budget): record the intent, which takes a slot of the budget, then "
            + remove[0].lower() + remove[1:],
            "Verify again, and that nothing of the banned product remains. Recorded as "
            "migrated; the slot is given back. The replacement ran throughout: gap zero.",
        ],
        Strategy.SWAP: [
            preflight,
            f"Stage {repl['name']}'s packages and signatures on the host and prove the "
            "install can run from them alone; the banned product still protects the host.",
            "Right before removal, check the staged files' SHA-256 and prove again that the "
            "install from them alone would succeed.",
            f"At most {policy.max_unprotected} host(s) at a time, over the whole fleet (the "
            "protection budget): record the intent, which takes a slot of the budget, then "
            + remove[0].lower() + remove[1:],
            f"Install {repl['name']} from the staged files and verify it (a second attempt "
            "if needed). The gap is the time from removal to verification.",
            "If it still fails, the host is marked UNPROTECTED, no further removal starts, "
            "and `avmigrate remediate` restores it.",
        ],
    }


def _derived(facts: HostFacts, made: datetime) -> tuple[str, str, str, int | None]:
    """(os, banned products, signature dates, age in days of the newest) for a plan row."""
    banned = [f"{b.product} {b.version or ''}".strip() for b in facts.banned]
    dates = [d for b in facts.banned if (d := signature_date(b.signatures_date)) is not None]
    age = min(((made - d).total_seconds() / 86400 for d in dates), default=None)
    return (f"{facts.distribution} {facts.distribution_version}".strip(),
            ", ".join(banned) or "none",
            ", ".join(b.signatures_date or "" for b in facts.banned if b.signatures_date),
            None if age is None else round(age))


class PlanRow(NamedTuple):
    """One host's line of a plan: a tuple (100,000 of them are a tenth of the size of dicts);
    templates read its fields by name."""

    host: str
    groups: str
    os: str
    banned: str
    signatures: str
    signature_age_days: int | None
    strategy: str
    state: str
    risks: str
    would_change: list[str]


# A host's plan line as its record alone says it: (os, banned, signatures, signature age,
# strategy, state, risks, the risks joined).
Known = tuple[str, str, str, int | None, str, str, list[str], str]


@dataclass(frozen=True)
class HostLines:
    """Every recorded host's plan line, from the state alone: `plan` computes them while
    the inventory is still being read, for the plan made at `made` with these settings."""

    made: float
    replacement: str
    strategy: str
    lines: dict[str, Known]


def host_lines(records: Iterable[HostRecord], catalogue: Catalogue, replacement: str,
               made: float, strategy: str) -> HostLines:
    at = datetime.fromtimestamp(made, UTC)
    # What facts say, computed once per distinct finding (thousands of hosts share one).
    derived_for: dict[tuple[int, str, str], tuple[str, str, str, int | None]] = {}
    fixed_strategy = strategy if strategy != Strategy.AUTO else None
    problems_of = preflight_checker(catalogue, replacement)
    state_text = {s: s.value for s in HostState}  # Enum's .value is a slow descriptor
    lines: dict[str, Known] = {}
    for r in records:
        facts = r.facts
        if facts is not None:
            key = (id(facts.banned), facts.distribution, facts.distribution_version)
            derived = derived_for.get(key) or derived_for.setdefault(key, _derived(facts, at))
            risks = problems_of(facts) or _NO_RISKS
        else:
            derived, risks = _UNKNOWN, _NO_RISKS
        if r.state == HostState.UNREACHABLE:
            risks = [f"unreachable: {r.reason}", *risks]
        elif facts is None:
            risks = [*risks, _UNDISCOVERED]
        lines[r.name] = (*derived, fixed_strategy or r.strategy or Strategy.MAKE_BEFORE_BREAK,
                         state_text[r.state], risks, "; ".join(risks) if risks else "")
    return HostLines(made, replacement, strategy, lines)


_UNKNOWN: tuple[str, str, str, int | None] = ("unknown", "unknown", "", None)
_NO_RISKS: list[str] = []  # shared by every host without a risk: never changed in place
_UNDISCOVERED = "not discovered yet: nothing known about it"


def plan_view(plan: Plan, records: dict[str, HostRecord], inventory: Inventory,
              catalogue: Catalogue, known: HostLines | None = None) -> dict[str, Any]:
    """Everything the plan templates show, computed once (the templates only lay it out).
    `known`: the host lines from `host_lines`, if already computed for this plan."""
    policy = policy_from_plan(plan)
    made = datetime.fromtimestamp(plan.created_at, UTC)
    schedule = {w["wave"]: w for w in plan.estimate.get("waves", [])}
    checks = plan.checks.get("hosts", {})
    if known is None or (known.made, known.replacement, known.strategy) != (
            plan.created_at, plan.replacement, plan.strategy):
        known = host_lines(records.values(), catalogue, plan.replacement, plan.created_at,
                           plan.strategy)
    lines = known.lines
    unrecorded: Known = (*_UNKNOWN, plan.strategy if plan.strategy != Strategy.AUTO else
                         Strategy.MAKE_BEFORE_BREAK, "unknown", [_UNDISCOVERED], _UNDISCOVERED)
    rows: dict[str, PlanRow] = {}
    risks: list[dict[str, str]] = []
    groups_text: dict[tuple[str, ...], str] = {}
    no_change: list[str] = []
    for host in inventory.hosts:
        name = host.name
        line = lines.get(name) or unrecorded
        host_risks, risk_text = line[6], line[7]
        found = checks.get(name) if checks else None
        if found and found.get("problems"):
            host_risks = host_risks + [f"check mode: {p}" for p in found["problems"]]
            risk_text = "; ".join(host_risks)
        for text in host_risks:
            risks.append({"host": name, "kind": text.split(":", 1)[0], "text": text})
        groups = groups_text.get(host.groups)
        if groups is None:
            groups = groups_text[host.groups] = ", ".join(host.groups)
        rows[name] = PlanRow(name, groups, line[0], line[1], line[2], line[3], line[4],
                             line[5], risk_text,
                             found.get("would_change", []) if found else no_change)
    waves = []
    for w in plan.waves:
        est = schedule.get(w.number, {})
        waves.append({
            "number": w.number, "label": "Canary wave" if w.is_canary else f"Wave {w.number}",
            "window": est.get("window_text", "any time"),
            "start": est.get("start"), "end": est.get("end"), "seconds": est.get("seconds"),
            "hosts": [rows[h] for h in w.hosts if h in rows],
        })
    # The summary counts hosts per distinct (os, banned, age): one pass over the rows.
    kinds = collections.Counter((r.os, r.banned, r.signature_age_days) for r in rows.values())
    identified = {k: n for k, n in kinds.items() if k[1] not in ("none", "unknown")}
    by_os: collections.Counter[str] = collections.Counter()
    by_banned: collections.Counter[str] = collections.Counter()
    by_age: collections.Counter[str] = collections.Counter()
    for (os_name, banned, age), n in kinds.items():
        by_os[os_name] += n
        if (os_name, banned, age) in identified:
            by_age[_age_bucket(age)] += n
            for product in banned.split(", "):
                by_banned[product] += n
    blackouts = [(a.timestamp(), b.timestamp()) for a, b in policy.blackout_intervals(
        made, made + timedelta(days=800))]
    return {
        "plan": plan,
        "content_hash": plan_to_json(plan)["content_hash"],
        "replacement": catalogue.replacement(plan.replacement),
        "policy": policy,
        "windows": [{"group": w.group, "text": w.describe()} for w in policy.windows],
        "summary": {
            "hosts": len(rows),
            "identified": sum(identified.values()),
            "by_os": _count(by_os),
            "by_group": _count(_group_counts(inventory)),
            "by_banned": _count(by_banned),
            "by_signature_age": _count(by_age),
        },
        "rows": rows,
        "waves": waves,
        "skipped": sorted(plan.skipped.items()),
        "risks": risks,
        "risk_counts": sorted(collections.Counter(k for _, k in {(r["host"], r["kind"])
                                                                 for r in risks}).items(),
                              key=lambda kv: (-kv[1], kv[0])),
        "deadline": plan.estimate.get("deadline", {}),
        "durations": plan.estimate.get("durations", {}),
        "forks": plan.estimate.get("forks"),
        "budget": plan.estimate.get("budget", {}),
        "timeline_svg": timeline.render(plan.estimate, blackouts),
        "steps": strategy_steps(catalogue, plan.replacement, policy),
        "checks": plan.checks,
    }


def policy_from_plan(plan: Plan) -> Policy:
    return policy_mod.from_json(plan.policy) if plan.policy else Policy()


# Host rows a plan page lists (per wave, and of risks and held-back hosts) before it says
# "and N more": a page of 100,000 rows helps nobody and takes seconds to write; plan.csv and
# plan.json always carry every host.
PAGE_ROWS = 200
PAGE_WAVE_ROWS = 2000  # over all waves together


def _row_limits(view: dict[str, Any]) -> dict[str, int]:
    per_wave = max(10, min(PAGE_ROWS, PAGE_WAVE_ROWS // max(1, len(view["waves"]))))
    return {"row_limit": PAGE_ROWS, "wave_row_limit": per_wave}


PLAN_CSV_COLUMNS = ("wave", "host", "groups", "window", "estimated_start", "estimated_end",
                    "os", "banned", "signatures", "signature_age_days", "strategy", "state",
                    "risks")


def csv_field(value: Any) -> str:
    """One field as `csv.writer` writes it (QUOTE_MINIMAL, the default dialect)."""
    text = "" if value is None else str(value)
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


_CSV_SPECIAL = frozenset(',"\r\n')


def _plan_csv(view: dict[str, Any]) -> str:
    return "".join(plan_csv_chunks(view))


def plan_csv_chunks(view: dict[str, Any]) -> Iterator[str]:
    """plan.csv, a wave at a time: what `csv.writer` would write, built from parts shared by
    many hosts (the same groups, findings, strategy, state and risks) so 100,000 rows take
    a tenth of a second; `test_reports` checks it against `csv.writer`."""
    yield ",".join(PLAN_CSV_COLUMNS) + "\r\n"
    tails: dict[tuple[Any, ...], str] = {}
    heads: dict[str, str] = {}
    for w in view["waves"]:
        wave = csv_field(w["number"])
        middle = ",".join(csv_field(v) for v in (w["window"], ts(w["start"]), ts(w["end"])))
        # Checked names (RFC 1123) never need quotes: the wave's are checked all at once.
        plain_names = _CSV_SPECIAL.isdisjoint("".join(h.host for h in w["hosts"]))
        lines = []
        for h in w["hosts"]:
            key = h[2:9]
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = ",".join(csv_field(v) for v in key)
            groups = heads.get(h.groups)
            if groups is None:
                groups = heads[h.groups] = csv_field(h.groups)
            host = h.host if plain_names else csv_field(h.host)
            lines.append(f"{wave},{host},{groups},{middle},{tail}\r\n")
        yield "".join(lines)


def compile_plan_templates() -> None:
    """Compile the plan page templates now (a plan does it while the inventory loads)."""
    _env(html=True).get_template("plan.html.j2")
    _env().get_template("plan.md.j2")


def render_plan(view: dict[str, Any], fmt: str) -> str:
    if fmt == "csv":
        return _plan_csv(view)
    if fmt == "html":
        return _env(html=True).get_template("plan.html.j2").render(
            **view, **_row_limits(view), timeline=Markup(view["timeline_svg"]))  # noqa: S704 - built by timeline.py, values escaped there
    return _env().get_template("plan.md.j2").render(**view, **_row_limits(view))


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write `text` (or its chunks, as they come) to a temporary file, then move it over
    `path`: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        if isinstance(text, str):
            out.write(text)
        else:
            out.writelines(text)
    tmp.replace(path)
