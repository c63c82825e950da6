"""The plan pages' view model: every host's plan line, the waves, risks and summary counts."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from orchestrator.core.catalogue import Catalogue, platform_of
from orchestrator.core.facts import preflight_checker, signature_date
from orchestrator.core.ksc import KscHost, reconcile
from orchestrator.core.models import (
    BannedFinding,
    HostFacts,
    HostRecord,
    HostState,
    Plan,
    Strategy,
    bulk_constructor,
)
from orchestrator.inputs.inventory import Inventory
from orchestrator.plan import timeline
from orchestrator.plan.planfile import plan_to_json, policy_from_plan
from orchestrator.report.steps import strategy_steps


class PlanRow(NamedTuple):
    """One host's line of a plan: a tuple (100,000 of them are a tenth of the size of dicts);
    templates read its fields by name, plan.csv slices the fields many hosts share."""

    host: str
    groups: str
    os: str
    banned: str
    signatures: str
    signature_age_days: int | None
    strategy: str
    replacement: str
    state: str
    risks: str
    would_change: list[str]


# What a host's findings say on its plan line: (os, banned products, signature dates, age in
# days of the newest signatures).
_Derived = tuple[str, str, str, int | None]


@dataclass(frozen=True, slots=True)
class HostLine:
    """A host's plan line as its record alone says it, before the inventory is read."""

    os: str
    banned: str
    signatures: str
    signature_age_days: int | None
    strategy: str
    state: str
    risks: list[str]  # shared among hosts (see _NO_RISKS): never changed in place
    risk_text: str  # the risks joined, as plan.csv and the pages show them


# Fills the slots directly: a frozen dataclass's __init__ costs three times as much.
_new_line = bulk_constructor(HostLine)


@dataclass(frozen=True)
class HostLines:
    """Every recorded host's plan line, from the state alone: `plan` computes them while
    the inventory is still being read, for the plan made at `made` with these settings."""

    made: float
    replacement: str
    strategy: str
    lines: dict[str, HostLine]


_UNKNOWN: _Derived = ("unknown", "unknown", "", None)
_NO_RISKS: list[str] = []  # shared by every host without a risk: never changed in place
_UNDISCOVERED = "not discovered yet: nothing known about it"


def _derived(facts: HostFacts, made: datetime) -> _Derived:
    """(os, banned products, signature dates, age in days of the newest) for a plan line."""
    banned = [f"{b.product} {b.version or ''}".strip() for b in facts.banned]
    dates = [d for b in facts.banned if (d := signature_date(b.signatures_date)) is not None]
    age = min(((made - d).total_seconds() / 86400 for d in dates), default=None)
    return (f"{facts.distribution} {facts.distribution_version}".strip(),
            ", ".join(banned) or "none",
            ", ".join(b.signatures_date or "" for b in facts.banned if b.signatures_date),
            None if age is None else round(age))


class _FindingsText:
    """`_derived` once per distinct finding (thousands of hosts share one), keyed by value.

    Hosts read from the store share their findings' objects, so the previous host's finding
    is tried first, by identity (it is held here, so no other object can take it), which
    spares hashing the findings of most of 100,000 hosts."""

    def __init__(self, made: datetime) -> None:
        self._made = made
        self._known: dict[tuple[tuple[BannedFinding, ...], str, str], _Derived] = {}
        self._banned: object = object()  # the previous host's finding: none yet
        self._os = ("", "")
        self._last = _UNKNOWN

    def of(self, facts: HostFacts) -> _Derived:
        if facts.banned is self._banned and self._os == (facts.distribution,
                                                         facts.distribution_version):
            return self._last
        key = (facts.banned, facts.distribution, facts.distribution_version)
        derived = self._known.get(key)
        if derived is None:
            derived = self._known[key] = _derived(facts, self._made)
        self._banned, self._os, self._last = facts.banned, key[1:], derived
        return derived


def _no_protection(record: HostRecord, catalogue: Catalogue, replacement: str) -> str | None:
    """The risk of a host found with no antivirus at all: no banned product, and its
    replacement not proven (installed or not, unverified protection counts as none)."""
    facts = record.facts
    if record.state != HostState.CLEAN or facts is None or facts.banned:
        return None
    name = catalogue.replacements[replacement]["name"]
    had = ("installed, never verified" if facts.replacement_installed else "not installed")
    return (f"{NO_PROTECTION}: no antivirus proven on it (no banned product; {name} {had}); "
            "--protect-unprotected installs and proves it")


