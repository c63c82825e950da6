"""End to end on real lab hosts: no mock of Ansible, SSH or the hosts.

Builds an 8-host lab (every profile of the default scenario), migrates it with the CLI, then
logs in to every host to check what is really there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.core.models import HostState
from orchestrator.core.protection import EICAR_B64
from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo
from orchestrator.store.sqlite import SqliteStore
from tests.support.pages import check_page

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

LAB = "test"
HOSTS = 8
AVMIGRATE = [sys.executable, "-m", "orchestrator.cli.cli"]
MIGRATABLE = {"kesl12_agent", "kesl11_agent", "agent_only"}
UNTOUCHABLE = {"low_disk", "broken_dpkg"}

# What a host looks like, read over SSH: packages, units and Kaspersky paths.
SNAPSHOT = (
    "dpkg-query -W -f '${Package} ${Version} ${Status}\\n' | sort; "
    "systemctl list-units --type=service --state=running --no-legend --plain | "
    "awk '{print $1}' | sort; "
    "ls -la /opt/kaspersky /var/opt/kaspersky /etc/opt/kaspersky 2>&1 | grep -v total"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabInfo]:
    the_lab = Lab(LAB)
    log: list[str] = []
    info = the_lab.up(HOSTS, None, log)
    yield info
    the_lab.down(log)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("avmigrate")


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A relative state path, as a sysadmin types it: artifacts then land beside it.
    env = dict(os.environ, AVMIGRATE_STATE="state.db")
    return subprocess.run([*AVMIGRATE, *args], capture_output=True, text=True, env=env,
                          cwd=workdir, timeout=1500, check=False)


def sh(info: LabInfo, host: LabHost, command: str) -> tuple[int, str]:
    code, out, err = ssh.run(info.target(host), command, timeout=120)
    return code, out + err


def by_profile(info: LabInfo, profile: str) -> list[LabHost]:
    return [h for h in info.hosts if h.profile == profile]


# Byte for byte: the package database itself, every service unit's state and enablement,
# and the apt configuration (a dry run must not even add the repository).
EXACT = (
    "sha256sum /var/lib/dpkg/status; "
    "systemctl list-units --type=service --all --no-legend --plain | sort; "
    "systemctl list-unit-files --type=service --no-legend | sort; "
    "find /etc/apt /etc/clamav /var/cache/avmigrate 2>/dev/null | sort | xargs -r ls -ld "
    "--time-style=+%s"
)


def exact(info: LabInfo, host: LabHost) -> str:
    if host.sshd_down:
        return Lab(LAB).exec(host, ["sh", "-c", EXACT]).stdout
    return sh(info, host, EXACT)[1]


def snapshot(info: LabInfo, host: LabHost) -> str:
    if host.sshd_down:
        return Lab(LAB).exec(host, ["sh", "-c", SNAPSHOT]).stdout
    return sh(info, host, SNAPSHOT)[1]


def status(workdir: Path) -> dict[str, dict[str, object]]:
    result = cli(workdir, "status", "--json")
    return {row["host"]: row for row in json.loads(result.stdout)}


def test_lab_hosts_are_real_and_carry_kaspersky(lab: LabInfo) -> None:
    assert len(lab.hosts) == HOSTS
    for host in lab.hosts:
        if host.sshd_down:
            assert not ssh.port_open(host.address)
            continue
        code, out = sh(lab, host, "systemctl is-system-running")
        assert out.strip() in ("running", "degraded"), (host.name, out)
        code, out = sh(lab, host, "id -un; sudo -n true && echo sudo-ok")
        assert out.split() == ["avadmin", "sudo-ok"]
        # Lab traffic stays on the lab bridge: no route anywhere else.
        code, out = sh(lab, host, "ip -4 route show")
        assert out.strip().splitlines() == [
            f"{host.address.rsplit('.', 1)[0]}.0/24 dev eth0 proto kernel scope link "
            f"src {host.address}"], out
        if host.profile in ("kesl12_agent", "kesl11_agent", "low_disk", "broken_dpkg"):
            code, out = sh(lab, host, "/opt/kaspersky/kesl/bin/kesl-control --app-info")
            assert code == 0
            assert "Kaspersky Endpoint Security" in out
            assert "Last release of databases:             2024-09-2" in out
            assert "Application state:                     Running" in out
            assert sh(lab, host, "systemctl is-active kesl kesl-supervisor")[1].split() == [
                "active", "active"]
        if host.profile != "clean":
            assert sh(lab, host, "/opt/kaspersky/klnagent64/bin/klnagchk")[0] == 0


def test_root_cannot_log_in_and_unknown_host_keys_are_refused(lab: LabInfo, tmp_path: Path
                                                              ) -> None:
    host = by_profile(lab, "kesl12_agent")[0]
    target = lab.target(host)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ssh.SSHError):
        ssh.run(ssh.SSHTarget(target.address, target.user, target.key_file, empty), "true")
    with pytest.raises(ssh.SSHError):
        ssh.run(ssh.SSHTarget(target.address, "root", target.key_file, target.known_hosts),
                "true")


def test_plan_and_plan_check_change_nothing_on_any_host(lab: LabInfo, workdir: Path) -> None:
    before = {h.name: exact(lab, h) for h in lab.hosts}
    assert all("/var/lib/dpkg/status" in v for v in before.values())

    plan = cli(workdir, "plan", "-i", lab.inventory, "--out", str(workdir / "dry"))
    assert plan.returncode == 0, plan.stderr
    check = cli(workdir, "plan", "-i", lab.inventory, "--check", "--out",
                str(workdir / "dry-check"))
    assert check.returncode == 0, check.stdout + check.stderr

    for host in lab.hosts:
        assert exact(lab, host) == before[host.name], host.name
    data = json.loads((workdir / "dry-check" / "plan.json").read_text())
    found = data["checks"]["hosts"]
    migratable = [h.name for h in lab.hosts if h.profile in MIGRATABLE]
    assert sorted(found) == sorted(migratable)  # held-back hosts are not planned
    for name in migratable:
        assert found[name]["problems"] == [], found[name]
        would = found[name]["would_change"]
        assert "Add the internal package repository" in would, would
        assert "Remove the banned products and prove that nothing of them remains" in would, would
    page = workdir / "dry-check" / "plan.html"
    assert "Check mode" in page.read_text()


# One lab's whole migration, told in order: each check needs the state the one before left.
def test_migration_of_the_lab(lab: LabInfo, workdir: Path) -> None:  # noqa: PLR0915 - a story
    untouched = [h for h in lab.hosts if h.profile in UNTOUCHABLE | {"unreachable"}]
    before = {h.name: snapshot(lab, h) for h in untouched}

    plan = cli(workdir, "plan", "-i", lab.inventory, "--out", str(workdir / "plan"))
    assert plan.returncode == 0, plan.stderr
    seen = check_page(workdir / "plan" / "plan.html", [h.name for h in lab.hosts])
    assert "Debian GNU/Linux 12" in seen.text or "Debian 12" in seen.text
    run = cli(workdir, "run", "-i", lab.inventory, "--plan", str(workdir / "plan/plan.json"),
              "--yes")
    assert run.returncode == 3, run.stdout + run.stderr  # some hosts left as they were, on purpose

    states = status(workdir)
    eicar = f"echo {EICAR_B64} | base64 -d > /tmp/eicar.test"
    for host in lab.hosts:
        row = states[host.name]
        if host.profile in MIGRATABLE:
            assert row["state"] == "migrated", row
            assert row["gap_seconds"] == 0, row
            assert row["strategy"] == "make-before-break"
            _, out = sh(lab, host, "dpkg-query -W -f '${Status}' kesl klnagent64")
            assert "install ok installed" not in out
            assert sh(lab, host, "pgrep -f /opt/kaspersky/")[0] == 1
            _code, out = sh(lab, host, "ls -d /opt/kaspersky /var/opt/kaspersky "
                                      "/etc/opt/kaspersky /var/log/kaspersky 2>/dev/null")
            assert out.strip() == "", out
            _, out = sh(lab, host, "systemctl is-active kesl klnagent64")
            assert "active\n" not in out.replace("inactive", "")
            assert sh(lab, host, "systemctl is-active clamav-daemon")[1].strip() == "active"
            _, out = sh(lab, host, f"{eicar}; clamdscan --fdpass --no-summary "
                                      "/tmp/eicar.test; echo rc=$?; rm -f /tmp/eicar.test")
            assert "FOUND" in out
            assert "rc=1" in out
        elif host.profile == "clean":
            assert row["state"] == "clean"
            assert sh(lab, host, "dpkg-query -W clamav-daemon")[0] != 0
        elif host.profile in UNTOUCHABLE:
            assert row["state"] == "blocked"
            reason = str(row["reason"])
            assert ("low disk" in reason) if host.profile == "low_disk" else (
                "broken package state" in reason)
            assert sh(lab, host, "systemctl is-active kesl")[1].strip() == "active"
            assert snapshot(lab, host) == before[host.name]
        elif host.profile == "unreachable":
            assert row["state"] == "unreachable"
            result = Lab(LAB).exec(host, ["systemctl", "is-active", "kesl"], check=False)
            assert result.stdout.strip() == "active"
            assert snapshot(lab, host) == before[host.name]

    report = cli(workdir, "report", "--format", "md")
    assert report.returncode == 0
    for host in lab.hosts:
        assert host.name in report.stdout
    assert "removing → **migrated**" in report.stdout
    html = cli(workdir, "report", "--format", "html", "--out", "report.html")
    assert html.returncode == 0, html.stderr
    seen = check_page(workdir / "report.html", [h.name for h in lab.hosts])
    assert "BOD 17-01" in seen.text
    evidence = json.loads(cli(workdir, "report", "--json").stdout)
    n_migrated = sum(1 for h in lab.hosts if h.profile in MIGRATABLE)
    assert evidence["bod_17_01"]["removed"] == n_migrated
    assert evidence["bod_17_01"]["remaining"] == len(untouched) - 1  # unreachable: unknown
    assert evidence["audit"]["ok"] is True
    kind = {h.name: h.profile for h in lab.hosts}
    for row in evidence["hosts"]:
        if kind[row["host"]] in MIGRATABLE:  # re-probed after the run: the real "after"
            assert "klnagent64" in row["before"]["banned"], row
            assert row["after"] == {"banned": "none", "signatures": "",
                                    "replacement": "running"}, row
    assert cli(workdir, "audit", "verify").returncode == 0


def test_second_run_changes_nothing(lab: LabInfo, workdir: Path) -> None:
    before_states = status(workdir)
    before = {h.name: snapshot(lab, h) for h in lab.hosts}
    run = cli(workdir, "run", "-i", lab.inventory, "--yes")
    assert run.returncode == 3, run.stdout + run.stderr
    after_states = status(workdir)
    assert {h: r["state"] for h, r in after_states.items()} == {
        h: r["state"] for h, r in before_states.items()}
    for host in lab.hosts:
        assert snapshot(lab, host) == before[host.name], host.name


def test_interrupted_removal_is_resumed_safely(lab: LabInfo, workdir: Path) -> None:
    # As if the last run had died after purging Kaspersky but before recording it: the next
    # run re-probes the host and, before anything else, verifies its replacement (EICAR through
    # the running daemon): only that evidence, with no banned product left, says migrated.
    host = by_profile(lab, "kesl12_agent")[0]
    before = status(workdir)[host.name]
    # The state as a run that died mid-removal leaves it: its last commit was the intent.
    db = sqlite3.connect(str(workdir / "state.db"))
    db.execute("UPDATE hosts SET state = 'removing' WHERE name = ?", (host.name,))
    db.commit()
    db.close()
    started = time.time()
    run = cli(workdir, "run", "-i", lab.inventory, "--yes")
    assert run.returncode == 3, run.stdout + run.stderr
    row = status(workdir)[host.name]
    assert row["state"] == "migrated", row
    assert row["protected_by"].startswith("clamav verified"), row
    # Its protection between the intent and that verification is not proven: the gap runs to
    # the re-probe's verification, not zero.
    assert row["protection_stopped_at"] == before["protection_stopped_at"]
    assert row["replacement_verified_at"] >= started
    assert sh(lab, host, "systemctl is-active clamav-daemon")[1].strip() == "active"
    assert sh(lab, host, "pgrep -f /opt/kaspersky/")[0] == 1
    history = SqliteStore(workdir / "state.db").history(host.name)
    assert [(t.from_state, t.to_state) for t in history[-1:]] == [
        (HostState.REMOVING, HostState.MIGRATED)]
    assert history[-1].reason.startswith("re-probed after removing: no banned product left; "
                                         "clamav verified")


def test_lab_down_leaves_nothing_and_up_cleans_an_unclean_stop(lab: LabInfo) -> None:
    the_lab = Lab(LAB)
    # An unclean stop: the lab's record is lost while everything still runs.
    Path(lab.directory, "lab.json").unlink()
    log: list[str] = []
    the_lab.down(log)
    assert the_lab.leftovers() == []
    info = the_lab.up(2, Path(__file__).with_name("two_hosts.yml"), log)
    assert len(info.hosts) == 2
    the_lab.down(log)
    assert the_lab.leftovers() == []
