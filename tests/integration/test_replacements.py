"""The replacements agencies buy (issue 15), end to end on real lab hosts: workstations to
Microsoft Defender for Endpoint (passive beside KESL, activated after its removal), a server
to ClamAV, a DMZ host to the CrowdStrike Falcon sensor (the policy's replacement.groups), a
host with no antivirus at all protected on request; and the failure modes that must leave the
host with KESL protecting it: an onboarding that never completes, an expired MDE build, a
Falcon sensor in reduced functionality mode. Judged by logging in to each host. MDE and Falcon
are the lab's stand-ins (orchestrator/lab/vendors.py); ClamAV is real."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.core.protection import EICAR_B64
from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo
from tests.support.lab import TRUTH, Sampler

pytestmark = pytest.mark.lab

LAB = "rep"
SCENARIO = Path(__file__).parent / "replacements.yml"
POLICY = {
    "version": 1,
    "replacement": {"default": "clamav", "groups": {"workstations": "mde",
                                                    "servers": "clamav", "dmz": "falcon"}},
    "waves": {"canary": 1, "growth": 10},
    "protection": {"max_unprotected": 2},
    "gates": {"max_failed_percent": 100},
}


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    the_lab = Lab(LAB)
    log: list[str] = []
    info = the_lab.up(7, SCENARIO, log)
    yield info
    the_lab.down(log)


def by_profile(info: LabInfo) -> dict[str, LabHost]:
    return {h.profile: h for h in info.hosts}


def sh(info: LabInfo, host: LabHost, command: str) -> str:
    _, out, err = ssh.run(info.target(host), f"sudo -n sh -c {shlex.quote(command)} 2>&1",
                          timeout=120)
    return out + err


def avmigrate(info: LabInfo, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.cli", "--state", str(tmp_path / "s.db"),
         "--credentials", str(Path(info.directory) / "credentials.yml"), *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800, check=False)


def quarantines_eicar(info: LabInfo, host: LabHost) -> str | None:
    """Write the EICAR test file as a user would; protected means it is gone at once. The
    file's path if it was taken, else None."""
    path = f"/tmp/eicar-{time.monotonic_ns()}.com"
    sh(info, host, f"echo {EICAR_B64} | base64 -d > {path}")
    for _ in range(20):
        if "gone" in sh(info, host, f"test -e {path} || echo gone"):
            return path
        time.sleep(0.5)
    sh(info, host, f"rm -f {path}")
    return None


def ksc_reconciled(page: str, hosts: dict[str, LabHost]) -> None:
    """The plan reconciles KSC's list with the inventory: KSC's Windows workstations are not
    in it; the bare host (no Network Agent) is not in KSC; each agent host's versions."""
    ksc = page.split("## Kaspersky Security Center", 1)[1].split("## Waves", 1)[0]
    assert "**3 host(s) that KSC manages with a Kaspersky product are not in the inventory**" \
        in ksc, ksc
    assert "| FIN-WS-044 |" in ksc and "| HR-LT-017 |" in ksc and "| KIOSK-02 |" in ksc
    # Hosts without the Network Agent (the bare one, the RFM one) are not in KSC.
    unknown = ksc.split("KSC does not know: ", 1)[1].split(".\n", 1)[0].split(", ")
    assert sorted(unknown) == sorted([hosts["bare"].name, hosts["dmz_rfm"].name]), ksc
    assert (f"| {hosts['workstation'].name} | {hosts['workstation'].name} | "
            "Linux/workstations | Kaspersky Endpoint Security 12.1 for Linux 12.1.0.1297, "
            "Kaspersky Security Center Network Agent 14.2.0.26967 |") in ksc, ksc


def ksc_retired(report: str, hosts: dict[str, LabHost]) -> None:
    """The evidence names the migrated hosts KSC still lists: to retire from KSC."""
    retire = report.split("## To retire from Kaspersky Security Center", 1)[1].split(
        "## Hosts", 1)[0]
    for profile in ("workstation", "server", "dmz"):
        assert f"| {hosts[profile].name} | {hosts[profile].name} |" in retire, retire
    for profile in ("workstation_offline", "dmz_rfm", "bare"):
        assert f"| {hosts[profile].name} |" not in retire, retire


