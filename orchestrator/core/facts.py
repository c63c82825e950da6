"""Turn the raw observations that playbooks report into facts and decisions. Pure functions."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.catalogue import Catalogue, platform_of
from orchestrator.core.models import BannedFinding, HostFacts


def info_field(text: str, field: str) -> str | None:
    """The value of a `Field: value` line of a product's info command, if present."""
    m = re.search(rf"^\s*{re.escape(field)}\s*:\s*(.+?)\s*$", text or "", re.M)
    return m.group(1) if m else None


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _like(pattern: str, text: str) -> bool:
    """PowerShell's -like: * and ? wildcards, case-insensitive, the whole text."""
    return fnmatch.fnmatchcase(text.lower(), pattern.lower().replace("[", "[[]"))


def uninstall_entries(report: dict[str, Any], patterns: list[str]) -> list[dict[str, str]]:
    """The Windows Uninstall keys a probe read whose DisplayName matches one of `patterns`
    (as Get-ItemProperty gives them: DisplayName, DisplayVersion, PSChildName = the product
    code of an MSI product)."""
    found = []
    for raw in report.get("uninstall") or ():
        if not isinstance(raw, dict):
            continue
        name = str(raw.get("DisplayName") or "")
        if name and any(_like(p, name) for p in patterns):
            found.append({"name": name, "version": str(raw.get("DisplayVersion") or ""),
                          "code": str(raw.get("PSChildName") or "")})
    return found


def parse_discovery(report: dict[str, Any], catalogue: Catalogue, replacement: str) -> HostFacts:
    """HostFacts from the `avmigrate.migration.probe` module's report (probe.py on Linux,
    win_probe.ps1 on Windows: the same shape, plus the Uninstall keys on Windows)."""
    platform = platform_of(str(report.get("os_family", "")))
    packages = set(_mapping(report.get("packages")))
    running = {k for k, v in _mapping(report.get("services")).items() if v == "active"}
    paths = {k for k, v in _mapping(report.get("paths")).items() if v is True}
    processes = {k: int(v) for k, v in _mapping(report.get("processes")).items()
                 if isinstance(v, int)}
    info = _mapping(report.get("info"))
    found = []
    for bid, entry in catalogue.banned_on(platform).items():
        detect = entry["detect"]
        keys = uninstall_entries(report, detect["registry"]) if "registry" in detect else []
        pkgs = (tuple(p for p in detect["packages"] if p in packages)
                + tuple(k["name"] for k in keys))
        svcs = tuple(s for s in detect["services"] if s in running)
        has_path = any(p in paths for p in detect["paths"])
        nproc = processes.get(bid, 0)
        if not (pkgs or svcs or has_path or nproc):
            continue
        text = str(info.get(bid, ""))
        fields = detect.get("info_fields", {})
        version = info_field(text, fields["version"]) if "version" in fields else None
        if version is None and keys:
            version = keys[0]["version"] or None
        sig = (info_field(text, fields["signatures_date"])
               if "signatures_date" in fields else None)
        found.append(BannedFinding(product=bid, version=version, signatures_date=sig,
                                   packages=pkgs, services_active=svcs, processes=nproc))
    repl = catalogue.entry("replacements", replacement, platform)
    free = {k: int(v) for k, v in _mapping(report.get("free_mb")).items() if isinstance(v, int)}
    problems = _package_manager_problems(report, catalogue, repl, platform)
    return HostFacts(
        os_family=str(report.get("os_family", "")),
        distribution=str(report.get("distribution", "")),
        distribution_version=str(report.get("distribution_version", "")),
        banned=tuple(found),
        # A replacement without packages (Defender: part of Windows) is there once its
        # services run (onboarded), not merely because it has nothing to install.
        replacement_installed=(all(p in packages for p in repl["packages"]) if repl["packages"]
                               else all(s in running for s in repl["services"])),
        replacement_active=all(s in running for s in repl["services"]),
        free_mb=free,
        package_manager_ok=not problems,
        package_manager_problem="; ".join(problems),
        booted_at=(float(report["booted_at"])
                   if isinstance(report.get("booted_at"), int | float) else None),
        reboot_pending=report.get("removal_pending_reboot") is True,
    )


