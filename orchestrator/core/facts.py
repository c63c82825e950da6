"""Turn the raw observations that playbooks report into facts and decisions. Pure functions."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.catalogue import Catalogue
from orchestrator.core.models import BannedFinding, HostFacts


def info_field(text: str, field: str) -> str | None:
    """The value of a `Field: value` line of a product's info command, if present."""
    m = re.search(rf"^\s*{re.escape(field)}\s*:\s*(.+?)\s*$", text or "", re.M)
    return m.group(1) if m else None


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def parse_discovery(report: dict[str, Any], catalogue: Catalogue, replacement: str) -> HostFacts:
    """HostFacts from the `avmigrate.migration.probe` module's report."""
    packages = set(_mapping(report.get("packages")))
    running = {k for k, v in _mapping(report.get("services")).items() if v == "active"}
    paths = {k for k, v in _mapping(report.get("paths")).items() if v is True}
    processes = {k: int(v) for k, v in _mapping(report.get("processes")).items()
                 if isinstance(v, int)}
    info = _mapping(report.get("info"))
    found = []
    for bid, entry in catalogue.banned.items():
        detect = entry["detect"]
        pkgs = tuple(p for p in detect["packages"] if p in packages)
        svcs = tuple(s for s in detect["services"] if s in running)
        has_path = any(p in paths for p in detect["paths"])
        nproc = processes.get(bid, 0)
        if not (pkgs or svcs or has_path or nproc):
            continue
        text = str(info.get(bid, ""))
        fields = detect.get("info_fields", {})
        version = info_field(text, fields["version"]) if "version" in fields else None
        sig = (info_field(text, fields["signatures_date"])
               if "signatures_date" in fields else None)
        found.append(BannedFinding(product=bid, version=version, signatures_date=sig,
                                   packages=pkgs, services_active=svcs, processes=nproc))
    repl = catalogue.replacements[replacement]
    free = {k: int(v) for k, v in _mapping(report.get("free_mb")).items() if isinstance(v, int)}
    problems = []
    if report.get("dpkg_journal"):
        problems.append("dpkg was interrupted")
    if str(report.get("dpkg_audit", "")).strip():
        problems.append("dpkg --audit reports problems")
    # A lock held now (unattended-upgrades) is waited for by the steps: not a problem.
    ours = set(repl["packages"]).union(*(entry["remove"].get("packages", ())
                                        for entry in catalogue.banned.values()))
    held = sorted(ours.intersection(report.get("apt_holds") or ()))
    if held:
        problems.append(f"held packages {', '.join(held)} (apt-mark hold): apt would refuse "
                        f"to change them; run `apt-mark unhold {' '.join(held)}`")
    return HostFacts(
        os_family=str(report.get("os_family", "")),
        distribution=str(report.get("distribution", "")),
        distribution_version=str(report.get("distribution_version", "")),
        banned=tuple(found),
        replacement_installed=all(p in packages for p in repl["packages"]),
        replacement_active=all(s in running for s in repl["services"]),
        free_mb=free,
        package_manager_ok=not problems,
        package_manager_problem="; ".join(problems),
    )


_NEEDS: dict[int, tuple[dict[str, Any], str, frozenset[str], tuple[tuple[str, int], ...]]] = {}


def _needs(repl: dict[str, Any]) -> tuple[str, frozenset[str], tuple[tuple[str, int], ...]]:
    """A replacement's name, platforms and free-space needs, read once per catalogue entry."""
    known = _NEEDS.get(id(repl))
    if known is None or known[0] is not repl:
        platforms = frozenset(p.lower() for p in repl.get("platforms", []))
        free = tuple((str(path), int(need)) for path, need in
                     repl.get("requirements", {}).get("free_mb", {}).items())
        known = _NEEDS[id(repl)] = (repl, str(repl["name"]), platforms, free)
    return known[1], known[2], known[3]


def preflight_problems(facts: HostFacts, catalogue: Catalogue, replacement: str) -> list[str]:
    """Reasons, known from discovery alone, that a host cannot be migrated now."""
    return preflight_checker(catalogue, replacement)(facts)


def preflight_checker(catalogue: Catalogue, replacement: str
                      ) -> Callable[[HostFacts], list[str]]:
    """`preflight_problems` for one replacement, its needs read once: for 100,000 hosts."""
    name, platforms, free_needs = _needs(catalogue.replacements[replacement])
    platform_ok: dict[str, bool] = {}

    def problems_of(facts: HostFacts) -> list[str]:
        problems = []
        ok = platform_ok.get(facts.os_family)
        if ok is None:
            ok = platform_ok[facts.os_family] = (not platforms
                                                 or facts.os_family.lower() in platforms)
        if not ok:
            problems.append(f"no {name} for platform {facts.os_family or 'unknown'}")
        free = facts.free_mb
        for path, need in free_needs:
            have = free.get(path)
            if have is not None and have < need:
                problems.append(f"low disk: {have} MiB free at {path}, {name} needs {need} MiB")
        if not facts.package_manager_ok:
            fix = ("" if "apt-mark unhold" in facts.package_manager_problem
                   else "; run `dpkg --configure -a` on the host")
            problems.append(f"broken package state: {facts.package_manager_problem}{fix} "
                            "and re-run")
        return problems

    return problems_of


_CLAMD_VERSION = re.compile(r"^\S+ [\d.]+/(\d+)/(.+)$")


def signature_age_days(daemon_output: str, now: datetime) -> float | None:
    """Age of the signatures the running daemon reports (`ClamAV 1.4.6/27000/<date>`)."""
    m = _CLAMD_VERSION.match((daemon_output or "").strip())
    if not m:
        return None
    try:
        built = datetime.strptime(m.group(2).strip(), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (now - built).total_seconds() / 86400


def verification_problem(report: dict[str, Any], catalogue: Catalogue, replacement: str,
                         now: datetime) -> str | None:
    """None when the verify playbook's proof is complete and fresh, else what is missing."""
    verify = catalogue.replacements[replacement]["verify"]
    if verify["detected_text"] not in str(report.get("scan", "")):
        return "the daemon did not report the EICAR test file"
    limit = verify.get("max_signature_age_days")
    if limit is not None:
        age = signature_age_days(str(report.get("daemon", "")), now)
        if age is None:
            return f"cannot read the signature date from {report.get('daemon', '')!r}"
        if age > float(limit):
            return f"signatures are {age:.0f} days old (limit {limit})"
    return None


@functools.lru_cache(maxsize=4096)
def signature_date(text: str | None) -> datetime | None:
    """The date a banned product's signatures were released, from its info output."""
    if not text:
        return None
    for fmt, size in (("%Y-%m-%d", 10), ("%d.%m.%Y", 10)):
        try:
            return datetime.strptime(text.strip()[:size], fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
