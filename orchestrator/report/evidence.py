"""The evidence report's data: per host before and after, transitions, BOD 17-01 counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orchestrator.core.ksc import KscHost, reconcile
from orchestrator.core.models import HostFacts, HostRecord, HostState, InventoryHost, Transition
from orchestrator.core.protection import evidence_source
from orchestrator.store.audit import Verdict


def host_row(r: HostRecord) -> dict[str, Any]:
    """One host as `status` lists it and the report's tables show it."""
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


def _histories(history: list[Transition], runs: list[dict[str, object]]
               ) -> dict[str, list[dict[str, Any]]]:
    """Each host's transitions, with the operator of the run that made each."""
    operators = {run["id"]: run["operator"] for run in runs}
    by_host: dict[str, list[dict[str, Any]]] = {}
    for t in history:
        by_host.setdefault(t.host, []).append({
            "from": t.from_state.value, "to": t.to_state.value, "at": t.at, "run": t.run_id,
            "operator": operators.get(t.run_id, ""), "reason": t.reason})
    return by_host


def _hosts_and_bod(records: list[HostRecord], before: dict[str, HostFacts],
                   by_host: dict[str, list[dict[str, Any]]]
                   ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every host's evidence row, and the BOD 17-01 counts: banned products identified,
    planned for removal, removed, remaining."""
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
    return hosts, {"identified": identified, "planned": planned, "removed": removed,
                   "remaining": identified - removed}


def _by_protection(records: list[HostRecord]) -> list[tuple[str, int]]:
    """Hosts per product whose evidence protects them now (a replacement verified, or the
    banned product still running), most first; an unknown protection counts as none."""
    counts: dict[str, int] = {}
    for r in records:
        source = ("none proven" if r.state.holds_slot
                  else evidence_source(r.protected_by))
        counts[source] = counts.get(source, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _audit(verdict: Verdict | None) -> dict[str, Any]:
    if verdict is None:
        return {"entries": 0, "head": "", "ok": None, "problems": []}
    return {"entries": verdict.entries, "head": verdict.head, "ok": verdict.ok,
            "problems": list(verdict.problems)}


def to_retire(records: list[HostRecord], ksc: list[KscHost]) -> list[dict[str, Any]]:
    """Migrated hosts that KSC still lists with a Kaspersky product: to delete from KSC's
    managed devices (their agent is gone: KSC would show them lost, not removed). Matched by
    name (KSC's display or DNS name, or short names): the state keeps no addresses."""
    hosts = tuple(InventoryHost(r.name, ()) for r in records
                  if r.state == HostState.MIGRATED)
    found = reconcile(hosts, [h for h in ksc if h.kaspersky])
    return [{"host": name, "ksc": entry.name, "group": entry.group,
             "products": entry.kaspersky_text}
            for name, entry in sorted(found.matched.items())]


def report_data(records: list[HostRecord], history: list[Transition],  # noqa: PLR0913, PLR0917 - the store's readings, passed positionally by the CLI
                runs: list[dict[str, object]], approvals: list[dict[str, object]] | None = None,
                before: dict[str, HostFacts] | None = None,
                audit_verdict: Verdict | None = None,
                ksc: list[KscHost] | None = None) -> dict[str, Any]:
    """The evidence: per host before and after, transitions with operator, BOD 17-01 counts."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    gaps = [r.gap_seconds for r in records if r.gap_seconds is not None]
    hosts, bod = _hosts_and_bod(records, before or {}, _histories(history, runs))
    return {
        "generated_at": datetime.now(UTC).timestamp(),
        "counts": dict(sorted(counts.items())),
        "bod_17_01": bod,
        "hosts": hosts,
        "runs": runs,
        "approvals": approvals or [],
        "max_gap_seconds": max(gaps) if gaps else None,
        "unprotected": [r.name for r in records if r.state == HostState.UNPROTECTED],
        # Hosts on which no antivirus was ever found or proven: the directive's aim is a
        # protected fleet, not only one without the banned product.
        "no_protection": [r.name for r in records
                          if r.state == HostState.CLEAN and not r.protected_by],
        "by_protection": _by_protection(records),
        # Kaspersky Security Center: migrated hosts it still manages (when its list was
        # imported: `avmigrate ksc import`).
        "ksc_imported": ksc is not None and bool(ksc),
        "ksc_retire": to_retire(records, ksc or []),
        "audit": _audit(audit_verdict),
    }
