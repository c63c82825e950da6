"""Stand-in .deb packages for Kaspersky's Linux products, built for the lab with dpkg-deb.

The real products cannot be had, so these copy their names, paths, services and tools:
Kaspersky Endpoint Security for Linux (package ``kesl``) and the Network Agent
(``klnagent64``). Their resident processes do nothing but stay alive, as an agent would.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.lab.sh import run


@dataclass(frozen=True)
class StandIn:
    """One stand-in package build."""

    key: str  # how scenarios name it
    package: str
    version: str
    product_name: str
    databases_release: str  # the last anti-virus database release the product received

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.version}_amd64.deb"


STAND_INS: dict[str, StandIn] = {
    "kesl12": StandIn("kesl12", "kesl", "12.1.0.1297", "Kaspersky Endpoint Security 12.1 for Linux",
                      "2024-09-27 21:04:00"),
    "kesl11": StandIn("kesl11", "kesl", "11.2.0.4528", "Kaspersky Endpoint Security 11.2 for Linux",
                      "2024-09-26 18:40:00"),
    "klnagent64": StandIn("klnagent64", "klnagent64", "14.2.0.26967",
                          "Kaspersky Security Center Network Agent", ""),
}

_LOOP = """#!/bin/sh
# Lab stand-in for a resident Kaspersky process: stays alive until systemd stops it.
trap 'exit 0' TERM INT
echo "$(date -Is) started pid $$" >> {log}
while :; do sleep 300 & wait $!; done
"""

_KESL_CONTROL = """#!/bin/sh
# Lab stand-in for kesl-control: answers --app-info as KESL does.
BASES=/var/opt/kaspersky/kesl/private/storage/bases/release
case "$1" in
  --app-info)
    state=Stopped
    systemctl is-active --quiet kesl.service 2>/dev/null && state=Running
    echo "Name:                                  {name}"
    echo "Version:                               {version}"
    echo "End User License Agreement:            Accepted"
    echo "Privacy Policy:                        Accepted"
    echo "Application update state:              No application updates available"
    echo "Last release of databases:             $(cat "$BASES" 2>/dev/null || echo unknown)"
    echo "Anti-virus databases loaded:           Yes"
    echo "Application state:                     $state"
    ;;
  *)
    echo "Usage: kesl-control --app-info" >&2
    exit 1
    ;;
esac
"""

_KLNAGCHK = """#!/bin/sh
# Lab stand-in for the Network Agent's klnagchk.
echo "Network Agent version: {version}"
if systemctl is-active --quiet klnagent64.service 2>/dev/null; then
  echo "Network Agent is running"
else
  echo "Network Agent is not running"; exit 1
fi
echo "Administration Server address: ksc.agency.invalid (not reachable)"
"""

_UNIT = """[Unit]
Description={description}
After=network.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

_KESL_INI = """[General]
ScanMemoryLimit=8192
UseKSN=No
[Update]
SourceType=KLServers
"""

_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  mkdir -p {dirs}
  {extra}
  for u in {units}; do systemctl enable "$u" >/dev/null 2>&1 || true; done
  if [ -d /run/systemd/system ]; then systemctl start {units}; fi
fi
exit 0
"""

_PRERM = """#!/bin/sh
set -e
{guard}if [ -d /run/systemd/system ]; then systemctl stop {units} || true; fi
for u in {units}; do systemctl disable "$u" >/dev/null 2>&1 || true; done
exit 0
"""

# Like the real product, purge removes the package's files but leaves runtime data and logs
# under /var/opt/kaspersky and /var/log/kaspersky behind: the catalogue lists them as leftovers.
_POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf {purged}
fi
exit 0
"""


# Password protection (stand-in interface): when the product was given an uninstall password
# (its SHA-256 in PROTECTION), removal is refused unless the password is in PASSWORD_FILE, a
# root-only file the remover writes just before and deletes just after. The catalogue's
# `remove.secret_file` names that file.
KESL_PROTECTION = "/var/opt/kaspersky/kesl/private/uninstall-password.sha256"
KESL_PASSWORD_FILE = "/run/kaspersky/kesl-uninstall-password"  # noqa: S105 - a path
_PASSWORD_GUARD = f"""if [ "$1" = remove ] && [ -s {KESL_PROTECTION} ]; then
  given=""
  if [ -r {KESL_PASSWORD_FILE} ]; then given=$(sha256sum < {KESL_PASSWORD_FILE} | cut -d' ' -f1); fi
  if [ "$given" != "$(cut -d' ' -f1 {KESL_PROTECTION})" ]; then
    echo "Kaspersky Endpoint Security is password-protected: removal refused" \
         "(wrong or missing uninstall password)" >&2
    exit 1
  fi
fi
"""


