"""Hosts as agencies have them: a third-party package source that no longer answers must not
stop the install of the replacement, and is left as the host's owner configured it.

Two lab hosts, each with KESL 12, the Network Agent and a dead vendor repository in
sources.list.d; one is migrated make-before-break, the other by swap. Judged by logging in.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo
from tests.support.lab import TRUTH, Sampler

pytestmark = pytest.mark.lab

LAB = "apt"
SCENARIO = Path(__file__).parent / "dead_source.yml"
DEAD = "/etc/apt/sources.list.d/vendor-gone.list"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    the_lab = Lab(LAB)
    log: list[str] = []
    info = the_lab.up(2, SCENARIO, log)
    yield info
    the_lab.down(log)


def one_host(info: LabInfo, keep: str, out: Path) -> Path:
    """The lab's inventory with only `keep` in its groups."""
    data = yaml.safe_load(Path(info.inventory).read_text())
    for group in data["all"]["children"]["lab"]["children"].values():
        group["hosts"] = {h: v for h, v in group["hosts"].items() if h == keep}
    out.write_text(yaml.safe_dump(data))
    return out


def test_the_dead_source_breaks_what_the_old_role_did(lab: LabInfo) -> None:
    """The role used to refresh every source with Ansible's apt module (update_cache), whose
    python-apt cache update fails on such a host: the failure this test file guards against."""
    for host in lab.hosts:
        _, out, err = ssh.run(lab.target(host), "sudo -n apt-get update -q 2>&1; echo rc=$?",
                              timeout=300)
        # apt-get itself only warns (rc 0) and keeps the other lists...
        assert "Err:" in out and "127.0.0.1:9" in out and "rc=0" in out, (host.name, out, err)
        # ...while python-apt's update, what the apt module runs, raises.
        _, out, err = ssh.run(lab.target(host), "sudo -n python3 -c 'import apt; "
                              "apt.Cache().update()' 2>&1; echo rc=$?", timeout=300)
        assert "FetchFailedException" in out and "rc=1" in out, (host.name, out, err)


def test_plan_check_names_each_apt_situation_per_host(lab: LabInfo, tmp_path: Path) -> None:
    """Before anything changes: the dead source and a proxy noted, a held banned package named
    as what blocks the host; the host's package state byte for byte as it was."""
    held, other = lab.hosts
    ssh.run(lab.target(held), "sudo -n apt-mark hold kesl", timeout=120)
    ssh.run(lab.target(other), "echo 'Acquire::http::Proxy::mirror.agency.example "
            "\"http://proxy.agency.example:3128\";' | sudo -n tee "
            "/etc/apt/apt.conf.d/80proxy", timeout=120)
    before = {h.name: _apt_state(lab, h) for h in lab.hosts}
    try:
        planned = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli.cli", "--state", str(tmp_path / "s.db"),
             "plan", "-i", lab.inventory, "--check", "--out", str(tmp_path / "plan")],
            capture_output=True, text=True, cwd=tmp_path, timeout=1500, check=False)
        assert planned.returncode == 0, planned.stdout + planned.stderr
        # The held host is held back from the waves (discovery saw the hold), the risk named;
        # the other is checked, its notes in its plan row.
        page = (tmp_path / "plan" / "plan.md").read_text()
        assert f"{held.name}: held back: broken package state: held packages kesl" in page
        assert "apt-mark unhold kesl" in page
        csv = (tmp_path / "plan" / "plan.csv").read_text()
        row = next(ln for ln in csv.splitlines() if f",{other.name}," in ln)
        assert "note: package source http://127.0.0.1:9/vendor does not answer" in row, row
        assert "note: apt uses the proxy http://proxy.agency.example:3128" in row, row
        assert f",{held.name}," not in csv
        assert {h.name: _apt_state(lab, h) for h in lab.hosts} == before
    finally:
        ssh.run(lab.target(held), "sudo -n apt-mark unhold kesl", timeout=120)
        ssh.run(lab.target(other), "sudo -n rm -f /etc/apt/apt.conf.d/80proxy", timeout=120)


def _apt_state(lab: LabInfo, host: LabHost) -> str:
    _, out, _ = ssh.run(lab.target(host),
                        "sudo -n sh -c 'ls -l --time-style=+%s /var/lib/apt/lists; "
                        "dpkg-query -W; apt-mark showhold'", timeout=120)
    return out


@pytest.mark.parametrize("strategy", ["make-before-break", "swap"])
def test_the_replacement_installs_despite_a_dead_source(lab: LabInfo, tmp_path: Path,
                                                       strategy: str) -> None:
    host = lab.hosts[0 if strategy == "make-before-break" else 1]
    inventory = one_host(lab, host.name, tmp_path / "one.yml")
    with Sampler(Lab(LAB), lab, hosts=(host,)) as sampler:
        ran = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli.cli", "--state", str(tmp_path / "s.db"),
             "run", "-i", str(inventory), "--yes", "--strategy", strategy],
            capture_output=True, text=True, cwd=tmp_path, timeout=1500, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    _, out, err = ssh.run(lab.target(host), "dpkg-query -W kesl klnagent64 2>&1; "
                          f"test -f {DEAD} && echo dead-source-kept", timeout=120)
    assert "no packages found matching kesl" in out, (host.name, out, err)
    assert "no packages found matching klnagent64" in out, (host.name, out, err)
    assert "dead-source-kept" in out, (host.name, out)  # the owner's source, untouched
    _, out, err = ssh.run(lab.target(host), TRUTH, timeout=120)
    assert out.split("\n")[0].strip() != "active" and Sampler.judge(out), (host.name, out)
    assert host.name in sampler.baseline and sampler.samples > 0
    # make-before-break never leaves the host bare; a swap leaves it bare for its window only
    # (its budget slot), which the sampler may or may not catch.
    if strategy == "make-before-break":
        assert sampler.max_unprotected == 0, sampler.seen
