"""A fresh lab per fault test, sampled from outside while the test runs, and the checks
the fault tests share (tests/integration/test_faults.py and test_cuts.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.core.protection import EICAR_B64
from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo
from orchestrator.store.sqlite import SqliteStore

from .lab import Sampler, end_runs

SCENARIOS = Path(__file__).parent.parent / "integration"
K = 1  # the budget the fault tests run with, and the most unprotected hosts allowed at once

SAMPLERS: list[Sampler] = []


def lab_fixture(name: str) -> Callable[[], Iterator[Lab]]:
    """The `lab` fixture of one fault module: its own lab, so that two modules run side by
    side (`make test` gives each module to one worker). Every lab a test brings up is sampled;
    at the end no more than K hosts were ever seen without protection at once."""

    @pytest.fixture(name="lab")
    def lab() -> Iterator[Lab]:
        # `make stress` names its own lab, so that it can run beside `make test`.
        the_lab = Lab(os.environ.get("AVMIGRATE_FAULT_LAB", name))
        yield the_lab
        left = end_runs()  # a test that failed mid-run: its run must not touch the next lab
        for sampler in SAMPLERS:
            sampler.__exit__()
        seen = [(s.max_unprotected, s.seen) for s in SAMPLERS]
        SAMPLERS.clear()
        the_lab.down([])
        assert the_lab.leftovers() == []
        assert not left, f"orchestrators still running after the test, killed: {left}"
        for peak, moments in seen:
            assert peak <= K, f"sampled more than {K} unprotected hosts at once: {moments}"

    return lab


def up(lab: Lab, hosts: int, scenario: str = "fleet_kesl.yml") -> LabInfo:
    info = lab.up(hosts, SCENARIOS / scenario, [])
    SAMPLERS.append(Sampler(lab, info).__enter__())
    return info

def state_of(workdir: Path, host: str) -> str | None:
    db = workdir / "state.db"
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT state FROM hosts WHERE name = ?", (host,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def wait_state(workdir: Path, host: str, states: set[str], proc: subprocess.Popen[str],
               timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = state_of(workdir, host)
        if s in states:
            return s
        if proc.poll() is not None:
            pytest.fail(f"run ended (exit {proc.returncode}) before {host} reached {states}; "
                        f"last state {s}; see {workdir / 'runs.log'}")
        time.sleep(0.2)
    pytest.fail(f"{host} did not reach {states} in {timeout}s")


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> int:
    return proc.wait(timeout=timeout)


def check_migrated(info: LabInfo, host: LabHost) -> None:
    target = info.target(host)
    _, out, _ = ssh.run(target, "dpkg-query -W -f '${Status}' kesl klnagent64")
    assert "install ok installed" not in out, host.name
    assert ssh.run(target, "pgrep -f /opt/kaspersky/")[0] == 1, host.name
    _, out, _ = ssh.run(target, f"echo {EICAR_B64} | base64 -d > /tmp/e.test; clamdscan "
                                "--fdpass --no-summary /tmp/e.test; echo rc=$?; rm -f /tmp/e.test")
    assert "FOUND" in out and "rc=1" in out, (host.name, out)


def check_record(workdir: Path) -> SqliteStore:
    """The state is whole, and its audit log vouches for every host's state."""
    store = SqliteStore(workdir / "state.db")
    assert store.integrity_ok()
    verdict = store.audit_verify()
    assert verdict.ok, verdict.problems
    return store