NO_PROTECTION = "no protection"
REBOOT = "reboot"


def _reboot_note(facts: HostFacts, catalogue: Catalogue) -> str | None:
    """The note of a host whose banned products' removal may complete only at a reboot."""
    products = [b.product for b in facts.banned]
    if not catalogue.reboot_after_removal(products, platform_of(facts.os_family)):
        return None
    return (f"{REBOOT}: removing {', '.join(products)} may complete only at the next reboot "
            "(msiexec 3010); the host holds a budget slot until it is proven after that "
            "reboot, done in its maintenance window (or by its administrator, policy "
            "reboot: never)")


def host_lines(records: Iterable[HostRecord], catalogue: Catalogue, replacement: str,
               made: float, strategy: str) -> HostLines:
    """Every record's plan line, for a plan made at `made` (signature ages are taken then),
    judged for `replacement` (`rechosen` judges hosts with another one again)."""
    findings_of = _FindingsText(datetime.fromtimestamp(made, UTC)).of
    fixed_strategy = strategy if strategy != Strategy.AUTO else None
    problems_of = preflight_checker(catalogue, replacement)
    state_text = {s: s.value for s in HostState}  # Enum's .value is a slow descriptor
    reboots: dict[tuple[tuple[BannedFinding, ...], str], str | None] = {}
    # A line without risks is the same object for every host it fits: as cheap as a tuple
    # for 100,000 hosts (an object each would cost ten times the time).
    riskless: dict[tuple[_Derived, str, str], HostLine] = {}
    lines: dict[str, HostLine] = {}
    for r in records:
        facts = r.facts
        if facts is not None:
            derived = findings_of(facts)
            risks = problems_of(facts) or _NO_RISKS
            key_ = (facts.banned, facts.os_family)
            if key_ not in reboots:
                reboots[key_] = _reboot_note(facts, catalogue)
            if (note := reboots[key_]) is not None and r.state not in (
                    HostState.MIGRATED, HostState.CLEAN):
                risks = [*risks, note]
        else:
            derived, risks = _UNKNOWN, _NO_RISKS
        if r.state == HostState.UNREACHABLE:
            risks = [f"unreachable: {r.reason}", *risks]
        elif facts is None:
            risks = [*risks, _UNDISCOVERED]
        elif r.state == HostState.CLEAN and (bare := _no_protection(r, catalogue, replacement)):
            risks = [bare, *risks]
        host_strategy = fixed_strategy or r.strategy or Strategy.MAKE_BEFORE_BREAK
        if risks:
            lines[r.name] = _new_line(*derived, host_strategy, state_text[r.state], risks,
                                      "; ".join(risks))
            continue
        key = (derived, host_strategy, state_text[r.state])
        line = riskless.get(key)
        if line is None:
            line = riskless[key] = _new_line(*key[0], key[1], key[2], _NO_RISKS, "")
        lines[r.name] = line
    return HostLines(made, replacement, strategy, lines)


def rechosen(known: HostLines, records: dict[str, HostRecord], catalogue: Catalogue,
             others: Mapping[str, str]) -> HostLines:
    """`known` with the lines of the hosts in `others` judged again for their own
    replacement (platform, disk space, strategy)."""
    by_rid: dict[str, list[HostRecord]] = collections.defaultdict(list)
    for name, rid in others.items():
        if (record := records.get(name)) is not None:
            by_rid[rid].append(record)
    lines = dict(known.lines)
    for rid, recs in by_rid.items():
        lines |= host_lines(recs, catalogue, rid, known.made, known.strategy).lines
    return HostLines(known.made, known.replacement, known.strategy, lines)


def _unrecorded(plan: Plan) -> HostLine:
    """The line of a host the state has no record of."""
    strategy = plan.strategy if plan.strategy != Strategy.AUTO else Strategy.MAKE_BEFORE_BREAK
    return HostLine(*_UNKNOWN, strategy, "unknown", [_UNDISCOVERED], _UNDISCOVERED)


