"""The protection promise on real lab hosts (issue 12), judged by sampling the hosts' truth.

- Case 6: a swap's install after removal is proven again right before the removal, and it
  installs exactly the staged files: package lists that changed since staging change
  nothing; a package manager broken since staging stops the host before KESL is touched.
- Two operators on one PostgreSQL state, overlapping inventories, a fleet budget of 1, an
  execution node killed inside a swap window, the orchestrators SIGKILLed at random moments:
  sampled from outside, never more than one host without protection; every host ends migrated
  or protected and untouched, and its record says which.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.core.models import UNTOUCHED, HostState
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabHost, LabInfo
from tests.conftest import postgres_server_url

from ..support.lab import Sampler, end_runs, kill_orchestrator, start_run

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent


def by_login(lab: Lab, host: LabHost) -> dict[str, bool]:
    """What is really on the host, read from inside it."""
    said = lab.exec(host, ["sh", "-c", "dpkg-query -W -f '${Status}' kesl 2>/dev/null; echo; "
                           "systemctl is-active kesl.service; "
                           "echo WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElW"
                           "SVJVUy1URVNULUZJTEUhJEgrSCo= | base64 -d | clamdscan --no-summary -; "
                           "echo rc=$?"], check=False).stdout.splitlines()
    return {"kesl_installed": "install ok installed" in said[0],
            "kesl_running": said[1].strip() == "active",
            "eicar_detected": any("FOUND" in line for line in said) and "rc=1" in said[-1]}


def states_in(db: Path) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(str(db))
    try:
        return {n: (s, r) for n, s, r in con.execute("SELECT name, state, reason FROM hosts")}
    finally:
        con.close()


# ---- case 6 -------------------------------------------------------------------------------
@pytest.fixture
def stage_lab() -> Iterator[Lab]:
    the_lab = Lab("stage")
    yield the_lab
    end_runs()  # a test that failed mid-run leaves no run behind
    the_lab.down([])
    assert the_lab.leftovers() == []


def test_6_the_stage_is_proven_again_right_before_removal(stage_lab: Lab, tmp_path: Path
                                                          ) -> None:
    info = stage_lab.up(3, HERE / "fleet_kesl.yml", [])
    a, b, c = info.hosts
    (tmp_path / "policy.yml").write_text("waves:\n  canary: 3\n")  # one wave: a, b, c
    with Sampler(stage_lab, info) as sampler:
        proc = start_run(tmp_path, info.inventory, "--strategy", "swap", "--max-unprotected",
                         "1", "--policy", "policy.yml", "--max-failed-percent", "100")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # a's window is open, b and c wait staged
            now = states_in(tmp_path / "state.db") if (tmp_path / "state.db").exists() else {}
            if now.get(a.name, ("",))[0] in ("removing", "swapping") and all(
                    now.get(h.name, ("",))[0] == "staged" for h in (b, c)):
                break
            assert proc.poll() is None, (tmp_path / "runs.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the run never had a in its window with b and c staged")
        # Meanwhile, on b, the package lists change (an `apt-get update` after the internal
        # repository left its sources): an install by package name would now fail there.
        stage_lab.exec(b, ["sh", "-c", "rm -f /etc/apt/sources.list.d/avmigrate-internal.sources"
                           " && apt-get update -qq"])
        # On c, dpkg is left interrupted (what a killed unattended upgrade leaves).
        stage_lab.exec(c, ["sh", "-c", "printf 'Package: klnagent64\\nStatus: install ok "
                           "half-configured\\nVersion: 14.2.0.26967\\n' "
                           "> /var/lib/dpkg/updates/0000"])
        code = proc.wait(timeout=900)
    log = (tmp_path / "runs.log").read_text()
    assert code == 4, log[-3000:]  # c stopped: a step failed there, still protected
    now = states_in(tmp_path / "state.db")
    assert now[a.name][0] == now[b.name][0] == "migrated", now
    assert now[c.name][0] == "install_failed", now
    assert "dpkg was interrupted" in now[c.name][1] and "banned product untouched" in (
        now[c.name][1]), now[c.name]
    for host in (a, b):
        truth = by_login(stage_lab, host)
        assert not truth["kesl_installed"] and truth["eicar_detected"], (host.name, truth)
    truth = by_login(stage_lab, c)
    assert truth["kesl_installed"] and truth["kesl_running"], truth  # never touched
    assert sampler.max_unprotected <= 1, sampler.seen
    assert sampler.seen, "no swap window was sampled: the test proves nothing"


# ---- two operators, one budget, faults -----------------------------------------------------
@pytest.fixture
def duo_lab() -> Iterator[Lab]:
    the_lab = Lab("duo")
    yield the_lab
    end_runs()  # a test that failed mid-run leaves no run behind
    the_lab.down([])
    assert the_lab.leftovers() == []


@pytest.fixture
def pg_url() -> Iterator[str]:
    server = postgres_server_url()
    if server is None:
        if os.environ.get("AVMIGRATE_REQUIRE_PG"):
            pytest.fail("no PostgreSQL server for the tests (python -m tests.pgserver up)")
        pytest.skip("no PostgreSQL server (python -m tests.pgserver up starts one)")
    import psycopg  # noqa: PLC0415

    name = f"avmigrate_duo_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield server.replace("/postgres?", f"/{name}?", 1)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def part_of(info: LabInfo, names: list[str], out: Path) -> str:
    """The lab inventory with only these hosts (and the execution nodes)."""
    data = yaml.safe_load(Path(info.inventory).read_text())
    keep_names = set(names) | {n.name for n in info.nodes}

    def keep(group: dict) -> None:  # type: ignore[type-arg]
        if "hosts" in group:
            group["hosts"] = {h: v for h, v in group["hosts"].items() if h in keep_names}
        for child in (group.get("children") or {}).values():
            keep(child)

    keep(data["all"])
    out.write_text(yaml.safe_dump(data))
    return str(out)


def workers_left(lab: Lab, info: LabInfo, pid: int, timeout: float = 20) -> list[str]:
    """Workers still running on the live execution nodes for the orchestrator `pid`."""
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for node in info.nodes:
            try:
                said = lab.exec(node, ["pgrep", "-af", "avm-owner="], check=False).stdout
            except Exception:  # noqa: BLE001, S112 - a node powered off runs nothing
                continue
            left += [f"{node.name}: {line}" for line in said.splitlines() if f"|{pid}|" in line]
        if not left:
            return []
        time.sleep(0.5)
    return left


def pg_states(url: str) -> dict[str, tuple[str, str]]:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as db:
        return {n: (s, r) for n, s, r in db.execute("SELECT name, state, reason FROM hosts")}


# One story on purpose: two operators, lost node and kills interleave on one lab and state.
def test_two_operators_one_budget_a_lost_node_and_killed_orchestrators(  # noqa: C901, PLR0915 - a story
        duo_lab: Lab, pg_url: str, tmp_path: Path) -> None:
    info = duo_lab.up(4, HERE / "fleet_kesl.yml", [], nodes=2)
    names = [h.name for h in info.hosts]
    inventories = {"alice": part_of(info, names[:3], tmp_path / "east.yml"),
                   "bob": part_of(info, names[1:], tmp_path / "west.yml")}
    env = dict(os.environ, AVMIGRATE_STATE=pg_url)
    subprocess.run([sys.executable, "-m", "orchestrator", "budget", "--set", "1"], env=env,
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    rng = random.Random(int(os.environ.get("AVMIGRATE_DUO_SEED", "1201")))
    kills = {"alice": 2, "bob": 2}
    runs = {"alice": 0, "bob": 0}
    procs: dict[str, subprocess.Popen[str]] = {}
    kill_at: dict[str, float] = {}
    done: dict[str, int] = {}
    node_killed_in: str | None = None
    with Sampler(duo_lab, info) as sampler:
        deadline = time.monotonic() + 2400
        while len(done) < 2:
            assert time.monotonic() < deadline, (runs, done, pg_states(pg_url))
            for who in ("alice", "bob"):
                if who in done or who in procs:
                    continue
                assert runs[who] < 10, f"{who} did not finish in 10 runs"
                runs[who] += 1
                procs[who] = start_run(tmp_path, inventories[who], "--strategy", "swap",
                                       state=pg_url, user=who)
                kill_at[who] = (time.monotonic() + rng.uniform(10, 90) if kills[who]
                                else float("inf"))
            for who, proc in list(procs.items()):
                code = proc.poll()
                if code is not None:
                    del procs[who]
                    if code == 0:
                        done[who] = runs[who]
                elif time.monotonic() > kill_at[who]:
                    left = kill_orchestrator(proc)
                    assert not left, f"{who}'s steps outlived it: {left}"
                    remote = workers_left(duo_lab, info, proc.pid)
                    assert not remote, f"{who}'s node workers outlived it: {remote}"
                    kills[who] -= 1
                    del procs[who]
            if node_killed_in is None:
                swapping = [n for n, (s, _) in pg_states(pg_url).items() if s == "swapping"]
                if swapping:
                    duo_lab.power_off(info.nodes[1])
                    node_killed_in = swapping[0]
            time.sleep(0.3)
    log = (tmp_path / "runs.log").read_text()
    assert node_killed_in is not None, "no swap window came to kill a node in"
    assert sum(2 - k for k in kills.values()) >= 2, kills  # the orchestrators were killed
    assert sampler.max_unprotected <= 1, sampler.seen
    assert sampler.seen, "no host was ever seen without protection: the test proves nothing"
    final = pg_states(pg_url)
    for host in info.hosts:
        state, reason = final[host.name]
        truth = by_login(duo_lab, host)
        if state == HostState.MIGRATED.value:
            assert not truth["kesl_installed"] and truth["eicar_detected"], (host.name, truth)
        else:
            # Not migrated: then protected and untouched, and recorded so.
            assert HostState(state) in UNTOUCHED, (host.name, state, reason)
            assert truth["kesl_running"], (host.name, truth)
    assert all(s == HostState.MIGRATED.value for s, _ in final.values()), (final, log[-4000:])
