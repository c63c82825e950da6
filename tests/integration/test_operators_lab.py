"""Two operators at once on lab hosts, sharing one PostgreSQL state, with overlapping
inventories: each host is migrated by exactly one of them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.lab.lab import Lab
from tests.conftest import postgres_server_url

# One lab per module: xdist runs the module's tests in one worker, labs side by side.
pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = Lab("ops")
    yield the_lab
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

    name = f"avmigrate_ops_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield server.replace("/postgres?", f"/{name}?", 1)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def part_of(inventory: Path, names: list[str], out: Path) -> Path:
    """The lab inventory with only `names` (same variables)."""
    data = yaml.safe_load(inventory.read_text())

    def keep(group: dict) -> None:  # type: ignore[type-arg]
        if "hosts" in group:
            group["hosts"] = {h: v for h, v in group["hosts"].items() if h in names}
        for child in (group.get("children") or {}).values():
            keep(child)

    keep(data["all"])
    out.write_text(yaml.safe_dump(data))
    return out


def test_two_operators_on_overlapping_hosts_each_migrate_their_own(
        lab: Lab, pg_url: str, tmp_path: Path) -> None:
    info = lab.up(4, HERE / "fleet_kesl.yml", [])
    names = [h.name for h in info.hosts]
    east = part_of(Path(info.inventory), names[:3], tmp_path / "east.yml")
    west = part_of(Path(info.inventory), names[1:], tmp_path / "west.yml")
    procs = []
    for who, inv in (("alice", east), ("bob", west)):
        workdir = tmp_path / who
        workdir.mkdir()
        env = dict(os.environ, AVMIGRATE_STATE=pg_url, SUDO_USER=who)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "-i", str(inv), "--yes",
             "--no-progress"], cwd=workdir, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out + err
    said = "".join(o + e for o, e in outputs)

    import psycopg  # noqa: PLC0415

    with psycopg.connect(pg_url) as db:
        runs = dict(db.execute("SELECT id, operator FROM runs WHERE command = 'run'").fetchall())
        by_host: dict[str, set[str]] = {}
        for host, run_id in db.execute("SELECT host, run_id FROM transitions "
                                       "WHERE to_state = 'installing'").fetchall():
            by_host.setdefault(host, set()).add(runs[run_id])
        states = dict(db.execute("SELECT name, state FROM hosts").fetchall())
        verdict = db.execute("SELECT COUNT(*) FROM audit").fetchone()
    assert set(runs.values()) == {"alice", "bob"}
    # Every host was installed on by exactly one operator, once.
    assert set(by_host) == set(names), by_host
    assert all(len(ops) == 1 for ops in by_host.values()), by_host
    assert by_host[names[0]] == {"alice"} and by_host[names[3]] == {"bob"}
    assert "held by another run and left to it" in said  # the overlap was seen and yielded
    assert states == dict.fromkeys(names, "migrated")
    assert verdict is not None and verdict[0] > 0
    for host in info.hosts:
        kesl = lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", "kesl"], check=False)
        assert "install ok installed" not in kesl.stdout, host.name
        assert lab.protection(host, ("clamav-daemon.service",))["clamav-daemon.service"]