def test_a_mixed_fleet_moves_to_three_replacements_and_failures_keep_kesl(
        lab: LabInfo, tmp_path: Path) -> None:
    hosts = by_profile(lab)
    (tmp_path / "policy.yml").write_text(yaml.safe_dump(POLICY))
    # KSC's list of the hosts it manages (the report a KSC managing the lab would export).
    assert avmigrate(lab, tmp_path, "ksc", "import",
                     str(Path(lab.directory) / "ksc-hosts.csv")).returncode == 0
    planned = avmigrate(lab, tmp_path, "plan", "-i", lab.inventory, "--policy",
                        str(tmp_path / "policy.yml"), "--protect-unprotected",
                        "--out", str(tmp_path / "plan"))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    page = (tmp_path / "plan" / "plan.md").read_text()
    assert "| Microsoft Defender for Endpoint (`mde`) | 4 | 4 |" in page, page
    assert "| ClamAV (`clamav`) | 1 | 1 |" in page and "(`falcon`) | 2 | 2 |" in page, page
    assert "**1 host(s) have no antivirus at all**" in page and hosts["bare"].name in page
    ksc_reconciled(page, hosts)

    with Sampler(Lab(LAB), lab) as sampler:
        ran = avmigrate(lab, tmp_path, "run", "-i", lab.inventory, "--plan",
                        str(tmp_path / "plan" / "plan.json"), "--yes")
    assert ran.returncode == 4, ran.stdout + ran.stderr  # install failures, on purpose
    states = {r["host"]: r for r in yaml.safe_load(avmigrate(
        lab, tmp_path, "status", "--json").stdout)}

    # Migrated: the banned product gone, the replacement proving protection by its own means.
    for profile in ("workstation", "bare"):
        host = hosts[profile]
        assert states[host.name]["state"] == "migrated", states[host.name]
        said = sh(lab, host, "dpkg-query -W kesl klnagent64 2>&1; for f in healthy licensed "
                  "real_time_protection_enabled passive_mode_enabled conflicting_applications; "
                  "do echo $f=$(mdatp health --field $f); done")
        assert "no packages found matching kesl" in said or profile == "bare", said
        for field in ("healthy=true", "licensed=true", "real_time_protection_enabled=true",
                      "passive_mode_enabled=false", "conflicting_applications=[]"):
            assert field in said, (host.name, said)
        taken = quarantines_eicar(lab, host)
        assert taken, host.name
        assert f'Path: "{taken}"' in sh(lab, host, "mdatp threat list"), host.name
    server = hosts["server"]
    assert states[server.name]["state"] == "migrated"
    out = sh(lab, server, TRUTH + "; dpkg-query -W kesl 2>&1")
    assert "FOUND" in out and "rc=1" in out and "no packages found matching kesl" in out, out
    dmz = hosts["dmz"]
    assert states[dmz.name]["state"] == "migrated"
    out = sh(lab, dmz, "systemctl is-active falcon-sensor.service; "
             "/opt/CrowdStrike/falconctl -g --aid --rfm-state; dpkg-query -W kesl 2>&1")
    assert "active" in out and 'aid="' in out and "rfm-state=false." in out, out
    assert "no packages found matching kesl" in out, out
    assert quarantines_eicar(lab, dmz)

    # Failure modes: stopped before the removal, KESL installed and protecting.
    for profile, why in (("workstation_offline", "enrolment failed"),
                         ("workstation_expired", "its health beside the banned product: failed"),
                         ("dmz_rfm", "reduced functionality mode")):
        host = hosts[profile]
        assert states[host.name]["state"] == "install_failed", states[host.name]
        assert why in states[host.name]["reason"], states[host.name]
        assert "kesl.service running" in states[host.name]["protected_by"]
        out = sh(lab, host, "systemctl is-active kesl.service; dpkg-query -W kesl")
        assert out.startswith("active") and "12.1.0.1297" in out, (host.name, out)
    assert "healthy is false" in states[hosts["workstation_expired"].name]["reason"]
    ksc_retired(avmigrate(lab, tmp_path, "report", "--format", "md").stdout, hosts)
    assert "product expired" in sh(lab, hosts["workstation_expired"],
                                   "mdatp health --field health_issues")
    assert "licensed=false" in sh(lab, hosts["workstation_offline"],
                                  "echo licensed=$(mdatp health --field licensed)")

    # MDE never ran active beside a running KESL (its stand-in logs every moment it did).
    for profile in ("workstation", "bare", "workstation_offline", "workstation_expired"):
        said = sh(lab, hosts[profile], "cat /var/opt/microsoft/mdatp/conflicts.log 2>&1")
        assert "No such file" in said, (profile, said)
    # No host the run touched was ever without protection beyond the budget (2); MDE hosts
    # are bare from their removal to their activated proof, ClamAV and Falcon hosts never.
    assert sampler.samples > 0 and sampler.max_unprotected <= 2, sampler.seen
    report = avmigrate(lab, tmp_path, "report", "--format", "md", "--out",
                       str(tmp_path / "report.md"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report.md").read_text()
    assert "| mde | 2 |" in text and "| clamav | 1 |" in text and "| falcon | 1 |" in text, text
    assert "| kesl.service (banned product) | 3 |" in text, text


def test_the_mdatp_stand_in_reports_kesl_as_conflicting_when_active(lab: LabInfo) -> None:
    """What the passive mode avoids, shown by the stand-in: MDE active beside a running KESL
    lists it in conflicting_applications and reports unhealthy."""
    host = by_profile(lab)["workstation_offline"]
    managed = "/etc/opt/microsoft/mdatp/managed/mdatp_managed.json"
    if "mdatp" not in sh(lab, host, "dpkg-query -W mdatp"):
        pytest.skip("runs after the mixed-fleet test installed mdatp there")
    saved = sh(lab, host, f"cat {managed}")
    try:
        sh(lab, host, f"cp {managed} {managed}.saved; echo "
                      + shlex.quote('{"antivirusEngine": {"enforcementLevel": "real_time"}}')
                      + f" > {managed}; sleep 2")
        out = sh(lab, host, "mdatp health --field conflicting_applications; "
                 "mdatp health --field health_issues; cat /var/opt/microsoft/mdatp/conflicts.log")
        assert "name:kesl" in out and "conflicting applications" in out, out
        assert out.count("name:kesl") >= 2, out  # and its log recorded it
    finally:
        sh(lab, host, f"mv {managed}.saved {managed}")
    assert "passive" in saved, saved
