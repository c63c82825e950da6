"""Security on real lab hosts: a changed host key, a canary secret, a tampered package."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabInfo

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

LAB = "sec"
HERE = Path(__file__).resolve().parent
AVMIGRATE = [sys.executable, "-m", "orchestrator.cli.cli"]


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = Lab(LAB)
    yield the_lab
    the_lab.down([])
    assert the_lab.leftovers() == []


def up(lab: Lab, hosts: int = 2) -> LabInfo:
    return lab.up(hosts, HERE / "fleet_kesl.yml", [])


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AVMIGRATE_STATE="state.db")
    return subprocess.run([*AVMIGRATE, *args], capture_output=True, text=True, env=env,
                          cwd=workdir, timeout=1500, check=False)


def states(workdir: Path) -> dict[str, dict[str, object]]:
    rows = json.loads(cli(workdir, "status", "--json").stdout)
    return {r["host"]: r for r in rows}


def kesl_running(lab: Lab, info: LabInfo, name: str) -> bool:
    host = next(h for h in info.hosts if h.name == name)
    installed = lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", "kesl"], check=False)
    return (lab.protection(host, ("kesl.service",))["kesl.service"]
            and installed.stdout == "install ok installed")


def test_a_changed_host_key_stops_that_host_and_only_that_host(lab: Lab, tmp_path: Path
                                                               ) -> None:
    info = up(lab)
    victim, other = info.hosts
    known = Path(info.known_hosts).read_bytes()
    lab.change_host_key(victim)
    with pytest.raises(ssh.SSHError, match="host key changed"):
        ssh.run(info.target(victim), "true")
    run = cli(tmp_path, "run", "-i", info.inventory, "--yes", "--no-progress")
    assert run.returncode == 3, run.stdout + run.stderr
    rows = states(tmp_path)
    assert rows[victim.name]["state"] == "unreachable"
    assert str(rows[victim.name]["reason"]).startswith(
        "unreachable: host key changed: the host's SSH key no longer matches known_hosts")
    assert rows[other.name]["state"] == "migrated"
    assert kesl_running(lab, info, victim.name)  # untouched
    assert Path(info.known_hosts).read_bytes() == known  # never accepted


class ProcessSampler(threading.Thread):
    """Every command line on the controller and on the lab hosts, while a run goes on."""

    def __init__(self, lab: Lab, info: LabInfo) -> None:
        super().__init__(daemon=True)
        self.lab, self.info = lab, info
        self.stop = threading.Event()
        self.seen: list[str] = []
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    self.seen.append((proc / "cmdline").read_bytes().replace(b"\0", b" ")
                                     .decode(errors="replace"))
                except OSError:
                    continue
            for host in self.info.hosts:
                out = self.lab.exec(host, ["ps", "-eo", "args"], check=False, timeout=20)
                self.seen.append(out.stdout)
            self.samples += 1
            self.stop.wait(0.3)


def files_holding(root: Path, needle: bytes, skip: set[Path]) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path in skip or not path.is_file():
            continue
        if needle in path.read_bytes():
            found.append(path)
    return found


def test_a_canary_secret_is_found_nowhere(lab: Lab, tmp_path: Path) -> None:
    info = up(lab)
    canary = "avm-canary-" + secrets.token_hex(12)
    for host in info.hosts:  # KESL refuses removal without this password from now on
        lab.protect_with_password(host, hashlib.sha256(canary.encode()).hexdigest())
    creds = tmp_path / "credentials.yml"
    creds.write_text(f"kesl_uninstall_password: {canary}\n")
    creds.chmod(0o600)
    sampler = ProcessSampler(lab, info)
    sampler.start()
    try:
        run = cli(tmp_path, "-vvvv", "--credentials", str(creds), "run", "-i", info.inventory,
                  "--yes", "--no-progress")
    finally:
        sampler.stop.set()
        sampler.join()
    assert run.returncode == 0, run.stdout + run.stderr
    # Both hosts really needed the password: their KESL refuses removal without it.
    assert {r["state"] for r in states(tmp_path).values()} == {"migrated"}
    outputs = [run.stdout, run.stderr]
    for fmt in ("md", "html", "csv", "json"):
        result = cli(tmp_path, "report", "--format", fmt, "--out", f"report.{fmt}")
        assert result.returncode == 0
    outputs.append(cli(tmp_path, "audit", "show", "--json").stdout)
    outputs.append(cli(tmp_path, "status", "--json").stdout)
    needle = canary.encode()
    # The search itself works: it finds the canary where it is meant to be.
    assert files_holding(tmp_path, needle, set()) == [creds]
    artifacts = list((tmp_path / "avmigrate-artifacts").rglob("stdout"))
    assert artifacts and any(len(p.read_bytes()) > 10_000 for p in artifacts)  # -vvvv output
    assert files_holding(tmp_path, needle, {creds}) == []  # state db, artifacts, reports
    assert not any(canary in text for text in outputs)
    assert sampler.samples >= 10
    assert not any(canary in line for line in sampler.seen)
    for host in info.hosts:
        left = lab.exec(host, ["sh", "-c", f"grep -rlsF {canary} /run /tmp /var/tmp /root "
                               "/home /var/log /var/cache/avmigrate /etc; "
                               "ls /run/kaspersky 2>/dev/null"], check=False)
        assert left.stdout.strip() == "", left.stdout


def test_without_the_password_a_protected_kesl_is_not_removed(lab: Lab, tmp_path: Path
                                                              ) -> None:
    info = lab.up(1, HERE / "fleet_kesl.yml", [])
    host = info.hosts[0]
    lab.protect_with_password(host, hashlib.sha256(b"not given").hexdigest())
    run = cli(tmp_path, "run", "-i", info.inventory, "--yes", "--no-progress")
    assert run.returncode == 4, run.stdout + run.stderr
    row = states(tmp_path)[host.name]
    assert row["state"] == "remove_failed", row
    assert "password-protected: removal refused" in str(row["reason"])
    # Still protected: the replacement was verified before the removal was tried.
    assert lab.protection(host, ("clamav-daemon.service",))["clamav-daemon.service"]


def test_a_tampered_package_is_refused_before_kaspersky_is_touched(lab: Lab, tmp_path: Path
                                                                   ) -> None:
    info = up(lab)
    pool = Path(info.directory) / "www" / "debian"
    debs = sorted(pool.glob("clamav-daemon_*.deb"))
    assert debs
    with debs[0].open("r+b") as fh:  # a byte changed; the signed index still says otherwise
        fh.seek(2000)
        byte = fh.read(1)
        fh.seek(2000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    for strategy in ("make-before-break", "swap"):
        # The gate is opened wide so that every host meets the tampered package.
        run = cli(tmp_path, "run", "-i", info.inventory, "--yes", "--no-progress",
                  "--strategy", strategy, "--max-failed-percent", "100")
        assert run.returncode == 4, run.stdout + run.stderr
        for name, row in states(tmp_path).items():
            assert row["state"] == "install_failed", row
            assert "Hash Sum mismatch" in str(row["reason"]) or "hash" in str(
                row["reason"]).lower(), row
            assert kesl_running(lab, info, name)


def test_a_staged_package_not_matching_its_pin_stops_the_host(lab: Lab, tmp_path: Path
                                                              ) -> None:
    import yaml  # noqa: PLC0415

    info = lab.up(1, HERE / "fleet_kesl.yml", [])
    host = info.hosts[0]
    pool = Path(info.directory) / "www" / "debian"
    daemon = sorted(pool.glob("clamav-daemon_*.deb"))[0]
    pins = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in pool.glob("*.deb")}
    pins[daemon.name] = "0" * 64  # what the site pinned is not what the repository serves
    data = yaml.safe_load(Path(info.inventory).read_text())
    data["all"]["vars"]["avmigrate_replacement_sha256"] = pins
    inventory = tmp_path / "pinned.yml"
    inventory.write_text(yaml.safe_dump(data))
    run = cli(tmp_path, "run", "-i", str(inventory), "--yes", "--no-progress",
              "--strategy", "swap")
    assert run.returncode == 4, run.stdout + run.stderr
    row = states(tmp_path)[host.name]
    assert row["state"] == "install_failed", row
    assert f"{daemon.name}: SHA-256" in str(row["reason"]), row
    assert "does not match its pin" in str(row["reason"]), row
    assert kesl_running(lab, info, host.name)
    # With the right pins the same host is swapped.
    pins[daemon.name] = hashlib.sha256(daemon.read_bytes()).hexdigest()
    data["all"]["vars"]["avmigrate_replacement_sha256"] = pins
    inventory.write_text(yaml.safe_dump(data))
    run = cli(tmp_path, "run", "-i", str(inventory), "--yes", "--no-progress",
              "--strategy", "swap")
    assert run.returncode == 0, run.stdout + run.stderr
    assert states(tmp_path)[host.name]["state"] == "migrated"
