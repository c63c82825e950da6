"""Turn the raw observations that playbooks report into facts and decisions. Pure functions."""

from __future__ import annotations

import contextlib
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


def signature_age_days(spec: dict[str, Any], output: str, now: datetime) -> float | None:
    """Age of the signatures a product reports, read as its catalogue `signatures` says: a
    `date` group parsed with `format` (clamd: `ClamAV 1.4.6/27000/<date>`) or a `minutes`
    group (mdatp: definitions_updated_minutes_ago). None when the output does not say."""
    m = re.search(spec["pattern"], (output or "").strip(), re.M)
    if not m:
        return None
    groups = m.groupdict()
    if groups.get("minutes") is not None:
        return int(groups["minutes"]) / 1440
    try:
        built = datetime.strptime(groups["date"].strip(), spec["format"]).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None
    return (now - built).total_seconds() / 86400


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def verification_problem(report: dict[str, Any], catalogue: Catalogue, replacement: str,
                         now: datetime, beside: bool = False) -> str | None:
    """None when the verify playbook's report proves protection by the product's own
    evidence (catalogue `verify`; `beside`: `verify_beside`, its health while the banned
    product, seen protecting in the same report, still runs), else what is missing. The
    playbook reports what it read; this judges it."""
    verify = catalogue.verify_spec(replacement, beside)
    service = _text(report.get("service"))
    if service != "active":
        return f"{verify['service']} is not running ({service or 'no answer'})"
    if beside:
        units = report.get("banned_running")
        if not isinstance(units, list) or not units or any(u != "active" for u in units):
            return ("the banned product's protection does not run: nothing is known to protect "
                    "the host until the replacement's detection is proven")
    if (problem := _health_problem(verify, report)) is not None:
        return problem
    if (expires := verify.get("expires")) is not None and (
            problem := _expiry_problem(expires, _text(report.get("expires")), now)):
        return problem
    limit = verify.get("max_signature_age_days")
    if limit is not None:
        age = signature_age_days(verify["signatures"], _text(report.get("signatures")), now)
        if age is None:
            return f"cannot read the signature age from {_text(report.get('signatures'))!r}"
        if age > float(limit):
            return f"signatures are {age:.0f} days old (limit {limit})"
    det = verify.get("detection")
    return None if det is None else detection_problem(det, _mapping(report.get("detection")))


def _health_problem(verify: dict[str, Any], report: dict[str, Any]) -> str | None:
    """The first health field that could not be read or does not hold, or None."""
    health, codes = _mapping(report.get("health")), _mapping(report.get("health_rc"))
    for field in verify.get("health", ()):
        value, code = _text(health.get(field["name"])), _text(codes.get(field["name"], "0"))
        if code != "0":
            command = " ".join(field["command"])
            return f"{field['name']} could not be read (`{command}` exit {code})"
        if re.fullmatch(field["expect"], value) is None:
            return f"{field['name']} is {value!r} (must be {field['expect']!r})"
    return None


def _expiry_problem(spec: dict[str, Any], output: str, now: datetime) -> str | None:
    m = re.search(spec["pattern"], output, re.M)
    ends = None
    if m is not None:
        with contextlib.suppress(ValueError):
            ends = datetime.strptime(m.group("date").strip(), spec["format"]).replace(
                tzinfo=UTC)
    if ends is None:
        return f"cannot read when the build expires from {output!r}"
    left = (ends - now).total_seconds() / 86400
    if left < spec["min_days"]:
        return (f"the build expires in {left:.0f} days (on {ends:%Y-%m-%d}; at least "
                f"{spec['min_days']} needed): install a current build")
    return None


def detection_problem(det: dict[str, Any], seen: dict[str, Any]) -> str | None:
    """Why the EICAR test did not prove detection by the product's own mechanism, or None.
    The product's own record (`evidence_command`) must name this very test file: an old
    detection in its history proves nothing now."""
    if det["method"] == "scan":
        if str(seen.get("rc")) != str(det["detected_rc"]) or (
                det["detected_text"] not in _text(seen.get("output"))):
            return "the scan did not report the EICAR test file"
    elif _text(seen.get("gone")).lower() != "true":
        return (f"the EICAR test file was still on disk {det['wait_s']} s after it was "
                "written: no on-access detection")
    if "evidence_command" in det:
        evidence, path = _text(seen.get("evidence")), _text(seen.get("path"))
        if det["evidence_text"] not in evidence or not path or path not in evidence:
            return (f"`{' '.join(det['evidence_command'])}` does not show this test's "
                    f"detection ({det['evidence_text']!r} at {path or 'the test file'})")
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