def _rows(inventory: Inventory, lines: dict[str, HostLine], unrecorded: HostLine,  # noqa: PLR0913, PLR0917 - a plan's parts
          checks: dict[str, Any], default: str, others: Mapping[str, str]
          ) -> tuple[dict[str, PlanRow], list[dict[str, str]]]:
    """Each inventory host's row, with what check mode found; and every risk, one a line."""
    rows: dict[str, PlanRow] = {}
    risks: list[dict[str, str]] = []
    groups_text: dict[tuple[str, ...], str] = {}
    no_change: list[str] = []
    for host in inventory.hosts:
        name = host.name
        line = lines.get(name, unrecorded)
        host_risks, risk_text = line.risks, line.risk_text
        found = checks.get(name) if checks else None
        if found and (found.get("problems") or found.get("notes")):
            host_risks = host_risks + [f"check mode: {p}" for p in found.get("problems", [])] + [
                f"note: {p}" for p in found.get("notes", [])]
            risk_text = "; ".join(host_risks)
        for text in host_risks:
            risks.append({"host": name, "kind": text.split(":", 1)[0], "text": text})
        groups = groups_text.get(host.groups)
        if groups is None:
            groups = groups_text[host.groups] = ", ".join(host.groups)
        rows[name] = PlanRow(name, groups, line.os, line.banned, line.signatures,
                             line.signature_age_days, line.strategy,
                             others.get(name, default), line.state, risk_text,
                             found.get("would_change", []) if found else no_change)
    return rows, risks


def _waves(plan: Plan, rows: dict[str, PlanRow]) -> list[dict[str, Any]]:
    schedule = {w["wave"]: w for w in plan.estimate.get("waves", [])}
    waves = []
    for w in plan.waves:
        est = schedule.get(w.number, {})
        waves.append({
            "number": w.number, "label": "Canary wave" if w.is_canary else f"Wave {w.number}",
            "window": est.get("window_text", "any time"),
            "start": est.get("start"), "end": est.get("end"), "seconds": est.get("seconds"),
            "hosts": [rows[h] for h in w.hosts if h in rows],
        })
    return waves


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


def _summary(rows: dict[str, PlanRow], inventory: Inventory) -> dict[str, Any]:
    """Hosts per OS, group, banned product and signature age."""
    # Counted per distinct (os, banned, age): one pass over the rows.
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
    return {
        "hosts": len(rows),
        "identified": sum(identified.values()),
        "by_os": _count(by_os),
        "by_group": _count(_group_counts(inventory)),
        "by_banned": _count(by_banned),
        "by_signature_age": _count(by_age),
    }


def _how_it_goes_in(catalogue: Catalogue, rid: str) -> str:
    if catalogue.passive(rid):
        return "passive beside the banned product, activated after its removal"
    if catalogue.proven_beside(rid):
        return ("beside the banned product, its health proven there, its detection after the "
                "removal")
    return "beside the banned product, protecting at once"


def _by_replacement(plan: Plan, rows: dict[str, PlanRow], catalogue: Catalogue
                    ) -> list[dict[str, Any]]:
    """Per replacement: its name, the hosts that get it (in waves), and those of them whose
    plan line has a risk (a platform it does not support is one)."""
    planned = set(plan.hosts)
    counts: dict[str, list[int]] = {}
    for row in rows.values():
        c = counts.setdefault(row.replacement, [0, 0, 0])
        c[0] += 1
        if row.host in planned:
            c[1] += 1
            if row.risks:
                c[2] += 1
    return [{"id": rid, "name": catalogue.replacements[rid]["name"], "hosts": c[0],
             "planned": c[1], "at_risk": c[2],
             "how": _how_it_goes_in(catalogue, rid)}
            for rid, c in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))]


def _reboots(plan: Plan, rows: dict[str, PlanRow], mode: str) -> list[dict[str, Any]]:
    """Per wave, its hosts whose removal may need a reboot, and when that reboot happens."""
    schedule = {w["wave"]: w for w in plan.estimate.get("waves", [])}
    found = []
    for w in plan.waves:
        hosts = [h for h in w.hosts if h in rows and f"{REBOOT}: " in rows[h].risks]
        if not hosts:
            continue
        est = schedule.get(w.number, {})
        when = ("by their administrators after the removal (policy reboot: never)"
                if mode == "never" else
                f"in the maintenance window ({est.get('window_text', 'any time')}) during "
                "the wave, right after the removal")
        found.append({"wave": "Canary wave" if w.is_canary else f"Wave {w.number}",
                      "hosts": hosts, "start": est.get("start"), "when": when})
    return found


