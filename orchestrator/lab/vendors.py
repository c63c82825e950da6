"""Stand-in .deb packages of the replacements agencies license: Microsoft Defender for Endpoint
(``mdatp``) and the CrowdStrike Falcon sensor (``falcon-sensor``), built for the lab with
dpkg-deb and served from the lab's internal repository like the real packages an agency
mirrors.

The real products cannot be had here. These copy what the vendors document and what the
migration depends on: names, paths, services, the CLIs and their outputs (`mdatp health
[--field F]`, `mdatp config passive-mode`, `mdatp threat list`; `falconctl -s --cid` and
`-g --cid/--aid/--rfm-state/--version`), and the failure modes: MDE unlicensed until onboarded,
passive or real-time by its managed configuration, `conflicting_applications` when active beside
a running KESL, a build that expires nine months after release; falcon-sensor failing to start
until its CID is set, no agent id until it registers, reduced functionality mode. Their
"protection" is a small on-access check: a file written under /tmp, /var/tmp, /root or /home
whose SHA-256 is the EICAR test file's is quarantined (and, for MDE, listed as a threat). No
test virus is stored: only its digest.

Faults are the host's, as a lab scenario gives them (`/etc/avmigrate-lab/faults`, one per
line): ``mde-cloud-unreachable`` (onboarding never completes), ``mde-expired`` (an expired
build), ``falcon-cloud-unreachable`` (no agent id), ``falcon-rfm`` (an unsupported kernel).
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.protection import EICAR_B64
from orchestrator.lab.sh import run

FAULTS_FILE = "/etc/avmigrate-lab/faults"
FAULTS = ("mde-cloud-unreachable", "mde-expired", "falcon-cloud-unreachable", "falcon-rfm")

# What the lab's credentials give as the enrolment secrets: an onboarding file shaped as the
# Defender portal's (an onboardingInfo string holding the organisation id) and a CID with its
# checksum. Test values, good only in the lab.
LAB_ORG_ID = "5d6a7f3e-1ab0-4c1e-9a7b-0a1b2c3d4e5f"
LAB_ONBOARDING = json.dumps({"onboardingInfo": json.dumps({"body": json.dumps(
    {"orgIds": [LAB_ORG_ID], "orgId": LAB_ORG_ID, "vendor": "avmigrate-lab"})})})
LAB_CID = "0123456789ABCDEF0123456789ABCDEF-A7"


@dataclass(frozen=True)
class Vendor:
    package: str
    version: str
    description: str

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.version}_amd64.deb"


MDATP = Vendor("mdatp", "101.24082.0004", "Microsoft Defender for Endpoint")
FALCON = Vendor("falcon-sensor", "7.18.0-17106", "CrowdStrike Falcon Sensor")
# The mdatp build's release date: it expires nine months later (product_expiration).
MDATP_RELEASED = "2026-09-14"

_ONACCESS = '''
import hashlib, os, time

EICAR_SHA256 = "{eicar}"
WATCHED = ("/tmp", "/var/tmp", "/root", "/home")


def faults():
    try:
        with open("{faults}") as f:
            return {{line.strip() for line in f if line.strip()}}
    except OSError:
        return set()


def eicar_files():
    """Regular files directly under the watched directories that are the EICAR test file."""
    for top in WATCHED:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if not e.is_file(follow_symlinks=False) or not 60 <= e.stat().st_size <= 256:
                    continue
                with open(e.path, "rb") as f:
                    if hashlib.sha256(f.read().strip()).hexdigest() == EICAR_SHA256:
                        yield e.path
            except OSError:
                continue


def quarantine(path, into):
    os.makedirs(into, mode=0o700, exist_ok=True)
    target = os.path.join(into, "%d-%s" % (time.time_ns(), os.path.basename(path)))
    try:
        os.rename(path, target)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            return None
    return target
'''

_WDAVDAEMON = '''#!/usr/bin/python3
# Lab stand-in for Microsoft Defender for Endpoint's daemon (wdavdaemon): keeps the health that
# `mdatp health` reports, and quarantines the EICAR test file while real-time protection is on.
import datetime, glob, json, os, signal, sys, time, uuid
{onaccess}
STATE = "/var/opt/microsoft/mdatp"
CONFIG = "/etc/opt/microsoft/mdatp"
RELEASED = datetime.datetime.fromisoformat("{released}T00:00:00+00:00")
VERSION = "{version}"


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def org_id():
    """The organisation of the onboarding file, if it is one (onboardingInfo holds it)."""
    info = read_json(CONFIG + "/mdatp_onboard.json", {{}}).get("onboardingInfo")
    try:
        body = json.loads(json.loads(info)["body"])
        return body["orgIds"][0]
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def enforcement():
    managed = read_json(CONFIG + "/managed/mdatp_managed.json", {{}})
    level = (managed.get("antivirusEngine") or {{}}).get("enforcementLevel")
    if level in ("passive", "real_time", "on_demand"):
        return level
    local = read_json(STATE + "/wdavcfg", {{}})
    return "passive" if local.get("passiveMode") else "real_time"


def conflicting():
    """Running fanotify-based products (KESL), as mdatp lists them."""
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/cmdline", "rb") as f:
                argv = f.read().split(b"\\0")
        except OSError:
            continue
        exe = " ".join(a.decode(errors="replace") for a in argv if a)
        if "/opt/kaspersky/kesl/libexec/kesl" in exe and "supervisor" not in exe:
            found.append("name:kesl, pid:%s, path:/opt/kaspersky/kesl/libexec/kesl"
                         % d.rsplit("/", 1)[1])
    return found


def health(now, defs):
    f = faults()
    org = org_id() if "mde-cloud-unreachable" not in f else None
    level = enforcement()
    passive = level == "passive"
    expires = RELEASED + datetime.timedelta(days=273)
    if "mde-expired" in f:
        expires = now - datetime.timedelta(days=3)
    conflicts = conflicting() if not passive else []
    issues = []
    if org is None:
        issues.append("missing license")
    if expires < now:
        issues.append("product expired")
    if conflicts:
        issues.append("conflicting applications")
    minutes = int((now - defs).total_seconds() // 60)
    return {{
        "healthy": not issues,
        "health_issues": issues,
        "licensed": org is not None,
        "org_id": org or "unavailable",
        "app_version": VERSION,
        "engine_version": "1.1.24080.4",
        "definitions_version": "1.417.238.0",
        "definitions_updated": defs.strftime("%b %d, %Y at %I:%M:%S %p"),
        "definitions_updated_minutes_ago": minutes,
        "definitions_status": "up_to_date" if minutes < 7 * 1440 else "outdated",
        "real_time_protection_enabled": level == "real_time" and org is not None,
        "real_time_protection_available": True,
        "passive_mode_enabled": passive,
        "enforcement_level": level,
        "conflicting_applications": conflicts,
        "product_expiration": expires.strftime("%b %d, %Y at %I:%M:%S %p"),
        "edr_machine_id": read_json(STATE + "/machine.json", {{}}).get("id", "unavailable"),
    }}


def main():
    os.makedirs(STATE, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    machine = read_json(STATE + "/machine.json", None)
    if machine is None:
        write_json(STATE + "/machine.json", {{"id": uuid.uuid4().hex}})
    defs_file = STATE + "/definitions.json"
    defs = read_json(defs_file, None)
    if defs is None:  # the definitions it came with, from the agency's mirror: fresh
        defs = {{"updated": datetime.datetime.now(datetime.timezone.utc).isoformat()}}
        write_json(defs_file, defs)
    updated = datetime.datetime.fromisoformat(defs["updated"])
    while True:
        now = datetime.datetime.now(datetime.timezone.utc)
        state = health(now, updated)
        if state["real_time_protection_enabled"] and state["healthy"]:
            for path in eicar_files():
                moved = quarantine(path, STATE + "/quarantine")
                threats = read_json(STATE + "/threats.json", [])
                threats.append({{"id": uuid.uuid4().hex, "name": "Virus:DOS/EICAR_Test_File",
                                "type": "virus", "path": path,
                                "detected": now.isoformat(), "status": "quarantined",
                                "quarantined_as": moved}})
                write_json(STATE + "/threats.json", threats)
        if state["conflicting_applications"]:
            # For the lab's tests: every moment it ran active beside a running KESL.
            with open(STATE + "/conflicts.log", "a") as f:
                f.write("%s %s\\n" % (now.isoformat(), state["conflicting_applications"]))
        write_json(STATE + "/health.json", state)
        time.sleep(0.5)


main()
'''

_MDATP = '''#!/usr/bin/python3
# Lab stand-in for the mdatp command-line tool (health, config passive-mode, threat list).
import json, os, subprocess, sys

STATE = "/var/opt/microsoft/mdatp"


def out(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, str) and value not in ("unavailable",):
        return '"%s"' % value if not value.isdigit() else value
    return str(value)


def running():
    return subprocess.run(["systemctl", "is-active", "--quiet", "mdatp.service"]).returncode == 0


def health(args):
    if not running():
        print("ERROR: Could not connect to daemon -- is Microsoft Defender for Endpoint "
              "running?", file=sys.stderr)
        return 1
    try:
        with open(STATE + "/health.json") as f:
            state = json.load(f)
    except (OSError, ValueError):
        print("ERROR: health is not available yet", file=sys.stderr)
        return 1
    if "--field" in args:
        name = args[args.index("--field") + 1]
        if name not in state:
            print("ERROR: unknown field %s" % name, file=sys.stderr)
            return 1
        print(out(state[name]))
        return 0
    if "--output" in args and args[args.index("--output") + 1] == "json":
        print(json.dumps(state))
        return 0
    width = max(len(k) for k in state)
    for k, v in state.items():
        print("%s : %s" % (k.ljust(width), out(v)))
    return 0


def config(args):
    if args[:1] != ["passive-mode"] or "--value" not in args:
        print("usage: mdatp config passive-mode --value [enabled|disabled]", file=sys.stderr)
        return 2
    value = args[args.index("--value") + 1]
    if value not in ("enabled", "disabled"):
        print("ERROR: invalid value %s" % value, file=sys.stderr)
        return 2
    path = STATE + "/wdavcfg"
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        cfg = {}
    cfg["passiveMode"] = value == "enabled"
    with open(path, "w") as f:
        json.dump(cfg, f)
    print("Configuration property updated.")
    return 0


def threats(_args):
    try:
        with open(STATE + "/threats.json") as f:
            found = json.load(f)
    except (OSError, ValueError):
        found = []
    for t in found:
        print('Id: "%s"' % t["id"])
        print("Name: %s" % t["name"])
        print('Type: "%s"' % t["type"])
        print("Detection time: %s" % t["detected"])
        print('Status: "%s"' % t["status"])
        print('Path: "%s"' % t["path"])
        print()
    return 0


def main(argv):
    if argv[:1] == ["health"]:
        return health(argv[1:])
    if argv[:1] == ["config"]:
        return config(argv[1:])
    if argv[:2] == ["threat", "list"]:
        return threats(argv[2:])
    if argv[:1] in (["version"], ["--version"]):
        print("Product version: {version}")
        return 0
    print("usage: mdatp health [--field F] | config passive-mode --value V | threat list",
          file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
'''

_FALCOND = '''#!/usr/bin/python3
# Lab stand-in for the Falcon sensor's daemon: refuses to start without a CID (the service
# then stays failed), registers (an agent id) unless the cloud is out of reach, enters reduced
# functionality mode on an "unsupported kernel", and quarantines the EICAR test file on write.
import json, os, signal, sys, time, uuid
{onaccess}
STORE = "/opt/CrowdStrike/falconstore"


def load():
    try:
        with open(STORE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {{}}


def save(data):
    with open(STORE + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(STORE + ".tmp", STORE)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    store = load()
    if not store.get("cid"):
        print("falcon-sensor: CID is not set; run falconctl -s --cid=<CID>", file=sys.stderr)
        return 1
    store["rfm"] = "falcon-rfm" in faults()
    save(store)
    while True:
        store = load()
        if not store.get("aid") and "falcon-cloud-unreachable" not in faults():
            store["aid"] = uuid.uuid4().hex
            save(store)
        if store.get("aid") and not store.get("rfm"):
            for path in eicar_files():
                quarantine(path, "/opt/CrowdStrike/quarantine")
        time.sleep(0.5)


sys.exit(main())
'''

_FALCONCTL = '''#!/usr/bin/python3
# Lab stand-in for /opt/CrowdStrike/falconctl: -s [-f] --cid=CID; -g --cid --aid --rfm-state
# --version, printed as the real tool prints them.
import json, os, re, sys

STORE = "/opt/CrowdStrike/falconstore"


def load():
    try:
        with open(STORE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main(argv):
    if os.geteuid() != 0:
        print("falconctl must be run as root", file=sys.stderr)
        return 1
    store = load()
    if argv[:1] == ["-s"]:
        cid = next((a.split("=", 1)[1] for a in argv if a.startswith("--cid=")), None)
        if cid is None or not re.fullmatch(r"[0-9A-Fa-f]{32}-[0-9A-Fa-f]{2}", cid):
            print("Error: Invalid CID. The CID must be 32 hex characters, a dash and a "
                  "2-character checksum.", file=sys.stderr)
            return 1
        if store.get("cid") and "-f" not in argv:
            print("Error: CID is already set. Use -f to overwrite.", file=sys.stderr)
            return 1
        store["cid"] = cid.split("-")[0].lower()
        store.pop("aid", None)  # a new CID: the sensor registers again
        with open(STORE + ".tmp", "w") as f:
            json.dump(store, f)
        os.replace(STORE + ".tmp", STORE)
        return 0
    if argv[:1] == ["-g"]:
        parts = []
        for opt in argv[1:]:
            if opt == "--cid":
                parts.append('cid="%s"' % store["cid"] if store.get("cid") else "cid is not set")
            elif opt == "--aid":
                parts.append('aid="%s"' % store["aid"] if store.get("aid") else "aid is not set")
            elif opt == "--rfm-state":
                parts.append("rfm-state=%s" % ("true" if store.get("rfm") else "false"))
            elif opt == "--version":
                parts.append("version = {version}")
            else:
                print("Error: unknown option %s" % opt, file=sys.stderr)
                return 1
        print(", ".join(parts) + ".")
        return 0
    print("usage: falconctl -s [-f] --cid=<CID> | -g [--cid] [--aid] [--rfm-state] [--version]",
          file=sys.stderr)
    return 1


sys.exit(main(sys.argv[1:]))
'''

_UNIT = """[Unit]
Description={description}
After=network.target

