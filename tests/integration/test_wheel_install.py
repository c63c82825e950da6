"""The package as a user installs it: a wheel built from this checkout, installed into a fresh
virtualenv outside it, migrates real lab hosts with the collection and templates it carries;
and migrates an agency-shaped Ansible estate (tests/support/estate.py) whose hosts but one
are reachable only through a jump host, from that estate's own directory and configuration.

Nothing from the checkout is on the path of the installed command (no PYTHONPATH, another
working directory); the hosts are then judged by looking at them, not by the state.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.execute import ssh
from orchestrator.lab.lab import Lab
from orchestrator.lab.records import LabInfo
from tests.support import estate
from tests.support.lab import TRUTH, Sampler

pytestmark = pytest.mark.lab

LAB = "whl"
REPO = Path(__file__).resolve().parents[2]
ESTATE_LAB = "est"
SCENARIO = Path(__file__).parent / "two_hosts.yml"
# What a source tree copy needs to build the wheel (the rest is the developer's).
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
                              ".ansible", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                              "demo", "avmigrate-*", "*.db")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `avmigrate` command of a fresh virtualenv holding only the built wheel (and its
    dependencies from the package index)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=SKIP)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(root / "dist"), str(source)], check=True, timeout=600)
    wheels = list((root / "dist").glob("avmigrate-*.whl"))
    assert len(wheels) == 1, wheels
    venv = root / "venv"
    # Nothing of this checkout on the path: pip would take its metadata for an install.
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120,
                   env=env, cwd=root)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], check=True,
                   timeout=900, env=env, cwd=root)
    command = venv / "bin" / "avmigrate"
    assert command.is_file(), sorted(p.name for p in (venv / "bin").iterdir())
    return command


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    the_lab = Lab(LAB)
    log: list[str] = []
    info = the_lab.up(2, SCENARIO, log)
    yield info
    the_lab.down(log)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("AVMIGRATE_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if ".venv" not in p)
    return env


def test_the_wheel_carries_the_collection_and_the_templates(installed: Path) -> None:
    python = installed.parent / "python"
    where = subprocess.run(
        [str(python), "-c", "import orchestrator.core.assets as a; "
         "print(a.PLAYBOOK_DIR); print(a.COLLECTION_DIR); print(a.TEMPLATE_DIR)"],
        capture_output=True, text=True, check=True, env=_clean_env(), cwd=installed.parent)
    playbooks, collection, templates = (Path(line) for line in where.stdout.split())
    for path in (playbooks, collection, templates):
        assert "site-packages" in str(path) and REPO not in path.parents, path
        assert not path.is_symlink(), path
    assert {p.name for p in playbooks.glob("*.yml")} >= {"discover.yml", "install.yml",
                                                         "verify.yml", "remove.yml"}
    assert (collection / "galaxy.yml").is_file()
    assert (collection / "plugins" / "modules" / "probe.py").is_file()
    assert (collection / "roles" / "replacement_clamav" / "tasks" / "main.yml").is_file()
    assert (templates / "plan.html.j2").is_file()


def test_a_lab_migrates_from_the_installed_package(installed: Path, lab: LabInfo,
                                                   tmp_path: Path) -> None:
    env = _clean_env()

    def avmigrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed), "--state", str(tmp_path / "s.db"), *args],
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=1500, check=False)

    inventory = str(lab.inventory)
    planned = avmigrate("plan", "-i", inventory, "--out", str(tmp_path / "plan"))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (tmp_path / "plan" / "plan.html").stat().st_size > 0  # the packaged templates
    with Sampler(Lab(LAB), lab) as sampler:
        ran = avmigrate("run", "-i", inventory, "--plan", str(tmp_path / "plan" / "plan.json"),
                        "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sampler.errors == []
    # Logged in: KESL and the agent are gone, clamd detects EICAR on every host.
    for host in lab.hosts:
        _, out, err = ssh.run(lab.target(host), "dpkg-query -W kesl klnagent64 2>&1",
                                 timeout=120)
        assert "no packages found matching kesl" in out + err, (host.name, out, err)
        assert "no packages found matching klnagent64" in out + err, (host.name, out, err)
        _, out, err = ssh.run(lab.target(host), TRUTH, timeout=120)
        assert out.split("\n")[0].strip() != "active", (host.name, out)  # KESL not running
        assert Sampler.judge(out + err), (host.name, out, err)  # clamd detected EICAR
    # The sampler watched the KESL host, protected when it began, through the whole run.
    kesl = {h.name for h in lab.hosts if h.profile == "kesl12_agent"}
    assert kesl and kesl <= sampler.baseline and sampler.samples > 0, sampler.baseline
    assert sampler.max_unprotected == 0, sampler.seen


def test_an_estate_behind_a_jump_host_migrates_from_its_own_directory(
        installed: Path, tmp_path: Path) -> None:
    the_lab = Lab(ESTATE_LAB)
    log: list[str] = []
    info = the_lab.up(3, Path(__file__).parent / "estate_hosts.yml", log)
    try:
        _migrate_the_estate(the_lab, info, installed, tmp_path)
    finally:
        the_lab.down(log)
    assert the_lab.leftovers() == []


def _migrate_the_estate(the_lab: Lab, info: LabInfo, installed: Path, tmp_path: Path) -> None:
    bastion, *hidden = info.hosts
    for host in hidden:
        the_lab.hide_from_controller(host)
        assert not ssh.port_open(host.address), host.name  # only the bastion reaches it
    # `lab up` itself logged in directly (its readiness check) just before: count the logins
    # from a whole second later on (the journal's --since has one-second steps).
    time.sleep(2)
    hidden_since = int(time.time()) + 1
    time.sleep(1.5)
    lab_vars = {k: v for k, v in yaml.safe_load(Path(info.inventory).read_text())["all"]
                ["vars"].items() if k.startswith("avmigrate_")}
    root = estate.write(tmp_path / "estate", info, bastion, lab_vars)
    env = _clean_env()

    def avmigrate(*args: str) -> subprocess.CompletedProcess[str]:
        # No -i, no --vault-id: ansible.cfg in the working directory names both.
        return subprocess.run([str(installed), "--state", "state.db", *args],
                              capture_output=True, text=True, env=env, cwd=root,
                              timeout=1500, check=False)

    # sweep reaches them as OpenSSH would: the bastion directly, the others through it.
    swept = avmigrate("sweep", "--json")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert {r["host"]: r["status"] for r in json.loads(swept.stdout)} == {
        "bastion_01": "ok", "web_prod_02": "ok", "web_prod_03": "ok"}, swept.stdout
    found = avmigrate("discover", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    states = {row["host"]: row["state"] for row in json.loads(found.stdout)}
    assert states == {"bastion_01": "pending", "web_prod_02": "pending",
                      "web_prod_03": "pending"}, states
    planned = avmigrate("plan", "--check", "--out", "plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    said = " ".join(planned.stderr.split())  # the overrides, once, before the first step
    assert "-o StrictHostKeyChecking=yes first" in said, said
    assert "host_key_checking: on for avmigrate's steps" in said, said
    assert said.count("Ansible configuration:") == 1, said
    with Sampler(the_lab, info) as sampler:
        ran = avmigrate("run", "--plan", "plan/plan.json", "--yes", "--no-progress")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sampler.max_unprotected == 0, sampler.seen
    assert set(sampler.baseline) == {h.name for h in info.hosts} and sampler.samples > 0
    for host in info.hosts:  # looked at from inside: the controller cannot ssh to them
        out = the_lab.exec(host, ["sh", "-c", "dpkg-query -W kesl klnagent64 2>&1; " + TRUTH],
                           check=False).stdout
        assert "no packages found matching kesl" in out, (host.name, out)
        assert "no packages found matching klnagent64" in out, (host.name, out)
        assert Sampler.judge(out), (host.name, out)  # clamd detects EICAR
    # Every SSH login to a hidden host came from the bastion, none from the controller.
    for host in hidden:
        auth = the_lab.exec(host, ["journalctl", "-u", "ssh", "--no-pager", "-o", "cat",
                                   "--since", f"@{hidden_since}"], check=False).stdout
        sources = set(re.findall(r"Accepted publickey for \S+ from (\S+)", auth))
        assert sources == {bastion.address}, (host.name, sources)