def _platforms(plan: Plan, rows: dict[str, PlanRow], records: dict[str, HostRecord]
               ) -> dict[str, set[str]]:
    """Per replacement, the platforms of the planned hosts that get it (Debian's when not
    known yet)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for name in plan.hosts:
        record = records.get(name)
        facts = record.facts if record is not None else None
        platform = (platform_of(facts.os_family) if facts is not None else "") or "debian"
        if name in rows:
            found[rows[name].replacement].add(platform)
    return dict(found)


def _risk_counts(risks: list[dict[str, str]]) -> list[tuple[str, int]]:
    """Hosts per kind of risk (a host counted once per kind)."""
    kinds = collections.Counter(k for _, k in {(r["host"], r["kind"]) for r in risks})
    return sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))


def ksc_view(inventory: Inventory, ksc: list[KscHost],
             imported: tuple[str, str, float, int] | None) -> dict[str, Any] | None:
    """Kaspersky Security Center's list against the inventory, for the plan page: hosts KSC
    manages with a Kaspersky product that the inventory lacks, inventory hosts KSC does not
    know, and what KSC says of each host it shares with the inventory."""
    if imported is None:
        return None
    found = reconcile(inventory.hosts, ksc)
    source, operator, at, count = imported
    return {
        "source": source, "operator": operator, "at": at, "hosts": count,
        "with_kaspersky": sum(1 for h in ksc if h.kaspersky),
        "unknown": found.unknown, "unmanaged": found.unmanaged,
        "ambiguous": found.ambiguous,
        "matched": [{"host": name, "ksc": entry.name, "group": entry.group,
                     "last_seen": entry.last_seen,
                     "products": entry.kaspersky_text
                     or "no Kaspersky product"}
                    for name, entry in found.matched.items()],
    }


def plan_view(plan: Plan, records: dict[str, HostRecord], inventory: Inventory,  # noqa: PLR0913, PLR0917 - a plan's parts
              catalogue: Catalogue, known: HostLines | None = None,
              ksc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the plan templates show, computed once (the templates only lay it out).
    `known`: the host lines from `host_lines`, if already computed for this plan; `ksc`:
    KSC's list reconciled with the inventory (`ksc_view`)."""
    policy = policy_from_plan(plan)
    made = datetime.fromtimestamp(plan.created_at, UTC)
    if known is None or (known.made, known.replacement, known.strategy) != (
            plan.created_at, plan.replacement, plan.strategy):
        known = host_lines(records.values(), catalogue, plan.replacement, plan.created_at,
                           plan.strategy)
        if plan.replacements:
            known = rechosen(known, records, catalogue, plan.replacements)
    rows, risks = _rows(inventory, known.lines, _unrecorded(plan), plan.checks.get("hosts", {}),
                        plan.replacement, plan.replacements)
    blackouts = [(a.timestamp(), b.timestamp()) for a, b in policy.blackout_intervals(
        made, made + timedelta(days=800))]
    return {
        "plan": plan,
        "content_hash": plan_to_json(plan)["content_hash"],
        "replacement": catalogue.replacement(plan.replacement),
        "policy": policy,
        "windows": [{"group": w.group, "text": w.describe()} for w in policy.windows],
        "summary": _summary(rows, inventory),
        "rows": rows,
        "waves": _waves(plan, rows),
        "skipped": sorted(plan.skipped.items()),
        "risks": risks,
        "risk_counts": _risk_counts(risks),
        "no_protection": [r for r in risks if r["kind"] == NO_PROTECTION],
        "reboots": _reboots(plan, rows, policy.reboot),
        "ksc": ksc,
        "by_replacement": _by_replacement(plan, rows, catalogue),
        "deadline": plan.estimate.get("deadline", {}),
        "durations": plan.estimate.get("durations", {}),
        "forks": plan.estimate.get("forks"),
        "budget": plan.estimate.get("budget", {}),
        "timeline_svg": timeline.render(plan.estimate, blackouts),
        "steps": strategy_steps(catalogue, sorted({plan.replacement,
                                                   *plan.replacements.values()}), policy,
                                _platforms(plan, rows, records)),
        "checks": plan.checks,
    }