def _revision() -> str:
    """Digest of everything a stand-in is built from: a changed script rebuilds the debs."""
    blob = "".join([_LOOP, _KESL_CONTROL, _KLNAGCHK, _UNIT, _KESL_INI, _POSTINST, _PRERM,
                    _POSTRM, _PASSWORD_GUARD, repr(sorted(STAND_INS.items()))])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _kesl_tree(root: Path, s: StandIn) -> tuple[str, str, str, str]:
    opt = root / "opt/kaspersky/kesl"
    _write(opt / "bin/kesl-control", _KESL_CONTROL.format(name=s.product_name, version=s.version),
           0o755)
    _write(opt / "libexec/kesl", _LOOP.format(log="/var/log/kaspersky/kesl/kesl.log"), 0o755)
    _write(opt / "libexec/kesl-supervisor",
           _LOOP.format(log="/var/log/kaspersky/kesl/supervisor.log"), 0o755)
    _write(opt / "shared/kesl.ini.default", _KESL_INI)
    _write(opt / "VERSION", s.version + "\n")
    unit_dir = root / "lib/systemd/system"
    _write(unit_dir / "kesl.service", _UNIT.format(
        description="Kaspersky Endpoint Security for Linux",
        exec_start="/opt/kaspersky/kesl/libexec/kesl"))
    _write(unit_dir / "kesl-supervisor.service", _UNIT.format(
        description="Kaspersky Endpoint Security for Linux supervisor",
        exec_start="/opt/kaspersky/kesl/libexec/kesl-supervisor"))
    dirs = ("/var/opt/kaspersky/kesl/common /var/opt/kaspersky/kesl/private/storage/bases "
            "/var/log/kaspersky/kesl /etc/opt/kaspersky")
    extra = (
        "[ -f /var/opt/kaspersky/kesl/common/kesl.ini ] || "
        "cp /opt/kaspersky/kesl/shared/kesl.ini.default /var/opt/kaspersky/kesl/common/kesl.ini\n"
        f"  echo '{s.databases_release}' > /var/opt/kaspersky/kesl/private/storage/bases/release\n"
        "  echo 'KESL_INSTALLED=yes' > /etc/opt/kaspersky/kesl.conf"
    )
    return dirs, extra, "kesl-supervisor.service kesl.service", "/etc/opt/kaspersky/kesl.conf"


def _klnagent_tree(root: Path, s: StandIn) -> tuple[str, str, str, str]:
    opt = root / "opt/kaspersky/klnagent64"
    _write(opt / "bin/klnagchk", _KLNAGCHK.format(version=s.version), 0o755)
    _write(opt / "sbin/klnagent",
           _LOOP.format(log="/var/log/kaspersky/klnagent64/klnagent.log"), 0o755)
    _write(opt / "VERSION", s.version + "\n")
    _write(root / "lib/systemd/system/klnagent64.service", _UNIT.format(
        description="Kaspersky Security Center Network Agent",
        exec_start="/opt/kaspersky/klnagent64/sbin/klnagent"))
    dirs = "/var/opt/kaspersky/klnagent64 /var/log/kaspersky/klnagent64 /etc/opt/kaspersky"
    extra = "echo 'SERVER=ksc.agency.invalid' > /etc/opt/kaspersky/klnagent64.conf"
    return dirs, extra, "klnagent64.service", "/etc/opt/kaspersky/klnagent64.conf"


def build(out_dir: Path) -> dict[str, Path]:
    """Build every stand-in into out_dir; return the .deb path for each scenario key."""
    out_dir = out_dir / _revision()
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for key, s in STAND_INS.items():
        target = out_dir / s.filename
        built[key] = target
        if target.is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="avm-deb-") as tmp:
            root = Path(tmp) / "root"
            tree = _kesl_tree if s.package == "kesl" else _klnagent_tree
            dirs, extra, units, purged = tree(root, s)
            _write(root / "DEBIAN/control", (
                f"Package: {s.package}\nVersion: {s.version}\nArchitecture: amd64\n"
                "Maintainer: avmigrate lab <lab@avmigrate.invalid>\nSection: non-free/misc\n"
                "Priority: optional\nDepends: systemd\n"
                f"Description: {s.product_name} (avmigrate lab stand-in)\n"
                " Built by the avmigrate lab; behaves like the vendor package.\n"
            ))
            _write(root / "DEBIAN/postinst", _POSTINST.format(dirs=dirs, extra=extra, units=units),
                   0o755)
            guard = _PASSWORD_GUARD if s.package == "kesl" else ""
            _write(root / "DEBIAN/prerm", _PRERM.format(units=units, guard=guard), 0o755)
            _write(root / "DEBIAN/postrm", _POSTRM.format(purged=purged), 0o755)
            tmp_deb = out_dir / (s.filename + ".tmp")
            run(["dpkg-deb", "--root-owner-group", "--build", root, tmp_deb])
            tmp_deb.rename(target)
    return built


def clean(out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