def _package_manager_problems(report: dict[str, Any], catalogue: Catalogue,
                              repl: dict[str, Any], platform: str) -> list[str]:
    """What would make the package manager refuse or break a change now."""
    problems = []
    if report.get("dpkg_journal"):
        problems.append("dpkg was interrupted")
    if str(report.get("dpkg_audit", "")).strip():
        problems.append("dpkg --audit reports problems")
    if str(report.get("rpmdb_problem", "")).strip():
        problems.append(f"the rpm database is damaged ({str(report['rpmdb_problem']).strip()}):"
                        " run `rpm --rebuilddb`")
    if report.get("msi_in_progress"):
        problems.append("Windows Installer is busy with another installation")
    # A lock held now (unattended-upgrades) is waited for by the steps: not a problem.
    ours = set(repl["packages"]).union(*(entry["remove"].get("packages", ())
                                        for entry in catalogue.banned_on(platform).values()))
    held = sorted(ours.intersection(report.get("apt_holds") or ()))
    if held:
        problems.append(f"held packages {', '.join(held)} (apt-mark hold): apt would refuse "
                        f"to change them; run `apt-mark unhold {' '.join(held)}`")
    locked = sorted(ours.intersection(report.get("dnf_versionlocks") or ()))
    if locked:
        problems.append(f"version-locked packages {', '.join(locked)}: dnf would refuse to "
                        f"remove them; run `dnf versionlock delete {' '.join(locked)}`")
    return problems


def _needs(repl: dict[str, Any]) -> tuple[str, frozenset[str], tuple[tuple[str, int], ...]]:
    """A replacement's name, platforms and free-space needs on one platform."""
    platforms = frozenset(p.lower() for p in repl.get("platforms", []))
    free = tuple((str(path), int(need)) for path, need in
                 repl.get("requirements", {}).get("free_mb", {}).items())
    return str(repl["name"]), platforms, free


def preflight_problems(facts: HostFacts, catalogue: Catalogue, replacement: str) -> list[str]:
    """Reasons, known from discovery alone, that a host cannot be migrated now."""
    return preflight_checker(catalogue, replacement)(facts)


def preflight_checker(catalogue: Catalogue, replacement: str
                      ) -> Callable[[HostFacts], list[str]]:
    """`preflight_problems` for one replacement, its needs read once per platform: for
    100,000 hosts."""
    needs: dict[str, tuple[str, frozenset[str], tuple[tuple[str, int], ...]]] = {}

    def problems_of(facts: HostFacts) -> list[str]:
        problems = []
        known = needs.get(facts.os_family)
        if known is None:
            known = needs[facts.os_family] = _needs(catalogue.entry(
                "replacements", replacement, platform_of(facts.os_family)))
        name, platforms, free_needs = known
        if platforms and facts.os_family.lower() not in platforms:
            problems.append(f"no {name} for platform {facts.os_family or 'unknown'}")
        free = facts.free_mb
        for path, need in free_needs:
            have = free.get(path)
            if have is not None and have < need:
                problems.append(f"low disk: {have} MiB free at {path}, {name} needs {need} MiB")
        if not facts.package_manager_ok:
            problem = facts.package_manager_problem
            fix = ("; run `dpkg --configure -a` on the host" if "dpkg" in problem else "")
            problems.append(f"broken package state: {problem}{fix} and re-run")
        return problems

    return problems_of


def signature_age_days(spec: dict[str, Any], output: str, now: datetime) -> float | None:
    """Age of the signatures a product reports, read as its catalogue `signatures` says: a
    `date` group parsed with `format` (clamd: `ClamAV 1.4.6/27000/<date>`), a `minutes`
    group (mdatp: definitions_updated_minutes_ago) or a `days` group (Get-MpComputerStatus:
    AntivirusSignatureAge). None when the output does not say."""
    m = re.search(spec["pattern"], (output or "").strip(), re.M)
    if not m:
        return None
    groups = m.groupdict()
    if groups.get("minutes") is not None:
        return int(groups["minutes"]) / 1440
    if groups.get("days") is not None:
        return float(groups["days"])
    try:
        built = datetime.strptime(groups["date"].strip(), spec["format"]).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None
    return (now - built).total_seconds() / 86400


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def carries_proof(data: dict[str, Any]) -> bool:
    """Does a step's report hold a proof's readings (an install module that proved the
    replacement in its own run), to be judged by verification_problem?"""
    return "service" in data and "detection" in data


def verification_problem(report: dict[str, Any], catalogue: Catalogue, replacement: str,  # noqa: PLR0913, PLR0917 - the proof's parts
                         now: datetime, beside: bool = False, platform: str = "") -> str | None:
    """None when the verify playbook's report proves protection by the product's own
    evidence (catalogue `verify`; `beside`: `verify_beside`, its health while the banned
    product, seen protecting in the same report, still runs), else what is missing. The
    playbook reports what it read; this judges it."""
    verify = catalogue.verify_spec(replacement, beside,
                                   platform or platform_of(str(report.get("platform", ""))))
    if not beside and report.get("removal_pending_reboot") is True:
        return ("the banned product's removal completes only at the next reboot: nothing is "
                "proven before it")
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