[Service]
Type=simple
ExecStart={exec_start}
{restart}
[Install]
WantedBy=multi-user.target
"""

_CONTROL = """Package: {package}
Version: {version}
Architecture: amd64
Maintainer: avmigrate lab <lab@avmigrate.invalid>
Section: non-free/misc
Priority: optional
Depends: systemd, python3
Description: {description} (avmigrate lab stand-in)
 Built by the avmigrate lab; reproduces the vendor's names, paths, CLI and failure modes.
"""

_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemctl enable {unit} >/dev/null 2>&1 || true
  {start}
fi
exit 0
"""

_PRERM = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl stop {unit} || true; fi
systemctl disable {unit} >/dev/null 2>&1 || true
exit 0
"""

_POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then rm -rf {purged}; fi
exit 0
"""


def _eicar_sha256() -> str:
    return hashlib.sha256(base64.b64decode(EICAR_B64).strip()).hexdigest()


def _onaccess() -> str:
    return _ONACCESS.format(eicar=_eicar_sha256(), faults=FAULTS_FILE)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _mdatp_tree(root: Path) -> tuple[str, str, str]:
    opt = root / "opt/microsoft/mdatp"
    _write(opt / "sbin/wdavdaemon", _WDAVDAEMON.format(
        onaccess=_onaccess(), released=MDATP_RELEASED, version=MDATP.version), 0o755)
    _write(opt / "sbin/wdavdaemonclient", _MDATP.replace("{version}", MDATP.version), 0o755)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/mdatp").symlink_to("/opt/microsoft/mdatp/sbin/wdavdaemonclient")
    _write(root / "lib/systemd/system/mdatp.service", _UNIT.format(
        description="Microsoft Defender for Endpoint",
        exec_start="/opt/microsoft/mdatp/sbin/wdavdaemon", restart="Restart=on-failure\n"))
    # Like the real package: installed, it starts at once (unlicensed until onboarded).
    start = "if [ -d /run/systemd/system ]; then systemctl start mdatp.service; fi"
    return "mdatp.service", start, "/var/opt/microsoft/mdatp"


