#!/usr/bin/python
"""Ansible module: read, in one pass, what avmigrate needs to know about a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe
short_description: Read banned products, the replacement and host health in one pass
description:
  - Reads installed packages, unit states, paths, processes, product info commands,
    free space, and package manager health for the products named in the arguments.
  - Never changes the host; supports check mode.
  - On Debian reads dpkg and apt; on the RHEL family (RHEL, Rocky, Alma, CentOS, Fedora,
    Oracle Linux) rpm and dnf. win_probe (win_probe.ps1) is its Windows twin (same report);
    the probe action plugin picks it on a PowerShell host.
options:
  banned:
    description: Catalogue entries of the banned products, by id (their C(detect) part is used).
    type: dict
  replacement:
    description: Catalogue entry of the replacement (packages, services, requirements).
    type: dict
  catalogue:
    description:
      - The catalogue per platform (C(banned), C(replacements)); the probe reads the host's
        platform itself and takes that platform's entries. Instead of C(banned) and
        C(replacement), for a host whose platform is not known yet.
    type: dict
  replacement_id:
    description: With C(catalogue), the id of the host's replacement.
    type: str
author: avmigrate
"""

RETURN = r"""
avmigrate_report:
  description: Raw observations; the orchestrator interprets them.
  type: dict
  returned: always
"""

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

MIB = 1024 * 1024


def _run(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def os_release():
    data = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                data[key] = value.strip('"')
    except OSError:
        pass
    ids = (data.get("ID", "") + " " + data.get("ID_LIKE", "")).split()
    version = data.get("VERSION_ID", "")
    if "debian" in ids:
        family = "Debian"
        try:
            with open("/etc/debian_version", encoding="utf-8") as fh:
                version = fh.read().strip() or version
        except OSError:
            pass
    elif REDHAT & set(ids):
        family = "RedHat"
    else:
        family = (data.get("ID", "") or "unknown").capitalize()
    return family, data.get("NAME", "").split(" ")[0] or "unknown", version


REDHAT = {"rhel", "centos", "fedora", "rocky", "almalinux", "ol"}


def packages(names, family):
    if not names:
        return {}
    if family == "RedHat":
        # One line per name: "name<TAB>version-release" or rpm's "package X is not installed".
        _, out, _ = _run(["rpm", "-q", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n", *names])
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    _, out, _ = _run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n",
                      *names])
    found = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2] not in ("not-installed", "config-files"):
            found[parts[0]] = parts[1]
    return found


def rpm_health():
    """The rpm database's answer (empty when healthy) and the packages dnf has version-locked."""
    rc, _, err = _run(["rpm", "-qa", "--quiet"])
    problem = "" if rc == 0 else (err.strip().splitlines() or ["rpm -qa failed"])[-1]
    rc, out, _ = _run(["dnf", "-q", "versionlock", "list"])
    locked = set()
    for line in out.splitlines() if rc == 0 else ():
        # "name-epoch:version-release.*": the name is what precedes "-<epoch>:".
        m = re.match(r"^(?:!)?(.+?)-(?:\d+):", line.strip())
        if m:
            locked.add(m.group(1))
    return problem, sorted(locked)


def services(names):
    if not names:
        return {}
    _, out, _ = _run(["systemctl", "is-active", *names])
    states = out.splitlines()
    return {n: (states[i] if i < len(states) else "unknown") for i, n in enumerate(names)}


