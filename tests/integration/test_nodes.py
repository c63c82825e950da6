"""Execution nodes on the lab: a wave streamed through two `ansible-runner worker` nodes, and
one of them killed mid-wave."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
AVMIGRATE = [sys.executable, "-m", "orchestrator"]
# All four hosts in one wave, and a budget that lets their removals run as one batch too:
# every step of the wave is two shards of two.
ONE_WAVE = "waves:\n  canary: 4\nprotection:\n  max_unprotected: 4\n"


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = Lab("nodes")
    yield the_lab
    the_lab.down([])
    assert the_lab.leftovers() == []


def avmigrate(workdir: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = dict(os.environ, AVMIGRATE_STATE="state.db")
    return subprocess.Popen([*AVMIGRATE, *args], stdout=subprocess.PIPE,  # type: ignore[call-overload]
                            stderr=subprocess.PIPE, text=True, env=env, cwd=workdir, **kw)


def finish(proc: subprocess.Popen[str], timeout: float = 1500) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def states(workdir: Path) -> dict[str, str]:
    db = sqlite3.connect(str(workdir / "state.db"))
    try:
        return dict(db.execute("SELECT name, state FROM hosts").fetchall())
    finally:
        db.close()


def steps_done(workdir: Path, step: str) -> int:
    if not (workdir / "state.db").exists():
        return 0
    db = sqlite3.connect(str(workdir / "state.db"))
    try:
        return int(db.execute("SELECT COUNT(*) FROM step_results WHERE step = ?",
                              (step,)).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def logins(lab: Lab, host: LabHost) -> Counter[str]:
    """How many SSH logins the host's sshd accepted, by source address (its journal)."""
    said = lab.exec(host, ["journalctl", "-u", "ssh", "--no-pager", "-o", "cat"],
                    check=False).stdout
    return Counter(line.split(" from ")[1].split()[0] for line in said.splitlines()
                   if "Accepted publickey" in line and " from " in line)


def migrated(lab: Lab, host: LabHost) -> bool:
    kesl = lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", "kesl"], check=False)
    return ("install ok installed" not in kesl.stdout
            and lab.protection(host, ("clamav-daemon.service",))["clamav-daemon.service"])


def up(lab: Lab) -> LabInfo:
    return lab.up(4, HERE / "fleet_kesl.yml", [], nodes=2)


def test_a_wave_runs_through_two_execution_nodes(lab: Lab, tmp_path: Path) -> None:
    info = up(lab)
    (tmp_path / "policy.yml").write_text(ONE_WAVE)
    before = {h.name: logins(lab, h) for h in info.hosts}  # the lab's own boot checks
    code, said = finish(avmigrate(tmp_path, "run", "-i", info.inventory, "--yes",
                                  "--no-progress", "--policy", "policy.yml"))
    assert code == 0, said
    assert "execution nodes: nodes-node1, nodes-node2" in said
    assert states(tmp_path) == {h.name: "migrated" for h in info.hosts}  # nodes not migrated
    node_addresses = {n.address for n in info.nodes}
    during = {h.name: logins(lab, h) - before[h.name] for h in info.hosts}
    for host in info.hosts:
        assert migrated(lab, host), host.name
        # Every login during the run came from an execution node, none from the controller.
        assert during[host.name] and set(during[host.name]) <= node_addresses, (
            host.name, during[host.name])
    # Both nodes did work: each reached two of the four hosts.
    by_node = {n.address: {h for h, c in during.items() if n.address in c} for n in info.nodes}
    assert sorted(len(hosts) for hosts in by_node.values()) == [2, 2], by_node
    # The record is as for a local run: every step's result per host, every transition.
    db = sqlite3.connect(str(tmp_path / "state.db"))
    steps = {(h, s) for h, s in db.execute("SELECT host, step FROM step_results")}
    for host in info.hosts:
        # The proofs ride in the install's and the removal's own runs (no verify steps);
        # the preflight is the run's discovery's, recorded as the step's result.
        for step in ("discover", "preflight", "install", "remove"):
            assert (host.name, step) in steps
    history = [r[0] for r in db.execute("SELECT to_state FROM transitions WHERE host = ? "
                                        "ORDER BY id", (info.hosts[0].name,))]
    assert history[-4:] == ["installing", "verified", "removing", "migrated"]


def test_killing_an_execution_node_mid_wave_is_survived(lab: Lab, tmp_path: Path) -> None:
    info = up(lab)
    (tmp_path / "policy.yml").write_text(ONE_WAVE)
    run = avmigrate(tmp_path, "run", "-i", info.inventory, "--yes", "--no-progress",
                    "--policy", "policy.yml")
    victim = info.nodes[1]
    # Killed while the wave's hosts are being verified (after the install, before removal):
    # its two hosts have the replacement and KESL, and what the lost step did is unknown.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:
        if steps_done(tmp_path, "install") == 4:
            break
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before the node could be killed"
    lab.power_off(victim)
    code, said = finish(run)
    assert code in (3, 4), said  # the wave stopped: some hosts were interrupted
    assert "in an unknown state: re-probing" in said, said
    after = states(tmp_path)
    assert "unprotected" not in after.values(), after
    # The hosts of the dead node's shard were re-probed at once, not left mid-step.
    db = sqlite3.connect(str(tmp_path / "state.db"))
    reasons = [r[0] for r in db.execute("SELECT reason FROM transitions "
                                        "WHERE reason LIKE 'unknown:%'")]
    assert reasons, after
    assert not {"installing", "removing", "staging", "swapping"} & set(after.values()), after
    assert any(s == "migrated" for s in after.values()), after  # the live node's shard
    # Every host is protected right now: logged in and looked.
    for host in info.hosts:
        status = lab.protection(host, ("kesl.service", "clamav-daemon.service"))
        assert any(status.values()), (host.name, status)
    # The next run finishes through the node that is left.
    code, said = finish(avmigrate(tmp_path, "run", "-i", info.inventory, "--yes",
                                  "--no-progress", "--policy", "policy.yml"))
    assert code == 0, said
    assert states(tmp_path) == {h.name: "migrated" for h in info.hosts}
    for host in info.hosts:
        assert migrated(lab, host), host.name
    assert json.loads(json.dumps(after))  # the record stayed readable throughout