def _falcon_tree(root: Path) -> tuple[str, str, str]:
    opt = root / "opt/CrowdStrike"
    _write(opt / "falcond", _FALCOND.format(onaccess=_onaccess()), 0o755)
    _write(opt / "falconctl", _FALCONCTL.replace("{version}", "7.18.17106.0"), 0o755)
    _write(root / "lib/systemd/system/falcon-sensor.service", _UNIT.format(
        description="CrowdStrike Falcon Sensor", exec_start="/opt/CrowdStrike/falcond",
        restart=""))
    # Like the real package: installed, it is not started (it fails until the CID is set).
    return "falcon-sensor.service", ":", "/opt/CrowdStrike"


def _revision() -> str:
    blob = "".join([_ONACCESS, _WDAVDAEMON, _MDATP, _FALCOND, _FALCONCTL, _UNIT, _CONTROL,
                    _POSTINST, _PRERM, _POSTRM, MDATP_RELEASED, repr((MDATP, FALCON))])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build(out_dir: Path) -> list[Path]:
    """Build both stand-ins into out_dir (cached by their sources); their .deb paths."""
    out_dir = out_dir / _revision()
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for vendor, tree in ((MDATP, _mdatp_tree), (FALCON, _falcon_tree)):
        target = out_dir / vendor.filename
        built.append(target)
        if target.is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="avm-deb-") as tmp:
            root = Path(tmp) / "root"
            unit, start, purged = tree(root)
            _write(root / "DEBIAN/control", _CONTROL.format(
                package=vendor.package, version=vendor.version, description=vendor.description))
            _write(root / "DEBIAN/postinst", _POSTINST.format(unit=unit, start=start), 0o755)
            _write(root / "DEBIAN/prerm", _PRERM.format(unit=unit), 0o755)
            _write(root / "DEBIAN/postrm", _POSTRM.format(purged=purged), 0o755)
            tmp_deb = out_dir / (vendor.filename + ".tmp")
            run(["dpkg-deb", "--root-owner-group", "--build", root, tmp_deb])
            tmp_deb.rename(target)
    return built