def process_counts(patterns):
    me = os.getpid()
    cmdlines = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdlines.append(fh.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return {pid_id: sum(1 for c in cmdlines if pattern in c)
            for pid_id, pattern in patterns.items()}


def free_mb(paths):
    out = {}
    for path in paths:
        probe = path
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        try:
            st = os.statvfs(probe or "/")
        except OSError:
            continue
        out[path] = st.f_bavail * st.f_frsize // MIB
    return out


def booted_at():
    """When the host booted (epoch seconds): /proc/stat's btime."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def dpkg_health():
    updates = "/var/lib/dpkg/updates"
    try:
        journal = sorted(f for f in os.listdir(updates) if re.fullmatch(r"[0-9]+", f))
    except OSError:
        journal = []
    _, audit, _ = _run(["dpkg", "--audit"])
    _, locks, _ = _run(["lslocks", "--noheadings", "--raw", "--output", "COMMAND,PID,PATH"])
    held = []
    for line in locks.splitlines():
        parts = line.split(" ")
        if len(parts) >= 3 and parts[-1].startswith("/var/lib/dpkg/lock"):
            held.append("%s (pid %s)" % (" ".join(parts[:-2]), parts[-2]))
    return journal, audit.strip(), sorted(set(held))


_PROXY = re.compile(r'^Acquire::(?:https?|ftp)::Proxy(?:::\S+)?\s+"([^"]*)";', re.M)


def apt_settings():
    """Packages on hold (apt-mark), and the proxies apt is configured to use."""
    _, held, _ = _run(["apt-mark", "showhold"])
    _, dump, _ = _run(["apt-config", "dump"])
    # Credentials in a proxy URL (http://user:pass@proxy) are never reported.
    proxies = sorted({re.sub(r"//[^/@]*@", "//", p) for p in _PROXY.findall(dump)
                      if p and p.upper() != "DIRECT"})
    return sorted(set(held.split())), proxies


def main():
    module = AnsibleModule(
        argument_spec={"banned": {"type": "dict"},
                       "replacement": {"type": "dict"},
                       "catalogue": {"type": "dict"},
                       "replacement_id": {"type": "str"}},
        required_one_of=[("banned", "catalogue")],
        required_together=[("catalogue", "replacement_id"), ("banned", "replacement")],
        supports_check_mode=True,
    )
    family, distribution, version = os_release()
    platform = family.lower() if family in ("Debian", "RedHat") else "debian"
    if module.params["catalogue"] is not None:
        mine = module.params["catalogue"].get(platform) or {}
        banned = mine.get("banned", {})
        repl = mine.get("replacements", {}).get(module.params["replacement_id"]) or {}
    else:
        banned = module.params["banned"]
        repl = module.params["replacement"]
    want_pkgs, want_units, want_paths, patterns, info = [], [], [], {}, {}
    for bid, entry in banned.items():
        detect = entry["detect"]
        want_pkgs += detect.get("packages", [])
        want_units += detect.get("services", [])
        want_paths += detect.get("paths", [])
        patterns[bid] = detect["process_pattern"]
    want_pkgs += repl.get("packages", [])
    want_units += repl.get("services", [])
    for bid, entry in banned.items():
        cmd = entry["detect"].get("info_command")
        if cmd and os.path.exists(cmd[0]):
            _, out, _ = _run(cmd)
            info[bid] = out
    if family == "RedHat":
        journal, audit, held, on_hold, proxies = [], "", [], [], []
        rpmdb, locked = rpm_health()
    else:
        journal, audit, held = dpkg_health()
        on_hold, proxies = apt_settings()
        rpmdb, locked = "", []
    report = {
        "os_family": family,
        "platform": platform,
        "distribution": distribution,
        "distribution_version": version,
        "packages": packages(sorted(set(want_pkgs)), family),
        "services": services(sorted(set(want_units))),
        "paths": {p: os.path.exists(p) for p in sorted(set(want_paths))},
        "processes": process_counts(patterns),
        "info": info,
        "free_mb": free_mb(list(repl.get("requirements", {}).get("free_mb", {}))),
        "dpkg_journal": journal,
        "dpkg_audit": audit,
        "dpkg_locks": held,
        "apt_holds": on_hold,
        "apt_proxies": proxies,
        "booted_at": booted_at(),
        # Linux removals never wait for a boot (win_probe.ps1 reads it on Windows).
        "removal_pending_reboot": False,
        "rpmdb_problem": rpmdb,
        "dnf_versionlocks": locked,
    }
    module.exit_json(changed=False, avmigrate_report=report)


if __name__ == "__main__":
    main()
