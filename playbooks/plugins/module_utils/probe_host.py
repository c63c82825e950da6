"""What avmigrate reads on a Linux host in one pass (the probe module's report), shared by
the modules that probe after changing the host (remove, swap)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import urllib.request

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



def platform_entries(banned, repl, catalogue, replacement_id):
    """This host's banned products and replacement: given, or taken from the catalogue per
    platform by the host's own platform. Returns (family, distribution, version, platform,
    banned, replacement)."""
    family, distribution, version = os_release()
    platform = family.lower() if family in ("Debian", "RedHat") else "debian"
    if catalogue is not None:
        mine = catalogue.get(platform) or {}
        banned = mine.get("banned", {})
        repl = mine.get("replacements", {}).get(replacement_id) or {}
    return family, distribution, version, platform, banned, repl


def report(banned, repl, catalogue=None, replacement_id=None):
    """What avmigrate needs to know about this host, read in one pass: raw observations, the
    orchestrator interprets them."""
    family, distribution, version, platform, banned, repl = platform_entries(
        banned, repl, catalogue, replacement_id)
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
    out = {
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
    return out


def left_behind(out, banned):
    """What remains of the banned products `banned` (id -> catalogue entry) in a report: their
    packages, running services, paths and processes; empty when nothing does."""
    pkgs = {p for e in banned.values() for p in e["detect"].get("packages", [])}
    units = {u for e in banned.values() for u in e["detect"].get("services", [])}
    left = ["package " + p for p in sorted(out["packages"]) if p in pkgs]
    left += ["running service " + u for u, state in sorted(out["services"].items())
             if u in units and state == "active"]
    left += ["path " + p for p, there in sorted(out["paths"].items()) if there]
    left += ["processes of " + b for b, n in sorted(out["processes"].items()) if n > 0]
    return left


# Preflight on Debian, read-only: apt itself, with the host's own settings (proxies
# included), fetches the internal repository's index, then every source's, into a scratch
# directory, without the host's update hooks; the host's lists, lock and configuration stay
# as they were.
_APT_CHECK = r"""set -u
scratch=$1; url=$2; suite=$3
mkdir -p "$scratch/lists/partial" "$scratch/cache/archives/partial" "$scratch/parts"
cp -p /etc/apt/apt.conf.d/* "$scratch/parts/" 2>/dev/null
printf '#clear APT::Update::Pre-Invoke;\n#clear APT::Update::Post-Invoke;\n#clear APT::Update::Post-Invoke-Success;\n' \
  > "$scratch/parts/zzzz-avmigrate-no-hooks"
printf 'Types: deb\nURIs: %s\nSuites: %s\nTrusted: yes\n' "$url" "$suite" > "$scratch/internal.sources"
apt-get update -q -o Dir::Etc::Parts="$scratch/parts" \
  -o Dir::Etc::SourceList="$scratch/internal.sources" \
  -o Dir::Etc::SourceParts=- -o Dir::State::Lists="$scratch/lists" \
  -o Dir::Cache="$scratch/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root 2>&1
echo "== internal rc=$?"
echo "== every source"
rm -rf "$scratch/lists"; mkdir -p "$scratch/lists/partial"
apt-get update -q -o Dir::Etc::Parts="$scratch/parts" -o Dir::State::Lists="$scratch/lists" \
  -o Dir::Cache="$scratch/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root 2>&1
true
"""


def _apt_answers(url, suite):
    """apt-get update's output against the internal repository alone, and against every
    source (scratch lists)."""
    scratch = tempfile.mkdtemp(prefix="avmigrate-preflight.")
    try:
        proc = subprocess.run(["/bin/sh", "-c", _APT_CHECK, "avmigrate", scratch, url, suite],
                              capture_output=True, text=True, timeout=300, check=False,
                              env=dict(os.environ, LC_ALL="C"))
        text = proc.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        text = "E: %s\n== internal rc=1\n== every source\n" % exc
    finally:
        subprocess.run(["rm", "-rf", scratch], check=False)
    internal, _, every = text.partition("== every source")
    return internal, every


def _head(url):
    """None when the URL answers a HEAD request from this host, else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return str(exc)


def preflight(out, banned, repl, checks):
    """Preflight on Debian from a fresh report and what `checks` names (the internal
    repository, the signature source, the lock timeout): what must stop the migration
    (problems) and what an administrator should know (notes)."""
    problems, notes = [], []
    for path, need in sorted((repl.get("requirements", {}).get("free_mb") or {}).items()):
        have = out["free_mb"].get(path)
        if have is None or int(have) < int(need):
            problems.append("low disk: %s MiB free at %s, %s needs %s MiB" % (
                "no" if have is None else have, path, repl.get("name", "the replacement"),
                need))
    if out["dpkg_journal"] or out["dpkg_audit"]:
        problems.append("broken package state: %s%srun `dpkg --configure -a` on the host and "
                        "re-run" % ("dpkg was interrupted; " if out["dpkg_journal"] else "",
                                    "dpkg --audit reports problems; " if out["dpkg_audit"]
                                    else ""))
    touched = set(repl.get("packages", [])) | {
        p for e in banned.values() for p in e.get("remove", {}).get("packages", [])}
    held = [p for p in out["apt_holds"] if p in touched]
    if held:
        problems.append("held packages: %s (apt-mark hold): apt would refuse to change them; "
                        "run `apt-mark unhold %s` on the host and re-run"
                        % (", ".join(held), " ".join(held)))
    url = checks.get("apt_url")
    if url:
        internal, every = _apt_answers(url, checks.get("apt_suite") or "./")
        errors = re.findall(r"(?m)^(?:Err|E):.*$", internal)
        if "== internal rc=0" not in internal or errors:
            problems.append("the internal repository %s does not answer apt on this host: %s"
                            % (url, errors[0] if errors else "apt-get update failed"))
        dead = re.findall(r"(?m)^Err:\S*\s+(\S+)", every)
        notes += ["package source %s does not answer (not needed: only the internal "
                  "repository is refreshed)" % d for d in sorted(set(dead))]
    signature_url = checks.get("signature_url")
    for name in checks.get("signature_files") or ():
        why = _head("%s/%s" % (signature_url, name)) if signature_url else None
        if why is not None:
            problems.append("the signature source does not answer for %s: %s" % (name, why))
    notes = ["the dpkg lock is held by %s: the install and removal wait for it up to %s s"
             % (lock, checks.get("lock_timeout", 300)) for lock in out["dpkg_locks"]] + [
        "apt uses the proxy %s" % proxy for proxy in out["apt_proxies"]] + notes
    return {"problems": problems, "notes": notes}
