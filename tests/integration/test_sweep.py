"""The paramiko sweep on real lab hosts: answers, a changed key, an unknown key, no sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.execute.sweep import sweep
from orchestrator.inputs import inventory
from orchestrator.lab.lab import Lab

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = Lab("swp")
    yield the_lab
    the_lab.down([])
    assert the_lab.leftovers() == []


def test_the_sweep_tells_each_kind_of_host_apart(lab: Lab, tmp_path: Path) -> None:
    info = lab.up(4, HERE / "fleet_kesl.yml", [])
    ok, changed, stopped, unknown = info.hosts
    known_before = Path(info.known_hosts).read_text()
    lab.change_host_key(changed)
    lab.kill_sshd(stopped)
    # A host whose key was never recorded: its lines taken out of the lab's known_hosts.
    kept = [ln for ln in known_before.splitlines()
            if not {unknown.name, unknown.address} & set(ln.split(" ", 1)[0].split(","))]
    assert len(kept) < len(known_before.splitlines())
    Path(info.known_hosts).write_text("\n".join(kept) + "\n")
    known_now = Path(info.known_hosts).read_bytes()

    results = {r.host: r for r in sweep(inventory.load(Path(info.inventory)).hosts)}
    assert results[ok.name].status == "ok", results[ok.name]
    assert results[changed.name].status == "host-key-changed", results[changed.name]
    assert results[stopped.name].status == "unreachable", results[stopped.name]
    assert results[unknown.name].status == "host-key-unknown", results[unknown.name]
    assert Path(info.known_hosts).read_bytes() == known_now  # nothing recorded

    # The same through the command line, as JSON and as the one-line summary.
    env = dict(os.environ)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "-i", info.inventory,
                           "--json"], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 3, done.stderr
    statuses = {r["host"]: r["status"] for r in json.loads(done.stdout)}
    assert statuses == {h: r.status for h, r in results.items()}
